"""The `separator` command: separate tracks with a released model or bag, as `demucs` does.

    separator [-n NAME] [--repo release_models] [-o separated] track1.wav track2.mp3 ...

Writes OUT/NAME/TRACK/SOURCE.wav for every source of the model (see --help for the
formats, --two-stems, --shifts, --segment...). Inputs are read with soundfile (wav, flac,
ogg...) or decoded with the `ffmpeg` binary (mp3, m4a...), then resampled to the model's
sample rate and converted to its channel count (stereo with --midside, or for a bag whose
mono models run mid/side: its `mix_channels`). A track that cannot be read is reported and
skipped; the command then exits with status 1 once the other tracks are written. The
separation streams (`track_io`): memory does not grow with the song.

Two inference tricks of the demixing challenges are off by default: --midside (also
separate the mid and side channels, `apply.apply_model`) and --wiener N (a multichannel
Wiener filter on the estimates, `wiener.wiener_filter`).
"""
import argparse
import contextlib
import os
import shutil
import sys
import typing as tp
from pathlib import Path

import torch
import tqdm

from .apply import CHUNKINGS, count_calls
from .data.audio import AudioError
from .malloc import keep_freed_memory
from .pretrained import (DEFAULT_REPO, BagOfModels, ModelLoadingError, apply_bag,
                         bag_members, compile_model, get_model, list_models, stream_bag)
from .threads import set_threads
from .track_io import StemWriter, open_track
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
        if hasattr(model, 'valid_length'):      # the padding of --chunking demucs
            self.valid_length = model.valid_length

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = self.model(mix)
        self.bar.update(1)
        return out


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
                        help="torch CPU threads (default: every core this process may use; "
                        "on a machine busy with other work, -j 1 or 2 is often much faster)")
    parser.add_argument('--shifts', type=int, default=1,
                        help="average over this many random shifts of the input (better, "
                        "slower; 0: none; default: %(default)s)")
    parser.add_argument('--overlap', type=float, default=0.25,
                        help="overlap between chunks (default: %(default)s)")
    parser.add_argument('--segment', type=float, default=None,
                        help="chunk length in seconds (default: the model's)")
    parser.add_argument('--no-split', action='store_true',
                        help="process each track at once instead of in chunks (more memory)")
    parser.add_argument('--chunking', choices=CHUNKINGS, default='fade',
                        help="fade: chunks of real audio blended with raised-cosine fades; "
                        "demucs: demucs' chunking (triangle window, last chunk padded), for "
                        "the same output as `demucs` with the same model (default: "
                        "%(default)s)")
    parser.add_argument('--compile', action='store_true',
                        help="compile the model with torch.compile: ~1.5-2x faster per chunk "
                        "on CPU, same output to float error, but the first chunk waits for "
                        "the compilation (1-2 min on a small CPU, less once cached); for long "
                        "or many tracks")
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
    track = Path('t.wav')
    if stem_path(args.filename, track, 'a', 'wav') == stem_path(args.filename, track, 'b', 'wav'):
        parser.error(f"--filename {args.filename!r} has no {{stem}}: every stem of a track would "
                     f"be written to the same file and only the last would survive; put "
                     f"{{stem}} in it, e.g. '{{track}}/{{stem}}.{{ext}}'")
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error("-d cuda: no CUDA device is available; use -d cpu")
    _check_paths(parser, args)
    seen: tp.Dict[str, Path] = {}
    for path in args.tracks:
        target = stem_path(args.filename, path, '<stem>', '<ext>')
        if target in seen and seen[target] != path:
            parser.error(f"{seen[target]} and {path} would write the same stems ({target}): "
                         f"name the outputs by extension too with --filename "
                         f"'{{track}}_{{trackext}}/{{stem}}.{{ext}}', or separate them in two "
                         f"calls with different -o")
        seen[target] = path


def _check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every input is a file, given once, and the output folder can be written: checked
    before the first track starts, each refusal naming the path."""
    given: tp.Dict[Path, Path] = {}
    for path in args.tracks:
        if path.is_dir():
            parser.error(f"{path} is a folder: give audio files, e.g. {path}/*.wav")
        if not path.is_file():
            parser.error(f"{path}: no such file")
        real = path.resolve()
        if real in given:
            parser.error(f"{given[real]} and {path} are the same file: give it once")
        given[real] = path
    out = args.out
    if out.exists() and not out.is_dir():
        parser.error(f"-o {out} is a file, not a folder: choose another output folder")
    existing = next(folder for folder in [out, *out.absolute().parents] if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"-o {out}: cannot write into {existing} (permission denied): choose an "
                     f"output folder you can write to")


def _remove_empty_folders(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to `stop` (excluded) while they are empty."""
    folder, stop = folder.absolute(), stop.absolute()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:   # not empty, or gone
            return
        folder = folder.parent


