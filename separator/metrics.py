"""Separation metrics: nSDR (MDX challenge) and bss_eval SDR (museval, MUSDB convention)."""
import typing as tp

import numpy as np
import torch

EPS = 1e-7


def nsdr(references: torch.Tensor, estimates: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Signal-to-distortion ratio over whole signals, as in the MDX challenge.

    `10 log10((|ref|^2 + eps) / (|ref - est|^2 + eps))` summed over channels and time:
    [..., C, T] -> [...]. A silent estimate of a silent reference scores 0 dB.
    """
    references = references.double()
    estimates = estimates.double()
    num = (references ** 2).sum((-2, -1)) + eps
    den = ((references - estimates) ** 2).sum((-2, -1)) + eps
    return 10 * torch.log10(num / den)


def trivial_estimates(mix: torch.Tensor, num_sources: int) -> tp.Dict[str, torch.Tensor]:
    """The estimates a model must beat: the mixture, the mixture split evenly, silence."""
    stacked = mix[None].expand(num_sources, *mix.shape)
    return {'mixture': stacked, 'mixture_split': stacked / num_sources,
            'silence': torch.zeros_like(stacked)}


def bss_sdr(references: torch.Tensor, estimates: torch.Tensor, samplerate: int
            ) -> np.ndarray:
    """bss_eval v4 SDR per source, median over 1 s frames (museval): [S, C, T] -> [S].

    Frames where the reference is silent are NaN in museval and ignored by the median. A
    source silent throughout the track scores NaN (museval refuses one: it is left out of the
    call, and the other sources are scored without it).
    """
    import museval
    audible = [index for index in range(len(references)) if references[index].abs().sum() > 0]
    scores = np.full(len(references), np.nan)
    if not audible:
        return scores
    refs = references[audible].transpose(1, 2).double().numpy()
    ests = estimates[audible].transpose(1, 2).double().numpy()
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=samplerate, hop=samplerate)
    with np.errstate(all='ignore'):
        scores[audible] = [np.nanmedian(row) if np.isfinite(row).any() else np.nan
                           for row in sdr]
    return scores
