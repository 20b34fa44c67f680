"""Sony's own X-UMX weights (nnabla, github sony/ai-research-code `x-umx/`, the published
`x-umx.h5`) as an `xumx` package (`bridge=True`): the state-dict layout, the architecture
read from the shapes, the config and the defaults are `separator.importers.umx`'s (its
`architecture`, `our_kwargs`, `finish`...); this module only reads nnabla's file and names.

**The model** (ai-research-code `x-umx/model.py` at cfe96df, `OpenUnmix_CrossNet`; one
network per source SRC, built in the root parameter scope; test.py loads the file with
`nn.load_parameters` and builds it, with `max_bin` for 16 kHz at 44.1 kHz, nfft 4096):

* `input_mean_SRC`, `input_scale_SRC` `(max_bin,)`: initialised to -mean and 1 / std of the
  training set, applied as `(x + input_mean) * input_scale`: ours, as they are;
  `output_scale_SRC`, `output_mean_SRC` `(nfft // 2 + 1,)`: `x * output_scale + output_mean`,
  then ReLU: the mask, times the mixture magnitude: ours, as they are.
* `fcK_SRC` (`fc_bn`): `PF.affine(base_axis=2, with_bias=False)` then
  `PF.batch_normalization(axes=[2])`, both under the scope `fcK_SRC`: `fcK_SRC/affine/W`,
  `fcK_SRC/bn/{beta,gamma,mean,var}`. fc1: C x max_bin -> hidden (the input flattened as
  (channel, bin), as open-unmix), tanh; fc2: 2 hidden -> hidden, ReLU; fc3: hidden ->
  C x (nfft // 2 + 1).
* `lstm_SRC`: `PF.lstm(num_layers=3, bidirectional=True)` (dropout 0.4 in training only)
  with h, c of hidden // 2: `lstm_SRC/lstm/{weight_l0,weight,bias}`.
* the bridge: the fc1 outputs (after tanh) averaged over the sources are every LSTM's input;
  each source's (fc1 output, LSTM output) concatenated, averaged over the sources, is every
  fc2's input: our `bridge=True` (asteroid's XUMX computes the same).
* the STFT (`get_stft`): `F.stft(n_fft, n_hop, n_fft, window_type='hanning', center=True,
  pad_mode='reflect')`: unnormalised, the input statistics are in its scale (`utils.py`
  `get_statistics`): our `normalized_stft=False`. A stereo model (`nb_channels=2`, the
  only one the code builds) takes each channel's magnitude; a mono one their mean.
* separation (test.py): the four masks (bass, drums, vocals, other) times the mixture
  magnitude, then norbert's EM, one iteration (`--niter 1`), on each chunk of `--chunk-dur`
  seconds (the README: 10); ours runs it on windows of 300 frames (umx's defaults).

**nnabla's layers** (github sony/nnabla at 2814df0d, `python/src/nnabla/
parametric_functions.py`; the scopes are the `parametric_function_api` names):

* `affine/W` is `[inputs, outputs]` (`inp.shape[base_axis:]` flattened, then `n_outmaps`),
  used as x @ W: ours is W transposed.
* `bn/{beta,gamma,mean,var}` have the input's rank with 1 but on `axes`: `(1, 1, C)` here
  (frames, batch, features; `shape_stat`); eps 1e-5 (the default), in test mode
  `(x - mean) / sqrt(var + eps) * gamma + beta`: BatchNorm1d's bias, weight, running_mean,
  running_var, flattened.
* `lstm/weight_l0` `(D, 4, H, I + H)`, `lstm/weight` `(L - 1, D, 4, H, D H + H)` (absent for
  one layer), `lstm/bias` `(L, D, 4, H)` (D directions, forward first; H units per
  direction). Each gate's block is `[H, I + H]`: the first I columns multiply x_t, the last
  H h_{t-1}; the gate axis is in the order i, f, g (cell), o (`python/src/nnabla/utils/
  rnn.py` `_lstm`: `i_t, f_t, g_t, o_t` from `F.split(w, axis=0)`; the C++ reference
  `src/nbla/function/generic/lstm.cpp` `lstm_cell` alike; the cuDNN backend, which trained
  the model (`--context cudnn`), copies gate k to cuDNN's linear layer k, x part, and k + 4,
  h part: input, forget, cell, output: sony/nnabla-ext-cuda fcb922a, `src/nbla/cuda/cudnn/
  function/generic/lstm.cu` `copy_weight_bias_to_params`). PyTorch's order is i, f, g, o
  too (`GATES`), so the rows are kept; one bias per gate: PyTorch's `bias_ih`, with
  `bias_hh` zero. A bidirectional layer outputs (forward, backward) concatenated, as PyTorch.
* nnabla before 1.17 (the STFT ported to C++, 2021-02) computed `F.stft` / `F.istft` in
  Python with parameters: `conv_r`, `conv_i` (DFT x window) and `conv_cos`, `conv_sin`
  (inverse), each `(nfft // 2 + 1, 1, nfft)`, in the scope of the call (here the root). A
  file saved then holds them: read as checks (`conv_r[0, 0]` is the window: a periodic
  Hann of nfft, `np.hanning(nfft + 1)[:-1]`, as torch's), not mapped.

**The file** (nnabla `utils/get_file_handle.py` `_h5_parameter_file_saver`, through
`nn.save_parameters('*.h5')`): every parameter (`get_parameters(grad_only=False)`: the batch
statistics too) as one HDF5 dataset at its name (`hd[name] = array`: the `/` of the scope
are groups), with attributes `need_grad` and `index` (its creation order, which the loader
sorts by). `read` gives `{name: tensor}` in that order, as data (h5py; nothing in the file
is run; a dataset stored outside the file is refused): `separator.importers.read_checkpoint`
calls it for a `.h5` / `.hdf5` name or HDF5's signature.

**The sources**: the file's order (`index`: Sony's bass, drums, vocals, other), unless the
config's `sources` reorders them (the same names). The hop (1024 at nfft 4096) and rate
(44.1 kHz) are not in the file: umx's defaults, or a config (`nhop`, `sample_rate`, the
names of x-umx's args.py, or ours). Not imported: nnabla's UMX (one `.h5` per target,
without the source suffix) and `.nnp` / protobuf parameter files.
"""
import math
import re
import typing as tp
from pathlib import Path

