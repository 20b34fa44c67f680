"""A file lock for work that several processes (XPs of a grid) may start at once."""
import contextlib
import fcntl
import typing as tp
from pathlib import Path


@contextlib.contextmanager
def locked(target: Path) -> tp.Iterator[None]:
    """Hold an exclusive lock on `.NAME.lock` next to `target` (local file systems)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f'.{target.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
