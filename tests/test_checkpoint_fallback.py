"""The previous checkpoint: kept by every save, the fallback when the latest cannot be read.

Small state dicts first (the save killed at each instant, corrupt files, the errors); then
tiny XPs under Dora: a truncated checkpoint resumes from the previous one and ends exactly as
an uninterrupted run; two corrupt ones stop the XP with one error line naming both.
"""
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from separator import states
from separator.atomic import remove_temporaries

from .conftest import KILL_AT_RENAMES, TINY, assert_same_xp, run_dora, signature, xp_folder

LATEST, PREVIOUS = 'checkpoint.th', 'checkpoint.prev.th'


def _state(epochs: int) -> dict:
    """A checkpoint after `epochs` epochs: its history, and weights of a prime size."""
    return {'history': [{'epoch': epoch} for epoch in range(epochs)],
            'model': {'weight': torch.full((10007,), float(epochs))}}


def _epochs(state: dict) -> int:
    """The epochs of a checkpoint of `_state`, checking that its weights are of that epoch."""
    epochs = len(state['history'])
    assert torch.equal(state['model']['weight'], torch.full((10007,), float(epochs)))
    return epochs


def _truncate(path: Path) -> None:
    """Keep the first half of `path`, as a save cut short by a full disk or a crash would."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_every_save_keeps_the_previous_checkpoint(tmp_path):
    for epochs in [1, 2, 3]:
        states.save_checkpoint(_state(epochs), tmp_path)
    assert sorted(os.listdir(tmp_path)) == [PREVIOUS, LATEST]
    assert _epochs(states.safe_load(tmp_path / LATEST)) == 3
    assert _epochs(states.safe_load(tmp_path / PREVIOUS)) == 2
    state, path = states.load_checkpoint(tmp_path)
    assert (_epochs(state), path) == (3, tmp_path / LATEST)


# A child process saves the checkpoint of epoch 3 over those of epochs 2 and 1, and dies
# (os._exit) at one instant: writing, or before / after one of its two renames.
_KILLED_SAVE = KILL_AT_RENAMES + textwrap.dedent('''
    import io
    import torch
    from separator import states
    folder = sys.argv[1]
    real_save = torch.save
    def save(obj, fout):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        if where == 'writing':
            fout.write(buffer.getvalue()[:len(buffer.getvalue()) // 3])
            fout.flush()
            os._exit(9)
        fout.write(buffer.getvalue())
    torch.save = save
    states.save_checkpoint({'history': [{'epoch': e} for e in range(3)],
                            'model': {'weight': torch.full((10007,), 3.)}}, folder)
    os._exit(0)
''')


@pytest.mark.parametrize('where, epochs', [
    ('writing', 2), ('before rename 1', 2), ('after rename 1', 2), ('after rename 2', 3),
    ('nowhere', 3)])
def test_save_killed_at_any_instant_leaves_a_whole_checkpoint(tmp_path, caplog, where, epochs):
    """Rename 1: the latest becomes the previous one; rename 2: the new one comes in. After
    the kill, the partial copy is removed as on resume, and a whole checkpoint is read."""
    for done in [1, 2]:
        states.save_checkpoint(_state(done), tmp_path)
    result = subprocess.run([sys.executable, '-c', _KILLED_SAVE, str(tmp_path), where],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == (0 if where == 'nowhere' else 9), result.stderr
    left = remove_temporaries(tmp_path / LATEST)
    assert len(left) == (1 if where in ('writing', 'before rename 1', 'after rename 1') else 0)
    assert set(os.listdir(tmp_path)) <= {LATEST, PREVIOUS}
    with caplog.at_level(logging.WARNING, logger='separator.states'):
        state, path = states.load_checkpoint(tmp_path)
    assert _epochs(state) == epochs
    if where == 'after rename 1':    # between the renames: the previous one alone
        assert path == tmp_path / PREVIOUS
        assert f'{tmp_path / LATEST} is missing (a save was interrupted). Falling back to ' \
               f'the previous checkpoint {tmp_path / PREVIOUS} (epoch 2): epoch 3 is lost.' \
               in caplog.text
    else:
        assert path == tmp_path / LATEST and not caplog.text


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    xps = tmp_path / 'xps'
    folder = xps / 'abc123'
    for epochs in [1, 2]:
        states.save_checkpoint(_state(epochs), folder)
    _truncate(folder / LATEST)
    with caplog.at_level(logging.WARNING, logger='separator.states'):
        state, path = states.load_checkpoint(folder)
        assert (_epochs(state), path) == (1, folder / PREVIOUS)
        # As continue_from, export and the Mixer read another XP.
        assert _epochs(states.read_xp_checkpoint('abc123', xps, 'continue_from=abc123')) == 1
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert re.fullmatch(rf'Could not read {re.escape(str(folder / LATEST))} \(.*\): the file '
                        rf'is corrupt or truncated\. Falling back to the previous checkpoint '
                        rf'{re.escape(str(folder / PREVIOUS))} \(epoch 1\): epoch 2 is lost\.',
                        warnings[0]), warnings[0]
    # Reading changes nothing: the corrupt file is still there, for the XP itself to handle.
    assert sorted(os.listdir(folder)) == [PREVIOUS, LATEST]


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    xps = tmp_path / 'xps'
    folder = xps / 'abc123'
    folder.mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        states.load_checkpoint(folder)
    with pytest.raises(ValueError, match=r'^export: XP abc123 has no checkpoint .* Run it '
                       r'first: `dora run -f abc123`\.$'):
        states.read_xp_checkpoint('abc123', xps, 'export')
    states.save_checkpoint(_state(1), folder)
    _truncate(folder / LATEST)
    with pytest.raises(RuntimeError, match=r'^Could not read .*checkpoint\.th .* There is no '
                       r'previous checkpoint \(checkpoint\.prev\.th\) to fall back to: delete '
                       rf'{re.escape(str(folder / LATEST))} to start the XP over\.$'):
        states.load_checkpoint(folder)
    states.save_checkpoint(_state(1), folder)
    states.save_checkpoint(_state(2), folder)
    _truncate(folder / LATEST)
    _truncate(folder / PREVIOUS)
    with pytest.raises(RuntimeError) as error:
        states.load_checkpoint(folder)
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(f'Neither checkpoint.th nor checkpoint.prev.th in {folder} can '
                              f'be read: delete both to start the XP over. Could not read '
                              f'{folder / LATEST} (')
    assert f'Could not read {folder / PREVIOUS} (' in message
    with pytest.raises(ValueError, match=r'^mixer.models: abc123: Neither checkpoint\.th nor '
                       r'checkpoint\.prev\.th .* Then train the XP again: `dora run -f '
                       r'abc123`\.$'):
        states.read_xp_checkpoint('abc123', xps, 'mixer.models: abc123')


# ------------------------------------------------------------------ whole XPs under Dora
ARGS = TINY + ['epochs=3', 'max_batches=2', 'test.every=0', 'test.sdr=false',
               'test.max_tracks=1']


@pytest.fixture(scope='module')
def trained(tiny_data, tmp_path_factory):
    """A tiny XP trained 3 epochs without a stop: (its cwd, its signature)."""
    cwd = tmp_path_factory.mktemp('fallback')
    sig = signature(run_dora(['run', *ARGS, f'dset.musdb={tiny_data}'], cwd))
    return cwd, sig


def _copy(trained, tmp_path: Path) -> Path:
    """A copy of the trained XP's working folder, to break its checkpoints."""
    cwd = tmp_path / 'cwd'
    shutil.copytree(trained[0], cwd)
    return cwd


