"""A real single-node Slurm cluster (tests/slurm/start.sh) runs jobs, requeues them, answers
sacct, and runs submitit jobs, preempted ones included. Takes ~55 s (plus ~30 s the first time on
a fresh machine, to install the Debian packages)."""
import os
import socket
import subprocess
import time
import typing as tp
from pathlib import Path
from unittest import mock

import pytest

from .slurm.cluster import PARTITION, start_cluster

# One test Slurm cluster per machine: these tests run on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('slurm')


def slurm(env: tp.Dict[str, str], *args: str, timeout: float = 60, check: bool = True,
          cwd: tp.Optional[Path] = None) -> str:
    """Run a Slurm client command against the test cluster; return its stdout."""
    proc = subprocess.run(list(args), env=dict(os.environ, **env), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def wait_for(predicate: tp.Callable[[], tp.Any], timeout: float, what: str,
             interval: float = 0.5) -> tp.Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sacct_state(env, job_id: str) -> str:
    """State of the latest run of the job as seen by accounting ('' until it is recorded)."""
    lines = slurm(env, 'sacct', '-j', job_id, '-X', '-n', '-P', '-o', 'State').split()
    return lines[-1] if lines else ''


def squeue_state(env, job_id: str) -> str:
    return slurm(env, 'squeue', '-h', '-j', job_id, '-o', '%T', check=False).strip()


def test_sinfo_lists_the_node(slurm_env):
    out = slurm(slurm_env, 'sinfo', '-h', '-N', '-o', '%N|%P|%T|%c|%G')
    node, partition, state, cpus, gres = out.strip().split('|')
    assert node == 'localhost'
    assert partition == PARTITION + '*'  # the default partition
    assert state == 'idle'
    assert int(cpus) == os.cpu_count()
    assert gres.startswith('gpu:2')


def test_start_again_on_a_running_cluster_is_a_no_op(slurm_env):
    state = Path(slurm_env['SLURM_CONF']).parent.parent
    assert start_cluster(state, timeout=60) == slurm_env


def test_srun_two_tasks(slurm_env):
    out = slurm(slurm_env, 'srun', '-n', '2', 'hostname')
    assert out.split() == [socket.gethostname()] * 2


def test_sbatch_completes_and_sacct_sees_it(slurm_env, tmp_path):
    job_id = slurm(slurm_env, 'sbatch', '--parsable', '-o', str(tmp_path / 'out.txt'),
                   '--wrap', 'echo hi', cwd=tmp_path).strip()
    wait_for(lambda: sacct_state(slurm_env, job_id) == 'COMPLETED', 30,
             f'job {job_id} COMPLETED in sacct')
    assert (tmp_path / 'out.txt').read_text().strip() == 'hi'
    out = slurm(slurm_env, 'sacct', '-j', job_id, '-n', '-o', 'State')
    assert out.split()[0] == 'COMPLETED'


def test_requeue_running_job(slurm_env, tmp_path):
    # Each run appends its restart count; the job must then run to completion once more.
    script = ('echo "run ${SLURM_RESTART_COUNT:-0}" >> runs.txt; sleep 4; '
              'echo "done ${SLURM_RESTART_COUNT:-0}" >> runs.txt')
    job_id = slurm(slurm_env, 'sbatch', '--parsable', '-o', '/dev/null', '--wrap', script,
                   cwd=tmp_path).strip()
    wait_for(lambda: squeue_state(slurm_env, job_id) == 'RUNNING'
             and (tmp_path / 'runs.txt').exists(), 30, f'job {job_id} RUNNING')
    slurm(slurm_env, 'scontrol', 'requeue', job_id)
    # Back in the queue (PENDING, Reason=BeginTime for cred_expire + 1 = 11 s), then run again.
    state = wait_for(lambda: squeue_state(slurm_env, job_id) in ('PENDING', 'RUNNING')
                     and squeue_state(slurm_env, job_id), 20, f'job {job_id} requeued')
    assert state in ('PENDING', 'RUNNING')
    wait_for(lambda: sacct_state(slurm_env, job_id) == 'COMPLETED', 60,
             f'requeued job {job_id} COMPLETED')
    assert (tmp_path / 'runs.txt').read_text().split('\n')[:-1] == ['run 0', 'run 1', 'done 1']
    history = slurm(slurm_env, 'sacct', '-j', job_id, '-X', '-D', '-n', '-P', '-o', 'State')
    assert history.split() == ['REQUEUED', 'COMPLETED']


def _add(a, b):
    import socket as _socket
    return a + b, _socket.gethostname(), os.environ.get('SLURM_JOB_ID')


def test_submitit_slurm_executor(slurm_env, tmp_path):
    import submitit

    with mock.patch.dict(os.environ, slurm_env):
        executor = submitit.SlurmExecutor(folder=tmp_path / 'submitit')
        executor.update_parameters(time=5, partition=PARTITION, ntasks_per_node=1,
                                   cpus_per_task=1, mem='1GB', job_name='test_submitit')
        job = executor.submit(_add, 2, 3)
        deadline = time.monotonic() + 60
        while not job.done():
            assert time.monotonic() < deadline, f"submitit job {job.job_id}: {job.state}"
            time.sleep(1)
        result = job.result()
        # done() can be True (result file written) before submitit's throttled sacct poll sees
        # the end: force a sacct query, as Dora's grid status relies on it.
        wait_for(lambda: job.get_info(mode='force').get('State') == 'COMPLETED', 30,
                 f'submitit job {job.job_id} COMPLETED in sacct')
    assert result == (5, socket.gethostname(), job.job_id)


def _sleep_then_restarts(seconds: float):
    """Sleep `seconds` in the first run (long enough for the test's signals to arrive on a
    loaded machine), 1 s once requeued; return the restart count."""
    restarts = os.environ.get('SLURM_RESTART_COUNT')
    time.sleep(seconds if restarts in (None, '0') else 1)
    return restarts


def test_submitit_preemption_requeues(slurm_env, tmp_path):
    """What a Dora XP sees on preemption: SIGTERM (ignored by submitit) then SIGUSR2; submitit
    decides "preempted" (not timed out: needs time >= ~50 min, see below), runs
    `scontrol requeue` on its own job, which is killed and restarts ~11 s later."""
    import submitit

    with mock.patch.dict(os.environ, slurm_env):
        executor = submitit.SlurmExecutor(folder=tmp_path / 'submitit')
        # submitit counts a USR2 as a time-out (no requeue for a plain function) once
        # min(0.8 * time, time - 10 min) has run: with time=5 that is always the case.
        executor.update_parameters(time=60, partition=PARTITION, ntasks_per_node=1,
                                   cpus_per_task=1, mem='1GB')
        job = executor.submit(_sleep_then_restarts, 30)
        wait_for(lambda: job.get_info(mode='force').get('State') == 'RUNNING', 30,
                 f'submitit job {job.job_id} RUNNING')
        time.sleep(2)  # let the task install its signal handlers
        # What submitit's own job._interrupt() does to mimic a preemption.
        slurm(slurm_env, 'scancel', '--signal', 'SIGTERM', job.job_id)
        slurm(slurm_env, 'scancel', '--signal', 'USR2', job.job_id)
        # Wait for Slurm's end, not for submitit's result file: the `scontrol requeue` that
        # submitit runs can be killed (SIGTERM) by the very requeue it asked for before it
        # returns; the first run then writes a failure, which the second run's result replaces.
        wait_for(lambda: job.get_info(mode='force').get('State') == 'COMPLETED', 90,
                 f'submitit job {job.job_id} COMPLETED in sacct', interval=1)
        wait_for(job.done, 30, f'requeued submitit job {job.job_id} done', interval=1)
        assert job.result() == '1'  # the second run (one restart) returned
    history = slurm(slurm_env, 'sacct', '-j', job.job_id, '-X', '-D', '-n', '-P', '-o', 'State')
    assert history.split() == ['REQUEUED', 'COMPLETED']
