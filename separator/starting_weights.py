"""Where the first weights of an XP come from: `continue_from=SIG`, the checkpoint of another
XP, or `continue_from=FILE`, a published checkpoint (a Demucs package, an MSST RoFormer state
dict, ...) read by `separator.importers`, with `continue_config=YAML` when the file does not
carry its hyper-parameters.

One key for both, because both mean the same thing to a researcher ("fine-tune from these
weights"); a value with a `/` or a checkpoint suffix is a file, anything else a signature
(Dora's signatures are 8 hexadecimal digits). With a file, the architecture is the file's: the
model is built from what the checkpoint says (the config's `model` section is not used), and
must separate the XP's `dset.sources` at its sample rate and channel count.
"""
import functools
import typing as tp
from pathlib import Path

import torch

from .paths import absolute_path
from .states import (build_model, checkpoint_architecture, checkpoint_of_package,
                     has_checkpoint, load_checkpoint, read_xp_checkpoint)

CHECKPOINT_SUFFIXES = ('.th', '.pt', '.pth', '.ckpt', '.bin')


def is_checkpoint_file(value: tp.Any) -> bool:
    """`continue_from`'s value names a file rather than an XP."""
    return isinstance(value, str) and ('/' in value or value.endswith(CHECKPOINT_SUFFIXES))


@functools.lru_cache(maxsize=2)
def _import(path: str, config: tp.Optional[str]) -> dict:
    from .importers import import_checkpoint
    return import_checkpoint(path, config)


def imported_package(cfg: tp.Any) -> dict:
    """The package of `continue_from=FILE`, checked against the XP's data: same sources, sample
    rate and channels. Errors name the key, the file and the fix."""
    path = absolute_path(cfg.continue_from)
    config = cfg.get('continue_config')
    config_path = str(absolute_path(config)) if config else None
    key = f"continue_from={cfg.continue_from}"
    if not path.is_file():
        raise ValueError(f"{key}: {path} is not a file. Give the path of a published checkpoint, "
                         f"or the signature of an XP.")
    if config_path and not Path(config_path).is_file():
        raise ValueError(f"continue_config={config}: {config_path} is not a file.")
    try:
        package = _import(str(path), config_path)
    except ValueError as error:
        raise ValueError(f"{key}: {error}") from None
    kwargs = package.get('kwargs', {})
    wanted = {'sources': list(cfg.dset.sources), 'samplerate': cfg.dset.samplerate,
              'audio_channels': cfg.dset.channels}
    fixes = {'sources': 'dset.sources', 'samplerate': 'dset.samplerate',
             'audio_channels': 'dset.channels'}
    for name, value in wanted.items():
        theirs = kwargs.get(name)
        if theirs is None:
            continue
        if name == 'sources':
            theirs, value = f"[{','.join(theirs)}]", f"[{','.join(value)}]"
        if theirs != value:
            raise ValueError(f"{key}: the checkpoint's {name} is {theirs}, the XP's "
                             f"{fixes[name]} is {value}: set {fixes[name]}={theirs} (or start "
                             f"from a checkpoint made for this data).")
    return package


def start_model(cfg: tp.Any, folder: tp.Optional[Path] = None) -> tp.Optional[torch.nn.Module]:
    """With `continue_from=FILE`, the model the file describes (not yet loaded with its
    weights); once the XP has a checkpoint, the architecture it trained, so that the XP resumes
    even if the file has moved. None with a signature or no `continue_from`."""
    if not is_checkpoint_file(cfg.continue_from):
        return None
    if folder is not None and has_checkpoint(folder):
        return build_model(checkpoint_architecture(load_checkpoint(folder)[0]))
    return build_model(imported_package(cfg))


def start_checkpoint(cfg: tp.Any, xp_folder: Path) -> dict:
    """The checkpoint whose best weights start the XP: that of XP `continue_from`, or the
    imported file's weights as one."""
    if is_checkpoint_file(cfg.continue_from):
        return checkpoint_of_package(imported_package(cfg))
    return read_xp_checkpoint(cfg.continue_from, Path(xp_folder).parent,
                              f"continue_from={cfg.continue_from}")

