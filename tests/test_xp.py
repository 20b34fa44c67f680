"""Whole XPs under Dora: signature, learning, SIGKILL-and-resume exactness, continue_from, info.

Each XP is a real `dora run` in a subprocess, on a tiny synthetic set shared by the tests.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import ROOT, run_dora

# A tiny XP: 0.06 M parameters, 1 s segments, a few seconds per epoch on 2 cores.
TINY = ['variant=tiny', 'dset.generate=false']


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory) -> Path:
    from separator.data.synthetic import write_dataset
    root = tmp_path_factory.mktemp('data') / 'synthetic'
    write_dataset(root, tracks_train=4, tracks_test=2, seconds=6, seed=0, verbose=False)
    return root


def signature(result: subprocess.CompletedProcess) -> str:
    match = re.search(r'XP signature: (\w+)', result.stdout)
    assert match, result.stdout
    return match.group(1)


def xp_folder(cwd: Path, sig: str) -> Path:
    return cwd / 'outputs' / 'xps' / sig


def history(cwd: Path, sig: str) -> list:
    return json.loads((xp_folder(cwd, sig) / 'history.json').read_text())


def without_durations(entries: list) -> list:
    return [{k: v for k, v in entry.items() if k != 'duration'} for entry in entries]


def final_state(cwd: Path, sig: str) -> dict:
    return torch.load(xp_folder(cwd, sig) / 'checkpoint.th', map_location='cpu',
                      weights_only=False)


def test_signature_info_and_unknown_sig(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=1']
    result = run_dora(['run', *args], tmp_path)
    sig = signature(result)
    info = run_dora(['info', '-f', sig], tmp_path)
    assert f'Folder is {xp_folder(tmp_path, sig)}' in info.stdout + info.stderr
    # The same overrides give the same signature; a changed one, another.
    assert signature(run_dora(['run', *args], tmp_path)) == sig
    assert signature(run_dora(['run', *args, 'seed=1'], tmp_path)) != sig
    # Excluded keys (workers, verbosity) do not change it.
    assert signature(run_dora(['run', *args, 'misc.num_workers=0'], tmp_path)) == sig
    bad = run_dora(['info', '-f', 'deadbeef'], tmp_path, check=False)
    assert 'Could not find an existing run with sig deadbeef' in bad.stdout + bad.stderr


def _start(args, cwd: Path) -> subprocess.Popen:
    dora = Path(sys.executable).parent / 'dora'
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.Popen([str(dora), '-P', 'separator', 'run', *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_after(proc: subprocess.Popen, cwd: Path, sig: str, epochs_done: int,
                delay: float) -> None:
    """SIGKILL the XP `delay` seconds after its history reaches `epochs_done` epochs."""
    path = xp_folder(cwd, sig) / 'history.json'
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            try:
                if len(json.loads(path.read_text())) >= epochs_done:
                    break
            except ValueError:
                pass
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None, "the XP finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_and_resume_is_exact(tiny_data, tmp_path):
    """An XP killed twice (mid-epoch, then near a checkpoint) ends as one never stopped."""
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=5', 'test.every=2', 'ema.batch=[0.9]',
                   'optim.lr_scheduler=cosine', 'misc.num_workers=1']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *args], straight))

    _kill_after(_start(args, killed), killed, sig, epochs_done=1, delay=0.7)
    partial = len(history(killed, sig))
    assert 1 <= partial < 5
    _kill_after(_start(['-f', sig], killed), killed, sig, epochs_done=3, delay=0.0)
    assert len(history(killed, sig)) < 5
    resumed = run_dora(['run', '-f', sig], killed)
    assert 'Resumed from' in resumed.stdout + resumed.stderr

    assert without_durations(history(killed, sig)) == without_durations(history(straight, sig))
    expected, got = final_state(straight, sig), final_state(killed, sig)
    for key in ['model', 'best_state']:
        for name, value in expected[key].items():
            assert torch.equal(value, got[key][name]), f'{key}.{name} differs after resume'
    for name, value in expected['emas'][0]['state'].items():
        assert torch.equal(value, got['emas'][0]['state'][name]), f'ema {name} differs'
    assert expected['optimizer']['state'].keys() == got['optimizer']['state'].keys()


def test_continue_from(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=1']
    parent = signature(run_dora(['run', *args], tmp_path))
    parent_state = final_state(tmp_path, parent)['best_state']
    child = run_dora(['run', *args, f'continue_from={parent}', 'optim.lr=0'], tmp_path)
    assert 'Starting from the weights of XP ' + parent in child.stdout + child.stderr
    child_state = final_state(tmp_path, signature(child))['model']
    # With a zero learning rate the child keeps exactly the parent's weights.
    for name, value in parent_state.items():
        assert torch.equal(value, child_state[name]), name

    unknown = run_dora(['run', *args, 'continue_from=deadbeef'], tmp_path, check=False)
    assert unknown.returncode != 0
    assert 'continue_from=deadbeef: no XP with that signature' in unknown.stderr