def stem_path(filename: str, track: Path, stem: str, ext: str) -> str:
    """Where (relative to OUT/NAME) the stem `stem` of `track` goes (--filename)."""
    return filename.format(track=track.name.rsplit('.', 1)[0], trackext=track.suffix.lstrip('.'),
                           stem=stem, ext=ext)


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
    """Separate one track into `folder`; return the paths written.

    The stems are written as they come, block by block (`pretrained.stream_bag`), from a
    mixture read range by range (`track_io.open_track`), so memory does not grow with the
    song; except with --wiener or --no-split, which need the whole song at once."""
    ext = 'mp3' if args.mp3 else 'flac' if args.flac else 'wav'
    names = [args.two_stems, f'no_{args.two_stems}'] if args.two_stems else list(model.sources)
    targets = {name: folder / stem_path(args.filename, path, name, ext) for name in names}
    bag = isinstance(model, BagOfModels)
    models = list(model.models) if bag else [model]
    writers: tp.Dict[str, StemWriter] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        # Mid/side needs the stereo track, also for a mono model (whose stems are then stereo);
        # so does a bag of mono models one of which runs mid/side (its `mix_channels`: 2).
        channels = 2 if args.midside else getattr(model, 'mix_channels', model.audio_channels)
        read, length = open_track(path, model.samplerate, channels, stack)
        total = sum(count_calls(sub, length, args.segment,
                                settings.get('overlap', args.overlap),
                                settings.get('shifts', args.shifts), not args.no_split,
                                args.batch_size, args.chunking)
                    for sub, settings in bag_members(model))
        bar = stack.enter_context(tqdm.tqdm(total=total, desc=path.name, unit='chunk',
                                            file=sys.stderr, leave=False, dynamic_ncols=True))
        # Each model advances the bar; a bag gets its models wrapped for the time of the call.
        if bag:
            model.models = torch.nn.ModuleList(_Progress(sub, bar) for sub in models)
            stack.callback(setattr, model, 'models', torch.nn.ModuleList(models))
        runner = model if bag else _Progress(model, bar)
        options = dict(segment=args.segment, overlap=args.overlap, shifts=args.shifts,
                       batch_size=args.batch_size, midside=args.midside,
                       chunking=args.chunking,
                       generator=torch.Generator().manual_seed(args.seed))
        if args.wiener or args.no_split:
            mix = read(0, length).to(args.device)
            estimates = apply_bag(runner, mix, split=not args.no_split, **options)
            # On the whole blended estimate: chunked inside, so memory stays bounded.
            blocks: tp.Iterable = [(0, wiener_filter(mix, estimates, args.wiener))]
        else:
            blocks = stream_bag(runner, lambda start, end: read(start, end).to(args.device),
                                length, **options)
        try:
            for name, target in targets.items():
                writers[name] = StemWriter(target, model.samplerate, channels, args)
            for start, block in blocks:
                stems = dict(zip(model.sources, block[0].cpu()))
                if args.two_stems:
                    mix = read(start, start + block.shape[-1])[0]
                    stems = {args.two_stems: stems[args.two_stems],
                             f'no_{args.two_stems}': mix - stems[args.two_stems]}
                for name, wav in stems.items():
                    writers[name].write(wav)
            bar.update(bar.total - bar.n)
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
    return list(targets.values())


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    """The `separator` command; Ctrl-C ends it with one line and status 130.
    `separator serve ...` starts the web page instead (`separator.serve`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['serve']:
        from .serve import main as serve
        return serve(argv[1:])
    try:
        return _separate(argv)
    except KeyboardInterrupt:
        print("separator: interrupted", file=sys.stderr)
        return 130


def _separate(argv: tp.Optional[tp.Sequence[str]]) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    set_threads(args.jobs)
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
    if str(args.device).startswith('cpu'):
        keep_freed_memory()     # every chunk reuses the last one's memory (separator/malloc.py)
    if args.compile:
        print("Compiling the model (torch.compile): the first chunk takes a minute or two.",
              file=sys.stderr)
        compile_model(model)
    folder = args.out / name
    print(f"Separating {len(args.tracks)} track(s) with {name} into {folder}", file=sys.stderr)
    failed = []
    done = 0
    with torch.inference_mode():
        for path in args.tracks:
            try:
                written = separate_track(model, path, folder, args)
            except KeyboardInterrupt:
                target = folder / stem_path(args.filename, path, 'stem', 'wav')
                _remove_empty_folders(target.parent, args.out.absolute().parent)
                print(f"separator: interrupted while separating {path}: none of its stems "
                      f"was written; the {done} track(s) before it are complete in {folder}",
                      file=sys.stderr)
                return 130
            except (AudioError, OSError) as error:
                print(f"separator: error: {error}", file=sys.stderr)
                failed.append(path)
                continue
            except torch.OutOfMemoryError as error:
                print(f"separator: error: out of memory on {path} ({error}); try a smaller "
                      f"--segment, --shifts 0, or -d cpu", file=sys.stderr)
                failed.append(path)
                continue
            done += 1
            print(f"{path} -> {written[0].parent}", file=sys.stderr)
    if failed:
        print(f"separator: {len(failed)} of {len(args.tracks)} track(s) failed: "
              f"{', '.join(map(str, failed))}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
