"""Published checkpoints as separator packages: Demucs release packages, lucidrains' RoFormer
state dicts (Music-Source-Separation-Training's checkpoints), Open-Unmix, Spleeter...

One module per format in this package, each with:

    FORMAT: str                       the name `tools.import_weights --format` accepts
    SAFE_GLOBALS: list (optional)     placeholder classes the format's pickles name (e.g. the
                                      class path Demucs stores in its packages), let through
                                      `torch.load(weights_only=True)` as inert values
    matches(data) -> bool             whether `data` (as `read_checkpoint` returns it) is one
    convert(data, config=None) -> dict
        a separator package: {'model': registry name, 'args': [], 'kwargs': {...}, 'state': {...}}
        (plain types only); `config`: the architecture's hyper-parameters when the checkpoint
        does not carry them (a dict, e.g. MSST's yaml as read by `read_config`)
    reads(path) -> bool, read(path)   (optional) a format whose files are not PyTorch's:
                                      whether `path` is one (name, signature), and its content
                                      as data (e.g. nnabla's `.h5`, read with h5py)

Reading is data only: `torch.load(weights_only=True)` (or a format's own `read`); nothing a
file names is imported or called (the placeholders are classes of our own, with the names the
pickles expect).
"""
import importlib
import typing as tp
from pathlib import Path

import yaml

from ..states import PACKAGE_FORMAT, NotData, PackageError, Unreadable, build_model, safe_load

# The modules of this package, tried in this order.
FORMATS = ('demucs', 'roformer', 'mdx23c', 'scnet', 'spleeter', 'umx', 'xumx_nnabla')


def importers() -> tp.List[tp.Any]:
    """The importer modules that exist (a format whose module is not written yet is skipped)."""
    found = []
    for name in FORMATS:
        try:
            found.append(importlib.import_module(f'{__name__}.{name}'))
        except ModuleNotFoundError as error:
            if error.name != f'{__name__}.{name}':
                raise
    return found


def read_checkpoint(path: tp.Union[str, Path]) -> tp.Any:
    """The content of a published checkpoint, as data: tensors, numbers, strings, lists, dicts
    (and the formats' inert placeholders)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    for module in importers():   # a format of its own (nnabla's HDF5): its reader
        if hasattr(module, 'read') and module.reads(path):
            return module.read(path)
    placeholders = [klass for module in importers()
                    for klass in getattr(module, 'SAFE_GLOBALS', [])]
    try:
        return safe_load(path, placeholders)
    except NotData as error:
        raise PackageError(f"{path} names {error.name}, which is not data; separator "
                           f"imports nothing a file names (the formats it reads: "
                           f"{', '.join(FORMATS)}).") from None
    except Unreadable as error:
        raise PackageError(f"{path} is not a PyTorch checkpoint separator can read "
                           f"({error.reason}): it is corrupt, truncated, or another kind of "
                           f"file.") from None


class ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads `!!python/tuple` (MSST's configs write their
    `freqs_per_bands` so) as a list: still data only, nothing is imported or called."""


ConfigLoader.add_constructor('tag:yaml.org,2002:python/tuple',
                             lambda loader, node: loader.construct_sequence(node, deep=True))


def read_config(path: tp.Union[str, Path, None]) -> tp.Optional[dict]:
    """A yaml config (e.g. MSST's `config_*.yaml`) as plain data (`ConfigLoader`, a safe
    loader): no tag of it is constructed but `!!python/tuple`, read as a list."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with open(path) as file:
            data = yaml.load(file, Loader=ConfigLoader)
    except yaml.YAMLError as error:
        raise PackageError(f"{path} is not a yaml file separator can read ({error}).") from None
    if not isinstance(data, dict):
        raise PackageError(f"{path} holds a {type(data).__name__}, not a config mapping.")
    return data


def convert_checkpoint(data: tp.Any, config: tp.Optional[dict] = None,
                       format: tp.Optional[str] = None, name: str = 'the checkpoint') -> dict:
    """A separator package (format 2) from checkpoint content; `format` forces an importer."""
    modules = importers()
    if format is not None:
        chosen = [module for module in modules if module.FORMAT == format]
        if not chosen:
            raise PackageError(f"unknown format {format!r}; the formats are "
                               f"{', '.join(module.FORMAT for module in modules)}.")
    else:
        chosen = [module for module in modules if module.matches(data)]
        if not chosen:
            raise PackageError(f"{name} is in none of the formats separator imports "
                               f"({', '.join(module.FORMAT for module in modules)}): name one "
                               f"with --format, and its config with --config if it has no "
                               f"hyper-parameters of its own.")
    package = chosen[0].convert(data, config)
    package = {'format': PACKAGE_FORMAT, 'args': [], **package,
               'imported': {'format': chosen[0].FORMAT, 'from': str(name)}}
    model = build_model(package)
    missing, unexpected = model.load_state_dict(package['state'], strict=False)
    if missing or unexpected:
        raise PackageError(f"{name}: the {chosen[0].FORMAT} importer left tensors unmapped "
                           f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}).")
    return package


def import_checkpoint(path: tp.Union[str, Path], config: tp.Union[str, Path, None] = None,
                      format: tp.Optional[str] = None) -> dict:
    """A published checkpoint file (and its yaml config, if it needs one) as a package."""
    return convert_checkpoint(read_checkpoint(path), read_config(config), format, str(path))
