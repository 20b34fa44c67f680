"""Open-Unmix (sigsep's `openunmix`) and asteroid's CrossNet-Open-Unmix (X-UMX) weights as an
`xumx` package (`bridge=False` for Open-Unmix, `bridge=True` for X-UMX).

**Open-Unmix** ("Open-Unmix - A Reference Implementation for Music Source Separation",
Stöter, Uhlich, Liutkus, Mitsufuji, JOSS 2019) trains one `OpenUnmix` network per target and
saves each alone: `vocals.pth` (the hub's `vocals-b62c91ce.pth`) is one network's state dict
(`fc1.weight`, `bn1.*`, `lstm.*`, `fc2.weight`, `bn2.*`, `fc3.weight`, `bn3.*`,
`input_mean`, `input_scale`, `output_scale`, `output_mean`: the names of our
`SourceNetwork`), `vocals.chkpnt` the same under `state_dict` with the optimizer's state, and
`vocals.json` the training arguments (`{"args": {"nfft", "nhop", "hidden_size",
"nb_channels", "bandwidth", "seq_dur", "unidirectional", "target", ...}}`), next to a
`separator.json` (`nfft`, `nhop`, `sample_rate`, `nb_channels`). open-unmix 1.0's files
(umxhq) also hold `sample_rate`, `stft.window` and `transform.0.window`, read as checks.

**One target per file.** Several files make one model (their Separator: each network on the
mixture magnitude, then the Wiener filter over all targets):

* in Python, `convert_files(folder or paths, sources, config)`: a folder takes its `*.pth`
  (the target's name is the file's, less a hub hash `-b62c91ce`), in our MUSDB order
  (drums, bass, other, vocals), then by name; `sources` picks and orders them; the folder's
  `separator.json` and `TARGET.json` are read as the config;
* through `convert(data, config)`: `data` is `{target: state}`, a list of states named in
  order by `config['sources']`, or one state named by `config['target']` (a model of one
  source, without Wiener filter: open-unmix's EM needs two).

**X-UMX** ("All for One and One for All: Improving Music Separation by Bridging Networks",
Sawata, Uhlich, Takahashi, Mitsufuji, ICASSP 2021) as asteroid trains and publishes it
(`asteroid.models.XUMX`, `egs/musdb18/X-UMX`, the `r-sawata/XUMX_MUSDB18_music_separation`
weights): asteroid's `serialize` layout, `{'model_name': 'XUMX', 'state_dict', 'model_args':
{window_length, in_chan, n_hop, sample_rate, sources, hidden_size, nb_channels, max_bin,
nb_layers, bidirectional, spec_power, ...}}`, or its bare state dict (`layer_enc.SRC.enc.{0,1}`
= fc1, bn1; `layer_lstm.SRC`; `layer_dec.SRC.dec.{0,1,3,4}` = fc2, bn2, fc3, bn3;
`mean_scale.{input,output}_{mean,scale}_SRC`; `encoder.0.window`, `decoder.window`). Sony's
own X-UMX (github sony/ai-research-code, `x-umx/`) is nnabla: its `.h5` parameters are named
`fc1_SRC/affine/W`, `fc1_SRC/bn/{beta,gamma,mean,var}`, `lstm_SRC/...`, `input_mean_SRC`...
and are read by `separator.importers.xumx_nnabla`.

**The config** (optional): open-unmix's `TARGET.json` (its `args`) or `separator.json`,
asteroid's `model_args` names, or our `XUMX` arguments (`wiener_iterations`,
`wiener_frames`, `segment`...). The weights give the channels, sizes, layers, direction, FFT
size and bandwidth; a config that says otherwise is refused, naming the key. Without a
config: open-unmix's training defaults (44.1 kHz, hop 1024 at nfft 4096; the hub's umxse,
mono nfft 1024 hidden 256: 16 kHz, hop 512); another FFT size needs the hop from a config.

**What the model computes** is theirs (tests/test_import_umx.py: magnitudes and waveforms
within 1e-6 of the output scale): the unnormalised STFT (`normalized_stft=False`: their
input mean and scale are in its scale), Hann window of nfft, centred, reflect padding; the
networks (`bridge`: X-UMX's two averages); the magnitude estimates
with the mixture phase, then one EM iteration of the multichannel Wiener filter on windows
of 300 frames (open-unmix's `load_separator` defaults; asteroid's eval.py also runs one
iteration, on the whole song). The filter is `separator.wiener`'s: norbert's EM (the same to
2e-7 where some estimate is not silent), but in the bins where every estimate is silent it
splits the mixture evenly where norbert outputs zero.
Not imported: open-unmix's `residual` target and `softmask` start, and a mono model's
downmix of a stereo input (ours takes mono input). Refused: asteroid's `spec_power` != 1
(power spectrogram masks) and a window shorter than the FFT.
"""
import inspect
import json
import re
import typing as tp
from pathlib import Path

