"""Training loader throughput: partial reads (ours) vs reading whole files per segment.

    python -m bench.loader [--root data/bench_loader] [--segment 11] [--batches 20]

Prints segments/s of `TrainSegments` through a DataLoader with 1 worker, next to the naive
loader that reads each stem whole with soundfile and slices it, and their ratio. The
default set has tracks of 2 minutes, as songs are (MUSDB18-HQ: 4 minutes on average).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from separator.data.musdb import index_tracks
from separator.data.segments import EpochSampler, TrainSegments
from separator.data.synthetic import SOURCES, write_dataset


class WholeFileSegments(TrainSegments):
    """The same segments, read by loading each stem file whole and slicing it."""

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        track = self.tracks[rng.choice(len(self.tracks), p=self.probabilities)]
        offset = int(rng.integers(0, max(track.length - self.segment, 0) + 1))
        stems = [sf.read(track.files[s], dtype='float32', always_2d=True)[0].T
                 [:, offset:offset + self.segment] for s in self.sources]
        return torch.from_numpy(np.stack(stems))


def throughput(dataset: Dataset, batch_size: int, batches: int) -> float:
    sampler = EpochSampler(batch_size * batches)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=1)
    begin = time.time()
    count = sum(len(batch) for batch in loader)
    return count / (time.time() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', type=Path, default=Path('data/bench_loader'))
    parser.add_argument('--track-seconds', type=float, default=120.,
                        help="length of the tracks generated when --root is missing")
    parser.add_argument('--segment', type=float, default=11.)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--batches', type=int, default=20)
    args = parser.parse_args()
    if not (args.root / 'train').exists():
        write_dataset(args.root, tracks_train=3, tracks_test=0, seconds=args.track_seconds)
    tracks = index_tracks(args.root / 'train', SOURCES, 44100, 2)
    segment = int(args.segment * 44100)
    ours = TrainSegments(tracks, SOURCES, segment, 10 ** 9, seed=0)
    naive = WholeFileSegments(tracks, SOURCES, segment, 10 ** 9, seed=0)
    assert torch.equal(ours[7], naive[7]), "both loaders must return the same segments"
    fast = throughput(ours, args.batch_size, args.batches)
    slow = throughput(naive, args.batch_size, args.batches)
    seconds = tracks[0].length / 44100
    print(f"{len(tracks)} tracks of ~{seconds:.0f} s, segments of {args.segment} s, 1 worker")
    print(f"{'loader':34}{'segments/s':>12}")
    print(f"{'separator (partial reads)':34}{fast:12.1f}")
    print(f"{'soundfile whole-file reads':34}{slow:12.1f}")
    print(f"ratio: {fast / slow:.2f}x")


if __name__ == '__main__':
    main()
