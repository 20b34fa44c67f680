"""Inference speed and memory: `separator.apply.apply_model` vs `demucs.apply.apply_model`.

    python -m bench.separate [--seconds 60] [--shifts 1] [--overlap 0.25] [--segment S]
                             [--model htdemucs|hdemucs] [--model-size full|small]
                             [--memory-minutes 1 10] [--no-memory]

Both implementations separate the same synthetic stereo song with the very same model object
(a Demucs model with random, seeded weights), the same shifts (the random shift offsets are
forced equal), overlap and segment. Prints seconds for each, the ratio demucs / ours, and the
max abs difference of the outputs, over all samples and over the samples that both take from
one and the same chunk (there the difference is only float error: elsewhere the two blend
different chunks with different windows, demucs a triangle, ours raised-cosine fades).
Peak RSS is measured in fresh subprocesses separating 1 and 10 minutes with a small model.
Needs `pip install demucs==4.1.0` (plus einops).
"""
import argparse
import json
import resource
import subprocess
import sys
import time
import typing as tp

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
                           shifts=args.shifts, generator=generator)


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
    """Subprocess mode: separate, print {"seconds": .., "rss_mb": ..} as JSON."""
    impl, model_name, seconds = argv[0], argv[1], float(argv[2])
    args = argparse.Namespace(segment=None, overlap=0.25, shifts=0, seed=0)
    model = make_model(model_name, 'small')
    mix = torch.randn(1, 2, int(seconds * model.samplerate),
                      generator=torch.Generator().manual_seed(0)) * 0.1
    before = _peak_rss_mb()
    begin = time.time()
    (run_ours if impl == 'ours' else run_demucs)(model, mix, args)
    elapsed = time.time() - begin
    peak = _peak_rss_mb()
    print(json.dumps({'seconds': elapsed, 'rss_mb': peak, 'before_mb': before}))


def measure_memory(impl: str, model_name: str, minutes: float, threads: int) -> dict:
    command = [sys.executable, '-m', 'bench.separate', '--_child', impl, model_name,
               str(60 * minutes), '--threads', str(threads)]
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
    parser.add_argument('--memory-model', choices=['htdemucs', 'hdemucs'], default='hdemucs',
                        help="small model of the peak RSS runs (hdemucs: separator's HDemucs, "
                             "channels=8, depth=4, nfft=1024; htdemucs: a small HTDemucs)")
    parser.add_argument('--memory-demucs', action='store_true',
                        help="also measure demucs' peak RSS (slower)")
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--_child', nargs=3, help=argparse.SUPPRESS)
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args._child:
        peak_rss_child(args._child)
        return 0
    import_demucs()
    model = make_model(args.model, args.model_size, args.seed)
    if args.model == 'htdemucs' and args.segment is not None and args.segment > model.segment:
        raise SystemExit(f"--segment {args.segment} is longer than the HTDemucs training "
                         f"segment {float(model.segment)} s, which it cannot run.")
    mix = make_mix(args.seconds, model.samplerate, args.seed)
    rows = []
    print(f"{args.model} ({args.model_size}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}"
          f" M params, random weights), {args.seconds:g} s stereo, shifts={args.shifts}, "
          f"overlap={args.overlap}, segment={args.segment or float(model.segment):g} s, "
          f"{args.threads} thread(s)", flush=True)
    with torch.inference_mode():  # warm-up (allocator, oneDNN kernels): not timed
        model(mix[..., :int(model.segment * model.samplerate)])
    timings = {}
    outputs = {}
    calls = {}
    for impl, fn in [('demucs', run_demucs), ('ours', run_ours)]:
        counter = [0]
        hook = model.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
        begin = time.time()
        outputs[impl] = fn(model, mix, args)
        timings[impl] = time.time() - begin
        hook.remove()
        calls[impl] = counter[0]
        print(f"  {impl}: {timings[impl]:.1f} s, {calls[impl]} model calls", flush=True)
    diff = (outputs['ours'] - outputs['demucs']).abs()
    segment = int((args.segment or model.segment) * model.samplerate)
    mask = same_chunk_mask(mix.shape[-1], segment, args.overlap,
                             our_offsets(args.shifts, model.samplerate, args.seed),
                             model.samplerate)
    scale = outputs['demucs'].abs().max().item()
    rows.append(('separate time (s)', f"{timings['demucs']:.1f}", f"{timings['ours']:.1f}",
                 f"{timings['demucs'] / timings['ours']:.2f}x"))
    # Time goes to the model: equal output needs demucs' very chunks, so its call count.
    rows.append(('model calls', f"{calls['demucs']}", f"{calls['ours']}",
                 f"{calls['demucs'] / calls['ours']:.2f}x"))
    rows.append(('seconds per call', f"{timings['demucs'] / calls['demucs']:.2f}",
                 f"{timings['ours'] / calls['ours']:.2f}",
                 f"{timings['demucs'] / calls['demucs'] / (timings['ours'] / calls['ours']):.2f}x"))
    rows.append(('max |ours - demucs|', '', f"{diff.max().item():.2e}",
                 f"(output peak {scale:.2e})"))
    single = diff[..., mask].max().item() if mask.any() else float('nan')
    rows.append(('  on samples from same chunk', '', f"{single:.2e}",
                 f"({mask.float().mean().item():.0%} of samples)"))
    if not args.no_memory:
        for minutes in args.memory_minutes:
            impls = ('demucs', 'ours') if args.memory_demucs else ('ours',)
            figures = {impl: measure_memory(impl, args.memory_model, minutes, args.threads)
                       for impl in impls}
            print(f"  peak RSS {minutes:g} min: {figures}", flush=True)
            theirs = figures.get('demucs')
            rows.append((f'peak RSS {minutes:g} min, small {args.memory_model} (MB)',
                         f"{theirs['rss_mb']:.0f}" if theirs else '-',
                         f"{figures['ours']['rss_mb']:.0f}",
                         (f"time {theirs['seconds']:.1f} / " if theirs else "ours took ")
                         + f"{figures['ours']['seconds']:.1f} s"))
    print(f"\n{'':30}{'demucs 4.1.0':>14}{'separator':>14}  demucs/ours")
    for label, a, b, c in rows:
        print(f"{label:30}{a:>14}{b:>14}  {c}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
