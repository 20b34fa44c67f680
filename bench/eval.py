"""bss_eval v4 SDR of one track: `separator.bss_eval` vs museval 0.4.1 (the MUSDB reference,
what `separator.metrics.bss_sdr(impl='museval')` runs) vs fast_bss_eval, side by side in one
run: seconds per call, speed-up over museval, and the largest |dB| difference to museval's
per-frame SDR.

    (fast_bss_eval, the third peer, comes with `make install`: setup.py's dev extra)
    python -m bench.eval [--seconds 30] [--sources 4] [--repeats 3] [--threads 2]
                         [--device cuda]

The track is a synthetic song (`separator.data.synthetic`, stereo, 44.1 kHz; the first seed
whose stems all play, since museval refuses a silent one), the estimates each stem at 0.9 plus
0.1 of the other stems, a 7-sample echo and noise. Calls are interleaved (museval, ours, ...,
then again) so that the load of a shared machine weighs on all alike; the table gives the
median and the best of the repeats. `--threads` sets torch's threads and, through threadpoolctl
where installed, those of numpy's BLAS (museval's solves).

Rows: museval (distortion filters on the whole track, then every 1 s frame); ours, SDR only
(`bss_eval_sdr`: the v4 image SDR is the per-frame signal-to-error ratio, whatever the
filters); ours, all four metrics (`bss_eval_images`: the filters too, for ISR/SIR/SAR);
fast_bss_eval's `bss_eval_sources` on the same 1 s frames, channel by channel: a different
metric (bss_eval v3 sources: each channel's estimate is projected on the filtered references,
so a gain error is forgiven), shown for its speed; its difference column says how far it is
from the MUSDB number (SDR averaged over the two channels).
"""
import argparse
from importlib.metadata import PackageNotFoundError, version
import statistics
import time
import typing as tp

import numpy as np
import torch

from separator import bss_eval
from separator.data.synthetic import SOURCES, synthesize_track

Method = tp.Callable[[torch.Tensor, torch.Tensor, int], np.ndarray]


def track(seconds: float, sources: int) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """References and estimates [S, 2, T] float32 at 44.1 kHz."""
    for seed in range(100):
        stems = synthesize_track(np.random.default_rng(seed), seconds)
        references = torch.from_numpy(np.stack([stems[name] for name in SOURCES[:sources]]))
        if all(reference.abs().sum() > 0 for reference in references):
            break
    generator = torch.Generator().manual_seed(0)
    mix = references.sum(0, keepdim=True)
    estimates = (0.9 * references + 0.1 * (mix - references)
                 + 0.05 * torch.roll(references, 7, -1)
                 + 0.01 * torch.randn(references.shape, generator=generator))
    return references, estimates


def with_museval(references: torch.Tensor, estimates: torch.Tensor, rate: int) -> np.ndarray:
    import museval
    sdr, _isr, _sir, _sar = museval.evaluate(references.transpose(1, 2).double().numpy(),
                                             estimates.transpose(1, 2).double().numpy(),
                                             win=rate, hop=rate)
    return sdr


DEVICE = torch.device('cpu')    # where ours runs (--device); the peers run on the CPU


def _synchronized(values: torch.Tensor) -> np.ndarray:
    return values.cpu().numpy()      # waits for the device, so the time is the whole work


def ours_sdr(references: torch.Tensor, estimates: torch.Tensor, rate: int) -> np.ndarray:
    return _synchronized(bss_eval.bss_eval_sdr(references.to(DEVICE), estimates.to(DEVICE),
                                               rate))


def ours_images(references: torch.Tensor, estimates: torch.Tensor, rate: int) -> np.ndarray:
    return _synchronized(bss_eval.bss_eval_images(references.to(DEVICE), estimates.to(DEVICE),
                                                  rate).sdr)


def with_fast_bss_eval(references: torch.Tensor, estimates: torch.Tensor, rate: int
                       ) -> np.ndarray:
    """bss_eval_sources on each 1 s frame and channel (batched), SDR averaged over the
    channels: [S, frames]; `load_diag` (1e-10) lets it solve frames where a reference rests
    (museval scores those NaN: they are left out of the comparison). Its torch backend on ONE
    thread: it calls torch's batched CPU LU, which in torch 2.11 (MKL) fails ("DLASWP
    parameter 6") and hangs with more; its numpy backend does not run under numpy 2
    (np.linalg.solve's broadcasting changed)."""
    import fast_bss_eval

    def frames(signal: torch.Tensor) -> torch.Tensor:         # [S, C, T] -> [F, C, S, n]
        return signal.double().unfold(-1, rate, rate).permute(2, 1, 0, 3)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sdr, _sir, _sar = fast_bss_eval.bss_eval_sources(frames(references), frames(estimates),
                                                         compute_permutation=False,
                                                         load_diag=1e-10)
    finally:
        torch.set_num_threads(threads)
    return sdr.mean(1).T.numpy()


def max_diff(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest |dB| difference over the frames museval scores (not NaN)."""
    scored = ~np.isnan(reference)
    with np.errstate(invalid='ignore'):
        return float(np.abs(ours[scored] - reference[scored]).max())


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.eval',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=30.)
    parser.add_argument('--sources', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--device', default='cpu', help="device of ours (cuda: the GPU; the "
                        "inputs are moved there inside the timed call)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    limits: tp.Any = None
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(args.threads)      # numpy's BLAS, for museval's solves
    except ImportError:
        pass
    references, estimates = track(args.seconds, args.sources)
    rate = 44100
    methods: tp.List[tp.Tuple[str, Method]] = [
        ('museval 0.4.1 (reference)', with_museval),
        ('separator.bss_eval, SDR', ours_sdr),
        ('separator.bss_eval, SDR ISR SIR SAR', ours_images),
    ]
    try:
        methods.append((f"fast_bss_eval {version('fast_bss_eval')} (v3 sources, 1 thread)",
                        with_fast_bss_eval))
    except PackageNotFoundError:
        print("fast_bss_eval not installed: `pip install fast_bss_eval==0.1.4` to compare")
    seconds: tp.Dict[str, tp.List[float]] = {name: [] for name, _ in methods}
    results: tp.Dict[str, np.ndarray] = {}
    for name, method in methods[1:]:              # warm-up (imports, first-call allocations)
        method(references[..., :2 * rate], estimates[..., :2 * rate], rate)
    for _ in range(args.repeats):
        for name, method in methods:
            begin = time.perf_counter()
            results[name] = method(references, estimates, rate)
            seconds[name].append(time.perf_counter() - begin)
    if limits is not None:
        limits.unregister()
    reference = results[methods[0][0]]
    peer = statistics.median(seconds[methods[0][0]])
    print(f"bss_eval v4 SDR, {args.sources} stereo sources x {args.seconds:g} s at 44.1 kHz "
          f"({reference.shape[1]} frames of 1 s), {args.threads} threads, ours on {DEVICE}, "
          f"{args.repeats} interleaved repeats")
    print(f"{'':44}{'median s':>10}{'best s':>10}{'speed-up':>10}{'max |dB| vs museval':>22}")
    for name, _ in methods:
        median = statistics.median(seconds[name])
        print(f"{name:44}{median:10.3f}{min(seconds[name]):10.3f}{peer / median:9.1f}x"
              f"{max_diff(results[name], reference):22.2e}")
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
