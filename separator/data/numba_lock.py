"""One process at a time runs the first call of a numba-compiled function (librosa's).

librosa's beat tracker is a numba `guvectorize(cache=True)`: its first call in a process
compiles it, or loads it from numba's on-disk cache. Two processes compiling it at the same time
can write a cache whose halves disagree (numba issue #10128: a function's `.nbc` and its
`guf-*.nbc` with different ABI tags), and from then on every process that loads that cache dies
of a segmentation fault in the gufunc, until the cache files are deleted. It happens whenever
the cache is cold: a fresh install analysed by `ProcessPoolExecutor` workers, or two pytest
workers.

`first_call(name)` holds an exclusive lock on a per-user file while the first call named `name`
runs in this process: the first process compiles and writes the cache, the next ones wait and
then load a complete one. Later calls in the same process take no lock.
"""
import contextlib
import os
import tempfile
import threading
import typing as tp
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock (numba's cache race stays possible there)
    fcntl = None  # type: ignore

_ready: tp.Set[str] = set()
_in_process = threading.Lock()


def lock_path() -> Path:
    """The file whose lock serializes first calls (one per user: a lock file made by another
    user might not be writable)."""
    return Path(tempfile.gettempdir()) / f'separator-numba-{os.getuid()}.lock'


@contextlib.contextmanager
def first_call(name: str) -> tp.Iterator[None]:
    """Run the body under the cross-process lock if no call named `name` has completed in this
    process yet."""
    if name in _ready:
        yield
        return
    with _in_process, _file_lock():
        yield
        _ready.add(name)


@contextlib.contextmanager
def _file_lock() -> tp.Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(lock_path(), 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
