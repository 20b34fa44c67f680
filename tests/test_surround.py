"""Surround input is downmixed as ffmpeg's `-ac 2` does: the centre (a 5.1 mix's vocals) is kept."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separator.track_io import load_mix, open_track


def surround_file(path: Path, channels: int, frames: int = 4001) -> np.ndarray:
    """A 16-bit file whose channels are tones of distinct frequencies; its float samples."""
    time = np.arange(frames) / 8000
    audio = np.stack([0.3 * np.sin(2 * np.pi * (110 + 97 * c) * time) for c in range(channels)])
    sf.write(path, audio.T, 8000, subtype='PCM_16')
    return sf.read(path, dtype='float32', always_2d=True)[0].T


def ffmpeg_stereo(path: Path, out: Path) -> np.ndarray:
    subprocess.run(['ffmpeg', '-v', 'error', '-nostdin', '-y', '-i', str(path), '-ac', '2',
                    '-c:a', 'pcm_s16le', str(out)], check=True)
    return sf.read(out, dtype='float32', always_2d=True)[0].T


@pytest.mark.parametrize('channels', [3, 5, 6, 8])
def test_downmix_equals_ffmpeg(tmp_path, channels, capsys):
    path = tmp_path / f'in{channels}.wav'
    audio = surround_file(path, channels)
    reference = ffmpeg_stereo(path, tmp_path / 'ref.wav')
    mix = load_mix(path, 8000, 2).numpy()
    assert mix.shape == reference.shape
    assert np.abs(mix - reference).max() < 3 / 2 ** 15      # 16-bit rounding of ffmpeg's
    assert 'downmixed' in capsys.readouterr().err
    if channels >= 4:   # the centre (FC) is in both sides (3 channels: 2.1, its LFE)
        centre = audio[2]
        assert abs(np.dot(mix[0], centre)) > 0.1 * np.dot(centre, centre)


def test_streamed_surround_equals_whole_file(tmp_path):
    """The range-by-range reader of a WAV at the model's rate downmixes the same way."""
    import contextlib
    path = tmp_path / 'in.wav'
    surround_file(path, 6)
    whole = load_mix(path, 8000, 2)
    with contextlib.ExitStack() as stack:
        read, length = open_track(path, 8000, 2, stack)
        streamed = read(0, length)[0]
    assert np.allclose(streamed.numpy(), whole.numpy(), atol=1e-6)
    mono = load_mix(path, 8000, 1).numpy()
    assert np.allclose(mono[0], whole.numpy().mean(0), atol=1e-6)
