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


# The stereo downmix of ffmpeg's `-ac 2` (libswresample's matrix, centre and surround at
# -3 dB, LFE dropped) for its default layout of each channel count: [left, right] weights of
# each input channel, in file order. libswresample then divides by the largest row sum when
# it works in integers (16/24-bit files), which we always do, so the downmix never clips.
_C = 0.5 ** 0.5           # -3 dB
SURROUND_TO_STEREO = {
    3: [[1, 0], [0, 1], [0, 0]],                                       # 2.1: FL FR LFE
    4: [[1, 0], [0, 1], [_C, _C], [0.5, 0.5]],                         # 4.0: + BC
    5: [[1, 0], [0, 1], [_C, _C], [_C, 0], [0, _C]],                   # 5.0: + BL BR
    6: [[1, 0], [0, 1], [_C, _C], [0, 0], [_C, 0], [0, _C]],           # 5.1: + LFE BL BR
    7: [[1, 0], [0, 1], [_C, _C], [0, 0], [0.5, 0.5], [_C, 0], [0, _C]],  # 6.1: LFE BC SL SR
    8: [[1, 0], [0, 1], [_C, _C], [0, 0], [_C, 0], [0, _C], [_C, 0], [0, _C]],  # 7.1
}


def downmix_to_stereo(wav: np.ndarray) -> np.ndarray:
    """[C, T] surround audio (3 to 8 channels, ffmpeg's default layouts: 5.1 is FL FR FC
    LFE BL BR) to stereo, as `ffmpeg -ac 2` does for integer files."""
    matrix = np.asarray(SURROUND_TO_STEREO[wav.shape[0]], dtype=np.float64)
    matrix /= matrix.sum(0).max()
    return (matrix.T @ wav.astype(np.float64)).astype(wav.dtype)


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """Adapt [C, T] audio to `channels`: mono is repeated; surround (3 to 8 channels) is
    downmixed to stereo as ffmpeg does (the centre, where the vocals of a 5.1 mix are, is
    kept), then to mono by averaging; stereo to mono is averaged."""
    have = wav.shape[0]
    if have == channels:
        return wav
    if have == 1:
        return np.repeat(wav, channels, 0)
    if have in SURROUND_TO_STEREO and channels <= 2:
        return convert_channels(downmix_to_stereo(wav), channels)
    if channels == 1:
        return wav.mean(0, keepdims=True)
    raise AudioError(f"Cannot convert {have} channels to {channels}: convert the file first, "
                     f"e.g. `ffmpeg -i IN -ac {channels} OUT.wav`.")


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
