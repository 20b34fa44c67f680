"""Data augmentation on batches of sources [B, S, C, T], as in Demucs.

Each function draws from an explicit `torch.Generator` (on CPU) so that the solver can
seed it per epoch: augmentation is part of what a resumed XP replays exactly. Random
draws are made on CPU then moved, so results do not depend on the device.
"""
import typing as tp

import torch


def _rand(shape: tp.Sequence[int], generator: torch.Generator, like: torch.Tensor
          ) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(like.device)


def flip_channels(sources: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Swap left and right, independently per example and source (stereo only)."""
    batch, nsrc, channels, _ = sources.shape
    if channels != 2:
        return sources
    swap = _rand((batch, nsrc, 1, 1), generator, sources) < 0.5
    return torch.where(swap, sources.flip(2), sources)


def flip_sign(sources: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Multiply each example's source by +1 or -1."""
    batch, nsrc = sources.shape[:2]
    signs = (_rand((batch, nsrc, 1, 1), generator, sources) < 0.5).to(sources.dtype) * 2 - 1
    return sources * signs


def scale(sources: torch.Tensor, generator: torch.Generator, proba: float = 1.,
          min: float = 0.25, max: float = 1.25) -> torch.Tensor:
    """Random gain in [min, max] per example and source, applied with probability `proba`."""
    batch, nsrc = sources.shape[:2]
    gains = min + (max - min) * _rand((batch, nsrc, 1, 1), generator, sources)
    apply = _rand((batch, 1, 1, 1), generator, sources) < proba
    return torch.where(apply, sources * gains, sources)


def _group_permutations(groups: int, size: int, nsrc: int, generator: torch.Generator
                        ) -> torch.Tensor:
    """Per source, a random permutation within each of `groups` consecutive groups of `size`
    examples, as batch indices: [groups * size, nsrc]."""
    perm = torch.argsort(torch.rand(groups, size, nsrc, generator=generator), dim=1)
    return (perm + torch.arange(groups)[:, None, None] * size).view(groups * size, nsrc)


def remix(sources: torch.Tensor, generator: torch.Generator, proba: float = 1.,
          group_size: int = 4) -> torch.Tensor:
    """Shuffle each source across the examples of a group of `group_size`, making new mixes.

    Any batch size works: the examples left after the full groups (a partial last batch, or a
    batch smaller than `group_size`) form one smaller group, shuffled among themselves; an
    example alone stays as it is. The full groups draw exactly as when the batch divides,
    so XPs whose batches divide replay as before. `group_size` 0 or 1 disables it.
    """
    batch, nsrc = sources.shape[:2]
    if group_size <= 1 or batch <= 1 or proba <= 0:
        return sources
    if torch.rand((), generator=generator).item() >= proba:
        return sources
    groups, rest = divmod(batch, group_size)
    parts = [_group_permutations(groups, group_size, nsrc, generator)] if groups else []
    if rest > 1:
        parts.append(groups * group_size + _group_permutations(1, rest, nsrc, generator))
    elif rest == 1:
        parts.append(torch.full((1, nsrc), batch - 1))
    perm = torch.cat(parts).to(sources.device)
    source_index = torch.arange(nsrc, device=sources.device)[None].expand(batch, nsrc)
    return sources[perm, source_index]


def augment(sources: torch.Tensor, generator: torch.Generator, cfg: tp.Any) -> torch.Tensor:
    """Apply the augmentations enabled in the `augment` config section."""
    if cfg.flip:
        sources = flip_sign(flip_channels(sources, generator), generator)
    if cfg.scale.proba > 0:
        sources = scale(sources, generator, cfg.scale.proba, cfg.scale.min, cfg.scale.max)
    if cfg.remix.proba > 0:
        sources = remix(sources, generator, cfg.remix.proba, cfg.remix.group_size)
    return sources
