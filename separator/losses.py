"""Training losses: per-example, per-source losses and their weighted reduction."""
import itertools
import math
import typing as tp

import torch

LOSSES = ('l1', 'mse', 'l1_mrstft', 'neg_sdr', 'xumx', 'xumx_mwf')
COMBINATION_LOSSES = ('xumx', 'xumx_mwf')   # terms over combinations of sources
SDR_DELTA = 1e-7   # aimless's guard against log10(0) in the negative SDR
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


def neg_sdr(estimate: torch.Tensor, sources: torch.Tensor, delta: float = SDR_DELTA
            ) -> torch.Tensor:
    """The negative SDR of each example and source, in dB: -10 log10(|s|^2 / |s - e|^2),
    each energy summed over channels and time, `delta` added to both (aimless's SDX23
    loss). [B, S, C, T] x2 -> [B, S]. aimless takes one SDR per example over all sources
    together; per source, per-source `weights` and loss truncation apply to it as to the others
    (and a quiet source weighs as much as a loud one)."""
    reference = sources.float().flatten(2)
    error = (estimate.float().flatten(2) - reference).square().sum(-1)
    return 10 * torch.log10(error + delta) - 10 * torch.log10(reference.square().sum(-1) + delta)


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
    elif kind == 'neg_sdr':
        return neg_sdr(estimate, sources)
    elif kind in COMBINATION_LOSSES:
        raise ValueError(f"optim.loss={kind} has combination terms, not per-source ones: use "
                         f"xumx_loss or criterion.XUMXLoss (the solver validates its XPs with "
                         f"l1).")
    else:
        raise ValueError(f"Unknown optim.loss={kind!r}: use one of {', '.join(LOSSES)}.")
    return error.flatten(2).mean(2)


def check_quantile(quantile: float) -> None:
    """Refuse a loss truncation quantile outside (0, 1)."""
    if not 0 < quantile < 1:
        raise ValueError(f"optim.loss_truncation={quantile} must be in (0, 1).")


def kept_count(batch: int, quantile: float) -> int:
    """How many examples per source loss truncation at `quantile` keeps in a batch:
    ceil(quantile x batch), at least 1, at most the whole batch.

    A batch too small for the quantile to drop anything (ceil(q B) = B, as a partial last
    batch may be) is kept whole: it trains as without truncation, it does not stop the XP.
    """
    check_quantile(quantile)
    # - 1e-9: 0.9 x 10 is 9, not 9.000000000000002.
    return min(max(math.ceil(quantile * batch - 1e-9), 1), batch)


def smallest_truncating_batch(quantile: float) -> int:
    """The smallest batch in which truncation at `quantile` drops at least one example."""
    check_quantile(quantile)
    # ceil(q B) < B from B (1 - q) >= 1 on: start just below, so that q near 1 is quick.
    start = max(2, int(1 / (1 - quantile)) - 2)
    return next(size for size in itertools.count(start) if kept_count(size, quantile) < size)


def target_levels(sources: torch.Tensor, kind: str = 'l1', stft_weight: float = 1.
                  ) -> torch.Tensor:
    """Level of each target stem in the units of `source_losses`: [B, S, C, T] -> [B, S]."""
    return source_losses(torch.zeros_like(sources), sources, kind, stft_weight)


