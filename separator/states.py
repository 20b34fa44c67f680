"""Model packages and safe checkpoint I/O.

A model is saved as a *package*: its class, the arguments it was built with and its
weights, so that loading it needs no Hydra config. Every write goes to a temporary file
in the same folder and is renamed over the target, so a crash or a full disk never
leaves a truncated file where a good one was.

The weights are a state dict, or, for an XP trained with DiffQ (`quant.diffq`), the
bit-packed quantized state of `diffq` marked with `__quantized`, as in Demucs: `load_model`
restores either transparently.
"""
import functools
import inspect
import typing as tp
from pathlib import Path

import torch

from .atomic import atomic_file


def capture_init(init):
    """Decorate `__init__` so that the instance remembers its constructor arguments."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self._init_args_kwargs = (args, kwargs)
        init(self, *args, **kwargs)
    return __init__


def serialize_model(model: torch.nn.Module, state: tp.Optional[dict] = None,
                    **extra) -> dict:
    """Return a package for `model`: class, init args and kwargs, state dict, extras."""
    args, kwargs = model._init_args_kwargs
    klass = model.__class__
    if state is None:
        state = model.state_dict()
    return {'klass': klass.__module__ + '.' + klass.__name__,
            'args': args, 'kwargs': kwargs, 'state': copy_state(state), **extra}


def _resolve_class(path: str) -> type:
    module_name, _, name = path.rpartition('.')
    module = __import__(module_name, fromlist=[name])
    return getattr(module, name)


def build_model(package: dict) -> torch.nn.Module:
    """The model of a package, freshly initialised (its weights are not loaded)."""
    klass = _resolve_class(package['klass'])
    sig = inspect.signature(klass)
    kwargs = dict(package['kwargs'])
    unknown = [key for key in kwargs if key not in sig.parameters]
    if unknown:
        raise ValueError(f"Model package for {package['klass']} has arguments unknown to this "
                         f"version of the code: {unknown}. Export it again or upgrade separator.")
    return klass(*package['args'], **kwargs)


def load_model(package: tp.Union[dict, str, Path], strict: bool = True) -> torch.nn.Module:
    """Rebuild a model from a package (or the path of one), quantized or not."""
    if not isinstance(package, dict):
        package = safe_load(package)
    model = build_model(package)
    set_state(model, package['state'], strict=strict)
    return model


# ------------------------------------------------------------------ DiffQ quantization
QUANTIZED = '__quantized'   # marks a bit-packed DiffQ state, as in Demucs' packages
DIFFQ_SUFFIX = '_diffq'     # DiffQuantizer's suffix for the bit-width parameters it adds


def get_quantizer(model: torch.nn.Module, min_size: float, group_size: int) -> tp.Any:
    """A `diffq.DiffQuantizer` on `model`: it adds a learnt bit width (the parameter
    `NAME_diffq`) per `group_size` weights of every parameter larger than `min_size` MB.

    Hooks on `model` add quantization noise in train mode and swap in the quantized weights
    for every forward in eval mode. Set it up on the model itself, not on a DDP wrapper.
    """
    import diffq
    min_params = min_size * 2 ** 20 // 4            # diffq's own threshold
    bad = [name for name, param in model.named_parameters()
           if param.numel() > min_params and group_size and param.numel() % group_size]
    if bad:
        raise ValueError(f"quant.group_size={group_size} must divide the size of every "
                         f"parameter larger than quant.min_size={min_size} MB, not that of "
                         f"{bad[:3]}: raise quant.min_size or change quant.group_size.")
    return diffq.DiffQuantizer(model, min_size=min_size, group_size=group_size)


def quantizer_kwargs(quantizer: tp.Any) -> dict:
    """The arguments of `get_quantizer` that rebuild `quantizer` on a new model."""
    return {'min_size': quantizer.min_size, 'group_size': quantizer.group_size}


def quantized_state(quantizer: tp.Any) -> dict:
    """The bit-packed quantized weights of the quantizer's model (`diffq`'s
    `get_quantized_state`), marked so that `set_state` knows them."""
    state = quantizer.get_quantized_state(packed=True)
    state[QUANTIZED] = True
    return state


def float_state(state: dict) -> dict:
    """A state dict without DiffQ's bit widths: the float weights alone."""
    return {key: value for key, value in state.items() if not key.endswith(DIFFQ_SUFFIX)}


