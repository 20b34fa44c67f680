"""`dora grid` on a real Slurm (tests/slurm/start.sh): a grid of 2 XPs runs to completion and
shows its metrics; a requeued (preempted) job resumes in its XP folder and ends as if it had
never been stopped."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, _dora, history, run_dora, without_durations, xp_folder
from .test_sdx23 import parse_table

# One test Slurm cluster per machine: these tests run on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('slurm')


def grid(args, cwd: Path, env: dict, timeout: float = 120, name: str = 'cpu_smoke') -> str:
    command, base_env = _dora(['grid', name, '--no_monitoring', *args])
    result = subprocess.run(command, cwd=cwd, env=dict(base_env, **env), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def grid_sigs(cwd: Path, env: dict) -> list:
    out = grid(['--dry_run', '--init'], cwd, env)
    return re.findall(r'\b([0-9a-f]{8})\b', out)


def wait_done(cwd: Path, env: dict, timeout: float) -> str:
    deadline = time.time() + timeout
    while True:
        out = grid([], cwd, env)
        # Dora abbreviates Slurm states to 3 letters in its table.
        states = re.findall(r'\s(COM|FAI|CAN|TIM|RUN|PEN|UNK|REQ|N/A)\w*\s', out)
        if len(states) >= 3 and all(state == 'COM' for state in states):
            return out
        assert not set(states) & {'FAI', 'CAN', 'TIM'}, out
        assert time.time() < deadline, f"grid not done after {timeout}s:\n{out}"
        time.sleep(3)


def job_id(cwd: Path, sig: str) -> str:
    """The Slurm job id of XP `sig`, from Dora's job file."""
    info = run_dora(['info', '-f', sig], cwd)
    match = re.search(r'sid=(\d+)|Job\((\d+)', info.stdout + info.stderr)
    if match:
        return match.group(1) or match.group(2)
    job = json.loads((xp_folder(cwd, sig) / 'job.json').read_text())
    return str(job['job_id'])


def test_grid_runs_on_slurm_and_requeue_resumes(slurm_env, tiny_data, tmp_path):
    cwd = tmp_path / 'project'
    cwd.mkdir()
    # The grid's XPs use variant=tiny, whose data set lives in data/synthetic_tiny.
    (cwd / 'data').mkdir()
    os.symlink(tiny_data, cwd / 'data' / 'synthetic_tiny')
    env = dict(slurm_env, PYTHONPATH=str(ROOT))
    sigs = grid_sigs(cwd, env)
    assert len(set(sigs)) == 3, sigs

    grid([], cwd, env)   # submit
    # Interrupt the first two XPs (in grid order: not the DDP XP, which is last) once they
    # have finished an epoch: the first is requeued by Slurm (preemption), the second gets
    # the USR2 that Slurm sends before a time limit (submitit's --signal), on which submitit
    # checkpoints and requeues it. Both resume.
    # Both are watched at once, each interrupted as soon as it has an epoch: one after the
    # other, the second could end before its turn on a loaded machine.
    first, second = sigs[:2]
    pending = {first: ['scontrol', 'requeue'], second: ['scancel', '--signal', 'USR2']}
    # The job ids now (`dora info` takes seconds): the interruption must follow the first
    # epoch at once, before a fast XP has finished all four.
    jobs = {sig: job_id(cwd, sig) for sig in pending}
    deadline = time.time() + 180
    while pending:
        assert time.time() < deadline, f"XPs {sorted(pending)} never finished an epoch"
        for sig in list(pending):
            path = xp_folder(cwd, sig) / 'history.json'
            if path.exists() and json.loads(path.read_text() or '[]'):
                assert len(history(cwd, sig)) < 4, f"XP {sig} ended before its interruption"
                subprocess.run([*pending.pop(sig), jobs[sig]],
                               env=dict(os.environ, **env), check=True, capture_output=True)
        time.sleep(0.2)
    table = wait_done(cwd, env, timeout=300)
    for sig in set(sigs):
        assert len(history(cwd, sig)) == 4
        assert sig in table
    # Metrics are in the grid table (test nSDR of the last epoch), under readable headers,
    # and each XP is named by overrides that paste back into `dora run`.
    assert re.search(r'\d+\.\d\d', table)
    assert all(word in table for word in ('test nSDR (dB)', 'drums', 'vocals', 'museval'))
    assert 'optim.lr=0.003' in table and 'opt.lr' not in table
    for sig in (first, second):
        assert 'Resumed from' in (xp_folder(cwd, sig) / 'train.log').read_text(), sig
    ddp = [sig for sig in set(sigs)
           if 'Distributed: rank 0 of 2' in (xp_folder(cwd, sig) / 'train.log').read_text()]
    assert len(ddp) == 1, "the gpus=2 XP did not run as 2 DDP tasks"

    # The interrupted XPs end as if never stopped: run them again here, uninterrupted.
    straight = tmp_path / 'straight'
    straight.mkdir()
    (straight / 'data').mkdir()
    os.symlink(tiny_data, straight / 'data' / 'synthetic_tiny')
    for sig in (first, second):
        argv = json.loads((xp_folder(cwd, sig) / '.argv.json').read_text())
        run_dora(['run', *argv], straight)
        assert without_durations(history(straight, sig)) == without_durations(history(cwd, sig))