import numpy as np
import torch

from . import umx
from ..states import PackageError

FORMAT = 'xumx_nnabla'
SUFFIXES = ('.h5', '.hdf5')
HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'   # at the start of the file (h5py writes no user block)

NNABLA_GATES = ('i', 'f', 'g', 'o')     # nnabla's gate axis (see the module docstring)
GATES = ('i', 'f', 'g', 'o')            # PyTorch's row blocks
FC1 = re.compile(r'fc1_(.+)/affine/W$')
AFFINES = ('fc1', 'fc2', 'fc3')
# our BatchNorm1d's names -> nnabla's, per `fcK_SRC/bn/`
NORM_NAMES = (('weight', 'gamma'), ('bias', 'beta'), ('running_mean', 'mean'),
              ('running_var', 'var'))
OUR_KEY = re.compile(r'networks\.(\d+)\.([\w.]+\w)')
STFT_BANKS = ('conv_r', 'conv_i', 'conv_cos', 'conv_sin')   # nnabla < 1.17's F.stft / istft


class NnablaParameters(dict):
    """nnabla's parameters as `read` gives them, `{name: tensor}` in the file's order, and the
    file they come from, which the errors name."""
    def __init__(self, items: tp.Iterable[tp.Tuple[str, torch.Tensor]], source: str):
        super().__init__(items)
        self.source = source


# ------------------------------------------------------------------ the file

def reads(path: Path) -> bool:
    """Whether `path` is an HDF5 file: its name, or HDF5's signature."""
    if Path(path).suffix.lower() in SUFFIXES:
        return True
    with open(path, 'rb') as file:
        return file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE


def dataset_tensor(dataset: tp.Any, path: Path) -> torch.Tensor:
    """One dataset's values, refused (naming it) unless numbers stored in the file."""
    name = dataset.name.lstrip('/')
    if dataset.is_virtual or dataset.external:
        raise PackageError(f"{path}: the dataset {name} is stored outside the file; separator "
                           f"reads only data the file holds.")
    if dataset.dtype.kind not in 'fiub':
        raise PackageError(f"{path}: the dataset {name} holds {dataset.dtype}, not numbers: "
                           f"not a parameter file.")
    try:
        values = np.asarray(dataset[()])
    except (OSError, ValueError) as error:
        raise PackageError(f"{path}: the dataset {name} cannot be read ({error}): the file is "
                           f"corrupt or truncated.") from None
    if values.dtype.kind == 'u' and values.dtype.itemsize > 1:   # torch has uint8 only
        values = values.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(values, values.dtype.newbyteorder('=')))


def read(path: tp.Union[str, Path]) -> NnablaParameters:
    """nnabla's `.h5` parameters (`nn.save_parameters`): every dataset at its name, in the
    order of their `index` attribute (then by name), as nnabla's loader does."""
    path = Path(path)
    try:
        import h5py
    except ModuleNotFoundError:
        raise PackageError(f"{path} is an HDF5 file: reading it needs h5py "
                           f"(pip install h5py).") from None
    try:
        with h5py.File(path, 'r') as file:
            datasets: tp.List[tp.Any] = []
            file.visititems(lambda name, item: datasets.append(item)
                            if isinstance(item, h5py.Dataset) else None)
            order = sorted(datasets, key=lambda item: (
                item.attrs.get('index', math.inf), item.name))
            items = [(item.name.lstrip('/'), dataset_tensor(item, path)) for item in order]
    except (OSError, KeyError, RuntimeError) as error:   # h5py's errors on bad metadata
        raise PackageError(f"{path} is not an HDF5 file separator can read ({error}): it is "
                           f"corrupt, truncated, or another kind of file.") from None
    return NnablaParameters(items, str(path))


