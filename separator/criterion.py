"""The training objective: one object, built by `builders.get_criterion`, that the solver
calls without knowing any loss by name.

    output = model(mix, **criterion.model_kwargs)       # what the loss needs of the model
    loss, losses = criterion(output, mix, sources)      # scalar to minimise, [B, S] to log
    loss, losses = criterion.validation(estimate, sources)

`losses` are per example and source, in the units of the validation loss, so that training
and validation curves read alike. A new loss is a factory in `CRITERIA` (name -> the
criterion for a config and a model): a new `kind` of `losses.source_losses` for a per-source
loss, or a subclass here; plus its `optim.loss` line in conf/config.yaml.
"""
import math
import typing as tp

import torch

from .losses import (LOSSES, source_losses, target_levels, truncation_mask, weighted_loss,
                     xumx_complex_loss, xumx_loss, xumx_time_loss)


class SourceLoss:
    """Per-source losses (`losses.source_losses`: l1, mse, l1_mrstft), weighted per source,
    with optional loss truncation (SDX23: per source, only the q smallest losses of a batch
    train; `rank='relative'` ranks by the loss divided by the target's level)."""
    model_kwargs: tp.Dict[str, tp.Any] = {}

    def __init__(self, kind: str = 'l1', weights: tp.Optional[tp.Sequence[float]] = None,
                 truncation: tp.Optional[float] = None, rank: str = 'loss',
                 stft_weight: float = 1.):
        self.kind = kind
        self.weights = None if weights is None else list(weights)
        self.truncation = truncation
        self.rank = rank
        self.stft_weight = stft_weight

    def source_losses(self, estimate: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """`[B, S, C, T]` x2 -> `[B, S]`, in float32 whatever the autocast dtype."""
        return source_losses(estimate.float(), sources, self.kind, self.stft_weight)

    def __call__(self, output: tp.Any, mix: torch.Tensor, sources: torch.Tensor
                 ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        losses = self.source_losses(output, sources)
        mask = None
        if self.truncation:
            levels = None
            if self.rank == 'relative':
                levels = target_levels(sources, self.kind, self.stft_weight)
            mask = truncation_mask(losses, self.truncation, levels)
        return weighted_loss(losses, self.weights, mask), losses

    def validation(self, estimate: torch.Tensor, sources: torch.Tensor
                   ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """The validation loss (weighted, never truncated) and its per-source terms."""
        losses = self.source_losses(estimate, sources)
        return weighted_loss(losses, self.weights), losses


class XUMXLoss(SourceLoss):
    """X-UMX's multi-domain loss with combinations (`losses.xumx_loss`), on the estimates and
    the magnitude estimates of a model with `magnitude` (model=xumx). Validated, and its
    per-source terms logged, with the L1 of the waveforms: the xumx loss has no per-source
    terms, and in eval mode the model separates through its Wiener filter, which the
    magnitude estimates do not describe; the L1 also keeps its validation loss comparable
    with the XPs of the default loss.

    `complex_spectra` (optim.loss=xumx_mwf, danna's MDX21 model 1): the frequency term is
    the squared error of the complex STFTs that the model's waveforms come from, i.e. after
    its multichannel Wiener filter when it trains through one
    (`xumx.train_wiener_iterations=1`), instead of the magnitudes before it; and, as in
    their code, the time term does not trim the edges of the waveforms."""

    def __init__(self, transform: tp.Callable[[torch.Tensor], torch.Tensor], nfft: int,
                 alpha: float, complex_spectra: bool = False):
        super().__init__('l1')
        self.transform = transform   # magnitude, or complex STFT with complex_spectra
        # The model's STFT is normalised (1 / sqrt(nfft)), the official X-UMX's is not:
        # sqrt(nfft) brings the magnitudes to its units, so that alpha (the official --mcoef)
        # balances the frequency and time terms as in the paper.
        self.scale = math.sqrt(nfft)
        self.alpha = alpha
        self.complex_spectra = complex_spectra
        self.model_kwargs = ({'with_spectrograms': True} if complex_spectra
                             else {'with_magnitudes': True})

    def __call__(self, output: tp.Any, mix: torch.Tensor, sources: torch.Tensor
                 ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        estimate, spectra = output
        with torch.no_grad():  # the targets' STFT: no parameter, no gradient
            targets = self.transform(sources)
        if self.complex_spectra:
            frequency = xumx_complex_loss(spectra, targets.to(spectra.dtype)) * self.scale ** 2
            loss = (frequency + self.alpha * xumx_time_loss(estimate.float(), sources, mix,
                                                            edge=0)).mean()
        else:
            loss = xumx_loss(estimate.float(), spectra.float(), sources, targets, self.alpha,
                             self.scale, mix).mean()
        with torch.no_grad():
            losses = self.source_losses(estimate, sources)
        return loss, losses


Factory = tp.Callable[[tp.Any, torch.nn.Module], SourceLoss]


def per_source_loss(cfg: tp.Any, model: torch.nn.Module) -> SourceLoss:
    """`optim.loss` as a per-source loss, with `weights`, truncation and its ranking."""
    optim = cfg.optim
    if optim.loss == 'neg_sdr' and optim.loss_truncation and optim.truncation_rank == 'relative':
        raise ValueError("optim.truncation_rank=relative divides each loss by its target's "
                         "level, but optim.loss=neg_sdr is already relative to it (in dB): "
                         "use optim.truncation_rank=loss.")
    weights = None if cfg.weights is None else list(cfg.weights)
    return SourceLoss(optim.loss, weights, optim.loss_truncation, optim.truncation_rank,
                      optim.stft_weight)


def xumx_criterion(cfg: tp.Any, model: torch.nn.Module) -> XUMXLoss:
    """X-UMX's multi-domain loss (`xumx`) or danna's (`xumx_mwf`), for a model with
    magnitude estimates (model=xumx)."""
    loss = cfg.optim.loss
    if not callable(getattr(model, 'magnitude', None)):
        raise ValueError(f"optim.loss={loss} needs a model with magnitude estimates "
                         f"(model=xumx), not {type(model).__name__}: use model=xumx, or "
                         f"another optim.loss.")
    # An imported Open-Unmix's unnormalised STFT carries sqrt(n_fft) already (stft_gain).
    complex_spectra = loss == 'xumx_mwf'
    return XUMXLoss(model.stft if complex_spectra else model.magnitude,
                    model.n_fft / getattr(model, 'stft_gain', 1.) ** 2, cfg.optim.xumx_alpha,
                    complex_spectra)


CRITERIA: tp.Dict[str, Factory] = {
    'l1': per_source_loss, 'mse': per_source_loss, 'l1_mrstft': per_source_loss,
    'neg_sdr': per_source_loss, 'xumx': xumx_criterion, 'xumx_mwf': xumx_criterion,
}
assert set(CRITERIA) == set(LOSSES), "every loss name has its criterion"
