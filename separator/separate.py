"""The `separator` command: separate tracks with a released model or bag, as `demucs` does.

    separator [-n NAME] [--repo release_models] [-o separated] track1.wav track2.mp3 ...

Writes OUT/NAME/TRACK/SOURCE.wav for every source of the model (see --help for the
formats, --two-stems, --shifts, --segment...). Inputs are read with soundfile (wav, flac,
ogg...) or decoded with the `ffmpeg` binary (mp3, m4a...), then resampled to the model's
sample rate and converted to its channel count (stereo with --midside). A track that cannot
be read is reported and skipped; the command then exits with status 1 once the other tracks
are written.

Two inference tricks of the demixing challenges are off by default: --midside (also
separate the mid and side channels, `apply.apply_model`) and --wiener N (a multichannel
Wiener filter on the estimates, `wiener.wiener_filter`).
"""
import argparse
import json
import math
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
import tqdm

from .apply import chunk_offsets
from .data.audio import AudioError, convert_channels
from .pretrained import (DEFAULT_REPO, BagOfModels, ModelLoadingError, apply_bag, get_model,
                         list_models)
from .wiener import wiener_filter


class _Progress(torch.nn.Module):
    """Wraps a model to advance a progress bar at each forward call (one per batch of chunks)."""

    def __init__(self, model: torch.nn.Module, bar: tqdm.tqdm):
        super().__init__()
        self.model = model
        self.bar = bar
        self.samplerate = model.samplerate
        self.segment = model.segment
        self.audio_channels = model.audio_channels

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = self.model(mix)
        self.bar.update(1)
        return out


def _expected_calls(model: torch.nn.Module, length: int, args: argparse.Namespace) -> int:
    """Forward calls `apply_model` makes on a mixture of `length` frames (for the bar)."""
    if args.shifts > 0:
        length += int(0.5 * model.samplerate)
    segment = int((args.segment or model.segment) * model.samplerate)
    if args.no_split or length <= segment:
        calls = 1
    else:
        chunks = len(chunk_offsets(length, segment, args.overlap))
        calls = math.ceil(chunks / args.batch_size)
    return calls * max(1, args.shifts)