def set_state(model: torch.nn.Module, state: dict, strict: bool = True) -> None:
    """Load a state dict, or restore a quantized state (the model then holds the
    dequantized weights and no quantizer)."""
    if not state.get(QUANTIZED):
        model.load_state_dict(state, strict=strict)
        return
    try:
        import diffq
    except ImportError as error:
        raise ImportError(f"This model package is quantized with DiffQ: install it "
                          f"(`pip install diffq`). ({error})") from error
    try:
        diffq.restore_quantized_state(model, state)
    except AssertionError as error:
        raise ValueError(f"the quantized state does not match the parameters of "
                         f"{type(model).__name__} ({error or 'diffq assertion'}): export the "
                         f"XP again.") from error


def checkpoint_weights(checkpoint: dict, quantized: bool = False) -> dict:
    """The weights to release from a solver checkpoint: its best state (else its last
    weights) without DiffQ's bit widths; with `quantized`, for an XP trained with
    `quant.diffq`, its bit-packed quantized state instead."""
    state = checkpoint.get('best_state') or checkpoint['model']
    kwargs = checkpoint.get('quantizer')
    if not (quantized and kwargs):
        return float_state(state)
    model = build_model(checkpoint['package'])
    quantizer = get_quantizer(model, **kwargs)
    model.load_state_dict(state)
    with torch.no_grad():
        return quantized_state(quantizer)


def copy_state(state: dict) -> dict:
    """Deep copy of a state dict on CPU, detached from the live parameters."""
    return {key: value.detach().to('cpu', copy=True) for key, value in state.items()}


def atomic_save(obj: tp.Any, path: tp.Union[str, Path],
                save: tp.Optional[tp.Callable[[tp.Any, tp.BinaryIO], None]] = None) -> None:
    """`save(obj, file)` (`torch.save`, or e.g. `torch.jit.save`) to a temporary file next to
    `path`, then rename it over `path`."""
    with atomic_file(path, 'wb') as fout:
        (save or torch.save)(obj, fout)


def safe_load(path: tp.Union[str, Path]) -> tp.Any:
    """`torch.load` on CPU with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as error:
        raise RuntimeError(f"Could not read {path} ({error}). The file is corrupt or "
                           f"truncated: delete it to start over.") from error


CHECKPOINT = 'checkpoint.th'   # the solver's checkpoint, in every XP folder


def checkpoint_path(xp_folder: tp.Union[str, Path]) -> Path:
    return Path(xp_folder) / CHECKPOINT


def read_xp_checkpoint(sig: str, xps: tp.Union[str, Path], context: str) -> dict:
    """The checkpoint of XP `sig` in Dora's XP folder `xps`. A missing XP, a missing or a
    corrupt checkpoint raises ValueError: `context` (e.g. "continue_from=SIG"), then what is
    wrong and the command that fixes it."""
    folder = Path(xps) / sig
    if not folder.is_dir():
        raise ValueError(f"{context}: no XP with that signature in {folder.parent}. Check the "
                         f"signature with `dora info -f {sig}`.")
    path = checkpoint_path(folder)
    if not path.exists():
        raise ValueError(f"{context}: XP {sig} has no checkpoint ({path}); it has not "
                         f"finished an epoch yet. Run it first: `dora run -f {sig}`.")
    try:
        return safe_load(path)
    except RuntimeError as error:
        raise ValueError(f"{context}: {error} Then train the XP again: "
                         f"`dora run -f {sig}`.") from error
