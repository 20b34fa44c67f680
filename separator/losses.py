"""Training losses: per-example, per-source losses and their weighted reduction."""
import math
import typing as tp

import torch

LOSSES = ('l1', 'mse', 'l1_mrstft')
# The multi-resolution STFT loss of BS-RoFormer and Mel-RoFormer (Lu et al. 2023, Wang et
# al. 2023): window sizes and hop in samples at 44.1 kHz.
MRSTFT_WINDOWS = (4096, 2048, 1024, 512, 256)
MRSTFT_HOP = 147


def stft_l1(estimate: torch.Tensor, sources: torch.Tensor,
            windows: tp.Sequence[int] = MRSTFT_WINDOWS, hop: int = MRSTFT_HOP) -> torch.Tensor:
    """Multi-resolution complex STFT L1: per window size, the mean absolute difference of the
    real and imaginary parts (Hann window, not normalised), summed over the window sizes.
    [B, S, C, T] x2 -> [B, S]. Window sizes longer than the signal are skipped."""
    *batch, length = estimate.shape
    total = estimate.new_zeros(batch[:2])
    difference = (estimate - sources).reshape(-1, length).float()  # STFT is linear
    for window in windows:
        if window > length:
            continue
        spec = torch.stft(difference, window, hop, window=torch.hann_window(
            window, device=difference.device), return_complex=True)
        error = torch.view_as_real(spec).abs().reshape(*batch, -1).mean(-1)
        total = total + error.mean(2)
    return total


def source_losses(estimate: torch.Tensor, sources: torch.Tensor, kind: str = 'l1',
                  stft_weight: float = 1.) -> torch.Tensor:
    """Loss of each example and source: [B, S, C, T] x2 -> [B, S].

    `l1_mrstft`: the L1 of the waveforms plus `stft_weight` times the multi-resolution STFT
    L1 (`stft_l1`), the loss BS-RoFormer and Mel-RoFormer were trained with.
    """
    if kind == 'l1':
        error = (estimate - sources).abs()
    elif kind == 'mse':
        error = (estimate - sources) ** 2
    elif kind == 'l1_mrstft':
        return (source_losses(estimate, sources, 'l1')
                + stft_weight * stft_l1(estimate, sources))
    else:
        raise ValueError(f"Unknown optim.loss={kind!r}: use one of {', '.join(LOSSES)}.")
    return error.flatten(2).mean(2)


def kept_count(batch: int, quantile: float) -> int:
    """How many examples per source loss truncation at `quantile` keeps in a batch."""
    if not 0 < quantile < 1:
        raise ValueError(f"optim.loss_truncation={quantile} must be in (0, 1).")
    def keep(size: int) -> int:
        return math.ceil(quantile * size - 1e-9)  # 0.9 x 10 is 9, not 9.000000000000002

    if keep(batch) >= batch:
        smallest = next(size for size in range(2, 10 ** 6) if keep(size) < size)
        raise ValueError(
            f"optim.loss_truncation={quantile} drops nothing in a batch of {batch} per process "
            f"(it keeps ceil({quantile} x {batch}) = {keep(batch)}). Use a per-process batch "
            f"of at least {smallest}, or a lower quantile.")
    return keep(batch)


def target_levels(sources: torch.Tensor, kind: str = 'l1', stft_weight: float = 1.
                  ) -> torch.Tensor:
    """Level of each target stem in the units of `source_losses`: [B, S, C, T] -> [B, S]."""
    return source_losses(torch.zeros_like(sources), sources, kind, stft_weight)


def truncation_mask(losses: torch.Tensor, quantile: float,
                    levels: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """Loss truncation (SDX23 winner): per source, keep the `ceil(q B)` smallest losses.

    The largest losses of a batch are the examples most likely to carry label noise (a wrong
    or bleeding stem), so they are masked out of the gradient. [B, S] -> bool [B, S].
    With `levels` ([B, S], `target_levels`), examples are ranked by their loss relative to
    the level of their target instead (`optim.truncation_rank=relative`): the absolute loss
    of a quiet or silent stem is small whatever its quality, so ranking by it keeps the
    quiet examples and drops the loud, informative ones.
    """
    keep = kept_count(losses.shape[0], quantile)
    scores = losses if levels is None else losses / (levels + 1e-8)
    order = scores.detach().argsort(dim=0)
    mask = torch.zeros_like(losses, dtype=torch.bool)
    mask.scatter_(0, order[:keep], True)
    return mask


def weighted_loss(losses: torch.Tensor, weights: tp.Optional[tp.Sequence[float]] = None,
                  mask: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """Average [B, S] losses over the batch (the entries of `mask` only), then over sources
    with `weights`."""
    if mask is None:
        per_source = losses.mean(0)
    else:
        per_source = (losses * mask).sum(0) / mask.sum(0).clamp(min=1)
    if weights is None:
        return per_source.mean()
    weights = torch.as_tensor(weights, dtype=per_source.dtype, device=per_source.device)
    if weights.shape != per_source.shape:
        raise ValueError(f"weights has {weights.numel()} values but there are "
                         f"{per_source.numel()} sources: give one weight per source.")
    if weights.sum() <= 0:
        raise ValueError("weights must have a positive sum.")
    return (per_source * weights).sum() / weights.sum()
