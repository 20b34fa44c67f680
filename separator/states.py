"""Model packages and safe checkpoint I/O.

A model is saved as a *package*: its class, the arguments it was built with and its
weights, so that loading it needs no Hydra config. Every write goes to a temporary file
in the same folder and is renamed over the target, so a crash or a full disk never
leaves a truncated file where a good one was.
"""
import functools
import inspect
import os
import tempfile
import typing as tp
from pathlib import Path

import torch


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


def load_model(package: tp.Union[dict, str, Path], strict: bool = True) -> torch.nn.Module:
    """Rebuild a model from a package (or the path of one)."""
    if not isinstance(package, dict):
        package = safe_load(package)
    klass = _resolve_class(package['klass'])
    sig = inspect.signature(klass)
    kwargs = dict(package['kwargs'])
    unknown = [key for key in kwargs if key not in sig.parameters]
    if unknown:
        raise ValueError(f"Model package for {package['klass']} has arguments unknown to this "
                         f"version of the code: {unknown}. Export it again or upgrade separator.")
    model = klass(*package['args'], **kwargs)
    model.load_state_dict(package['state'], strict=strict)
    return model


def copy_state(state: dict) -> dict:
    """Deep copy of a state dict on CPU, detached from the live parameters."""
    return {key: value.detach().to('cpu', copy=True) for key, value in state.items()}


def atomic_save(obj: tp.Any, path: tp.Union[str, Path]) -> None:
    """`torch.save` to a temporary file next to `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as fout:
            torch.save(obj, fout)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError) and error.errno == 28:  # ENOSPC
            raise OSError(error.errno, f"No space left on device while writing {path}; "
                          f"the previous version of this file is intact. Free some disk "
                          f"space and run again.") from error
        raise


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
