"""Datasets of audio segments over indexed tracks, and the epoch sampler.

A training example is a function of its global index only (`epoch * epoch_size + i`):
the track and offset come from an RNG seeded with (seed, index). The batches of an epoch
are therefore the same whatever the number of loader workers or ranks, and a resumed XP
replays exactly the epoch it was killed in. The training sets take an optional `Repitch`
(augment.repitch, see repitch.py) and an optional `Effects` chain applied after it
(augment.effects, see effects.py): their changes of an example are functions of the same
index, each drawn from a stream of its own, so an example they leave as it is stays bit for
bit the example without them.
"""
import math
import typing as tp

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .audio import fit_length, read_audio
from .effects import Effects, generator
from .musdb import TrackInfo
from .repitch import Repitch


def check_effects(effects: tp.Optional[Effects], tracks: tp.Iterable[TrackInfo]) -> None:
    """The effects chain must run at the tracks' sample rate."""
    rates = {track.samplerate for track in tracks}
    if effects is not None and rates - {effects.samplerate}:
        raise ValueError(f"The effects chain runs at {effects.samplerate} Hz but the training "
                         f"tracks are at {sorted(rates)} Hz: build it with "
                         f"Effects(samplerate=dset.samplerate).")


def apply_effects(effects: tp.Optional[Effects], stems: np.ndarray, seed: int,
                  index: int) -> np.ndarray:
    """The `effects` chain of example `index` on its stems [S, C, T] (None: as they are)."""
    if effects is None:
        return stems
    return effects(stems, generator(seed, index))


def read_sources(track: TrackInfo, sources: tp.Sequence[str], start: int = 0,
                 frames: int = -1) -> np.ndarray:
    """Read the stems of a track as float32 [S, C, T]; short reads are zero-padded."""
    length = track.length - start if frames < 0 else frames
    return np.stack([fit_length(read_audio(track.files[source], start, frames), length)
                     for source in sources])


class TrainSegments(Dataset):
    """Random segments of `segment` frames, drawn with probability proportional to length.

    With `repitch`, a changed example reads the frames its tempo change turns into `segment`.
    With `effects`, its stems then go through the random effects chain.
    """

    def __init__(self, tracks: tp.List[TrackInfo], sources: tp.Sequence[str], segment: int,
                 epoch_size: int, seed: int, repitch: tp.Optional[Repitch] = None,
                 effects: tp.Optional[Effects] = None):
        self.tracks = tracks
        self.sources = list(sources)
        self.segment = segment
        self.epoch_size = epoch_size
        self.seed = seed
        self.repitch = repitch
        self.effects = effects
        check_effects(effects, tracks)
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
        return torch.from_numpy(apply_effects(self.effects, stems, self.seed, index))


class RemixSegments(Dataset):
    """Random segments where each source comes from its own pool of clean stems.

    The SDX23 winner's training on filtered data: for every example and source, a track is
    drawn among those whose stem of that source is clean (probability proportional to
    length), independently across sources, so the mixture is a random remix. A track with a
    flagged stem still serves its clean stems. With `repitch`, the stems of a changed example
    get the same change; with `effects`, they then go through the random effects chain (the
    aimless team's recipe: random remixes of the clean stems, each through random effects).
    """

    def __init__(self, tracks: tp.List[TrackInfo], sources: tp.Sequence[str], segment: int,
                 epoch_size: int, seed: int, clean: tp.Mapping[str, tp.Collection[str]],
                 repitch: tp.Optional[Repitch] = None, effects: tp.Optional[Effects] = None):
        self.sources = list(sources)
        self.segment = segment
        self.epoch_size = epoch_size
        self.seed = seed
        self.repitch = repitch
        self.effects = effects
        check_effects(effects, tracks)
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
        return torch.from_numpy(apply_effects(self.effects, audio, self.seed, index))


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