def test_grid_advances_a_lineage_stage_by_stage(slurm_env, tmp_path):
    """`dora grid sdx23_tiny` submits the ready stage only; once it is done, the next call
    submits its child."""
    env = dict(slurm_env, PYTHONPATH=str(ROOT))
    rows = parse_table(grid([], tmp_path, env, name='sdx23_tiny'))
    first, second = rows['pretrain_q0.7'][0], rows['pretrain_q0.5'][0]
    assert rows['pretrain_q0.7'][1] == 'ready' and rows['pretrain_q0.5'][1] == 'waiting'
    job_file = xp_folder(tmp_path, first) / 'job.json'
    job = json.loads(job_file.read_text())['job_id']
    assert not xp_folder(tmp_path, second).exists()
    # The local runner does not run a stage that Slurm is running.
    local = subprocess.run([sys.executable, '-m', 'tools.lineage', 'sdx23_tiny', '--until',
                            'pretrain_q0.7'], cwd=tmp_path, env=dict(os.environ, **env),
                           capture_output=True, text=True, timeout=120)
    assert local.returncode == 1 and f'has Slurm job {job} queued or running' in local.stderr, \
        local.stdout + local.stderr
    deadline = time.time() + 300
    while rows['pretrain_q0.7'][1] != 'done':
        assert time.time() < deadline, "the first stage did not finish on Slurm"
        time.sleep(5)
        rows = parse_table(grid(['--dry_run'], tmp_path, env, name='sdx23_tiny'))
    out = grid([], tmp_path, env, name='sdx23_tiny')
    rows = parse_table(out)
    assert rows['pretrain_q0.5'][1] == 'ready' and rows['pretrain_q0.3'][1] == 'waiting', out
    assert (xp_folder(tmp_path, second) / 'job.json').exists()
    assert json.loads(job_file.read_text())['job_id'] == job     # done: not submitted again
    grid(['--cancel'], tmp_path, env, name='sdx23_tiny')


def _files(folder: Path) -> dict:
    return {path.relative_to(folder): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(folder.rglob('*')) if path.is_file()}


def test_grid_without_slurm_says_so_in_one_line(tmp_path):
    """No controller answers (a config that points nowhere, or no Slurm installed at all):
    one line saying so and how to start the local cluster; nothing submitted or written, and
    the files of XPs already there (trained with `dora run`, say) are left as they were."""
    nowhere = {'SLURM_CONF': str(tmp_path / 'no_slurm.conf')}
    sigs = grid_sigs(tmp_path, nowhere)
    assert sigs
    for sig in sigs:   # what a local `dora run` of each leaves: a checkpoint, a history
        (xp_folder(tmp_path, sig) / 'checkpoint.th').write_bytes(b'weights of ' + sig.encode())
        (xp_folder(tmp_path, sig) / 'history.json').write_text('[{"train": {"loss": 1.0}}]')
    before = _files(tmp_path / 'outputs')
    command, env = _dora(['grid', 'cpu_smoke', '--no_monitoring'])
    env = dict(env, **nowhere)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1 and errors[0].startswith('dora grid: error: '), result.stderr
    assert 'tests/slurm/start.sh' in errors[0] and 'Traceback' not in result.stderr
    assert not list(tmp_path.glob('outputs/xps/*/submitit'))
    assert _files(tmp_path / 'outputs') == before