# ---------------------------------------------------------------- reading
def _ffmpeg_read(path: Path) -> tp.Tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` with ffmpeg: float32 [C, T] and sample rate."""
    probe = subprocess.run(
        ['ffprobe', '-v', 'error', '-select_streams', 'a:0', '-show_entries',
         'stream=sample_rate,channels', '-of', 'json', str(path)],
        capture_output=True, text=True)
    streams = json.loads(probe.stdout or '{}').get('streams') if probe.returncode == 0 else None
    if not streams:
        raise AudioError(probe.stderr.strip() or "no audio stream")
    samplerate, channels = int(streams[0]['sample_rate']), int(streams[0]['channels'])
    decode = subprocess.run(
        ['ffmpeg', '-v', 'error', '-nostdin', '-i', str(path), '-map', '0:a:0',
         '-f', 'f32le', '-acodec', 'pcm_f32le', '-'], capture_output=True)
    if decode.returncode != 0:
        raise AudioError(decode.stderr.decode(errors='replace').strip())
    wav = np.frombuffer(decode.stdout, dtype=np.float32)
    wav = wav[:len(wav) // channels * channels].reshape(-1, channels).T.copy()
    return wav, samplerate


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


def load_mix(path: Path, samplerate: int, channels: int) -> torch.Tensor:
    """The track `path` as a float32 [channels, T] tensor at `samplerate`, with notices."""
    wav, rate = read_track(path)
    if wav.shape[0] != channels:
        how = 'repeated' if wav.shape[0] == 1 else (
            'averaged' if channels == 1 else f'first {channels} kept')
        print(f"notice: {path}: {wav.shape[0]} channel(s) converted to {channels} ({how}).",
              file=sys.stderr)
        wav = convert_channels(wav, channels)
    mix = torch.from_numpy(np.ascontiguousarray(wav))
    if rate != samplerate:
        print(f"notice: {path}: resampled from {rate} Hz to {samplerate} Hz.", file=sys.stderr)
        mix = julius.resample_frac(mix, rate, samplerate)
    return mix


# ---------------------------------------------------------------- writing
def prevent_clip(wav: torch.Tensor, mode: str) -> torch.Tensor:
    """Keep `wav` within [-1, 1]: rescale it as a whole, clamp it, or leave it ('none')."""
    if mode == 'rescale':
        return wav / max(1.01 * wav.abs().max().item(), 1.)
    if mode == 'clamp':
        return wav.clamp(-0.99, 0.99)
    return wav


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.name + '.', suffix='.tmp')
    os.close(fd)
    return Path(tmp)


def save_audio(wav: torch.Tensor, path: Path, samplerate: int, args: argparse.Namespace
               ) -> None:
    """Write [C, T] `wav` to `path` atomically (temporary file, then rename)."""
    wav = prevent_clip(wav, args.clip_mode)
    data = wav.t().contiguous().numpy()
    tmp = _temporary(path)
    try:
        if args.mp3:
            encode = subprocess.run(
                ['ffmpeg', '-v', 'error', '-nostdin', '-y', '-f', 'f32le', '-ar',
                 str(samplerate), '-ac', str(data.shape[1]), '-i', '-', '-codec:a', 'libmp3lame',
                 '-b:a', f'{args.mp3_bitrate}k', '-f', 'mp3', str(tmp)],
                input=data.astype(np.float32).tobytes(), capture_output=True)
            if encode.returncode != 0:
                raise OSError(f"ffmpeg could not encode {path}: "
                              f"{encode.stderr.decode(errors='replace').strip()}")
        else:
            subtype = 'FLOAT' if args.float32 else 'PCM_24' if args.int24 else 'PCM_16'
            sf.write(str(tmp), data, samplerate, subtype=subtype,
                     format='FLAC' if args.flac else 'WAV')
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- main
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='separator', description="Separate tracks into sources with a released model.")
    parser.add_argument('tracks', nargs='+', type=Path, help="audio files to separate")
    parser.add_argument('-n', '--name', help="model or bag name in the repository (default: "
                        "the only one there)")
    parser.add_argument('--repo', type=Path, default=DEFAULT_REPO,
                        help="folder of the released models (default: %(default)s)")
    parser.add_argument('-o', '--out', type=Path, default=Path('separated'),
                        help="output folder; stems go to OUT/NAME/ (default: %(default)s)")
    parser.add_argument('--filename', default='{track}/{stem}.{ext}',
                        help="stem path under OUT/NAME, with {track} (input name without "
                        "extension), {trackext} (its extension), {stem} and {ext} "
                        "(default: %(default)s)")
    parser.add_argument('-d', '--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help="cpu or cuda (default: %(default)s)")
    parser.add_argument('-j', '--jobs', type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--shifts', type=int, default=1,
                        help="average over this many random shifts of the input (better, "
                        "slower; 0: none; default: %(default)s)")
    parser.add_argument('--overlap', type=float, default=0.25,
                        help="overlap between chunks (default: %(default)s)")
    parser.add_argument('--segment', type=float, default=None,
                        help="chunk length in seconds (default: the model's)")
    parser.add_argument('--no-split', action='store_true',
                        help="process each track at once instead of in chunks (more memory)")
    parser.add_argument('--batch-size', type=int, default=1,
                        help="chunks per forward call; raise it on a GPU (default: %(default)s)")
    parser.add_argument('--midside', action='store_true',
                        help="mid/side inference (SDX23 aimless): also separate the mid "
                        "(L+R)/2 and side (L-R)/2 channels and average both estimates of L "
                        "and R; needs a mono or stereo model, writes stereo stems; about 2x "
                        "slower (4x for a mono model)")
    parser.add_argument('--wiener', type=int, default=0, metavar='N',
                        help="refine the estimates with N EM iterations of a multichannel "
                        "Wiener filter (norbert / open-unmix, MDX21 danna); the stems then "
                        "sum to the mixture; 0: off (default: %(default)s)")
    parser.add_argument('--two-stems', metavar='SOURCE',
                        help="write only SOURCE and no_SOURCE (the mixture minus SOURCE)")
    parser.add_argument('--seed', type=int, default=0,
                        help="seed of the random shifts (default: %(default)s)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument('--mp3', action='store_true', help="write mp3 files (needs ffmpeg)")
    fmt.add_argument('--flac', action='store_true', help="write flac files")
    parser.add_argument('--mp3-bitrate', type=int, default=320,
                        help="mp3 bitrate in kb/s (default: %(default)s)")
    depth = parser.add_mutually_exclusive_group()
    depth.add_argument('--int24', action='store_true', help="write 24-bit integer samples")
    depth.add_argument('--float32', action='store_true',
                       help="write 32-bit float samples (wav only)")
    parser.add_argument('--clip-mode', choices=['rescale', 'clamp', 'none'], default='rescale',
                        help="avoid clipping by rescaling a stem, clamping it, or not at all "
                        "(default: %(default)s)")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.shifts < 0:
        parser.error("--shifts must be >= 0")
    if not 0 <= args.overlap < 1:
        parser.error("--overlap must be in [0, 1)")
    if args.segment is not None and args.segment <= 0:
        parser.error("--segment must be positive")
    if args.wiener < 0:
        parser.error("--wiener must be >= 0")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.jobs is not None and args.jobs < 1:
        parser.error("-j must be >= 1")
    if args.flac and args.float32:
        parser.error("flac has no float samples: use --int24 or 16-bit with --flac")
    if args.mp3 and (args.int24 or args.float32):
        parser.error("--int24 and --float32 apply to wav and flac only, not --mp3")
    if args.mp3 and shutil.which('ffmpeg') is None:
        parser.error("--mp3 needs the ffmpeg binary: install it (`apt-get install ffmpeg`) or "
                     "use --flac")
    try:
        args.filename.format(track='t', trackext='wav', stem='s', ext='wav')
    except (KeyError, IndexError, ValueError) as error:
        parser.error(f"--filename {args.filename!r}: {error!r}; use {{track}}, {{trackext}}, "
                     f"{{stem}} and {{ext}}")
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error("-d cuda: no CUDA device is available; use -d cpu")


def _default_name(parser: argparse.ArgumentParser, repo: Path) -> str:
    names = list_models(repo)
    if len(names) == 1:
        return names[0]
    if not names:
        parser.error(f"no models in {repo}: export one with `python -m tools.export SIG -o "
                     f"{repo}`, or pass --repo")
    parser.error(f"{repo} has several models, choose one with -n: {', '.join(names)}")
    raise AssertionError  # unreachable: parser.error exits


