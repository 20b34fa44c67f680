"""Datasets of audio segments over indexed tracks, and the epoch sampler.

A training example is a function of its global index only (`epoch * epoch_size + i`):
the track and offset come from an RNG seeded with (seed, index). The batches of an epoch
are therefore the same whatever the number of loader workers or ranks, and a resumed XP
replays exactly the epoch it was killed in. The training sets take an optional `Repitch`
(augment.repitch, see repitch.py): its change of an example is a function of the same index.
"""
import math
import typing as tp

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .audio import fit_length, read_audio
from .musdb import TrackInfo
from .repitch import Repitch


def read_sources(track: TrackInfo, sources: tp.Sequence[str], start: int = 0,
                 frames: int = -1) -> np.ndarray:
    """Read the stems of a track as float32 [S, C, T]; short reads are zero-padded."""
    length = track.length - start if frames < 0 else frames
    return np.stack([fit_length(read_audio(track.files[source], start, frames), length)
                     for source in sources])


class TrainSegments(Dataset):
    """Random segments of `segment` frames, drawn with probability proportional to length.

    With `repitch`, a changed example reads the frames its tempo change turns into `segment`.
    """

    def __init__(self, tracks: tp.List[TrackInfo], sources: tp.Sequence[str], segment: int,
                 epoch_size: int, seed: int, repitch: tp.Optional[Repitch] = None):
        self.tracks = tracks
        self.sources = list(sources)
        self.segment = segment
        self.epoch_size = epoch_size
        self.seed = seed
        self.repitch = repitch
        lengths = np.array([track.length for track in tracks], dtype=np.float64)
        self.probabilities = lengths / lengths.sum()

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, index: int) -> torch.Tensor:
        change = self.repitch.draw(self.seed, index) if self.repitch is not None else None
        frames = Repitch.input_length(change, self.segment)
        rng = np.random.default_rng([self.seed, index])
        track = self.tracks[rng.choice(len(self.tracks), p=self.probabilities)]
        offset = int(rng.integers(0, max(track.length - frames, 0) + 1))
        stems = read_sources(track, self.sources, offset, frames)
        if change is not None:
            stems = self.repitch.apply(stems, change, self.segment, track.samplerate)
        return torch.from_numpy(stems)


class RemixSegments(Dataset):
    """Random segments where each source comes from its own pool of clean stems.

    The SDX23 winner's training on filtered data: for every example and source, a track is
    drawn among those whose stem of that source is clean (probability proportional to
    length), independently across sources, so the mixture is a random remix. A track with a
    flagged stem still serves its clean stems. With `repitch`, the stems of a changed example
    get the same change.
    """

    def __init__(self, tracks: tp.List[TrackInfo], sources: tp.Sequence[str], segment: int,
                 epoch_size: int, seed: int, clean: tp.Mapping[str, tp.Collection[str]],
                 repitch: tp.Optional[Repitch] = None):
        self.sources = list(sources)
        self.segment = segment
        self.epoch_size = epoch_size
        self.seed = seed
        self.repitch = repitch
        self.pools: tp.Dict[str, tp.List[TrackInfo]] = {}
        self.probabilities = {}
        for source in self.sources:
            pool = [track for track in tracks if track.name in clean[source]]
            if not pool:
                raise ValueError(f"No clean {source} stem among the {len(tracks)} training "
                                 f"tracks: check the clean lists (dset.clean_lists). If a "
                                 f"filter made them, its model may be too weak to judge "
                                 f"(train it longer) or its filter.threshold too high.")
            lengths = np.array([track.length for track in pool], dtype=np.float64)
            self.pools[source] = pool
            self.probabilities[source] = lengths / lengths.sum()

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, index: int) -> torch.Tensor:
        change = self.repitch.draw(self.seed, index) if self.repitch is not None else None
        frames = Repitch.input_length(change, self.segment)
        rng = np.random.default_rng([self.seed, index])
        stems = []
        for source in self.sources:
            pool = self.pools[source]
            track = pool[rng.choice(len(pool), p=self.probabilities[source])]
            offset = int(rng.integers(0, max(track.length - frames, 0) + 1))
            stems.append(fit_length(read_audio(track.files[source], offset, frames), frames))
        audio = np.stack(stems)
        if change is not None:
            audio = self.repitch.apply(audio, change, self.segment, track.samplerate)
        return torch.from_numpy(audio)


class StridedSegments(Dataset):
    """Segments of `segment` frames every `stride` frames of every track (validation)."""

    def __init__(self, tracks: tp.List[TrackInfo], sources: tp.Sequence[str], segment: int,
                 stride: int):
        self.tracks = tracks
        self.sources = list(sources)
        self.segment = segment
        self.index = []
        for track_index, track in enumerate(tracks):
            count = max(math.ceil((track.length - segment) / stride), 0) + 1
            self.index.extend((track_index, i * stride) for i in range(count))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> torch.Tensor:
        track_index, offset = self.index[index]
        return torch.from_numpy(read_sources(self.tracks[track_index], self.sources, offset,
                                             self.segment))


class WholeTracks(Dataset):
    """Whole tracks for testing: (name, mixture [C, T], sources [S, C, T])."""

    def __init__(self, tracks: tp.List[TrackInfo], sources: tp.Sequence[str]):
        self.tracks = tracks
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, index: int) -> tp.Tuple[str, torch.Tensor, torch.Tensor]:
        track = self.tracks[index]
        references = read_sources(track, self.sources)
        if track.mixture is not None:
            mix = fit_length(read_audio(track.mixture), track.length)
        else:
            mix = references.sum(0)
        return track.name, torch.from_numpy(mix), torch.from_numpy(references)


class EpochSampler(Sampler):
    """Yields the global indices of one epoch, sharded across ranks (`rank::world_size`).

    Call `set_epoch` before each epoch. With `epoch_size=len(dataset)` and epoch 0 it
    shards a fixed dataset (validation).

    With `pad=True` (training) every rank yields the same count, ceil(epoch_size /
    world_size): as torch's `DistributedSampler`, the epoch is padded by wrap-around, the
    padded positions repeating the first examples of the epoch by their global indices
    (`epoch * epoch_size + i`: the same examples, a function of the index). Under DDP every
    training step is a collective (the gradient all-reduce): ranks with different step
    counts abort (gloo) or hang (nccl). Validation needs no padding, and must not have it:
    it runs the model without DDP, its only collective is one `distrib.average` per call,
    which weighs each rank by its own count, so unequal shards are fine, and duplicates
    would count some segments twice in the validation loss.
    """

    def __init__(self, epoch_size: int, rank: int = 0, world_size: int = 1,
                 pad: bool = False):
        self.epoch_size = epoch_size
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _positions(self) -> range:
        """The positions in the epoch of this rank's examples, before wrap-around."""
        total = self.epoch_size
        if self.pad and self.epoch_size:
            total = math.ceil(self.epoch_size / self.world_size) * self.world_size
        return range(self.rank, total, self.world_size)

    def __iter__(self) -> tp.Iterator[int]:
        start = self.epoch * self.epoch_size
        return iter([start + position % self.epoch_size for position in self._positions()])

    def __len__(self) -> int:
        return len(self._positions())
