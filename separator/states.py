"""Model packages and safe checkpoint I/O.

A model is saved as a *package*: the registry name of its architecture (`separator.models`),
the arguments it was built with and its weights, so that loading it needs no Hydra config.
Every write goes to a temporary file in the same folder and is renamed over the target, so a
crash or a full disk never leaves a truncated file where a good one was.

A package or checkpoint read from disk is data, never code: it is read with
`torch.load(weights_only=True)` (tensors, numbers, strings, lists, dicts; no pickled object
can run anything), and its model is built only from the registry of `separator.models`, by
name. A file that names anything else is refused; nothing it names is imported or called.

The weights are a state dict, or, for an XP trained with DiffQ (`quant.diffq`), the
bit-packed quantized state of `diffq` marked with `__quantized`, as in Demucs: `load_model`
restores either transparently.
"""
import contextlib
import inspect
import logging
import pickle
import re
import typing as tp
from pathlib import Path

import torch

from .atomic import atomic_file, rename
from .models import MODELS

logger = logging.getLogger(__name__)

# Version of the package layout; a package of a newer layout is refused with a clear error.
# 1: `klass` (a class path); 2: `model` (a registry name), `format`.
PACKAGE_FORMAT = 2


class PackageError(ValueError):
    """A model package cannot be used; the message names what is wrong and the fix."""


def registry_name(model: torch.nn.Module) -> str:
    """The name under which the class of `model` is registered in `separator.models`."""
    for name, klass in MODELS.items():
        if type(model) is klass:
            return name
    raise PackageError(f"{type(model).__name__} is not registered in separator.models.MODELS: "
                       f"add it there to save it as a package.")


def serialize_model(model: torch.nn.Module, state: tp.Optional[dict] = None,
                    **extra) -> dict:
    """Return a package for `model`: its registry name, init args and kwargs, state dict,
    extras. `klass` (the class path) is informational: loading never reads it as code."""
    args, kwargs = model._init_args_kwargs
    klass = model.__class__
    if state is None:
        state = model.state_dict()
    return {'format': PACKAGE_FORMAT, 'model': registry_name(model),
            'klass': klass.__module__ + '.' + klass.__name__,
            'args': args, 'kwargs': kwargs, 'state': copy_state(state), **extra}


def model_class(package: dict) -> type:
    """The registered class a package names, without importing or calling anything it names.

    A package of format 1 names its class by path (`klass`): only the exact path of a
    registered class is accepted."""
    if not isinstance(package, dict):
        raise PackageError(f"a model package is a dict, not {type(package).__name__}.")
    version = package.get('format', 1)
    if not isinstance(version, int) or version > PACKAGE_FORMAT:
        raise PackageError(f"the package has format {version!r}, written by a newer separator "
                           f"(this one reads up to {PACKAGE_FORMAT}): upgrade separator "
                           f"(`pip install -U separator`).")
    models = MODELS
    known = ', '.join(sorted(models))
    if 'model' in package:
        name = package['model']
        if isinstance(name, str) and name in models:
            return models[name]
        raise PackageError(f"unknown model {name!r}; the known models are {known}.")
    path = package.get('klass')
    for klass in models.values():
        if path == f'{klass.__module__}.{klass.__name__}':
            return klass
    raise PackageError(f"the package names the class {path!r}, which is not a separator "
                       f"model; the known models are {known}. Nothing it names is imported.")


def architecture(package: dict) -> dict:
    """The part of a package (or of a checkpoint's `package`) that says which model to build:
    format, registry name, class path, args and kwargs, in today's layout (a package of
    format 1 is checked and converted)."""
    klass = model_class(package)
    name = next(name for name, registered in MODELS.items() if registered is klass)
    return {'format': PACKAGE_FORMAT, 'model': name,
            'klass': f'{klass.__module__}.{klass.__name__}',
            'args': package.get('args', ()), 'kwargs': package.get('kwargs', {})}


