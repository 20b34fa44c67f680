"""Atomic writes: whole files or the previous version, full disks named, stems included;
folders whole, old or new, whatever instant their writer is killed at."""
import collections
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile as sf
import torch

from separator import atomic
from separator.separate import get_parser
from separator.track_io import StemWriter

from .conftest import KILL_AT_RENAMES


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_file_is_written_whole_or_left_as_it_was(tmp_path):
    path = tmp_path / 'sub' / 'scores.json'
    atomic.write_json(path, {'a': 1})
    assert json.loads(path.read_text()) == {'a': 1}
    # Not the 0600 of a bare mkstemp: a release model or a bag is readable like any file.
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(KeyError):
        with atomic.atomic_file(path) as fout:
            fout.write('{"a": ')
            raise KeyError('crash halfway')
    assert json.loads(path.read_text()) == {'a': 1}
    assert os.listdir(path.parent) == ['scores.json']


def test_full_disk_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / 'list.txt'
    atomic.write_text(path, 'kept\n')
    with pytest.raises(OSError, match=r'No space left on device while writing .*list\.txt; '
                       r'the previous version .* is intact\. Free some disk space'):
        with atomic.atomic_file(path) as fout:
            fout.write('partial')
            raise OSError(errno.ENOSPC, 'No space left on device')
    assert path.read_text() == 'kept\n' and os.listdir(tmp_path) == ['list.txt']
    # C libraries fail with no errno (libsndfile: "System error."): the free space tells.
    error = RuntimeError('System error.')
    assert not atomic.is_disk_full(error, path)
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(atomic.shutil, 'disk_usage', lambda folder: usage(10, 10, 0))
    assert atomic.is_disk_full(error, path)
    assert not atomic.is_disk_full(KeyError('a bug'), path)
    assert not atomic.is_disk_full(OSError(errno.EACCES, 'denied'), path)


def test_folder_is_replaced_whole_and_stale_ones_removed(tmp_path):
    folder = tmp_path / 'track'
    with atomic.atomic_folder(folder) as tmp:
        (tmp / 'a.wav').write_text('one')
    with pytest.raises(ValueError):
        with atomic.atomic_folder(folder) as tmp:
            (tmp / 'b.wav').write_text('two')
            raise ValueError('crash halfway')
    assert os.listdir(tmp_path) == ['track'] and os.listdir(folder) == ['a.wav']
    with atomic.atomic_folder(folder) as tmp:
        (tmp / 'b.wav').write_text('two')
    assert os.listdir(folder) == ['b.wav']
    # A writer killed before it cleaned up: what it left goes once its process is gone,
    # never what a live writer is using, nor other targets, nor the target in place.
    dead = _dead_pid()
    left = [f'.track.tmp-{dead}-abcd', f'.track.old-{dead}-abcd']
    kept = [f'.other.tmp-{dead}-abcd', f'.other.old-{dead}-abcd',
            f'.track.tmp-{os.getpid()}-live', f'.track.old-{os.getpid()}-live']
    for name in left + kept:
        (tmp_path / name).mkdir()
    atomic.remove_stale_folders(tmp_path, 'track')
    assert sorted(os.listdir(tmp_path)) == sorted(['track'] + kept)
    assert os.listdir(folder) == ['b.wav']


def _dead_pid() -> int:
    """The id of a process that has exited."""
    return int(subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                              capture_output=True, text=True, check=True).stdout)


OLD = {'a.wav': 'old a', 'b.wav': 'old b'}
NEW = {'a.wav': 'new a', 'c.wav': 'new c', 'd.wav': 'new d'}

# A child process replaces OLD by NEW in `track` and dies (os._exit) at one instant.
_KILLED_WRITER = KILL_AT_RENAMES + textwrap.dedent('''
    import shutil
    from separator import atomic
    folder = sys.argv[1]
    real_rmtree = shutil.rmtree
    def rmtree(path, ignore_errors=False):
        if where == 'deleting the old copy' and os.path.exists(path):
            os.remove(os.path.join(path, sorted(os.listdir(path))[0]))
            os._exit(9)
        real_rmtree(path, ignore_errors=ignore_errors)
    shutil.rmtree = rmtree
    with atomic.atomic_folder(folder) as tmp:
        for index, (name, text) in enumerate(NEW.items()):
            if where == 'filling' and index == 1:
                os._exit(9)
            with open(os.path.join(tmp, name), 'w') as fout:
                fout.write(text)
    os._exit(0)
''')


def _contents(folder: Path) -> dict:
    return {path.name: path.read_text() for path in folder.iterdir()}


@pytest.mark.parametrize('where, expected', [
    ('filling', OLD), ('before rename 1', OLD), ('after rename 1', OLD),
    ('after rename 2', NEW), ('after rename 3', NEW), ('deleting the old copy', NEW),
    ('nowhere', NEW)])