def truncation_mask(losses: torch.Tensor, quantile: float,
                    levels: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
    """Loss truncation (SDX23 winner): per source, keep the `ceil(q B)` smallest losses
    (`kept_count`: all of them in a batch too small to drop any).

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


# ------------------------------------------------------------------------------- X-UMX
# The multi-domain loss with combinations of X-UMX (Sawata et al., ICASSP 2021), as the
# official code computes it (sony/ai-research-code x-umx/loss.py, model.py; asteroid's port:
# egs/musdb18/X-UMX/train.py): a magnitude MSE plus `alpha` times a weighted-SDR loss on the
# waveforms, each averaged over the combinations of sources.
XUMX_ALPHA = 10.    # the official --mcoef: loss = alpha * time term + frequency term
# The official weighted SDR ignores this many samples at both ends of the waveforms (the
# "post trimming" of sony/ai-research-code commit ff50b14; asteroid's port does not trim).
XUMX_EDGE = 200


def source_combinations(count: int) -> tp.List[tp.Tuple[int, ...]]:
    """The 2^S - 2 non-empty proper subsets of S sources, by size then in lexicographic order.

    The single sources come first: the official code's "4C1 + 4C2 + 4C3", 14 combinations
    of 4 sources (the whole set, whose sum is the mixture, is left out)."""
    if count < 2:
        raise ValueError(f"optim.loss=xumx combines sources and needs at least 2 of them, "
                         f"got {count}: use another optim.loss.")
    return [combination for size in range(1, count)
            for combination in itertools.combinations(range(count), size)]


def combination_sums(x: torch.Tensor) -> torch.Tensor:
    """`[B, S, *]` -> `[B, K, *]`: the sum of the sources of each `source_combinations(S)`."""
    return torch.stack([x[:, list(combination)].sum(1)
                        for combination in source_combinations(x.shape[1])], 1)


def _cosine(u: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """<u, v> / (|u| |v|) over the last dimension, with the official code's eps under both
    square roots (finite gradients for a silent signal) and in the denominator."""
    norms = (eps + (u * u).sum(-1)).sqrt() * (eps + (v * v).sum(-1)).sqrt()
    return (u * v).sum(-1) / (norms + eps)


def weighted_sdr(estimate: torch.Tensor, target: torch.Tensor, mix: torch.Tensor,
                 eps: float = 1e-10) -> torch.Tensor:
    """Weighted-SDR loss of each signal (Choi et al. 2019, "Phase-aware Speech Enhancement
    with Deep Complex U-Net"), over the last dimension: `[*, T]` x3 -> `[*]` (broadcast).

    -a cos(y^, y) - (1 - a) cos(x - y^, x - y), a = |y|^2 / (|y|^2 + |x - y|^2), with y the
    target, y^ its estimate and x the mixture: the estimate and the rest of the mixture are
    both judged, each in proportion to its energy. In [-1, 1]; -1 for a perfect estimate.
    """
    noise = mix - target
    target_energy = (target * target).sum(-1)
    weight = target_energy / (target_energy + (noise * noise).sum(-1) + eps)
    return (-weight * _cosine(estimate, target, eps)
            - (1 - weight) * _cosine(mix - estimate, noise, eps))


def _trim_edges(x: torch.Tensor, edge: int) -> torch.Tensor:
    """`x` without `edge` samples at both ends; whole if that would leave nothing."""
    if edge <= 0 or x.shape[-1] <= 2 * edge:
        return x
    return x[..., edge:-edge]


def xumx_time_loss(estimate: torch.Tensor, sources: torch.Tensor,
                   mix: tp.Optional[torch.Tensor] = None, edge: int = XUMX_EDGE
                   ) -> torch.Tensor:
    """1 + the weighted SDR of each combination of sources (the sum of its estimates against
    the sum of its targets; the mixture is the same for all), averaged over combinations and
    channels: `[B, S, C, T]` x2 (and the mixture `[B, C, T]`, by default the sum of the
    sources) -> `[B]`. The official code averages over combinations x batch x channels,
    which is the batch mean of this; its 1 + makes a perfect estimate cost 0."""
    if mix is None:
        mix = sources.sum(1)
    estimate, sources, mix = (_trim_edges(x, edge) for x in (estimate, sources, mix))
    scores = weighted_sdr(combination_sums(estimate), combination_sums(sources), mix[:, None])
    return 1 + scores.flatten(1).mean(1)


def xumx_freq_loss(magnitudes: torch.Tensor, target_magnitudes: torch.Tensor
                   ) -> torch.Tensor:
    """The squared error of each combination's magnitudes (the sum of the magnitudes of its
    sources, for the estimates and for the targets alike, as in the official code), averaged
    over combinations, channels, bins and frames: `[B, S, C, F, N]` x2 -> `[B]`. The
    official code averages 14 MSEs over batch x channels x bins x frames: the batch mean."""
    if magnitudes.shape != target_magnitudes.shape:
        raise ValueError(f"Magnitude estimates {tuple(magnitudes.shape)} and targets "
                         f"{tuple(target_magnitudes.shape)} differ in shape.")
    error = combination_sums(magnitudes - target_magnitudes)  # the sums are linear
    return (error * error).flatten(1).mean(1)


def xumx_complex_loss(specs: torch.Tensor, target_specs: torch.Tensor) -> torch.Tensor:
    """danna's frequency term (MDX21): the squared error of each combination's complex STFT
    (real and imaginary parts), averaged over combinations, channels, bins and frames:
    `[B, S, C, F, N]` complex x2 -> `[B]` (their loss is the batch mean)."""
    if specs.shape != target_specs.shape:
        raise ValueError(f"Spectrogram estimates {tuple(specs.shape)} and targets "
                         f"{tuple(target_specs.shape)} differ in shape.")
    error = combination_sums(specs - target_specs)
    return (error.real ** 2 + error.imag ** 2).flatten(1).mean(1)


def xumx_loss(estimate: torch.Tensor, magnitudes: torch.Tensor, sources: torch.Tensor,
              target_magnitudes: torch.Tensor, alpha: float = XUMX_ALPHA,
              magnitude_scale: float = 1., mix: tp.Optional[torch.Tensor] = None,
              edge: int = XUMX_EDGE) -> torch.Tensor:
    """X-UMX's multi-domain loss with combinations, per example: `[B]`, the official loss
    being its batch mean. Waveforms `[B, S, C, T]`, magnitudes `[B, S, C, F, N]`.

    `xumx_freq_loss` of the magnitudes times `magnitude_scale` plus `alpha` times
    `xumx_time_loss`. The term is a squared error, so it scales by `magnitude_scale ** 2`:
    the magnitudes of a normalised STFT (`separator.spec`, 1 / sqrt(nfft)) need
    `magnitude_scale=sqrt(nfft)` to be in the official units (an unnormalised STFT), so that
    `alpha` balances the two terms as in the paper.

    There is no per-source decomposition (a combination belongs to several sources), hence
    no per-source weight and no loss truncation (`check_loss_options`).
    """
    frequency = xumx_freq_loss(magnitudes, target_magnitudes) * magnitude_scale ** 2
    return frequency + alpha * xumx_time_loss(estimate, sources, mix, edge)


def check_loss_options(kind: str, weights: tp.Optional[tp.Sequence[float]] = None,
                       truncation: tp.Optional[float] = None) -> None:
    """Refuse an unknown loss `kind`, and the options that make no sense with it: per-source
    weights and loss truncation (a per-source ranking of the examples) with xumx, whose
    terms are combinations of sources."""
    if kind not in LOSSES:
        raise ValueError(f"Unknown optim.loss={kind!r}: use one of {', '.join(LOSSES)}.")
    if kind not in COMBINATION_LOSSES:
        return
    if weights is not None:
        raise ValueError(f"weights={list(weights)} are per-source loss weights, but the terms "
                         f"of optim.loss={kind} are combinations of sources, weighted equally "
                         f"as in X-UMX: set weights=null, or use another optim.loss.")
    if truncation:
        raise ValueError(f"optim.loss_truncation={truncation} ranks per-source losses, but "
                         f"the terms of optim.loss={kind} are combinations of sources: set "
                         f"optim.loss_truncation=null, or use another optim.loss.")
