"""DDP on CPU with gloo: `dora run -d [--ddp_workers 2]`, exact resume, a dying rank."""
import os
import signal
import subprocess
import time
from pathlib import Path


from .conftest import (TINY, assert_same_xp, history, kill_after, run_dora, signature,
                       start_dora, xp_folder)

DDP = ['-d', '--ddp_workers', '2']


def test_ddp_trains_and_shards(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=2']
    result = run_dora(['run', *DDP, *args], tmp_path)
    sig = signature(result)
    folder = xp_folder(tmp_path, sig)
    assert len(history(tmp_path, sig)) == 2
    worker_log = (folder / 'worker_1.log').read_text()
    assert 'Distributed: rank 1 of 2' in worker_log
    assert 'Train' not in worker_log  # rank 0 speaks for all
    # batch_size=4 over 2 ranks: 2 per rank, 32 examples per epoch -> 8 steps per rank.
    assert 'Train 1 | 8/8' in result.stdout + result.stderr


def test_ddp_batch_size_must_divide(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=1', 'batch_size=5']
    result = run_dora(['run', *DDP, *args], tmp_path, check=False)
    assert result.returncode != 0
    sig = signature(result)
    logs = result.stdout + result.stderr + (xp_folder(tmp_path, sig) / 'worker_1.log').read_text()
    assert 'batch_size=5 is global and must be divisible by the number of processes (2)' in logs
    assert 'Rank 1 of 2 failed: ValueError: batch_size=5' in logs


def test_ddp_sigkill_and_resume_is_exact(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=4', 'test.every=2']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *DDP, *args], straight))
    kill_after(start_dora([*DDP, *args], killed), killed, sig, epochs_done=1, delay=0.5)
    assert len(history(killed, sig)) < 4
    # Resumed as on a cluster: `dora run -d -f SIG`; without a GPU, as many gloo workers as
    # wrote the checkpoint.
    resumed = run_dora(['run', '-d', '-f', sig], killed)
    assert 'No GPU: DDP with 2 CPU worker(s) (gloo), as wrote its checkpoint' in \
        resumed.stdout + resumed.stderr
    assert_same_xp(straight, killed, sig)


def _worker_pids(parent: int) -> dict:
    """rank -> pid of the DDP workers started by the dora process `parent`."""
    pids = {}
    for child in subprocess.run(['pgrep', '-P', str(parent)], capture_output=True,
                                text=True).stdout.split():
        try:
            environ = Path(f'/proc/{child}/environ').read_bytes().split(b'\0')
        except OSError:
            continue
        for item in environ:
            if item.startswith(b'RANK='):
                pids[int(item[5:])] = int(child)
    return pids


def test_dying_rank_stops_the_job(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=50']
    log = tmp_path / 'dora.log'
    proc = start_dora([*DDP, *args], tmp_path, log)
    sig_folder = tmp_path / 'outputs' / 'xps'
    deadline = time.time() + 120
    while time.time() < deadline and not list(sig_folder.glob('*/history.json')):
        time.sleep(0.1)
    pids = _worker_pids(proc.pid)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.time()
    code = proc.wait(timeout=90)
    assert code != 0
    assert time.time() - killed_at < 60
    text = log.read_text()
    assert 'Worker 1 died' in text
    assert 'was killed by SIGKILL (signal 9)' in text and 'worker_1.log' in text, text[-2000:]
