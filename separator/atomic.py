"""Atomic writes: every file the project writes appears whole or not at all.

A file is written into a hidden temporary file in its own folder (the same file system, so the
final rename is atomic), flushed to disk, then renamed over its target; a folder (a track's
stems) is built as a hidden temporary folder and renamed into place. On any failure the
temporary is removed and the previous version of the target, if any, is left intact; a full
disk is reported as such, naming the file. Files get the usual permissions (0666 less the
umask), not the 0600 of `tempfile.mkstemp`, so checkpoints and release models stay readable
by the group as any other file.
"""
import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
import typing as tp
from pathlib import Path

PathLike = tp.Union[str, Path]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_FOLDER_MODE = 0o777 & ~_umask()


def temporary_path(path: PathLike, suffix: str = '.tmp') -> Path:
    """A new, empty hidden file next to `path` (created, so no other writer takes the name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=suffix)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    return Path(tmp)


def remove_temporaries(path: PathLike) -> tp.List[Path]:
    """Remove the temporary files `atomic_file` left next to `path` when its writer was killed
    mid-write (SIGKILL, preemption, a crash); return them. Only for a file that one process
    writes, when it is not writing: an XP's checkpoint when the XP starts."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f'.{glob.escape(path.name)}.*.tmp'):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def is_disk_full(error: BaseException, path: PathLike) -> bool:
    """Whether writing `path` failed with `error` for want of space (a full disk or a quota).

    C libraries (libsndfile: "System error.") report a failed write with no errno: then the
    free space left next to `path` tells."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(Path(path).parent).free < 2 ** 20
    except OSError:
        return False


def explain_disk_full(error: BaseException, path: PathLike) -> None:
    """Raise a clear error naming `path` if `error` is a full disk (or quota); else return."""
    if is_disk_full(error, path):
        raise OSError(errno.ENOSPC, f"No space left on device while writing {path}; the "
                      f"previous version of this file, if any, is intact. Free some disk "
                      f"space and run again.") from error


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = 'w') -> tp.Iterator[tp.IO]:
    """`with atomic_file(path, 'wb') as fout: ...` writes `path` whole, or leaves it as it was."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode) as fout:
            yield fout
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        explain_disk_full(error, path)
        raise


def write_text(path: PathLike, text: str) -> None:
    with atomic_file(path) as fout:
        fout.write(text)


def write_json(path: PathLike, data: tp.Any, indent: tp.Optional[int] = 2) -> None:
    write_text(path, json.dumps(data, indent=indent) + '\n')


@contextlib.contextmanager
def atomic_folder(folder: PathLike) -> tp.Iterator[Path]:
    """`with atomic_folder(folder) as tmp:` fill `tmp`; it then replaces `folder` (if any).

    `tmp` is `.FOLDER.tmp-PID-XXXX` next to `folder`: a writer killed before it could clean up
    leaves it, and `remove_stale_folders` removes it once its process is gone."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f'.{folder.name}.tmp-{os.getpid()}-'))
    os.chmod(tmp, _FOLDER_MODE)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException as error:
        explain_disk_full(error, folder)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_folders(parent: PathLike, name: str = '*') -> None:
    """Remove the temporary folders `atomic_folder` left in `parent` for `name` (a glob) when
    their writer was killed: those whose process no longer exists."""
    for tmp in Path(parent).glob(f'.{name}.tmp-*'):
        try:
            os.kill(int(tmp.name.rsplit('.tmp-', 1)[1].split('-')[0]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # a live process of another user
            pass
