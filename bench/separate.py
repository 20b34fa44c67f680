"""Inference speed and memory: `separator.apply.apply_model` vs `demucs.apply.apply_model`.

    python -m bench.separate [--seconds 60] [--shifts 1] [--overlap 0.25] [--segment S]
                             [--model htdemucs|hdemucs] [--model-size full|small]
                             [--memory-minutes 1 10] [--no-memory] [--no-compile]

Both implementations separate the same synthetic stereo song with the very same model object
(a Demucs model with random, seeded weights), the same shifts (the random shift offsets are
forced equal), overlap and segment. Ours runs with both chunkings (`separator.apply`):
`demucs` (demucs' chunks and window: the same output to float error) and `fade` (ours:
other chunks, so compared only on the samples both take from the same chunk), then again
with the model compiled (`separator.pretrained.compile_model`, the `--compile` of the
`separator` command; the compilation is timed apart). Prints seconds, model calls, the
speed-up over demucs and the max abs difference from demucs' output.
Peak RSS is measured in fresh subprocesses separating 1 and 10 minutes with a small model.
Needs `pip install demucs==4.1.0` (plus einops).
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from separator.apply import chunk_offsets

SOURCES = ['drums', 'bass', 'other', 'vocals']
INSTALL = ("The benchmark compares with the `demucs` package, which is missing: "
           "`pip install demucs==4.1.0 einops` (add `--no-deps` to keep your torch).")


def import_demucs() -> tp.Any:
    try:
        import demucs.apply  # noqa: F401
        import demucs.hdemucs  # noqa: F401
        import demucs.htdemucs  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"{INSTALL}\n({error})")
    import demucs
    return demucs


def make_model(name: str, size: str, seed: int = 0) -> torch.nn.Module:
    """A model with random weights, seeded; it has `samplerate`, `segment`, `audio_channels`."""
    demucs = import_demucs()
    torch.manual_seed(seed)
    if name == 'htdemucs':
        kwargs = {} if size == 'full' else dict(channels=8, depth=4, t_layers=1, t_heads=4,
                                                 bottom_channels=0)
        model = demucs.htdemucs.HTDemucs(sources=SOURCES, **kwargs)
    elif size == 'full':
        model = demucs.hdemucs.HDemucs(sources=SOURCES, segment=10)
    else:
        from separator.models.hdemucs import HDemucs
        model = HDemucs(SOURCES, channels=8, depth=4, nfft=1024, dconv_depth=1)
    return model.eval()


def make_mix(seconds: float, samplerate: int = 44100, seed: int = 0) -> torch.Tensor:
    """A synthetic song's mixture [1, 2, T]; longer than 60 s it repeats (synthesis is slow)."""
    from separator.data.synthetic import synthesize_track
    chunk = min(seconds, 60.)
    stems = synthesize_track(np.random.default_rng(seed), chunk, samplerate)
    mix = torch.from_numpy(sum(stems[name] for name in SOURCES).astype(np.float32))
    length = int(round(seconds * samplerate))
    repeats = -(-length // mix.shape[-1])
    return mix.repeat(1, repeats)[:, :length][None].contiguous()


class _FixedRandom:
    """Stands in for the `random` module of `demucs.apply`: randint returns given offsets."""

    def __init__(self, offsets: tp.List[int]):
        self.offsets = list(offsets)

    def randint(self, _low: int, _high: int) -> int:
        return self.offsets.pop(0)


def our_offsets(shifts: int, samplerate: int, seed: int) -> tp.List[int]:
    """The shift offsets `separator.apply.apply_model` draws from a generator seeded `seed`."""
    generator = torch.Generator().manual_seed(seed)
    max_shift = int(0.5 * samplerate)
    return [int(torch.randint(0, max_shift, (), generator=generator)) for _ in range(shifts)]


def run_ours(model, mix, args) -> torch.Tensor:
    from separator.apply import apply_model
    generator = torch.Generator().manual_seed(args.seed)
    with torch.inference_mode():
        return apply_model(model, mix, segment=args.segment, overlap=args.overlap,
                           shifts=args.shifts, generator=generator,
                           chunking=getattr(args, 'chunking', 'fade'))


def run_demucs(model, mix, args) -> torch.Tensor:
    import demucs.apply
    saved = demucs.apply.random
    demucs.apply.random = _FixedRandom(our_offsets(args.shifts, model.samplerate, args.seed))
    try:
        with torch.inference_mode():
            return demucs.apply.apply_model(model, mix, shifts=args.shifts, split=True,
                                            overlap=args.overlap, segment=args.segment,
                                            progress=False)
    finally:
        demucs.apply.random = saved


def _single_chunk_starts(total: int, offsets: tp.Iterable[int], segment: int, size: int,
                         partial_differs: bool) -> torch.Tensor:
    """For each of `size` frames, the start of the one chunk covering it, -1 when no chunk or
    several do (or, with `partial_differs`, when its chunk is a last, short one: demucs
    centres it on real context (TensorChunk.padded), ours never has one)."""
    count = torch.zeros(size + segment, dtype=torch.int)
    start = torch.full((size + segment,), -1, dtype=torch.long)
    for offset in (offsets if total > segment else [0]):
        partial = partial_differs and offset + segment > total
        count[offset:offset + segment] += 2 if partial else 1
        start[offset:offset + segment] = offset
    return torch.where(count == 1, start, torch.full_like(start, -1))[:size]


def same_chunk_mask(length: int, segment: int, overlap: float, shifts: tp.List[int],
                    samplerate: int) -> torch.Tensor:
    """Output samples that both implementations take from one and the same chunk (same
    input frames), for every shift: there the two can only differ by float error.

    Elsewhere they blend different chunks: demucs' chunks start at 0, 1 stride, 2... up to
    the end and blend with a triangle window; ours end with a chunk aligned on the song's end
    and blend with raised-cosine fades. A model with a global context (LSTM, attention) gives
    different outputs for different chunks of the same samples."""
    stride = max(1, int((1 - overlap) * segment))
    mask = torch.ones(length, dtype=torch.bool)
    max_shift = int(0.5 * samplerate)
    for shift in shifts or [None]:
        if shift is None:
            ours_len = demucs_len = length
            begin = 0
        else:
            ours_len, demucs_len = length + max_shift, length + max_shift - shift
            begin = max_shift - shift           # output frame 0 in ours' shifted signal
        size = max(ours_len, demucs_len)
        # Both shifted signals start at the same frame of the padded song, and output frame t
        # is their frame `begin + t`: a chunk with the same start has the same input frames,
        # unless demucs' is a last, short one (padded differently).
        ours = _single_chunk_starts(
            ours_len, chunk_offsets(ours_len, segment, overlap) if ours_len > segment else [0],
            segment, size, False)[begin:begin + length]
        theirs = _single_chunk_starts(demucs_len, range(0, demucs_len, stride), segment, size,
                                      True)[begin:begin + length]
        mask &= (ours >= 0) & (ours == theirs)
    return mask


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM (ru_maxrss of a child can be inherited from the
    parent at fork time on Linux; VmHWM restarts at exec)."""
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_child(argv: tp.List[str]) -> None:
    """Subprocess mode: separate, print {"seconds": .., "rss_mb": ..} as JSON.

    impl `ours` / `demucs`: apply_model on a random mixture in memory; `separator`: the
    `separator` command's path (`separate_track`, streamed from and to disk) on the WAV file
    given as a fourth argument, the stems written next to it."""
    impl, model_name, seconds = argv[0], argv[1], float(argv[2])
    model = make_model(model_name, 'small')
    before = _peak_rss_mb()
    begin = time.time()
    if impl == 'separator':
        from separator.separate import get_parser, separate_track
        song = Path(argv[3])
        args = get_parser().parse_args([str(song), '--shifts', '0'])
        separate_track(model, song, song.parent / 'separated', args)
    else:
        args = argparse.Namespace(segment=None, overlap=0.25, shifts=0, seed=0)
        mix = torch.randn(1, 2, int(seconds * model.samplerate),
                          generator=torch.Generator().manual_seed(0)) * 0.1
        before = _peak_rss_mb()
        begin = time.time()
        (run_ours if impl == 'ours' else run_demucs)(model, mix, args)
    elapsed = time.time() - begin
    peak = _peak_rss_mb()
    print(json.dumps({'seconds': elapsed, 'rss_mb': peak, 'before_mb': before}))


def write_song(path: Path, seconds: float, samplerate: int = 44100) -> None:
    """A random stereo float32 WAV, written block by block."""
    import soundfile as sf
    generator = torch.Generator().manual_seed(0)
    frames = int(seconds * samplerate)
    with sf.SoundFile(str(path), 'w', samplerate, 2, subtype='FLOAT') as out:
        for start in range(0, frames, samplerate * 10):
            block = min(samplerate * 10, frames - start)
            out.write((torch.randn(block, 2, generator=generator) * 0.1).numpy())


def measure_memory(impl: str, model_name: str, minutes: float, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        extra = []
        if impl == 'separator':
            song = Path(tmp) / 'song.wav'
            write_song(song, 60 * minutes)
            extra = [str(song)]
        command = [sys.executable, '-m', 'bench.separate', '--_child', impl, model_name,
                   str(60 * minutes), *extra, '--threads', str(threads)]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m bench.separate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seconds', type=float, default=60.)
    parser.add_argument('--shifts', type=int, default=1)
    parser.add_argument('--overlap', type=float, default=0.25)
    parser.add_argument('--segment', type=float, default=None,
                        help="chunk seconds (default: the model's; at most it for htdemucs)")
    parser.add_argument('--model', choices=['htdemucs', 'hdemucs'], default='htdemucs')
    parser.add_argument('--model-size', choices=['full', 'small'], default='full',
                        help="size of the model of the speed comparison")
    parser.add_argument('--memory-minutes', type=float, nargs='*', default=[1., 10.],
                        help="song lengths (minutes) of the peak RSS runs, small model")
    parser.add_argument('--no-memory', action='store_true', help="skip the peak RSS runs")
    parser.add_argument('--no-speed', action='store_true', help="only the peak RSS runs")
    parser.add_argument('--no-compile', action='store_true',
                        help="skip the runs with the model compiled (torch.compile)")
    parser.add_argument('--memory-model', choices=['htdemucs', 'hdemucs'], default='hdemucs',
                        help="small model of the peak RSS runs (hdemucs: separator's HDemucs, "
                             "channels=8, depth=4, nfft=1024; htdemucs: a small HTDemucs)")
    parser.add_argument('--memory-demucs', action='store_true',
                        help="also measure demucs' peak RSS (slower)")
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--_child', nargs='+', help=argparse.SUPPRESS)
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._child:
        peak_rss_child(args._child)
        return 0
    import_demucs()
    if not args.no_speed:
        compare_speed(args)
    if not args.no_memory:
        compare_memory(args)
    return 0


def compare_speed(args: argparse.Namespace) -> None:
    model = make_model(args.model, args.model_size, args.seed)
    if args.model == 'htdemucs' and args.segment is not None and args.segment > model.segment:
        raise SystemExit(f"--segment {args.segment} is longer than the HTDemucs training "
                         f"segment {float(model.segment)} s, which it cannot run.")
    mix = make_mix(args.seconds, model.samplerate, args.seed)
    print(f"{args.model} ({args.model_size}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}"
          f" M params, random weights), {args.seconds:g} s stereo, shifts={args.shifts}, "
          f"overlap={args.overlap}, segment={args.segment or float(model.segment):g} s, "
          f"{args.threads} thread(s)", flush=True)
    segment = int((args.segment or model.segment) * model.samplerate)
    # Warm-up, not timed: the first calls of a shape set up oneDNN kernels and the allocator;
    # every implementation gets its own, so that none pays them for the others.
    for fn, chunking in [(run_demucs, None), (run_ours, 'demucs'), (run_ours, 'fade')]:
        fn(model, mix[..., :int(1.6 * segment)],
           argparse.Namespace(**{**vars(args), 'chunking': chunking}))
    mask = same_chunk_mask(mix.shape[-1], segment, args.overlap,
                           our_offsets(args.shifts, model.samplerate, args.seed),
                           model.samplerate)
    runs = [('demucs 4.1.0', run_demucs, None), ('separator, demucs chunking', run_ours, 'demucs'),
            ('separator, fade chunking', run_ours, 'fade')]
    if not args.no_compile:
        runs += [('  + compile, demucs chunking', run_ours, 'demucs'),
                 ('  + compile, fade chunking', run_ours, 'fade')]
    results: tp.Dict[str, tp.Any] = {}
    for name, fn, chunking in runs:
        if name.startswith('  + compile') and 'compile' not in results:
            from separator.pretrained import compile_model
            compile_model(model)
            begin = time.time()   # compile on a short excerpt: every chunk shape of a run
            fn(model, mix[..., :int(1.6 * segment)], argparse.Namespace(**{
                **vars(args), 'chunking': 'demucs'}))
            print(f"  compilation (first calls, not timed below): {time.time() - begin:.1f} s",
                  flush=True)
            results['compile'] = time.time() - begin
        counter = [0]
        hook = model.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
        begin = time.time()
        output = fn(model, mix, argparse.Namespace(**{**vars(args), 'chunking': chunking}))
        results[name] = (time.time() - begin, counter[0], output)
        hook.remove()
        print(f"  {name}: {results[name][0]:.1f} s, {counter[0]} model calls", flush=True)
    seconds, calls, reference = results['demucs 4.1.0']
    print(f"\n{'':30}{'seconds':>9}{'calls':>7}{'s/call':>8}{'speed-up':>10}"
          f"{'max |diff|':>12}  (vs demucs; output peak {reference.abs().max().item():.2e})")
    for name, _, chunking in runs:
        took, count, output = results[name]
        diff = (output - reference).abs()
        note = ''
        if chunking == 'fade':   # other chunks elsewhere: compare where the chunk is the same
            note = (f"  {diff[..., mask].max().item():.2e} on the {mask.float().mean().item():.0%}"
                    f" of samples taken from the same chunk") if mask.any() else ''
        print(f"{name:30}{took:>9.1f}{count:>7d}{took / count:>8.2f}{seconds / took:>9.2f}x"
              f"{diff.max().item():>12.2e}{note}")
    if 'compile' in results:
        print(f"{'compilation (once)':30}{results['compile']:>9.1f}")


def compare_memory(args: argparse.Namespace) -> None:
    impls = ('demucs', 'ours', 'separator') if args.memory_demucs else ('ours', 'separator')
    print(f"\npeak RSS (MB), small {args.memory_model}; ours: apply_model in memory; "
          f"separator: the command, streaming from and to disk")
    print(f"{'song':>8}" + ''.join(f"{impl:>12}" for impl in impls) + "   seconds")
    for minutes in args.memory_minutes:
        figures = {impl: measure_memory(impl, args.memory_model, minutes, args.threads)
                   for impl in impls}
        print(f"{f'{minutes:g} min':>8}"
              + ''.join(f"{figures[impl]['rss_mb']:>12.0f}" for impl in impls)
              + "   " + ' / '.join(f"{figures[impl]['seconds']:.1f}" for impl in impls),
              flush=True)


if __name__ == '__main__':
    sys.exit(main())
