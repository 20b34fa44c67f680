"""Atomic writes: whole files or the previous version, full disks named, stems included."""
import collections
import errno
import json
import os
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from separator import atomic
from separator.separate import get_parser
from separator.track_io import StemWriter


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
    # A writer killed before it cleaned up: its folder goes once its process is gone.
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / f'.track.tmp-{dead}-abcd').mkdir()
    (tmp_path / f'.other.tmp-{dead}-abcd').mkdir()
    (tmp_path / f'.track.tmp-{os.getpid()}-live').mkdir()
    atomic.remove_stale_folders(tmp_path, 'track')
    assert sorted(os.listdir(tmp_path)) == sorted(
        ['track', f'.other.tmp-{dead}-abcd', f'.track.tmp-{os.getpid()}-live'])


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
