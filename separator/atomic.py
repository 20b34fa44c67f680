"""Atomic writes: every file the project writes appears whole or not at all.

A file is written into a hidden temporary file in its own folder (the same file system, so the
final rename is atomic), flushed to disk, then renamed over its target; a folder (a track's
stems) is built as a hidden temporary folder and swapped in by renames (the old folder aside,
the new one in, then the old one deleted), so a kill at any instant leaves the whole old or the
whole new folder, which `remove_stale_folders` puts back in place on the next start. Every
rename is made durable by an fsync of the folder that holds it. On any failure the temporary is
removed and the previous version of the target, if any, is left intact; a full disk is reported
as such, naming the file. Files get the usual permissions (0666 less the umask), not the 0600
of `tempfile.mkstemp`, so checkpoints and release models stay readable by the group as any
other file.
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


def fsync_folder(folder: PathLike) -> None:
    """Make the renames done in `folder` durable: without it a power loss can undo them."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename(source: PathLike, target: PathLike) -> None:
    """`os.replace(source, target)` (atomic, in one file system), made durable."""
    os.replace(source, target)
    fsync_folder(Path(target).parent)


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = 'w',
                previous: tp.Optional[PathLike] = None) -> tp.Iterator[tp.IO]:
    """`with atomic_file(path, 'wb') as fout: ...` writes `path` whole, or leaves it as it was.

    With `previous` (a path in the same folder), the version of `path` being replaced becomes
    `previous`, by a rename (no copy), just before the new one is renamed in: at every instant
    `path` or `previous` holds a whole version (between the two renames only `previous`)."""
    path = Path(path)
    tmp = temporary_path(path)
    aside = False
    try:
        with open(tmp, mode) as fout:
            yield fout
            fout.flush()
            os.fsync(fout.fileno())
        if previous is not None and path.exists():
            aside = True
            rename(path, previous)
        rename(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if aside and not path.exists():        # the new one could not be renamed in
            rename(previous, path)
        explain_disk_full(error, path)
        raise


def write_text(path: PathLike, text: str) -> None:
    with atomic_file(path) as fout:
        fout.write(text)


def write_json(path: PathLike, data: tp.Any, indent: tp.Optional[int] = 2) -> None:
    write_text(path, json.dumps(data, indent=indent) + '\n')


TMP, OLD = 'tmp', 'old'   # `.NAME.tmp-PID-XXXX`: being written; `.NAME.old-PID-XXXX`: replaced


@contextlib.contextmanager
def atomic_folder(folder: PathLike) -> tp.Iterator[Path]:
    """`with atomic_folder(folder) as tmp:` fill `tmp`; it then replaces `folder` (if any).

    `tmp` is `.FOLDER.tmp-PID-XXXX` next to `folder`. Once it is filled, `folder` is renamed
    aside to `.FOLDER.old-PID-XXXX`, `tmp` is renamed to `folder`, and the old copy is
    deleted. A writer killed in between leaves `folder` whole (old or new) or, between the
    two renames, the old copy aside: `remove_stale_folders` puts it back once the writer's
    process is gone, and removes what else it left."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    prefix = f'.{folder.name}.{TMP}-{os.getpid()}-'
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=prefix))
    os.chmod(tmp, _FOLDER_MODE)
    old = folder.parent / f'.{folder.name}.{OLD}-{os.getpid()}-{tmp.name[len(prefix):]}'
    try:
        yield tmp
        if folder.exists():
            rename(folder, old)
        rename(tmp, folder)
        if old.exists():
            # Deleted under the temporary's name: a partly deleted copy never passes for
            # a whole one that recovery would put back.
            rename(old, tmp)
    except BaseException as error:
        if old.exists() and not folder.exists():   # the new one could not be renamed in
            rename(old, folder)
        explain_disk_full(error, folder)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _writer_is_gone(hidden: Path, kind: str) -> bool:
    """Whether the process whose id is in the name of `hidden` (`.NAME.KIND-PID-XXXX`) has
    exited (a live process of another user counts as alive)."""
    try:
        os.kill(int(hidden.name.rsplit(f'.{kind}-', 1)[1].split('-')[0]), 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return True
    except PermissionError:
        return False
    return False


def remove_stale_folders(parent: PathLike, name: str = '*') -> None:
    """Recover from the writers of `atomic_folder` in `parent` (for targets matching `name`,
    a glob) that were killed, once their process is gone: a missing target gets its old
    copy back (the writer died between its two renames: the previous version is restored);
    the other old copies and the temporary folders are removed. A target in place is never
    touched. Call it before looking at the targets, when no live writer can be renaming."""
    parent = Path(parent)
    for old in sorted(parent.glob(f'.{name}.{OLD}-*')):
        if not _writer_is_gone(old, OLD):
            continue
        target = parent / old.name[1:].rsplit(f'.{OLD}-', 1)[0]
        if not target.exists():
            rename(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in parent.glob(f'.{name}.{TMP}-*'):
        if _writer_is_gone(tmp, TMP):
            shutil.rmtree(tmp, ignore_errors=True)
