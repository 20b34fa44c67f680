"""Shared fixtures: small MUSDB18-HQ-layout folders written with random audio."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from .slurm.cluster import start_cluster, stop_cluster


def pytest_configure(config: pytest.Config) -> None:
    """The tests that train in this process reuse freed memory as `dora run` does on the CPU
    (separator/malloc.py): the same numbers, a third less time per step. One torch thread
    per process, here and in every process a test starts (OMP_NUM_THREADS, unless set): the
    models are tiny, and the tests run beside the processes they start (XPs, Slurm jobs),
    where two threads on two shared cores wait on each other (a tiny X-UMX's 50 steps: 3 s on
    one thread, 67 s on two beside one busy process)."""
    from separator.malloc import keep_freed_memory
    keep_freed_memory()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

SOURCES = ['drums', 'bass', 'other', 'vocals']
ROOT = Path(__file__).resolve().parent.parent


def write_track(folder: Path, seconds: float = 2., samplerate: int = 44100, channels: int = 2,
                seed: int = 0, mixture: bool = True, sources: tp.Sequence[str] = SOURCES,
                mixture_name: str = 'mixture') -> tp.Dict[str, np.ndarray]:
    """Write one track of noise stems (and their sum as `mixture_name`.wav) into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stems = {}
    for source in sources:
        audio = (0.1 * rng.standard_normal((int(seconds * samplerate), channels))
                 ).astype(np.float32)
        sf.write(folder / f'{source}.wav', audio, samplerate, subtype='FLOAT')
        stems[source] = audio
    if mixture:
        sf.write(folder / f'{mixture_name}.wav', sum(stems.values()), samplerate,
                 subtype='FLOAT')
    return stems


@pytest.fixture
def musdb_folder(tmp_path: Path) -> Path:
    """ROOT with train/ (3 tracks) and test/ (1 track) of 2 s of noise."""
    root = tmp_path / 'musdb'
    for index in range(3):
        write_track(root / 'train' / f'track{index}', seed=index)
    write_track(root / 'test' / 'song', seed=10)
    return root


def _dora(args: tp.Sequence[str]) -> tp.Tuple[tp.List[str], tp.Dict[str, str]]:
    """The `dora -P separator ARGS` command of this environment, and its environment."""
    dora = Path(sys.executable).parent / 'dora'
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return [str(dora), '-P', 'separator', *args], env