import torch

from ..models.xumx import XUMX, bandwidth_bins
from ..states import PackageError

FORMAT = 'umx'

MUSDB_ORDER = ('drums', 'bass', 'other', 'vocals')   # our config's source order
UMX_MARKERS = ('fc1.weight', 'lstm.weight_ih_l0', 'fc3.weight', 'input_mean')
XUMX_MARKERS = ('layer_enc.', 'layer_lstm.', 'layer_dec.', 'mean_scale.')
LEGACY_WINDOWS = ('stft.window', 'transform.0.window')   # open-unmix 1.0's modules
XUMX_WINDOWS = ('encoder.0.window', 'decoder.window')
NORMS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
SCALES = ('input_mean', 'input_scale', 'output_mean', 'output_scale')
# asteroid's XUMX modules -> ours, per source
XUMX_LAYERS = (('layer_enc.{}.enc.0.', 'fc1.'), ('layer_enc.{}.enc.1.', 'bn1.'),
               ('layer_lstm.{}.', 'lstm.'), ('layer_dec.{}.dec.0.', 'fc2.'),
               ('layer_dec.{}.dec.1.', 'bn2.'), ('layer_dec.{}.dec.3.', 'fc3.'),
               ('layer_dec.{}.dec.4.', 'bn3.'))
LAYER_ENC = re.compile(r'layer_enc\.(.+)\.enc\.0\.weight$')

# Their argument names -> ours (open-unmix's train.py / separator.json, asteroid's model_args).
THEIR_NAMES = {'nfft': 'nfft', 'in_chan': 'nfft', 'nhop': 'hop_length', 'n_hop': 'hop_length',
               'sample_rate': 'samplerate', 'nb_channels': 'audio_channels',
               'hidden_size': 'hidden_size', 'nb_layers': 'lstm_layers',
               'bandwidth': 'bandwidth', 'seq_dur': 'segment', 'niter': 'wiener_iterations',
               'wiener_win_len': 'wiener_frames', 'bidirectional': 'bidirectional',
               'sources': 'sources'}
CHECKED = ('max_bin', 'window_length', 'spec_power', 'target', 'unidirectional')
IGNORED = ('input_mean', 'input_scale', 'return_time_signals')   # asteroid's, None once saved
DEFAULTS = {'samplerate': 44100, 'segment': 6.0, 'lstm_dropout': 0.4,
            'train_wiener_iterations': 0, 'wiener_frames': 300}
# The hop and rate when no config gives them: open-unmix's train.py defaults (nfft 4096),
# the hub's umxse (nfft, channels, hidden) = (1024, 1, 256).
DEFAULT_HOPS = {4096: 1024}
PRESETS = {(1024, 1, 256): {'samplerate': 16000, 'hop_length': 512}}
WEIGHT_KEYS = ('audio_channels', 'hidden_size', 'lstm_layers', 'bidirectional', 'nfft')


# ------------------------------------------------------------------ recognising the content

def is_umx_state(data: tp.Any) -> bool:
    """Whether `data` is one Open-Unmix network's state dict (one target)."""
    return isinstance(data, dict) and all(key in data for key in UMX_MARKERS)


def umx_state_of(data: tp.Any) -> tp.Optional[dict]:
    """The state dict of an Open-Unmix `.pth` (itself) or `.chkpnt` (its `state_dict`)."""
    if is_umx_state(data):
        return data
    if isinstance(data, dict) and is_umx_state(data.get('state_dict')):
        return data['state_dict']
    return None


