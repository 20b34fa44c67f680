"""Loader throughput with the aimless random effects chain (augment.effects) vs without.

    python -m bench.effects [--root data/bench_loader] [--segment 11] [--batches 5]
                            [--batch-size 4] [--step-batch 1] [--no-step] [--no-breakdown]

`TrainSegments` examples of 4 stereo stems at 44.1 kHz (11 s by default) through a DataLoader
with 1 worker (one loader process), without the chain, with aimless's MDX-A chain
(proba_scale 1) and with their last stage's (1.666): examples/s side by side, and their
ratio to the loader without the chain. Then what each effect costs when drawn (seconds per
stem) and its expected share of an example, and the time of one training step of the
default HDemucs on this CPU (forward, backward, Adam; batch `--step-batch`): the loader
starves the step when one example takes its workers longer than the step takes per example.
"""
import argparse
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from separator.data.effects import ORDER, Effects, generator
from separator.data.musdb import index_tracks
from separator.data.segments import EpochSampler, TrainSegments
from separator.data.synthetic import SOURCES, write_dataset


def warm_up() -> None:
    """Run every effect once on a short example, so that the lazy imports (pedalboard,
    scipy.signal, torchaudio) are done before the loader forks and before any timing."""
    stems = np.random.default_rng(0).standard_normal((2, 2, 44100)).astype(np.float32) * 0.1
    Effects(proba_scale=1e6, mix_limiter_proba=1)(stems, generator(0, 0))


def throughput(dataset: Dataset, batch_size: int, batches: int) -> float:
    """Examples per second of `dataset` through a loader with 1 worker."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(
        batch_size * batches), num_workers=1)
    begin = time.time()
    count = sum(len(batch) for batch in loader)
    return count / (time.time() - begin)


def effect_costs(stems: np.ndarray, repeats: int = 2) -> tp.Dict[str, float]:
    """Seconds per stem of each effect when drawn (its default choices, e.g. speed 100 or
    semitone 0 cost nothing), in this process."""
    torch.set_num_threads(1)   # as in a loader worker
    costs = {}
    for name in ORDER:
        options = {f'{other}_proba': 0. for other in ORDER}
        options[f'{name}_proba'] = 1.
        effects = Effects(**options)
        begin = time.time()
        for index in range(repeats):
            effects(stems, generator(0, index))
        costs[name] = (time.time() - begin) / (repeats * len(stems))
    return costs


def hdemucs_step(batch: int, segment: float) -> float:
    """Seconds of one training step of the default HDemucs on this CPU (after a warm-up)."""
    from hydra import compose, initialize_config_dir

    from separator.builders import get_model
    from separator.losses import source_losses

    conf = Path(__file__).resolve().parent.parent / 'conf'
    with initialize_config_dir(str(conf), version_base='1.3'):
        cfg = compose('config', overrides=['model=hdemucs'])
    torch.manual_seed(0)
    model = get_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    sources = torch.randn(batch, len(cfg.dset.sources), cfg.dset.channels,
                          int(segment * cfg.dset.samplerate))

    def step() -> None:
        loss = source_losses(model(sources.sum(1)), sources).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    begin = time.time()
    step()
    return time.time() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, default=Path('data/bench_loader'))
    parser.add_argument('--track-seconds', type=float, default=120.,
                        help="length of the tracks generated when --root is missing")
    parser.add_argument('--segment', type=float, default=11.)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--batches', type=int, default=5)
    parser.add_argument('--step-batch', type=int, default=1,
                        help="batch of the HDemucs step timed on this CPU")
    parser.add_argument('--no-step', action='store_true', help="skip the HDemucs step")
    parser.add_argument('--no-breakdown', action='store_true', help="skip the cost per effect")
    args = parser.parse_args()
    if not (args.root / 'train').exists():
        write_dataset(args.root, tracks_train=3, tracks_test=0, seconds=args.track_seconds)
    tracks = index_tracks(args.root / 'train', SOURCES, 44100, 2)
    segment = int(args.segment * 44100)
    warm_up()
    chains = {'no effects': None, 'aimless MDX-A (proba_scale 1)': Effects(),
              'aimless last stage (1.666)': Effects(proba_scale=1.666)}
    rates = {}
    for label, effects in chains.items():
        dataset = TrainSegments(tracks, SOURCES, segment, 10 ** 9, seed=0, effects=effects)
        rates[label] = throughput(dataset, args.batch_size, args.batches)
    print(f"{len(tracks)} tracks, {len(SOURCES)} stereo stems of {args.segment} s at 44.1 kHz,"
          f" DataLoader with 1 worker, {args.batch_size * args.batches} examples each")
    print(f"{'loader':34}{'examples/s':>12}{'s/example':>11}{'ratio':>8}")
    base = rates['no effects']
    for label, rate in rates.items():
        print(f"{label:34}{rate:12.2f}{1 / rate:11.3f}{rate / base:8.3f}")
    if not args.no_breakdown:
        stems = TrainSegments(tracks, SOURCES, segment, 10, seed=0)[0].numpy()
        costs = effect_costs(stems)
        shares = {name: len(SOURCES) * Effects().proba(name) * cost
                  for name, cost in costs.items()}
        print(f"\n{'effect':16}{'s/stem':>9}{'proba':>7}{'s/example':>11}   (expected, scale 1)")
        for name in ORDER:
            print(f"{name:16}{costs[name]:9.3f}{Effects().proba(name):7.2f}{shares[name]:11.3f}")
        print(f"{'total':32}{sum(shares.values()):11.3f}")
    if not args.no_step:
        seconds = hdemucs_step(args.step_batch, args.segment)
        per_example = seconds / args.step_batch
        print(f"\nHDemucs (default, 83.6 M) training step on this CPU: {seconds:.2f} s for "
              f"{args.step_batch} x {args.segment} s, {per_example:.2f} s per example")
        for label, rate in rates.items():
            print(f"{label:34}loader {1 / rate:.2f} s/example: {per_example * rate:.1f}x the "
                  f"step's pace per worker; workers to feed a step of t s per example: "
                  f"{1 / rate:.2f} / t")


if __name__ == '__main__':
    main()
