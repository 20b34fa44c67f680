"""Separation speed of full-size models: seconds of compute per minute of audio (and the
real-time factor), side by side, eager and optionally compiled.

    python -m bench.rtf [--models htdemucs scnet] [--seconds 30] [--device cpu|cuda]
                        [--compile] [--repeats 3] [--threads N]

Each model is built at its default full size (`conf/config.yaml`: HTDemucs 41.5 M, SCNet
10.6 M, ...) with random weights (speed does not depend on them) and separates the same
random stereo song with `apply.apply_model` (chunks of the model's segment, overlap 0.25,
no shifts), as the `separator` command does. Runs are interleaved (model A, model B, A, B,
...) so that the load of a shared machine weighs on all alike; the table gives the median
and the best. The ratio column is each model's time over the first model's: the SCNet paper
reports SCNet at 48 % of HTDemucs's time.

`--compile` adds the models compiled with `torch.compile` (`pretrained.compile_model`; the
first call of each input shape compiles and is not timed).
"""
import argparse
import statistics
import time
import typing as tp

import torch

from separator.apply import apply_model
from separator.pretrained import compile_model

from .ddp import _config


def build(name: str, device: str) -> torch.nn.Module:
    from separator.builders import get_model
    torch.manual_seed(0)
    return get_model(_config([f'model={name}'])).to(device).eval()


def timed(model: torch.nn.Module, mix: torch.Tensor) -> float:
    if mix.device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        apply_model(model, mix)
    if mix.device.type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m bench.rtf', description=__doc__.split(
        '\n')[0])
    parser.add_argument('--models', nargs='+', default=['htdemucs', 'scnet'])
    parser.add_argument('--seconds', type=float, default=30.)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--compile', action='store_true')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs: tp.Dict[str, torch.nn.Module] = {}
    for name in args.models:
        runs[name] = build(name, args.device)
        if args.compile:
            runs[f'{name} (compiled)'] = compile_model(build(name, args.device))
    samplerate = next(iter(runs.values())).samplerate
    mix = 0.1 * torch.randn(1, 2, int(args.seconds * samplerate),
                            generator=torch.Generator().manual_seed(0)).to(args.device)
    for model in runs.values():      # warm-up (and compilation), not timed
        timed(model, mix[..., :int(min(args.seconds, 12) * samplerate)])
    times: tp.Dict[str, tp.List[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, model in runs.items():
            times[name].append(timed(model, mix))
    print(f"{args.seconds:g} s of stereo audio on {args.device} "
          f"({torch.get_num_threads()} threads), {args.repeats} interleaved repeats")
    print(f"{'model':28} {'params':>8} {'s/min median':>13} {'best':>8} {'RTF':>7} "
          f"{'ratio':>7}")
    first = None
    for name, model in runs.items():
        median = statistics.median(times[name]) * 60 / args.seconds
        best = min(times[name]) * 60 / args.seconds
        first = first or median
        size = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:28} {size:7.1f}M {median:13.2f} {best:8.2f} {median / 60:7.3f} "
              f"{median / first:7.2f}")


if __name__ == '__main__':
    main()