def is_xumx_state(data: tp.Any) -> bool:
    """Whether `data` is asteroid's XUMX state dict."""
    return isinstance(data, dict) and all(
        any(isinstance(key, str) and key.startswith(marker) for key in data)
        for marker in XUMX_MARKERS)


def is_xumx(data: tp.Any) -> bool:
    """asteroid's XUMX: a `serialize` package or its bare state dict."""
    if is_xumx_state(data):
        return True
    return (isinstance(data, dict) and is_xumx_state(data.get('state_dict'))
            and data.get('model_name', 'XUMX') == 'XUMX')


def matches(data: tp.Any) -> bool:
    """One Open-Unmix network (`.pth`, `.chkpnt`), several (`{target: state}` or a list), or
    asteroid's XUMX."""
    if is_xumx(data) or umx_state_of(data) is not None:
        return True
    values = list(data.values()) if isinstance(data, dict) else data
    return (isinstance(values, (list, tuple)) and len(values) > 0
            and all(umx_state_of(value) is not None for value in values))


# ------------------------------------------------------------------ config

def flat_config(config: tp.Optional[dict]) -> tp.Tuple[dict, bool]:
    """A config as one mapping, and whether it is open-unmix's `TARGET.json`, whose `args`
    are all of train.py's (data set, optimiser...): only the model's are read."""
    if not config:
        return {}, False
    if 'args' in config:
        if not isinstance(config['args'], dict):
            raise PackageError("the config's `args` is not a mapping: give open-unmix's "
                               "TARGET.json as it is written.")
        return dict(config['args']), True
    return dict(config), False


def our_kwargs(config: tp.Optional[dict], where: str = 'the config') -> tp.Tuple[dict, dict]:
    """`XUMX` arguments from a config in any of the names the module docstring lists, and
    the values to check against the weights (`max_bin`, `window_length`, `spec_power`)."""
    flat, lenient = flat_config(config)
    allowed = [name for name in inspect.signature(XUMX).parameters if name != 'self']
    kwargs: tp.Dict[str, tp.Any] = {}
    checks: tp.Dict[str, tp.Any] = {}
    unknown = []
    for key, value in flat.items():
        if key in THEIR_NAMES:
            kwargs[THEIR_NAMES[key]] = value
        elif key in allowed:
            kwargs[key] = value
        elif key in CHECKED:
            checks[key] = value
        elif key not in IGNORED:
            unknown.append(key)
    if unknown and not lenient:
        raise PackageError(f"{where} has keys {unknown} that are neither XUMX arguments nor "
                           f"open-unmix's / asteroid's: drop them.")
    if checks.get('target') is not None and 'sources' not in kwargs:
        kwargs['sources'] = [str(checks['target'])]
    if checks.get('unidirectional') is not None:
        kwargs['bidirectional'] = not checks['unidirectional']
    for name in ('segment', 'wiener_frames'):   # open-unmix: <= 0 or None for the whole
        if name in kwargs and (kwargs[name] is None or kwargs[name] <= 0):
            kwargs[name] = 6.0 if name == 'segment' else None
    return kwargs, checks


def check_spectrogram(checks: dict, nfft: int) -> None:
    """asteroid's options our model does not have: refused, naming them."""
    power = checks.get('spec_power', 1)
    if power != 1:
        raise PackageError(f"the model's spec_power={power}: its masks apply to a power "
                           f"spectrogram; only magnitude models (spec_power=1) are imported.")
    window = checks.get('window_length', nfft)
    if window != nfft:
        raise PackageError(f"the model's window_length={window} differs from its FFT size "
                           f"in_chan={nfft}: only a window of the FFT size is imported.")


# ------------------------------------------------------------------ weights -> our names