def test_truncated_checkpoint_resumes_from_the_previous_one_exactly(trained, tmp_path):
    straight, sig = trained
    cwd = _copy(trained, tmp_path)
    folder = xp_folder(cwd, sig)
    _truncate(folder / LATEST)
    result = run_dora(['run', '-f', sig], cwd)
    output = result.stdout + result.stderr
    assert re.search(rf'WARNING\] - Could not read {re.escape(str(folder / LATEST))} \(.*\): '
                     rf'the file is corrupt or truncated\. Falling back to the previous '
                     rf'checkpoint {re.escape(str(folder / PREVIOUS))} \(epoch 2\): epoch 3 is '
                     rf'lost\.', output), output[-3000:]
    assert f'Resumed from {folder / PREVIOUS} at epoch 2' in output
    assert 'Epoch 3: train loss' in output
    # The history is the previous checkpoint's, then epoch 3 again: as if never stopped.
    assert_same_xp(straight, cwd, sig)
    # The corrupt file is gone: the previous checkpoint is epoch 2 again, whole.
    assert len(states.safe_load(folder / PREVIOUS)['history']) == 2
    assert not [name for name in os.listdir(folder) if name.startswith('.checkpoint')]


def test_two_corrupt_checkpoints_stop_the_xp_with_one_error(trained, tmp_path):
    _, sig = trained
    cwd = _copy(trained, tmp_path)
    folder = xp_folder(cwd, sig)
    _truncate(folder / LATEST)
    _truncate(folder / PREVIOUS)
    sizes = {name: (folder / name).stat().st_size for name in [LATEST, PREVIOUS]}
    result = run_dora(['run', '-f', sig], cwd, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in output.splitlines() if 'can be read: delete both' in line]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f'RuntimeError: Neither checkpoint.th nor checkpoint.prev.th '
                                f'in {folder} can be read: delete both to start the XP over. '
                                f'Could not read {folder / LATEST} (')
    assert f'Could not read {folder / PREVIOUS} (' in errors[0]
    assert 'Epoch 1: train loss' not in output
    # Nothing is deleted or overwritten: the files stay for the user to judge.
    assert {name: (folder / name).stat().st_size for name in [LATEST, PREVIOUS]} == sizes
