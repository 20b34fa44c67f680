"""Paths of the config, resolved as the user meant them."""
import typing as tp
from pathlib import Path


def absolute_path(path: tp.Union[str, Path]) -> Path:
    """Resolve a config path against the folder the command was started from (Hydra runs
    inside the XP folder, not there)."""
    try:
        from hydra.utils import to_absolute_path
        return Path(to_absolute_path(str(path)))
    except ValueError:  # outside a Hydra run
        return Path(path).resolve()