def as_tensors(state: dict, where: str) -> tp.Dict[str, torch.Tensor]:
    """A state dict's tensors (floating ones as float32); anything else is refused."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise PackageError(f"{where}: {key} is a {type(value).__name__}, not a tensor.")
        out[str(key)] = value.float() if value.is_floating_point() else value
    return out


def with_counters(state: tp.Dict[str, torch.Tensor]) -> tp.Dict[str, torch.Tensor]:
    """A network's tensors with each BatchNorm's `num_batches_tracked` (0 if missing)."""
    out = dict(state)
    for norm in ('bn1', 'bn2', 'bn3'):
        out.setdefault(f'{norm}.num_batches_tracked', torch.tensor(0, dtype=torch.long))
    return out


def umx_network(state: dict, where: str) -> tp.Tuple[tp.Dict[str, torch.Tensor], dict]:
    """One Open-Unmix network's tensors under our `SourceNetwork` names, and the values the
    legacy keys give (`samplerate` from open-unmix 1.0's `sample_rate` buffer, `window`)."""
    tensors = as_tensors(state, where)
    found: tp.Dict[str, tp.Any] = {}
    if 'sample_rate' in tensors:
        found['samplerate'] = int(round(float(tensors.pop('sample_rate'))))
    for key in LEGACY_WINDOWS:
        if key in tensors:
            found['window'] = int(tensors.pop(key).numel())
    return with_counters(tensors), found


def xumx_networks(state: dict, sources: tp.Optional[tp.Sequence[str]], where: str
                  ) -> tp.Tuple[tp.List[str], tp.List[tp.Dict[str, torch.Tensor]], dict]:
    """asteroid's XUMX tensors as one `SourceNetwork` state per source, in `sources` order
    (the order of its `layer_enc` modules if None), and the window length."""
    tensors = as_tensors(state, where)
    found: tp.Dict[str, tp.Any] = {}
    for key in XUMX_WINDOWS:
        if key in tensors:
            found['window'] = int(tensors.pop(key).numel())
    if sources is None:   # the order of its modules (its ParameterDict's is sorted)
        sources = [match.group(1) for match in map(LAYER_ENC.match, tensors) if match]
    networks = []
    for source in sources:
        network = {}
        for theirs, ours in XUMX_LAYERS:
            prefix = theirs.format(source)
            network.update({ours + key[len(prefix):]: tensors.pop(key)
                            for key in list(tensors) if key.startswith(prefix)})
        for name in SCALES:
            key = f'mean_scale.{name}_{source}'
            if key not in tensors:
                raise PackageError(f"{where}: the tensor {key} is missing: the model's sources "
                                   f"are not {list(sources)}.")
            network[name] = tensors.pop(key)
        networks.append(with_counters(network))
    if tensors:
        raise PackageError(f"{where}: tensors of no source {list(sources)}: "
                           f"{sorted(tensors)[:5]}; give the model's sources in its order.")
    return list(sources), networks, found


def architecture(network: tp.Dict[str, torch.Tensor], where: str) -> dict:
    """The `XUMX` arguments one network's tensors determine, and its input bins."""
    try:
        fc1, mean, out = network['fc1.weight'], network['input_mean'], network['output_scale']
    except KeyError as error:
        raise PackageError(f"{where}: the tensor {error.args[0]} is missing: not a complete "
                           f"Open-Unmix network.") from None
    in_bins = int(mean.shape[0])
    channels, rest = divmod(int(fc1.shape[1]), in_bins)
    if rest or channels < 1:
        raise PackageError(f"{where}: fc1.weight {tuple(fc1.shape)} does not fit "
                           f"input_mean {tuple(mean.shape)} (channels x bins).")
    layers = 0
    while f'lstm.weight_ih_l{layers}' in network:
        layers += 1
    return {'audio_channels': channels, 'hidden_size': int(fc1.shape[0]),
            'lstm_layers': layers, 'bidirectional': 'lstm.weight_ih_l0_reverse' in network,
            'nfft': 2 * (int(out.shape[0]) - 1), 'in_bins': in_bins}


# ------------------------------------------------------------------ hyper-parameters

def stft_defaults(shape: dict, kwargs: dict) -> dict:
    """The sample rate and hop no config gave: the hub's presets, open-unmix's defaults."""
    key = (shape['nfft'], shape['audio_channels'], shape['hidden_size'])
    out = {**PRESETS.get(key, {}), **kwargs}
    out.setdefault('samplerate', DEFAULTS['samplerate'])
    if 'hop_length' not in out:
        if shape['nfft'] not in DEFAULT_HOPS:
            raise PackageError(f"the STFT hop of a model of nfft={shape['nfft']} is not in its "
                               f"weights: give it in a config (open-unmix's separator.json "
                               f"`nhop`, or `hop_length`).")
        out['hop_length'] = DEFAULT_HOPS[shape['nfft']]
    return out


def bandwidth_of(kwargs: dict, in_bins: int, checks: dict) -> float:
    """The `bandwidth` (Hz) giving the weights' `in_bins`: the config's if it does (open-unmix
    clips it at the Nyquist frequency, so do we), else the frequency of the last bin."""
    samplerate, nfft = kwargs['samplerate'], kwargs['nfft']
    if checks.get('max_bin') is not None and int(checks['max_bin']) != in_bins:
        raise PackageError(f"the config says max_bin={checks['max_bin']}, the weights "
                           f"{in_bins} input bins: fix the config.")
    if kwargs.get('bandwidth') is not None:
        bandwidth = min(float(kwargs['bandwidth']), samplerate / 2)
        if bandwidth_bins(samplerate, nfft, bandwidth) != in_bins:
            raise PackageError(f"the config says bandwidth={kwargs['bandwidth']} Hz "
                               f"({bandwidth_bins(samplerate, nfft, bandwidth)} bins at "
                               f"{samplerate} Hz, nfft {nfft}), the weights {in_bins} bins: "
                               f"fix the config.")
        return bandwidth
    bandwidth = (in_bins - 1) * samplerate / nfft
    if bandwidth_bins(samplerate, nfft, bandwidth) != in_bins:   # not expected
        raise PackageError(f"{in_bins} input bins are no bandwidth of nfft {nfft}.")
    return bandwidth


def model_kwargs(shapes: tp.List[dict], found: dict, kwargs: dict, checks: dict,
                 bridge: bool) -> dict:
    """The package's `XUMX` arguments: the weights' shape, checked against the config's."""
    shape = shapes[0]
    for index, other in enumerate(shapes[1:], 1):
        if other != shape:
            raise PackageError(f"the network of {kwargs['sources'][index]!r} has {other}, the "
                               f"first {shape}: the files are not one model's.")
    for key in WEIGHT_KEYS:
        if key in kwargs and kwargs[key] != shape[key]:
            raise PackageError(f"the config says {key}={kwargs[key]}, the weights "
                               f"{shape[key]}: fix the config.")
    if found.get('window', shape['nfft']) != shape['nfft']:
        raise PackageError(f"the STFT window has {found['window']} samples, the FFT "
                           f"{shape['nfft']}: only a window of the FFT size is imported.")
    check_spectrogram(checks, shape['nfft'])
    if 'samplerate' in found and kwargs.get('samplerate', found['samplerate']) != \
            found['samplerate']:
        raise PackageError(f"the config says sample_rate={kwargs['samplerate']}, the weights "
                           f"{found['samplerate']}: fix the config.")
    out = {**DEFAULTS, **stft_defaults(shape, {**found, **kwargs})}
    out.pop('window', None)
    if isinstance(out['samplerate'], float) and out['samplerate'].is_integer():
        out['samplerate'] = int(out['samplerate'])   # asteroid may store 44100.0
    out.update({key: shape[key] for key in WEIGHT_KEYS})
    out['bandwidth'] = bandwidth_of(out, shape['in_bins'], checks)
    out['bridge'] = bridge
    out['normalized_stft'] = False
    out.setdefault('wiener_iterations', 1 if len(out['sources']) > 1 else 0)
    return out


def check_shapes(kwargs: dict, state: tp.Dict[str, torch.Tensor]) -> None:
    """Every tensor has the shape of our model's (built on the meta device): else the key."""
    with torch.device('meta'):
        expected = XUMX(**kwargs).state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise PackageError(f"{key} has shape {tuple(value.shape)}, the model "
                               f"{tuple(expected[key].shape)}: the weights are inconsistent.")


# ------------------------------------------------------------------ checkpoints -> package

def named_umx_states(data: tp.Any, sources: tp.Optional[tp.Sequence[str]]
                     ) -> tp.List[tp.Tuple[str, dict]]:
    """(target, state) pairs in order, from `{target: state}`, a list or one state."""
    if umx_state_of(data) is not None:
        if not sources or len(sources) != 1:
            raise PackageError("an Open-Unmix file holds the network of one target: import "
                               "all of a model's files together (separator.importers.umx."
                               "convert_files(folder or paths)), or name its target (config "
                               "{'target': 'vocals'}) to import it alone.")
        return [(str(sources[0]), umx_state_of(data))]
    if isinstance(data, dict):
        names = [str(name) for name in data]
        if sources is not None and list(sources) != names:
            raise PackageError(f"the config names the sources {list(sources)}, the data "
                               f"{names}: drop the config's.")
        return [(name, umx_state_of(value)) for name, value in zip(names, data.values())]
    states = [umx_state_of(value) for value in data]
    if sources is None or len(sources) != len(states):
        raise PackageError(f"{len(states)} Open-Unmix networks need as many target names, in "
                           f"order: give `sources` in the config.")
    return list(zip([str(source) for source in sources], states))


def convert_umx(data: tp.Any, config: tp.Optional[dict]) -> dict:
    """An `xumx` package (`bridge=False`) from Open-Unmix networks."""
    kwargs, checks = our_kwargs(config)
    pairs = named_umx_states(data, kwargs.get('sources'))
    kwargs['sources'] = [source for source, _ in pairs]
    state: tp.Dict[str, torch.Tensor] = {}
    shapes, found = [], {}
    for index, (source, network_state) in enumerate(pairs):
        where = f"the Open-Unmix network of {source!r}"
        network, legacy = umx_network(network_state, where)
        for key, value in legacy.items():
            if found.setdefault(key, value) != value:
                raise PackageError(f"{where} has {key}={value}, the others {found[key]}: the "
                                   f"files are not one model's.")
        shapes.append(architecture(network, where))
        state.update({f'networks.{index}.{key}': value for key, value in network.items()})
    return finish(shapes, found, kwargs, checks, state, bridge=False)


def convert_xumx(data: dict, config: tp.Optional[dict]) -> dict:
    """An `xumx` package (`bridge=True`) from asteroid's XUMX (package or state dict)."""
    packaged = not is_xumx_state(data)
    args = (data.get('model_args') or {}) if packaged else {}
    if not isinstance(args, dict):
        raise PackageError("the XUMX package's model_args is not a mapping.")
    kwargs, checks = our_kwargs({'args': args})   # asteroid's own: the unknown are ignored
    extra, extra_checks = our_kwargs(config)
    kwargs.update(extra)
    checks.update(extra_checks)
    state_dict = data['state_dict'] if packaged else data
    sources, networks, found = xumx_networks(state_dict, kwargs.get('sources'),
                                             "the XUMX state dict")
    kwargs['sources'] = sources
    shapes = [architecture(network, f"the XUMX network of {source!r}")
              for source, network in zip(sources, networks)]
    state = {f'networks.{index}.{key}': value
             for index, network in enumerate(networks) for key, value in network.items()}
    return finish(shapes, found, kwargs, checks, state, bridge=True)


def finish(shapes: tp.List[dict], found: dict, kwargs: dict, checks: dict,
           state: tp.Dict[str, torch.Tensor], bridge: bool) -> dict:
    """The package, its arguments checked against its tensors."""
    kwargs = model_kwargs(shapes, found, kwargs, checks, bridge)
    check_shapes(kwargs, state)
    return {'model': 'xumx', 'kwargs': kwargs, 'state': state}


def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """An `xumx` package from Open-Unmix networks or asteroid's XUMX (see the module
    docstring); `config`: open-unmix's json, asteroid's `model_args` names or ours."""
    if is_xumx(data):
        return convert_xumx(data, config)
    if not matches(data):
        raise PackageError("not Open-Unmix or X-UMX weights: expected open-unmix's per-target "
                           "state dicts (fc1.weight, lstm.*, fc3.weight, input_mean...) or "
                           "asteroid's XUMX (model_args, state_dict with layer_enc.*).")
    return convert_umx(data, config)


# ------------------------------------------------------------------ files

def target_name(path: Path) -> str:
    """The target of an open-unmix file: its name, less the hub's hash (`vocals-b62c91ce`)."""
    return re.sub(r'-[0-9a-f]{8,64}$', '', path.stem)


def source_key(name: str) -> tp.Tuple[int, str]:
    """Sort key: our MUSDB order first, then by name."""
    return (MUSDB_ORDER.index(name) if name in MUSDB_ORDER else len(MUSDB_ORDER), name)


def target_files(paths: tp.Union[str, Path, tp.Sequence[tp.Union[str, Path]]],
                 sources: tp.Optional[tp.Sequence[str]]) -> tp.List[tp.Tuple[str, Path]]:
    """(target, file) pairs: a folder's `*.pth` (those of `sources`, in that order, else
    all in `source_key` order), or the paths as given (named by `sources`, else by file)."""
    if not isinstance(paths, (str, Path)):
        files = [Path(path) for path in paths]
        names = list(sources) if sources is not None else [target_name(f) for f in files]
        if len(names) != len(files):
            raise PackageError(f"{len(files)} files need as many source names, got {names}.")
        return list(zip([str(name) for name in names], files))
    folder = Path(paths)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of Open-Unmix files (give a "
                                f"folder, or a list of files).")
    found: tp.Dict[str, tp.List[Path]] = {}
    for path in sorted(folder.glob('*.pth')):
        found.setdefault(target_name(path), []).append(path)
    if not found:
        raise FileNotFoundError(f"{folder} has no *.pth file.")
    names = list(sources) if sources is not None else sorted(found, key=source_key)
    pairs = []
    for name in names:
        if len(found.get(name, [])) != 1:
            raise FileNotFoundError(f"{folder} has {len(found.get(name, []))} files of target "
                                    f"{name!r} ({name}.pth or {name}-HASH.pth), not one; its "
                                    f"targets: {sorted(found)}.")
        pairs.append((str(name), found[name][0]))
    return pairs


def read_json(path: Path) -> dict:
    """A json file as data, or a PackageError naming it."""
    try:
        with open(path) as file:
            data = json.load(file)
    except (OSError, ValueError) as error:
        raise PackageError(f"{path} is not a json file separator can read ({error}).") \
            from None
    if not isinstance(data, dict):
        raise PackageError(f"{path} holds a {type(data).__name__}, not a mapping.")
    return data


def folder_config(folder: Path, targets: tp.Sequence[str]) -> dict:
    """open-unmix's `separator.json` and the first `TARGET.json` of a model folder, as one
    flat config (their `args`, less the file's own `target`)."""
    config: tp.Dict[str, tp.Any] = {}
    for target in targets:
        path = folder / f'{target}.json'
        if path.is_file():
            flat, _ = flat_config(read_json(path))
            kwargs, checks = our_kwargs({'args': flat}, str(path))
            config.update(kwargs)
            config.update({key: value for key, value in checks.items()
                           if key in ('max_bin', 'window_length', 'spec_power')})
            break
    if (folder / 'separator.json').is_file():
        kwargs, _ = our_kwargs({'args': read_json(folder / 'separator.json')})
        config.update(kwargs)
    config.pop('sources', None)
    return config


def convert_files(paths: tp.Union[str, Path, tp.Sequence[tp.Union[str, Path]]],
                  sources: tp.Optional[tp.Sequence[str]] = None,
                  config: tp.Optional[dict] = None) -> dict:
    """An `xumx` package (Open-Unmix) from open-unmix's per-target files: a folder (its
    `*.pth`, with its `separator.json` and `TARGET.json`) or a list of `.pth` / `.chkpnt`
    paths, named by `sources` (default: the files' names). `config` (ours or open-unmix's)
    overrides the folder's. Read as data (`read_checkpoint`), checked like any import
    (`convert_checkpoint`: every tensor mapped)."""
    from . import convert_checkpoint, read_checkpoint
    if sources is None and config:
        sources = our_kwargs(config)[0].get('sources')
    pairs = target_files(paths, sources)
    merged: tp.Dict[str, tp.Any] = {}
    if isinstance(paths, (str, Path)):
        merged.update(folder_config(Path(paths), [name for name, _ in pairs]))
    if config:
        kwargs, checks = our_kwargs(config)
        merged.update({**kwargs, **checks})
    merged.pop('sources', None)
    merged.pop('target', None)
    data = {name: read_checkpoint(path) for name, path in pairs}
    for name, path in pairs:
        if umx_state_of(data[name]) is None:
            raise PackageError(f"{path} is not an Open-Unmix network's state dict (fc1.weight,"
                               f" lstm.*, fc3.weight, input_mean...).")
    name = ', '.join(str(path) for _, path in pairs)
    return convert_checkpoint(data, merged or None, format=FORMAT, name=name)