def build_model(package: dict) -> torch.nn.Module:
    """The model of a package, freshly initialised (its weights are not loaded)."""
    klass = model_class(package)
    args, kwargs = package.get('args', ()), package.get('kwargs', {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise PackageError(f"the arguments of {klass.__name__} must be a list and a dict, not "
                           f"{type(args).__name__} and {type(kwargs).__name__}.")
    sig = inspect.signature(klass)
    unknown = [key for key in kwargs if key not in sig.parameters]
    if unknown:
        raise PackageError(f"the package of {klass.__name__} has arguments unknown to this "
                           f"version of the code: {unknown}. Export it again or upgrade "
                           f"separator.")
    try:
        sig.bind(*args, **kwargs)
    except TypeError as error:
        raise PackageError(f"the arguments of {klass.__name__} do not fit it ({error}): "
                           f"export the model again.") from None
    return klass(*args, **kwargs)


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
DIFFQ_CLASS = 'diffq.DiffQuantizer'   # the only quantizer a quantized state may name


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
    `get_quantized_state`), marked so that `set_state` knows them. diffq puts its quantizer
    class in the state; it is stored by name (`DIFFQ_CLASS`), so the package stays data."""
    state = quantizer.get_quantized_state(packed=True)
    state['meta'] = {**state['meta'], 'klass': DIFFQ_CLASS}
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
    quantizer = diffq.DiffQuantizer(model, **_diffq_kwargs(state.get('meta', {})))
    try:
        quantizer.restore_quantized_state(state)
    except (AssertionError, IndexError, KeyError, RuntimeError, TypeError) as error:
        raise ValueError(f"the quantized state does not match the parameters of "
                         f"{type(model).__name__} ({error or 'diffq assertion'}): export the "
                         f"XP again.") from error
    finally:
        quantizer.detach()


def _diffq_kwargs(meta: tp.Any) -> dict:
    """The arguments of the DiffQuantizer a quantized state was made with, checked: the
    class must be diffq's DiffQuantizer (by name, or the class itself in older packages),
    and only its own keyword arguments are passed; `diffq.restore_quantized_state`, which
    calls whatever class the state names, is not used."""
    import diffq
    klass = meta.get('klass') if isinstance(meta, dict) else None
    if klass not in (DIFFQ_CLASS, diffq.DiffQuantizer):
        raise PackageError(f"the quantized state names the quantizer {klass!r}, not "
                           f"{DIFFQ_CLASS}: export the XP again.")
    kwargs = meta.get('init_kwargs', {})
    allowed = set(inspect.signature(diffq.DiffQuantizer).parameters) - {'model'}
    if not isinstance(kwargs, dict) or set(kwargs) - allowed:
        raise PackageError(f"the quantized state has quantizer arguments {kwargs!r}; "
                           f"DiffQuantizer takes {sorted(allowed)}: export the XP again.")
    return kwargs


def checkpoint_weights(checkpoint: dict, quantized: bool = False) -> dict:
    """The weights to release from a solver checkpoint: its best state (else its last
    weights) without DiffQ's bit widths, LoRA adapters merged; with `quantized`, for an XP
    trained with `quant.diffq`, its bit-packed quantized state instead."""
    state = best_weights(checkpoint)
    if checkpoint.get('lora'):   # adapters folded into plain weights: the plain architecture
        from .lora import merged_state
        return merged_state(build_model(checkpoint['package']), state, checkpoint['lora'])
    kwargs = checkpoint.get('quantizer')
    if not (quantized and kwargs):
        return float_state(state)
    model = build_model(checkpoint['package'])
    quantizer = get_quantizer(model, **kwargs)
    model.load_state_dict(state)
    with torch.no_grad():
        return quantized_state(quantizer)


# ------------------------------------------------------------------ solver checkpoints
# A checkpoint is the solver's state (`Solver._state_dict`): its weights (`model`), the best
# state, optimizer, EMAs, history... and `package` (the model's architecture, no weights),
# `quantizer` (DiffQ's arguments), `sig`, `world_size`. Other modules read it through these.

def best_weights(checkpoint: dict) -> dict:
    """The best state of a checkpoint (by validation), else its last weights."""
    return checkpoint.get('best_state') or checkpoint['model']


def checkpoint_architecture(checkpoint: dict) -> dict:
    """`architecture` of the model a checkpoint trains."""
    return architecture(checkpoint['package'])


def checkpoint_of_package(package: dict) -> dict:
    """A model package (weights included) as the checkpoint of an XP that ends with them: what
    `continue_from=FILE` starts from, read with the functions above like any XP's."""
    return {'package': architecture(package), 'model': package['state'],
            'best_state': package['state']}


def checkpoint_model(checkpoint: dict) -> torch.nn.Module:
    """The model of a checkpoint with its best weights (the quantized ones for an XP trained
    with DiffQ: those its validation and test ran with), float32, in eval mode, on CPU."""
    state = checkpoint_weights(checkpoint, quantized=True)
    return load_model({**checkpoint['package'], 'state': state}).float().eval()


def architecture_difference(checkpoint: dict, model: torch.nn.Module) -> str:
    """Why the weights of `checkpoint` do not fit `model`, in one line: the two models and
    the constructor arguments in which they differ."""
    theirs = checkpoint_architecture(checkpoint)
    args, kwargs = model._init_args_kwargs
    mine = {'model': registry_name(model), 'kwargs': kwargs}
    if theirs['model'] != mine['model']:
        return (f"that XP trained a {theirs['model']}, this one a {mine['model']}: start "
                f"from an XP of the same architecture (model={theirs['model']}), or drop "
                f"continue_from.")
    keys = sorted(set(theirs['kwargs']) | set(mine['kwargs']))
    diffs = [f"{key}: {theirs['kwargs'].get(key)!r} there, {mine['kwargs'].get(key)!r} here"
             for key in keys if theirs['kwargs'].get(key) != mine['kwargs'].get(key)]
    detail = '; '.join(diffs) or 'the same arguments, other weights'
    return (f"both are {mine['model']}, but they differ in {detail}: their weights do not "
            f"fit; set the same {mine['model']}.* as that XP, or drop continue_from.")


def last_test_metrics(history: tp.Sequence[dict]) -> dict:
    """The test metrics of the last epoch that has some, or {}."""
    for metrics in reversed(history):
        if metrics.get('test'):
            return dict(metrics['test'])
    return {}


def release_package(checkpoint: dict, half: bool = False,
                    quantize: tp.Optional[str] = None) -> dict:
    """The release package of an XP checkpoint (`tools.export`): architecture, best weights
    (float32, float16 with `half`, DiffQ's bit-packed ones with `quantize='diffq'` for XPs
    trained with `quant.diffq`), signature, last test metrics, epochs."""
    for key in ('package', 'model'):
        if key not in checkpoint:
            raise PackageError(f"the checkpoint has no {key!r} entry: it was not written by "
                               f"separator's solver.")
    if quantize not in (None, 'diffq'):
        raise PackageError(f"unknown quantization {quantize!r}: use diffq.")
    if quantize and half:
        raise PackageError("--half and --quantize diffq exclude each other: a quantized "
                           "package has its own small weights.")
    if quantize and not checkpoint.get('quantizer'):
        sig = checkpoint.get('sig') or 'SIG'
        raise PackageError(f"XP {sig} was not trained with DiffQ (quant.diffq is null), so it "
                           f"has no learnt bit widths to quantize with. Export it without "
                           f"--quantize, or train a copy with DiffQ and export that one: "
                           f"`dora run -f {sig} quant.diffq=0.0003` (the weight of the "
                           f"model size penalty; see quant.* in conf/config.yaml).")
    if quantize:
        state = checkpoint_weights(checkpoint, quantized=True)
    else:
        dtype = torch.float16 if half else None
        state = {key: value.detach().to('cpu', dtype=dtype if value.is_floating_point()
                                        else None, copy=True)
                 for key, value in checkpoint_weights(checkpoint).items()}
    history = list(checkpoint.get('history') or [])
    try:
        header = checkpoint_architecture(checkpoint)
    except PackageError as error:
        raise PackageError(f"the checkpoint's model: {error}") from None
    return {**header, 'state': state, 'sig': checkpoint.get('sig'),
            'metrics': last_test_metrics(history), 'epochs': len(history), 'half': half,
            'quantize': quantize}


@contextlib.contextmanager
def swap_state(model: torch.nn.Module, state: tp.Optional[dict]) -> tp.Iterator[None]:
    """Run a block with `state` loaded into `model` (None: as it is), then put its own
    weights back: validation of an EMA, evaluation of the best state."""
    if state is None:
        yield
        return
    backup = copy_state(model.state_dict())
    model.load_state_dict(state)
    try:
        yield
    finally:
        model.load_state_dict(backup)


def copy_state(state: dict) -> dict:
    """Deep copy of a state dict on CPU, detached from the live parameters."""
    return {key: value.detach().to('cpu', copy=True) for key, value in state.items()}


def atomic_save(obj: tp.Any, path: tp.Union[str, Path],
                save: tp.Optional[tp.Callable[[tp.Any, tp.BinaryIO], None]] = None) -> None:
    """`save(obj, file)` (`torch.save`, or e.g. `torch.jit.save`) to a temporary file next to
    `path`, then rename it over `path`."""
    with atomic_file(path, 'wb') as fout:
        (save or torch.save)(obj, fout)


class Unreadable(RuntimeError):
    """A file `safe_load` could not read as a PyTorch file (`reason`: what torch said)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"Could not read {path} ({reason}): the file is corrupt or truncated.")
        self.reason = reason


class NotData(RuntimeError):
    """A file that names something other than data (`name`: the class or function a pickle
    would import): `safe_load` refused to read it."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def safe_load(path: tp.Union[str, Path], allowed: tp.Sequence[type] = ()) -> tp.Any:
    """`torch.load(weights_only=True)` on CPU: tensors, numbers, strings, lists and dicts
    only, so that reading a file never runs code it names. A missing file raises
    FileNotFoundError; one holding other objects (a pickled class or function) NotData, a
    corrupt or truncated one Unreadable (a RuntimeError), each naming the file.

    Let through as values, never called: the classes `allowed` (e.g. an importer's inert
    placeholders), and `diffq.DiffQuantizer`, which the quantized packages of earlier
    versions hold (diffq puts it in its state)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        try:
            with torch.serialization.safe_globals(list(allowed)):
                return torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as error:
            if 'diffq.diffq.DiffQuantizer' not in str(error):
                raise
            import diffq
            with torch.serialization.safe_globals([*allowed, diffq.DiffQuantizer]):
                return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        if 'unsupported global' in str(error).lower():
            named = re.search(r'unsupported global:? (?:global )?([\w.]+)', str(error),
                              re.IGNORECASE)
            raise NotData(
                f"{path} holds objects other than tensors, numbers, strings, lists and dicts "
                f"({_first_line(error)}); separator reads only data, never code, from a file: "
                f"use a model exported by separator.",
                named.group(1) if named else _first_line(error)) from None
        raise Unreadable(path, _first_line(error)) from None
    except Exception as error:
        first = _first_line(error).split('. ')[0]   # torch goes on with advice
        named = first if first == type(error).__name__ else f"{type(error).__name__}: {first}"
        raise Unreadable(path, named) from None


def _first_line(error: BaseException) -> str:
    """What torch says is wrong, without its boilerplate (whose advice, to load with
    `weights_only=False`, is what separator never does)."""
    text = str(error)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unsupported = [line for line in lines if 'unsupported global' in line.lower()]
    return (unsupported or lines or [type(error).__name__])[0].rstrip('.')


CHECKPOINT = 'checkpoint.th'   # the solver's checkpoint, in every XP folder
PREVIOUS_CHECKPOINT = 'checkpoint.prev.th'   # the one it replaced: the fallback if it is corrupt


def checkpoint_path(xp_folder: tp.Union[str, Path]) -> Path:
    return Path(xp_folder) / CHECKPOINT


def previous_checkpoint_path(xp_folder: tp.Union[str, Path]) -> Path:
    return Path(xp_folder) / PREVIOUS_CHECKPOINT


def has_checkpoint(xp_folder: tp.Union[str, Path]) -> bool:
    """Whether the XP has saved a checkpoint: the latest or, if a save was killed between its
    two renames, only the previous one."""
    return checkpoint_path(xp_folder).exists() or previous_checkpoint_path(xp_folder).exists()


def save_checkpoint(state: dict, xp_folder: tp.Union[str, Path]) -> None:
    """Write the XP's checkpoint atomically. The one it replaces becomes the previous one by a
    rename (no copy of gigabytes), just before the new one is renamed in: at every instant a
    whole checkpoint exists (the latest, or between the two renames the previous one)."""
    with atomic_file(checkpoint_path(xp_folder), 'wb',
                     previous=previous_checkpoint_path(xp_folder)) as fout:
        torch.save(state, fout)


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split())


def load_checkpoint(xp_folder: tp.Union[str, Path]) -> tp.Tuple[dict, Path]:
    """The XP's latest checkpoint that reads, and its path.

    A latest checkpoint that cannot be read (corrupt, truncated) or is missing (a save killed
    between its two renames) falls back to the previous one, one epoch older, with a warning
    naming both files and the epoch lost. Raises FileNotFoundError when the XP has no
    checkpoint, RuntimeError naming both files when none of them reads."""
    latest, previous = checkpoint_path(xp_folder), previous_checkpoint_path(xp_folder)
    if not has_checkpoint(xp_folder):
        raise FileNotFoundError(f"{latest} does not exist.")
    try:
        return safe_load(latest), latest
    except FileNotFoundError:
        problem = f"{latest} is missing (a save was interrupted)."
    except RuntimeError as error:
        problem = _one_line(error)
    try:
        state = safe_load(previous)
    except FileNotFoundError:
        raise RuntimeError(f"{problem} There is no previous checkpoint ({previous.name}) to "
                           f"fall back to: delete {latest} to start the XP over.") from None
    except RuntimeError as error:
        raise RuntimeError(f"Neither {latest.name} nor {previous.name} in {latest.parent} can "
                           f"be read: delete both to start the XP over. {problem} "
                           f"{_one_line(error)}") from None
    epoch = len(state.get('history', []))
    logger.warning(
        "%s Falling back to the previous checkpoint %s (epoch %d): epoch %d is lost.",
        problem, previous, epoch, epoch + 1)
    return state, previous


def promote_previous_checkpoint(xp_folder: tp.Union[str, Path]) -> None:
    """Rename the previous checkpoint over the latest one (unreadable or missing), once an XP
    has resumed from it: the next save then keeps it as the previous one, never the
    unreadable one (at every instant a whole checkpoint exists)."""
    rename(previous_checkpoint_path(xp_folder), checkpoint_path(xp_folder))


def checkpoint_world_size(xp_folder: tp.Union[str, Path]) -> tp.Optional[int]:
    """The number of processes that wrote the XP's checkpoint (the latest that reads, else
    the previous one, as the XP will resume from it), if it has one that says. Reads only
    that entry (mmap), not the weights."""
    for path in (checkpoint_path(xp_folder), previous_checkpoint_path(xp_folder)):
        try:
            state = torch.load(path, map_location='cpu', mmap=True, weights_only=True)
            return state.get('world_size')
        except Exception:  # missing or unreadable: the XP itself will say why, naming it
            continue
    return None


def read_xp_checkpoint(sig: str, xps: tp.Union[str, Path], context: str) -> dict:
    """The checkpoint of XP `sig` in Dora's XP folder `xps` (its previous one, with a warning,
    if the latest cannot be read). A missing XP, no checkpoint or no readable one raises
    ValueError: `context` (e.g. "continue_from=SIG"), then what is wrong and the command that
    fixes it."""
    folder = Path(xps) / sig
    if not folder.is_dir():
        raise ValueError(f"{context}: no XP with that signature in {folder.parent}. Check the "
                         f"signature with `dora info -f {sig}`.")
    try:
        return load_checkpoint(folder)[0]
    except FileNotFoundError:
        raise ValueError(f"{context}: XP {sig} has no checkpoint ({checkpoint_path(folder)}); "
                         f"it has not finished an epoch yet. Run it first: "
                         f"`dora run -f {sig}`.") from None
    except RuntimeError as error:
        raise ValueError(f"{context}: {error} Then train the XP again: "
                         f"`dora run -f {sig}`.") from error