# ------------------------------------------------------------------ recognising the content

def matches(data: tp.Any) -> bool:
    """nnabla's X-UMX parameters: `fc1_SRC/affine/W`, `lstm_SRC/lstm/weight_l0`,
    `input_mean_SRC` of some source."""
    if not isinstance(data, dict):
        return False
    sources = [match.group(1) for match in map(FC1.match, map(str, data)) if match]
    return any(f'lstm_{source}/lstm/weight_l0' in data and f'input_mean_{source}' in data
               for source in sources)


class Datasets:
    """The datasets, each taken once (`take`); the errors name the file and the key."""
    def __init__(self, data: dict):
        self.where = getattr(data, 'source', 'the nnabla parameters')
        self.left = dict(data)

    def error(self, key: str, message: str) -> PackageError:
        return PackageError(f"{self.where}: the dataset {key} {message}")

    def take(self, key: str, ndim: tp.Optional[int] = None) -> torch.Tensor:
        """The dataset `key` as float32 (of `ndim` dimensions if given), removed."""
        if key not in self.left:
            raise self.error(key, "is missing: not a complete X-UMX (nnabla) parameter file.")
        value = self.left.pop(key)
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor) or value.dtype == torch.bool \
                or value.is_complex():
            raise self.error(key, f"is a {type(value).__name__}, not an array of numbers.")
        if ndim is not None and value.dim() != ndim:
            raise self.error(key, f"has shape {tuple(value.shape)}, not {ndim} dimensions.")
        return value.float()

    def take_vector(self, key: str) -> torch.Tensor:
        """A per-feature dataset, of shape `(1, ..., 1, C)` (a BatchNorm's) or `(C,)`."""
        value = self.take(key)
        if value.dim() < 1 or any(size != 1 for size in value.shape[:-1]):
            raise self.error(key, f"has shape {tuple(value.shape)}, not (1, 1, C) nor (C,).")
        return value.reshape(-1)


# ------------------------------------------------------------------ nnabla -> our names

def lstm_state(datasets: Datasets, scope: str) -> tp.Dict[str, torch.Tensor]:
    """`nn.LSTM`'s tensors from nnabla's `SCOPE/lstm/{weight_l0,weight,bias}`."""
    first = datasets.take(f'{scope}/lstm/weight_l0', ndim=4)
    directions, gates, units, width = first.shape
    if gates != len(NNABLA_GATES) or directions not in (1, 2) or width <= units:
        raise datasets.error(f'{scope}/lstm/weight_l0', f"has shape {tuple(first.shape)}, not "
                             f"(directions, 4, units, inputs + units).")
    bias_key = f'{scope}/lstm/bias'
    bias = datasets.take(bias_key, ndim=4)
    layers = bias.shape[0]
    if tuple(bias.shape) != (layers, directions, gates, units) or layers < 1:
        raise datasets.error(bias_key, f"has shape {tuple(bias.shape)}, not (layers, "
                             f"{directions}, 4, {units}).")
    weights = [first]
    if layers > 1:
        key = f'{scope}/lstm/weight'
        rest = datasets.take(key, ndim=5)
        expected = (layers - 1, directions, gates, units, directions * units + units)
        if tuple(rest.shape) != expected:
            raise datasets.error(key, f"has shape {tuple(rest.shape)}, not {expected} "
                                 f"(from {bias_key}).")
        weights.extend(rest.unbind(0))
    order = [NNABLA_GATES.index(gate) for gate in GATES]
    state = {}
    for layer, weight in enumerate(weights):   # [D, 4, H, inputs + H]
        inputs = weight.shape[-1] - units
        for direction in range(directions):
            suffix = f'_l{layer}' + ('_reverse' if direction else '')
            gate_blocks = weight[direction, order]   # [4, H, inputs + H], PyTorch's order
            state['weight_ih' + suffix] = gate_blocks[..., :inputs].reshape(-1, inputs)
            state['weight_hh' + suffix] = gate_blocks[..., inputs:].reshape(-1, units)
            state['bias_ih' + suffix] = bias[layer, direction, order].reshape(-1)
            state['bias_hh' + suffix] = torch.zeros(len(GATES) * units)
    return state


