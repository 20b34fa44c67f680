"""Songs in and stems out for the `separator` command, range by range.

`open_track` gives a reader of the mixture: `read(start, end)` -> float32 [1, C, end - start]
at the model's sample rate and channel count, zeros outside the song. A WAV, FLAC or AIFF file
at the model's rate is read from disk range by range (memory does not grow with the song);
other files (mp3, m4a... through ffmpeg, or another sample rate, resampled with julius) are
decoded into memory first.

`StemWriter` writes one stem block by block into a temporary file next to its target, renamed
onto it by `close()`: an interrupted run leaves the previous file, never half of one. With
`--clip-mode rescale` the stem's peak is only known at its end, so its blocks go to a float32
temporary first and are rescaled into the final format at `close()`.
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import typing as tp
from pathlib import Path

import julius
import numpy as np
import soundfile as sf
import torch

from .apply import slice_reader
from .atomic import explain_disk_full, temporary_path
from .data.audio import AudioError, convert_channels

Reader = tp.Callable[[int, int], torch.Tensor]
STREAMED_FORMATS = ('WAV', 'WAVEX', 'RF64', 'W64', 'FLAC', 'AIFF', 'CAF')  # exact seeks
COPY_FRAMES = 1 << 18                                                    # rescale pass block


# ---------------------------------------------------------------- reading
def ffmpeg_input(path: Path) -> str:
    """`path` as ffmpeg and ffprobe must read or write it: a file, whatever its name (`-x.mp3` is not
    an option, `a:b.mp3` not a protocol, `-` not standard input)."""
    return 'file:' + str(Path(path).absolute())


def _probe_streams(path: Path) -> tp.List[dict]:
    """ffprobe's sample rate and channels of every audio stream of `path`, in order."""
    probe = subprocess.run(
        ['ffprobe', '-v', 'error', '-select_streams', 'a', '-show_entries',
         'stream=sample_rate,channels', '-of', 'json', ffmpeg_input(path)],
        capture_output=True, text=True)
    streams = json.loads(probe.stdout or '{}').get('streams') if probe.returncode == 0 else None
    if not streams:
        raise AudioError(probe.stderr.strip() or "no audio stream")
    return streams