def test_folder_writer_killed_at_any_instant_leaves_old_or_new(tmp_path, where, expected):
    """Renames: 1 the old folder aside, 2 the new one in, 3 the old copy to its deletion
    name. After the recovery of the next start, the folder is whole: old, or new once
    renamed in; and nothing else is left."""
    folder = tmp_path / 'track'
    with atomic.atomic_folder(folder) as tmp:
        for name, text in OLD.items():
            (tmp / name).write_text(text)
    code = f'NEW = {NEW!r}\n' + _KILLED_WRITER
    result = subprocess.run([sys.executable, '-c', code, str(folder), where],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == (0 if where == 'nowhere' else 9), result.stderr
    atomic.remove_stale_folders(tmp_path, 'track')
    assert os.listdir(tmp_path) == ['track']
    assert _contents(folder) == expected


def test_recovery_puts_back_the_old_copy_of_any_target(tmp_path):
    """`remove_stale_folders(parent)` (all targets, as the label-noise writer calls it)."""
    dead = _dead_pid()
    for name in ['one', 'two']:
        old = tmp_path / f'.{name}.old-{dead}-abcd'
        old.mkdir()
        (old / 'a.wav').write_text(f'old {name}')
        (tmp_path / f'.{name}.tmp-{dead}-abcd').mkdir()
    (tmp_path / 'two').mkdir()
    (tmp_path / 'two' / 'a.wav').write_text('new two')
    atomic.remove_stale_folders(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ['one', 'two']
    assert _contents(tmp_path / 'one') == {'a.wav': 'old one'}
    assert _contents(tmp_path / 'two') == {'a.wav': 'new two'}


def test_every_rename_is_made_durable(tmp_path, monkeypatch):
    """The folder holding a rename is fsynced after it, before anything else happens."""
    events = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(source, target):
        events.append(('rename', Path(target).name))
        real_replace(source, target)

    def fsync(fd):
        if os.path.isdir(f'/proc/self/fd/{fd}'):
            events.append(('fsync', Path(os.readlink(f'/proc/self/fd/{fd}')).name))
        real_fsync(fd)

    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'fsync', fsync)
    atomic.write_text(tmp_path / 'a.txt', 'one')
    assert events == [('rename', 'a.txt'), ('fsync', tmp_path.name)]
    events.clear()
    with atomic.atomic_folder(tmp_path / 'track') as tmp:
        (tmp / 'a.wav').write_text('one')
    with atomic.atomic_folder(tmp_path / 'track') as tmp:
        (tmp / 'a.wav').write_text('two')
    renames = [name for kind, name in events if kind == 'rename']
    assert len(renames) == 4     # in; then aside, in, to its deletion name
    assert events == [event for name in renames
                      for event in [('rename', name), ('fsync', tmp_path.name)]]


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    checkpoint = tmp_path / 'checkpoint.th'
    atomic.write_text(checkpoint, 'kept')
    left = [tmp_path / '.checkpoint.th.k1ll3d.tmp', tmp_path / '.checkpoint.th.x2.tmp']
    others = [tmp_path / '.history.json.k1ll3d.tmp', tmp_path / 'checkpoint.th.tmp']
    for path in left + others:
        path.write_text('partial')
    assert sorted(atomic.remove_temporaries(checkpoint)) == sorted(left)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [checkpoint, *others])


class _FullDiskSink:
    """What soundfile does when the disk fills up mid-stem."""

    def write(self, frames):
        raise sf.LibsndfileError(2, prefix='Error writing: ')  # "System error."

    def close(self):
        pass


@pytest.mark.parametrize('clip_mode', ['rescale', 'clamp'])
def test_stem_on_a_full_disk_fails_clearly_and_keeps_the_previous_one(tmp_path, monkeypatch,
                                                                      clip_mode):
    target = tmp_path / 'vocals.wav'
    args = get_parser().parse_args(['song.wav', '--clip-mode', clip_mode])
    writer = StemWriter(target, 100, 2, args)                             # a previous result
    writer.write(torch.full((2, 10), 0.5))
    writer.close()
    assert sf.info(str(target)).frames == 10 and os.listdir(tmp_path) == ['vocals.wav']
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    writer = StemWriter(target, 100, 2, args)
    writer.sink = _FullDiskSink()
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(atomic.shutil, 'disk_usage', lambda folder: usage(10, 10, 0))
    with pytest.raises(OSError, match=r'No space left on device while writing .*vocals\.wav'):
        writer.write(torch.zeros(2, 50))
    writer.abort()
    assert sf.info(str(target)).frames == 10 and os.listdir(tmp_path) == ['vocals.wav']
    # Another failure of the library is still an OSError naming the stem, which the command
    # reports before going on with its next track.
    monkeypatch.undo()
    writer = StemWriter(target, 100, 2, args)
    writer.sink = _FullDiskSink()
    with pytest.raises(OSError, match=r'Could not write .*vocals\.wav'):
        writer.write(torch.zeros(2, 50))
    writer.abort()
    assert os.listdir(tmp_path) == ['vocals.wav']