def source_network(datasets: Datasets, source: str) -> tp.Dict[str, torch.Tensor]:
    """One source's `SourceNetwork` tensors (umx's names) from its nnabla parameters."""
    network = {}
    for name in umx.SCALES:
        network[name] = datasets.take_vector(f'{name}_{source}')
    for index, layer in enumerate(AFFINES, 1):
        scope = f'{layer}_{source}'
        network[f'{layer}.weight'] = datasets.take(f'{scope}/affine/W', ndim=2).t()
        for ours, theirs in NORM_NAMES:
            network[f'bn{index}.{ours}'] = datasets.take_vector(f'{scope}/bn/{theirs}')
    network.update({f'lstm.{key}': value
                    for key, value in lstm_state(datasets, f'lstm_{source}').items()})
    return umx.with_counters(network)


def stft_window(datasets: Datasets) -> tp.Dict[str, int]:
    """The FFT size of nnabla < 1.17's STFT filter banks, if the file has them (its window
    checked: a periodic Hann, as ours), as umx's `found` {'window': nfft}."""
    found: tp.Dict[str, int] = {}
    for key in STFT_BANKS:
        if key not in datasets.left:
            continue
        bank = datasets.take(key, ndim=3)
        nfft = bank.shape[-1]
        if tuple(bank.shape) != (nfft // 2 + 1, 1, nfft) or found.get('window', nfft) != nfft:
            raise datasets.error(key, f"has shape {tuple(bank.shape)}, not (nfft // 2 + 1, 1, "
                                 f"nfft) of one nfft: not nnabla's STFT filters.")
        found['window'] = nfft
        if key == 'conv_r':   # the DFT's bin 0 is the window itself
            hann = torch.hann_window(nfft, dtype=torch.float64)
            if not torch.allclose(bank[0, 0].double(), hann, atol=1e-5):
                raise datasets.error(key, "is not the DFT of a periodic Hann window of nfft "
                                     "samples: only that STFT is imported.")
    return found


def their_name(key: str, sources: tp.Sequence[str]) -> str:
    """The nnabla dataset our tensor `networks.I.NAME` comes from."""
    index, name = OUR_KEY.fullmatch(key).groups()
    source = sources[int(index)]
    layer, _, rest = name.partition('.')
    if layer == 'lstm':   # weight_ih_l0, bias_hh_l2_reverse...
        kind, number = re.match(r'(weight|bias)_\w\w_l(\d+)', rest).groups()
        dataset = 'bias' if kind == 'bias' else 'weight_l0' if number == '0' else 'weight'
        return f'lstm_{source}/lstm/{dataset}'
    if layer in AFFINES:
        return f'{layer}_{source}/affine/W'
    if layer.startswith('bn'):
        return f'fc{layer[2:]}_{source}/bn/{dict(NORM_NAMES).get(rest, rest)}'
    return f'{name}_{source}'


def file_sources(data: dict, config_sources: tp.Optional[tp.Sequence[str]],
                 where: str) -> tp.List[str]:
    """The sources, in the file's order (that of `fc1_SRC/affine/W`), or the config's."""
    found = [match.group(1) for match in map(FC1.match, map(str, data)) if match]
    if config_sources is None:
        return found
    if sorted(map(str, config_sources)) != sorted(found):
        raise PackageError(f"{where}: the config names the sources {list(config_sources)}, "
                           f"the file has {found}: give the same names (in any order).")
    return [str(source) for source in config_sources]


def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """An `xumx` package (`bridge=True`) from nnabla's X-UMX parameters (`read`'s)."""
    if not matches(data):
        raise PackageError("not nnabla X-UMX parameters: expected fc1_SRC/affine/W, "
                           "lstm_SRC/lstm/weight_l0 and input_mean_SRC datasets.")
    datasets = Datasets(data)
    kwargs, checks = umx.our_kwargs(config)
    sources = file_sources(data, kwargs.get('sources'), datasets.where)
    kwargs['sources'] = sources
    found = stft_window(datasets)
    networks = [source_network(datasets, source) for source in sources]
    if datasets.left:
        raise PackageError(f"{datasets.where}: datasets of no X-UMX parameter of the sources "
                           f"{sources}: {list(datasets.left)[:5]}.")
    shapes = [umx.architecture(network, f"{datasets.where}, the network of {source!r} "
                                        f"(fc1_{source}/affine/W, input_mean_{source})")
              for source, network in zip(sources, networks)]
    state = {f'networks.{index}.{key}': value
             for index, network in enumerate(networks) for key, value in network.items()}
    try:
        return umx.finish(shapes, found, kwargs, checks, state, bridge=True)
    except PackageError as error:   # umx's words name our tensors: say which datasets
        message = OUR_KEY.sub(lambda match: f"{their_name(match.group(0), sources)} "
                              f"({match.group(0)})", str(error))
        raise PackageError(f"{datasets.where}: {message}") from None
