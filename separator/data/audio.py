"""Reading audio files with errors that name the file and the fix."""
import typing as tp
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """Raised for bad input audio; the message names the file and what to do."""


def audio_info(path: Path) -> sf._SoundFileInfo:
    """`soundfile.info` with a clear error for a missing or unreadable file."""
    if not path.exists():
        raise AudioError(f"Missing file {path}.")
    try:
        info = sf.info(str(path))
    except Exception as error:
        raise AudioError(f"Cannot read {path}: {error}. The file is corrupt or not an audio "
                         f"format soundfile reads (wav, flac, ogg, mp3): re-encode it, e.g. "
                         f"`ffmpeg -i IN -c:a pcm_f32le OUT.wav`.") from error
    if info.frames <= 0:
        raise AudioError(f"{path} has no audio frames: the file is empty or truncated.")
    return info


def read_audio(path: Path, start: int = 0, frames: int = -1) -> np.ndarray:
    """Read `frames` frames from `start` (partial read, no whole-file load) as float32 [C, T].

    Frames past the end of the file are not returned: the caller pads.
    """
    try:
        with sf.SoundFile(str(path)) as handle:
            if start:
                handle.seek(start)
            data = handle.read(frames, dtype='float32', always_2d=True)
    except Exception as error:
        raise AudioError(f"Cannot read {path} (frames {start} to "
                         f"{'end' if frames < 0 else start + frames}): {error}. The file is "
                         f"corrupt or truncated: replace it.") from error
    return data.T.copy()


def fit_length(wav: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or crop the last axis to `length`."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    pad = [(0, 0)] * (wav.ndim - 1) + [(0, length - wav.shape[-1])]
    return np.pad(wav, pad)


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """Adapt [C, T] audio to `channels`: mono is repeated, extra channels are averaged."""
    if wav.shape[0] == channels:
        return wav
    if channels == 1:
        return wav.mean(0, keepdims=True)
    if wav.shape[0] == 1:
        return np.repeat(wav, channels, 0)
    if wav.shape[0] > channels:
        return wav[:channels]
    raise AudioError(f"Cannot convert {wav.shape[0]} channels to {channels}.")


def check_format(path: Path, info: tp.Any, samplerate: int, channels: int) -> None:
    """Raise an AudioError naming the fix when `info` does not match the configuration."""
    if info.samplerate != samplerate:
        raise AudioError(
            f"{path} has sample rate {info.samplerate} Hz but the configuration expects "
            f"{samplerate} Hz. Resample the data set (e.g. `ffmpeg -i IN -ar {samplerate} OUT`) "
            f"or set dset.samplerate={info.samplerate}.")
    if info.channels != channels:
        raise AudioError(
            f"{path} has {info.channels} channel(s) but the configuration expects {channels}. "
            f"Convert the file (e.g. `ffmpeg -i IN -ac {channels} OUT`) or set "
            f"dset.channels={info.channels}.")
