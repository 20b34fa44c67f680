"""SCNet checkpoints (starrytong/SCNet, MIT): the files its training writes and its README
publishes (SCNet, SCNet-large), and the same weights as bare state dicts (MSST's copies).

The reference's solver saves a dict with `state` (the last weights), `best_state` (the best
validated weights, what its `inference.py` loads), `optimizer`, `epoch`, `ema_*`...; under
`accelerate`'s DDP the names may start with `module.` (its loader strips it). This importer
takes `best_state`, else `state`, else the dict itself as the state dict.

The checkpoints carry no hyper-parameters: they are in the reference's yaml (`conf/
config.yaml`, or the `config.yaml` published with SCNet-large), whose `model:` section has
the constructor arguments of `separator.models.scnet.SCNet` under the same names; `data:`
(the reference's) or `audio:` (MSST's) gives the sample rate and training segment. Without a
config, the published SCNet config is assumed; weights of another size (SCNet-large) are
refused with the fix: pass its config.yaml.
"""
import typing as tp

import torch

from ..states import PackageError

FORMAT = 'scnet'

# The published SCNet config (conf/config.yaml of starrytong/SCNet).
DEFAULTS: tp.Dict[str, tp.Any] = {
    'sources': ['drums', 'bass', 'other', 'vocals'], 'audio_channels': 2,
    'dims': [4, 32, 64, 128], 'nfft': 4096, 'hop_size': 1024, 'win_size': 4096,
    'normalized': True, 'band_SR': [0.175, 0.392, 0.433], 'band_stride': [1, 4, 16],
    'band_kernel': [3, 4, 16], 'conv_depths': [3, 2, 1], 'compress': 4, 'conv_kernel': 3,
    'num_dplayer': 6, 'expand': 1}
SAMPLERATE = 44100
SEGMENT = 11.
# Names only SCNet's modules have.
MARKERS = ('encoder.0.SDlayer.convs.0.weight',
           'separation_net.dp_modules.0.lstm_layers.0.weight_ih_l0')


def _strip(state: dict) -> dict:
    """The state dict without DDP's `module.` prefix."""
    return {(key[len('module.'):] if key.startswith('module.') else key): value
            for key, value in state.items()}


def state_of(data: tp.Any) -> tp.Optional[dict]:
    """The weights of an SCNet checkpoint (`best_state`, else `state`, else the dict itself),
    names without `module.`; None if `data` holds no state dict."""
    if not isinstance(data, dict):
        return None
    for key in ('best_state', 'state'):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if not data or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                           for key, value in data.items()):
        return None
    return _strip(data)


def matches(data: tp.Any) -> bool:
    """Whether `data` is an SCNet checkpoint (its weights have SCNet's module names)."""
    state = state_of(data)
    return state is not None and all(marker in state for marker in MARKERS)


def hyper_parameters(config: tp.Optional[dict]) -> tp.Tuple[dict, int, float]:
    """The SCNet arguments, sample rate and segment of a reference yaml (None: the published
    SCNet config). Unknown keys of its `model:` section are refused (another variant)."""
    if config is None:
        return dict(DEFAULTS), SAMPLERATE, SEGMENT
    model = config.get('model', config)
    if not isinstance(model, dict):
        raise PackageError(f"the SCNet config's `model:` section is a "
                           f"{type(model).__name__}, not a mapping of SCNet's arguments.")
    unknown = sorted(set(model) - set(DEFAULTS))
    if unknown:
        raise PackageError(f"the SCNet config's `model:` section has keys {unknown} that "
                           f"starrytong/SCNet's SCNet does not take (known: "
                           f"{', '.join(DEFAULTS)}): is it another SCNet variant?")
    kwargs = {**DEFAULTS, **model}
    samplerate, segment = SAMPLERATE, SEGMENT
    data, audio = config.get('data'), config.get('audio')
    if isinstance(data, dict):          # the reference's training config
        samplerate = data.get('samplerate', samplerate)
        segment = data.get('segment', segment)
    elif isinstance(audio, dict):       # MSST's
        samplerate = audio.get('sample_rate', samplerate)
        if audio.get('chunk_size'):
            segment = audio['chunk_size'] / samplerate
    return kwargs, int(samplerate), float(segment)


def check_shapes(state: dict, kwargs: dict, given: bool) -> None:
    """The weights must have the names and shapes of the model `kwargs` describe."""
    from ..models.scnet import SCNet
    try:
        with torch.device('meta'):
            expected = SCNet(**kwargs).state_dict()
    except ValueError as error:
        raise PackageError(f"the SCNet config does not describe a model: {error}") from None
    fix = ("check the config's `model:` section" if given else
           "pass the yaml of these weights (e.g. SCNet-large's config.yaml) as its config")
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    if missing or unexpected:
        raise PackageError(f"the SCNet weights do not fit the config (missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}): {fix}.")
    wrong = [f"{name} {tuple(state[name].shape)} (config: {tuple(tensor.shape)})"
             for name, tensor in expected.items() if state[name].shape != tensor.shape]
    if wrong:
        raise PackageError(f"the SCNet weights have other shapes than the config gives "
                           f"({'; '.join(wrong[:3])}): {fix}.")


def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """A separator package of model `scnet` from an SCNet checkpoint and its yaml config."""
    state = state_of(data)
    if state is None:
        raise PackageError("not an SCNet checkpoint: no state dict in it (`best_state`, "
                           "`state`, or a dict of tensors).")
    kwargs, samplerate, segment = hyper_parameters(config)
    check_shapes(state, kwargs, config is not None)
    kwargs.update(samplerate=samplerate, segment=segment)
    kwargs = {key: list(value) if isinstance(value, tuple) else value
              for key, value in kwargs.items()}
    return {'model': 'scnet', 'kwargs': kwargs,
            'state': {name: tensor.float() if tensor.is_floating_point() else tensor
                      for name, tensor in state.items()}}
