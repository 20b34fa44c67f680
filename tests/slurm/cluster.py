"""Start and stop the single-node test Slurm cluster of `start.sh` / `stop.sh` from Python.

    env = start_cluster(tmp / 'slurm')     # {'SLURM_CONF': '.../etc/slurm.conf'}
    os.environ.update(env)                 # then sbatch, sacct, submitit, dora grid... work
    stop_cluster(tmp / 'slurm')

The cluster has one node `localhost` (all CPUs, ~95% of the memory, 2 fake GPUs) in the default
partition `local`, with accounting (sacct) through slurmdbd and MariaDB. All its state, logs and
PID files are in `state_dir`.
"""
import os
import shlex
import signal
import subprocess
import typing as tp
from pathlib import Path

HERE = Path(__file__).resolve().parent
START = HERE / 'start.sh'
STOP = HERE / 'stop.sh'
PARTITION = 'local'

# First start may install Debian packages (~1 min), then each daemon may wait up to 60 s.
START_TIMEOUT = 600.
STOP_TIMEOUT = 180.


def _run(args: tp.List[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `args` in its own process group; on timeout kill that whole group (not the daemons,
    which start.sh puts in sessions of their own) and raise TimeoutExpired with the output."""
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a daemon kept our pipes: give up on the output
            out, err = '', ''
        raise subprocess.TimeoutExpired(args, timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _tail(text: str, lines: int = 60) -> str:
    return '\n'.join(text.splitlines()[-lines:])


def _parse_exports(text: str) -> tp.Dict[str, str]:
    """The `export NAME=VALUE` lines of `text` as a dict (values may be shell-quoted)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith('export '):
            continue
        name, sep, value = line[len('export '):].partition('=')
        if sep and name.isidentifier():
            words = shlex.split(value) if value else ['']
            env[name] = words[0] if words else ''
    return env


def start_cluster(state_dir: Path, timeout: float = START_TIMEOUT) -> tp.Dict[str, str]:
    """Start the cluster with all its state in `state_dir`; return the env vars for clients.

    Raises RuntimeError with the tail of the script's stderr (which holds the log tail of the
    daemon that failed) if it fails or takes more than `timeout` seconds. On failure start.sh
    stops what it started; on a timeout this function runs stop.sh itself.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = _run(['bash', str(START), str(state_dir)], timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or ''
        stop_cluster(state_dir)
        raise RuntimeError(f"Slurm start.sh timed out after {timeout:.0f}s:\n{_tail(err)}")
    if proc.returncode != 0:
        raise RuntimeError(f"Slurm start.sh failed (exit {proc.returncode}):\n"
                           f"{_tail(proc.stderr)}\n{_tail(proc.stdout, 10)}")
    env = _parse_exports(proc.stdout)
    if 'SLURM_CONF' not in env:
        env_file = state_dir / 'env.sh'
        if env_file.exists():
            env = _parse_exports(env_file.read_text())
    if 'SLURM_CONF' not in env:
        raise RuntimeError(f"Slurm start.sh printed no SLURM_CONF:\n{proc.stdout}\n"
                           f"{_tail(proc.stderr)}")
    return env


def stop_cluster(state_dir: Path, timeout: float = STOP_TIMEOUT) -> None:
    """Stop the daemons started in `state_dir` (by their PID files). Never raises for a
    missing folder; raises RuntimeError if stop.sh fails or hangs."""
    state_dir = Path(state_dir)
    if not (state_dir / 'run').is_dir():
        return
    try:
        proc = _run(['bash', str(STOP), str(state_dir)], timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"Slurm stop.sh timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"Slurm stop.sh failed (exit {proc.returncode}):\n{_tail(proc.stderr)}")