def separate_track(model: torch.nn.Module, path: Path, folder: Path,
                   args: argparse.Namespace) -> tp.List[Path]:
    """Separate one track into `folder`; return the paths written."""
    # Mid/side needs the stereo track, also for a mono model (whose stems are then stereo).
    mix = load_mix(path, model.samplerate, 2 if args.midside else model.audio_channels)
    generator = torch.Generator().manual_seed(args.seed)
    bag = isinstance(model, BagOfModels)
    models = list(model.models) if bag else [model]
    total = sum(_expected_calls(sub, mix.shape[-1], args) for sub in models)
    with tqdm.tqdm(total=total, desc=path.name, unit='chunk', file=sys.stderr,
                   leave=False, dynamic_ncols=True) as bar:
        # Each model advances the bar; a bag gets its models wrapped for the time of the call.
        if bag:
            model.models = torch.nn.ModuleList(_Progress(sub, bar) for sub in models)
        try:
            estimates = apply_bag(model if bag else _Progress(model, bar), mix.to(args.device),
                                  segment=args.segment, overlap=args.overlap,
                                  shifts=args.shifts, split=not args.no_split,
                                  batch_size=args.batch_size, generator=generator,
                                  midside=args.midside)
        finally:
            if bag:
                model.models = torch.nn.ModuleList(models)
        bar.update(bar.total - bar.n)
    # On the whole blended estimate: chunked inside, so memory stays bounded.
    estimates = wiener_filter(mix.to(estimates.device), estimates, args.wiener).cpu()
    stems = dict(zip(model.sources, estimates))
    if args.two_stems:
        stems = {args.two_stems: stems[args.two_stems],
                 f'no_{args.two_stems}': mix - stems[args.two_stems]}
    ext = 'mp3' if args.mp3 else 'flac' if args.flac else 'wav'
    written = []
    for stem, wav in stems.items():
        target = folder / args.filename.format(track=path.name.rsplit('.', 1)[0],
                                               trackext=path.suffix.lstrip('.'),
                                               stem=stem, ext=ext)
        save_audio(wav, target, model.samplerate, args)
        written.append(target)
    return written


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.jobs is not None:
        torch.set_num_threads(args.jobs)
    name = args.name or _default_name(parser, args.repo)
    try:
        model = get_model(name, args.repo)
    except ModelLoadingError as error:
        print(f"separator: error: {error}", file=sys.stderr)
        return 2
    if args.two_stems is not None and args.two_stems not in model.sources:
        parser.error(f"--two-stems {args.two_stems}: the model {name} has the sources "
                     f"{', '.join(model.sources)}")
    if args.midside and model.audio_channels not in (1, 2):
        parser.error(f"--midside needs a mono or stereo model, {name} has "
                     f"{model.audio_channels} channels")
    model.to(args.device)
    folder = args.out / name
    print(f"Separating {len(args.tracks)} track(s) with {name} into {folder}", file=sys.stderr)
    failed = []
    with torch.inference_mode():
        for path in args.tracks:
            try:
                written = separate_track(model, path, folder, args)
            except (AudioError, OSError) as error:
                print(f"separator: error: {error}", file=sys.stderr)
                failed.append(path)
                continue
            except torch.OutOfMemoryError as error:
                print(f"separator: error: out of memory on {path} ({error}); try a smaller "
                      f"--segment, --shifts 0, or -d cpu", file=sys.stderr)
                failed.append(path)
                continue
            print(f"{path} -> {written[0].parent}", file=sys.stderr)
    if failed:
        print(f"separator: {len(failed)} of {len(args.tracks)} track(s) failed: "
              f"{', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
