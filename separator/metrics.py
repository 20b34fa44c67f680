"""Separation metrics: nSDR (MDX challenge) and bss_eval SDR (museval, MUSDB convention)."""
import typing as tp

import numpy as np
import torch

from .bss_eval import median_sdr

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


SDR_IMPLS = ('torch', 'museval')


def bss_sdr(references: torch.Tensor, estimates: torch.Tensor, samplerate: int,
            impl: str = 'torch') -> np.ndarray:
    """bss_eval v4 SDR per source, median over 1 s frames (museval): [S, C, T] -> [S].

    Frames where the reference is silent are NaN in museval and ignored by the median. A
    source silent throughout the track scores NaN (museval refuses one: it is left out of the
    call, and the other sources are scored without it).

    `impl`: 'torch' (`separator.bss_eval`: museval's per-frame SDR to float error, in a
    fraction of a second a track, on the device of the inputs) or 'museval' (the reference,
    20-60 s a track). They differ only where an estimate equals its reference over a whole
    frame (museval: rounding noise, ~400 dB; torch: +inf, so a source perfect in every frame
    scores +inf) and for an estimate whose channels sum to zero throughout (museval raises;
    torch: NaN for every source).
    """
    if impl not in SDR_IMPLS:
        raise ValueError(f"bss_sdr: unknown impl {impl!r} (test.sdr_impl): use one of "
                         f"{', '.join(SDR_IMPLS)}")
    audible = [index for index in range(len(references)) if references[index].abs().sum() > 0]
    scores = np.full(len(references), np.nan)
    if not audible:
        return scores
    if impl == 'torch':
        scores[audible] = median_sdr(references[audible], estimates[audible],
                                     samplerate).cpu().numpy()
        return scores
    import museval
    refs = references[audible].transpose(1, 2).double().cpu().numpy()
    ests = estimates[audible].transpose(1, 2).double().cpu().numpy()
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=samplerate, hop=samplerate)
    with np.errstate(all='ignore'):
        scores[audible] = [np.nanmedian(row) if np.isfinite(row).any() else np.nan
                           for row in sdr]
    return scores
