"""Shared fixtures: small MUSDB18-HQ-layout folders written with random audio."""
import os
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SOURCES = ['drums', 'bass', 'other', 'vocals']
ROOT = Path(__file__).resolve().parent.parent


def write_track(folder: Path, seconds: float = 2., samplerate: int = 44100, channels: int = 2,
                seed: int = 0, mixture: bool = True) -> tp.Dict[str, np.ndarray]:
    """Write one track of noise stems (and their sum as mixture.wav) into `folder`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stems = {}
    for source in SOURCES:
        audio = (0.1 * rng.standard_normal((int(seconds * samplerate), channels))
                 ).astype(np.float32)
        sf.write(folder / f'{source}.wav', audio, samplerate, subtype='FLOAT')
        stems[source] = audio
    if mixture:
        sf.write(folder / 'mixture.wav', sum(stems.values()), samplerate, subtype='FLOAT')
    return stems


@pytest.fixture
def musdb_folder(tmp_path: Path) -> Path:
    """ROOT with train/ (3 tracks) and test/ (1 track) of 2 s of noise."""
    root = tmp_path / 'musdb'
    for index in range(3):
        write_track(root / 'train' / f'track{index}', seed=index)
    write_track(root / 'test' / 'song', seed=10)
    return root


def run_dora(args: tp.Sequence[str], cwd: Path, check: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `dora` command of this environment with `-P separator` in `cwd`."""
    dora = Path(sys.executable).parent / 'dora'
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    result = subprocess.run([str(dora), '-P', 'separator', *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"dora {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result