def _decode_stream(path: Path, index: int, channels: int) -> np.ndarray:
    """Audio stream `index` of `path` as float32 [C, T], decoded by ffmpeg."""
    decode = subprocess.run(
        ['ffmpeg', '-v', 'error', '-nostdin', '-i', ffmpeg_input(path), '-map', f'0:a:{index}',
         '-f', 'f32le', '-acodec', 'pcm_f32le', '-'], capture_output=True)
    if decode.returncode != 0:
        raise AudioError(decode.stderr.decode(errors='replace').strip())
    wav = np.frombuffer(decode.stdout, dtype=np.float32)
    return wav[:len(wav) // channels * channels].reshape(-1, channels).T.copy()


def _ffmpeg_read(path: Path) -> tp.Tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` with ffmpeg: float32 [C, T] and sample rate."""
    stream = _probe_streams(path)[0]
    return _decode_stream(path, 0, int(stream['channels'])), int(stream['sample_rate'])


def read_stems(path: Path) -> tp.Tuple[np.ndarray, int]:
    """Every audio stream of a multi-stream file (a MUSDB18 `.stem.mp4`: mixture, drums, bass,
    other, vocals) as float32 [streams, C, T] and the sample rate.

    Each stream is decoded on its own and all are cut to the shortest: the AAC streams of a
    stem file may decode one frame apart (stempeg's reader fails on that)."""
    path = Path(path)
    try:
        streams = _probe_streams(path)
        rates = {int(stream['sample_rate']) for stream in streams}
        channels = {int(stream['channels']) for stream in streams}
        if len(rates) > 1 or len(channels) > 1:
            raise AudioError(f"its streams differ in sample rate {sorted(rates)} or channels "
                             f"{sorted(channels)}")
        wavs = [_decode_stream(path, index, int(stream['channels']))
                for index, stream in enumerate(streams)]
    except AudioError as error:
        raise AudioError(f"Cannot read the stems of {path}: {error}. Check it with "
                         f"`ffprobe FILE` (a MUSDB18 stem file holds five AAC streams), "
                         f"replace it or remove it.") from error
    length = min(wav.shape[-1] for wav in wavs)
    return np.stack([wav[:, :length] for wav in wavs]), rates.pop()


def read_track(path: Path) -> tp.Tuple[np.ndarray, int]:
    """Float32 [C, T] audio and sample rate of `path` (soundfile, else ffmpeg)."""
    if not path.is_file():
        raise AudioError(f"{path}: no such file.")
    try:
        wav, samplerate = sf.read(str(path), dtype='float32', always_2d=True)
        wav = wav.T.copy()
    except Exception as sf_error:
        if shutil.which('ffmpeg') is None or shutil.which('ffprobe') is None:
            raise AudioError(f"Cannot read {path}: {sf_error}. For formats other than wav, "
                             f"flac and ogg, install ffmpeg (`apt-get install ffmpeg`).") \
                from sf_error
        try:
            wav, samplerate = _ffmpeg_read(path)
        except (AudioError, ValueError, KeyError) as error:
            raise AudioError(f"Cannot read {path}: the file is corrupt or not audio "
                             f"(soundfile: {sf_error}; ffmpeg: {error}).") from error
    if wav.shape[-1] == 0:
        raise AudioError(f"{path} has no audio frames: the file is empty or truncated.")
    return wav, samplerate


def _channels_notice(path: Path, have: int, channels: int) -> None:
    how = ('repeated' if have == 1 else 'averaged' if have == 2
           else "downmixed as ffmpeg's -ac 2 does" + (', then averaged' if channels == 1 else ''))
    print(f"notice: {path}: {have} channel(s) converted to {channels} ({how}).",
          file=sys.stderr)


def load_mix(path: Path, samplerate: int, channels: int) -> torch.Tensor:
    """The track `path` as a float32 [channels, T] tensor at `samplerate`, with notices."""
    wav, rate = read_track(path)
    if wav.shape[0] != channels:
        _channels_notice(path, wav.shape[0], channels)
        wav = convert_channels(wav, channels)
    mix = torch.from_numpy(np.ascontiguousarray(wav))
    if rate != samplerate:
        print(f"notice: {path}: resampled from {rate} Hz to {samplerate} Hz.", file=sys.stderr)
        mix = julius.resample_frac(mix, rate, samplerate)
    return mix


def _file_reader(path: Path, handle: sf.SoundFile, channels: int) -> Reader:
    frames = handle.frames

    def read(start: int, end: int) -> torch.Tensor:
        begin, stop = max(0, start), min(frames, end)
        out = np.zeros((channels, end - start), dtype=np.float32)
        if stop > begin:
            handle.seek(begin)
            data = handle.read(stop - begin, dtype='float32', always_2d=True)
            if data.shape[0] != stop - begin:
                raise AudioError(f"{path}: could read only {data.shape[0]} of the "
                                 f"{stop - begin} frames from frame {begin}: the file is "
                                 f"truncated or corrupt; re-encode or replace it.")
            out[:, begin - start:stop - start] = convert_channels(data.T, channels)
        return torch.from_numpy(out)[None]
    return read


def open_track(path: Path, samplerate: int, channels: int, stack: tp.Any
               ) -> tp.Tuple[Reader, int]:
    """A reader of the mixture of `path` (module docstring) and its length in frames.

    An open file is closed by `stack` (a `contextlib.ExitStack`)."""
    try:
        handle = sf.SoundFile(str(path))
    except Exception:
        handle = None
    if handle is not None and handle.format in STREAMED_FORMATS \
            and handle.samplerate == samplerate and handle.frames > 0:
        stack.enter_context(handle)
        if handle.channels != channels:
            _channels_notice(path, handle.channels, channels)
        return _file_reader(path, handle, channels), handle.frames
    if handle is not None:
        handle.close()
    mix = load_mix(path, samplerate, channels)[None]
    return slice_reader(mix), mix.shape[-1]


# ---------------------------------------------------------------- writing
class _Mp3Sink:
    """Float32 frames piped into ffmpeg's mp3 encoder."""

    def __init__(self, path: Path, samplerate: int, channels: int, bitrate: int):
        self.path = path
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ['ffmpeg', '-v', 'error', '-nostdin', '-y', '-f', 'f32le', '-ar', str(samplerate),
             '-ac', str(channels), '-i', '-', '-codec:a', 'libmp3lame', '-b:a', f'{bitrate}k',
             '-f', 'mp3', ffmpeg_input(path)], stdin=subprocess.PIPE, stderr=self.errors)

    def write(self, frames: np.ndarray) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(np.ascontiguousarray(frames, dtype=np.float32).tobytes())
        except BrokenPipeError:
            self.close()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        code = self.process.wait()
        self.errors.seek(0)
        message = self.errors.read().decode(errors='replace').strip()
        self.errors.close()
        if code != 0:
            raise OSError(f"ffmpeg could not encode {self.path}: {message}")


def _open_sink(path: Path, samplerate: int, channels: int, args: argparse.Namespace
               ) -> tp.Any:
    """Something with write(frames [n, C]) and close(): the output format of `args`."""
    if args.mp3:
        return _Mp3Sink(path, samplerate, channels, args.mp3_bitrate)
    subtype = 'FLOAT' if args.float32 else 'PCM_24' if args.int24 else 'PCM_16'
    return sf.SoundFile(str(path), 'w', samplerate, channels, subtype=subtype,
                        format='FLAC' if args.flac else 'WAV')


class StemWriter:
    """One stem, written block by block, atomically (module docstring)."""

    def __init__(self, path: Path, samplerate: int, channels: int, args: argparse.Namespace):
        self.path, self.samplerate, self.channels, self.args = path, samplerate, channels, args
        self.mode = args.clip_mode
        self.peak = 0.
        self.tmp = temporary_path(path)
        self.raw: tp.Optional[Path] = None
        try:
            if self.mode == 'rescale':
                self.raw = temporary_path(path, '.raw.wav')
                self.sink = sf.SoundFile(str(self.raw), 'w', samplerate, channels,
                                         subtype='FLOAT', format='WAV')
            else:
                self.sink = _open_sink(self.tmp, samplerate, channels, args)
        except BaseException:
            self.abort()
            raise

    def write(self, wav: torch.Tensor) -> None:
        """Append [C, n] frames."""
        if self.mode == 'rescale':
            self.peak = max(self.peak, float(wav.abs().max()) if wav.numel() else 0.)
        elif self.mode == 'clamp':
            wav = wav.clamp(-0.99, 0.99)
        with self._failing_clearly():
            self.sink.write(wav.t().contiguous().numpy())

    def close(self) -> None:
        """Finish the file and move it onto its target."""
        try:
            with self._failing_clearly():
                self.sink.close()
                if self.raw is not None:
                    self._rescale()
                os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        if self.raw is not None:
            self.raw.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _failing_clearly(self) -> tp.Iterator[None]:
        """A write that fails (libsndfile's "System error.", a full disk) raises an OSError
        naming the stem, which the command reports before going on with the next track."""
        try:
            yield
        except (OSError, RuntimeError) as error:
            explain_disk_full(error, self.path)
            if isinstance(error, OSError):
                raise
            raise OSError(f"Could not write {self.path}: {error}") from error

    def _rescale(self) -> None:
        """Copy the float32 temporary into the final format, divided by the stem's peak."""
        assert self.raw is not None
        scale = max(1.01 * self.peak, 1.)
        self.sink = _open_sink(self.tmp, self.samplerate, self.channels, self.args)
        with sf.SoundFile(str(self.raw)) as raw:
            while True:
                frames = raw.read(COPY_FRAMES, dtype='float32', always_2d=True)
                if not len(frames):
                    break
                self.sink.write((torch.from_numpy(frames) / scale).numpy())
        self.sink.close()

    def abort(self) -> None:
        """Remove the temporaries; the target is left as it was."""
        sink = getattr(self, 'sink', None)
        if sink is not None:
            try:
                sink.close()
            except Exception:
                pass
        for path in (self.tmp, self.raw):
            if path is not None:
                path.unlink(missing_ok=True)
