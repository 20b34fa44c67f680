"""Training losses: per-example, per-source losses and their weighted reduction."""
import typing as tp

import torch


def source_losses(estimate: torch.Tensor, sources: torch.Tensor, kind: str = 'l1'
                  ) -> torch.Tensor:
    """Loss of each example and source: [B, S, C, T] x2 -> [B, S]."""
    if kind == 'l1':
        error = (estimate - sources).abs()
    elif kind == 'mse':
        error = (estimate - sources) ** 2
    else:
        raise ValueError(f"Unknown optim.loss={kind!r}: use l1 or mse.")
    return error.flatten(2).mean(2)


def weighted_loss(losses: torch.Tensor, weights: tp.Optional[tp.Sequence[float]] = None
                  ) -> torch.Tensor:
    """Average [B, S] losses over the batch, then over sources with `weights`."""
    per_source = losses.mean(0)
    if weights is None:
        return per_source.mean()
    weights = torch.as_tensor(weights, dtype=per_source.dtype, device=per_source.device)
    if weights.shape != per_source.shape:
        raise ValueError(f"weights has {weights.numel()} values but there are "
                         f"{per_source.numel()} sources: give one weight per source.")
    if weights.sum() <= 0:
        raise ValueError("weights must have a positive sum.")
    return (per_source * weights).sum() / weights.sum()