def run_dora(args: tp.Sequence[str], cwd: Path, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `dora ARGS` in `cwd` and wait for it; raise with its output if it fails."""
    command, env = _dora(args)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"dora {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_python(args: tp.Sequence[str], cwd: Path, timeout: float = 300
               ) -> subprocess.CompletedProcess:
    """Run `python ARGS` of this environment in `cwd` (one thread: tiny models, shared cores)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def separate_with_bag(cwd: Path, name: str, sources: tp.Sequence[str] = SOURCES,
                      seconds: float = 3) -> Path:
    """Separate a generated song (`cwd/song/mixture.wav`) with the model or bag `name` of
    `cwd/release_models` through the `separator` command; check it wrote one stem per source
    and return the song's mixture path."""
    song = cwd / 'song'
    write_track(song, seconds=seconds)
    separated = run_python(['-m', 'separator.separate', '-n', name, '--repo', 'release_models',
                            '-o', 'separated', '-j', '1', str(song / 'mixture.wav')], cwd)
    assert separated.returncode == 0, separated.stdout + separated.stderr
    out = cwd / 'separated' / name / 'mixture'
    assert sorted(path.name for path in out.iterdir()) == [f'{s}.wav' for s in sorted(sources)]
    return song / 'mixture.wav'


def assert_overfits(make_model: tp.Callable[[], torch.nn.Module], steps: int = 50,
                    lr: float = 3e-3) -> None:
    """A model made by `make_model` for 2 mono sources must fit one example: a low sine
    (source 0) + noise bursts (source 1), 1 s; the L1 loss must fall below half its start
    within `steps` Adam steps."""
    torch.manual_seed(0)
    samplerate = 44100
    time = torch.arange(samplerate) / samplerate
    low = 0.5 * torch.sin(2 * math.pi * 110 * time)
    bursts = 0.3 * torch.randn(samplerate) * ((time * 4) % 1 < 0.25).float()
    target = torch.stack([low, bursts])[None, :, None]  # [1, S, 1, T]
    mix = target.sum(1)
    model = make_model()
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = (model(mix) - target).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.5 * losses[0], losses[::max(1, steps // 10)]


@pytest.fixture
def one_thread() -> tp.Iterator[None]:
    """Tiny models run much faster on one thread than on cores shared with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A tiny XP: 0.06 M parameters, 1 s segments, a few seconds per epoch on 2 cores.
TINY = ['variant=tiny', 'dset.generate=false']


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory) -> Path:
    from separator.data.synthetic import write_dataset
    root = tmp_path_factory.mktemp('data') / 'synthetic'
    write_dataset(root, tracks_train=4, tracks_test=2, seconds=6, seed=0, verbose=False)
    return root


@pytest.fixture(scope='session')
def tiny_xp(tiny_data, tmp_path_factory) -> tp.Tuple[Path, str]:
    """A tiny XP trained for 2 batches and tested on 1 track: (its cwd, its signature)."""
    cwd = tmp_path_factory.mktemp('tiny_xp')
    result = run_dora(['run', *TINY, f'dset.musdb={tiny_data}', 'epochs=1', 'max_batches=2',
                       'test.every=0', 'test.max_tracks=1'], cwd)
    return cwd, signature(result)


def signature(result: subprocess.CompletedProcess) -> str:
    """The signature printed by `dora run` (or found by `dora info`)."""
    match = re.search(r'XP signature: (\w+)|Found sheep Sheep\((\w+)', result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return match.group(1) or match.group(2)


def xp_folder(cwd: Path, sig: str) -> Path:
    return cwd / 'outputs' / 'xps' / sig


def history(cwd: Path, sig: str) -> list:
    return json.loads((xp_folder(cwd, sig) / 'history.json').read_text())


def without_durations(entries: list) -> list:
    return [{k: v for k, v in entry.items() if k != 'duration'} for entry in entries]


def final_state(cwd: Path, sig: str) -> dict:
    return torch.load(xp_folder(cwd, sig) / 'checkpoint.th', map_location='cpu',
                      weights_only=True)


# The head of a child script that dies (os._exit(9)) at one instant of a series of renames:
# `where` (its argv[2]) is 'before rename N' or 'after rename N'; kills mid-write are the
# scripts' own. Atomic writes are tested by killing their writers at every instant.
KILL_AT_RENAMES = textwrap.dedent('''
    import os, sys
    where = sys.argv[2]
    real_replace, renames = os.replace, []
    def replace(source, target):
        if where == f'before rename {len(renames) + 1}':
            os._exit(9)
        real_replace(source, target)
        renames.append(target)
        if where == f'after rename {len(renames)}':
            os._exit(9)
    os.replace = replace
''')


def assert_same_xp(straight: Path, other: Path, sig: str) -> tp.Tuple[dict, dict]:
    """XP `sig` ended in `other` exactly as in `straight` (an uninterrupted run): the same
    history (durations aside), and bitwise the same weights, best state, EMAs and optimizer
    state. Returns both final states, for the checks of one test."""
    assert without_durations(history(other, sig)) == without_durations(history(straight, sig))
    expected, got = final_state(straight, sig), final_state(other, sig)
    for key in ['model', 'best_state']:
        assert expected[key].keys() == got[key].keys(), key
        for name, value in expected[key].items():
            assert torch.equal(value, got[key][name]), f'{key}.{name} differs'
    assert len(expected['emas']) == len(got['emas'])
    for ema, got_ema in zip(expected['emas'], got['emas']):
        for name, value in ema['state'].items():
            assert torch.equal(value, got_ema['state'][name]), f'ema {name} differs'
    assert expected['optimizer']['state'].keys() == got['optimizer']['state'].keys()
    for index, state in expected['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value),
                               torch.as_tensor(got['optimizer']['state'][index][name])), \
                f'optimizer state {index}.{name} differs'
    return expected, got


def start_dora(args: tp.Sequence[str], cwd: Path, log: tp.Optional[Path] = None
               ) -> subprocess.Popen:
    """Start `dora run ARGS` in its own process group (to kill it whole), output to `log`."""
    command, env = _dora(['run', *args])
    output = open(log, 'w') if log else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=output,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_after(proc: subprocess.Popen, cwd: Path, sig: str, epochs_done: int,
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


# ------------------------------------------------------------------ the test Slurm cluster
DAEMONS = ['slurmd', 'slurmctld', 'slurmdbd', 'mysqld', 'munged']


def _pid_running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (PID 1 here may reap late)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.fixture(scope='session')
def slurm_env(tmp_path_factory) -> tp.Iterator[tp.Dict[str, str]]:
    """Env vars (SLURM_CONF) of a cluster running for the whole session; stopped at the end,
    checking that every daemon it started is gone."""
    state = tmp_path_factory.mktemp('slurm')
    env = start_cluster(state)  # raises RuntimeError with the daemon logs if it cannot start
    pids = {name: int((state / 'run' / f'{name}.pid').read_text().strip()) for name in DAEMONS}
    try:
        yield env
    finally:
        stop_cluster(state)
        left = {name: pid for name, pid in pids.items() if _pid_running(pid)}
        assert not left, f"daemons still running after stop.sh: {left}"
