"""Multichannel Wiener filter: a post-step that refines the waveform estimates of any model.

The challenge teams danna (MDX21: X-UMX, trained through it, and a U-Net) and aimless (SDX23:
BandSplitRNN) ran the multichannel Wiener filter of norbert / open-unmix (Liutkus & Stöter) on
their spectrogram models' estimates; this is the same method, written anew in torch so that
it runs on batches, on the GPU, and is differentiable (a model such as X-UMX can be trained
through `multichannel_wiener`).

Model. In the STFT domain, at frequency f and frame n, the mixture x(f, n) in C^C (C audio
channels) is the sum of the J sources y_j(f, n), each a zero-mean complex Gaussian of
covariance v_j(f, n) R_j(f): v_j >= 0 is the power spectral density of the source and R_j(f),
a C x C Hermitian matrix, its spatial covariance (how it spreads over the channels, constant
over the frames of a chunk). Given (v_j, R_j), the posterior mean of a source is the Wiener
estimate

    y_j = v_j R_j Cx^-1 x,    Cx = sum_k v_k R_k.

EM. The STFTs of the estimates are the initial y_j, complex: R_j then starts from the model's
own inter-channel phases (norbert starts from magnitudes with the mixture's phase, since
open-unmix predicts only magnitudes; v_j is the same either way). Each iteration does

    v_j(f, n) = 1/C sum_c |y_jc(f, n)|^2                     (M: power spectral density)
    R_j(f)    = sum_n y_j y_j^H / sum_n v_j                   (M: spatial covariance)
    y_j       = (v_j R_j + eps'/J I) (Cx + eps' I)^-1 x       (E: posterior mean)

with, as in norbert, the posterior means in place of the full posterior moments.

Regularisation. eps' = eps * mean |x|^2 (mean over channels, bins and frames of each item)
so that the filter is scale invariant. norbert adds eps' I to Cx only; here each of the J
sources also gets eps'/J I, a faint white isotropic floor in its prior. The result is still an
exact posterior mean, and sum_j y_j = x exactly (mixture consistency), also in the bins where
all estimates are silent: the mixture is then split evenly instead of being lost.

Precision. FFTs run in float32 (`separator.spec`), the EM in complex128 as in norbert: Cx is
close to singular wherever all sources share one direction (everything panned centre, a mono
song), and float32 cannot invert it. The outputs have the dtype of the estimates.

Memory. `wiener_filter` runs on the whole song after the model's overlap-add (not per model
chunk), but cuts it into chunks of `segment_frames` STFT frames (300: about 7 s at 44.1 kHz
with hop 1024, as open-unmix's `wiener_win_len`), filtered independently (so R_j is local in
time, as in open-unmix) and cross-faded over 25% of a chunk. Memory is then bounded by one
chunk, whatever the song length. Every chunk is mixture consistent, and so is the whole,
a weighted average of chunks.
"""
import typing as tp

import torch

from .apply import overlap_add
from .spec import ispectro, spectro

CHUNK_OVERLAP = 0.25  # fraction of a chunk cross-faded with the next one


def _item_mean(power: torch.Tensor) -> torch.Tensor:
    """Mean over all dims but the first: [B, ...] -> [B]."""
    return power.reshape(len(power), -1).mean(1)


def multichannel_wiener(mix_spec: torch.Tensor, source_specs: torch.Tensor, iterations: int = 1,
                        eps: float = 1e-7) -> torch.Tensor:
    """EM of the multichannel Wiener filter on spectrograms (see the module docstring).

    Args:
        mix_spec: complex STFT of the mixture, [B, C, F, N].
        source_specs: complex STFTs of the initial estimates, [B, J, C, F, N].
        iterations: EM iterations; 0 returns `source_specs` unchanged.
        eps: regularisation, relative to the mean power of the mixture.
    Returns:
        The filtered source STFTs [B, J, C, F, N], complex128.
    """
    if iterations == 0:
        return source_specs
    batch, sources, channels = source_specs.shape[:3]
    x = mix_spec.to(torch.complex128).permute(0, 2, 3, 1)        # [B, F, N, C]
    y = source_specs.to(torch.complex128).permute(0, 1, 3, 4, 2)  # [B, J, F, N, C]
    floor = eps * _item_mean(x.real ** 2 + x.imag ** 2)
    floor = floor.clamp_min(1e-20)[:, None, None, None, None]     # silent mixtures too
    eye = torch.eye(channels, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        psd = (y.real ** 2 + y.imag ** 2).mean(-1)                # v_j [B, J, F, N]
        covariance = torch.einsum('bjfnc,bjfnd->bjfcd', y, y.conj())
        spatial = covariance / (psd.sum(-1)[..., None, None] + floor)  # R_j [B, J, F, C, C]
        mix_cov = torch.einsum('bjfn,bjfcd->bfncd', psd.to(x.dtype), spatial)
        mix_cov = mix_cov + floor * eye                           # Cx + eps' I [B, F, N, C, C]
        whitened = torch.linalg.solve(mix_cov, x)                 # Cx^-1 x [B, F, N, C]
        y = psd[..., None] * torch.einsum('bjfcd,bfnd->bjfnc', spatial, whitened)
        y = y + floor / sources * whitened[:, None]
    return y.permute(0, 1, 4, 2, 3)


def _filter_segment(mix: torch.Tensor, estimates: torch.Tensor, iterations: int, nfft: int,
                    hop: int, eps: float) -> torch.Tensor:
    """`wiener_filter` of one chunk at once: [B, C, T], [B, J, C, T] -> [B, J, C, T]."""
    length = mix.shape[-1]
    if length <= nfft // 2:  # too short for the reflect padding of the STFT
        pad = nfft // 2 + 1 - length
        mix = torch.nn.functional.pad(mix, (0, pad))
        estimates = torch.nn.functional.pad(estimates, (0, pad))
    specs = multichannel_wiener(spectro(mix, nfft, hop), spectro(estimates, nfft, hop),
                                iterations, eps)
    out = ispectro(specs.to(torch.complex64), hop, mix.shape[-1])
    return out[..., :length].to(estimates.dtype)


def wiener_filter(mix: torch.Tensor, estimates: torch.Tensor, iterations: int = 1,
                  nfft: int = 4096, hop: tp.Optional[int] = None, eps: float = 1e-7,
                  segment_frames: tp.Optional[int] = 300) -> torch.Tensor:
    """Refine waveform `estimates` of the sources of `mix` with a multichannel Wiener filter.

    Args:
        mix: the mixture, [B, C, T] (or [C, T]).
        estimates: the sources estimated by any model, [B, J, C, T] (or [J, C, T]).
        iterations: EM iterations; 0 returns `estimates` unchanged (the filter is off).
        nfft: STFT size (Hann window of that length).
        hop: STFT hop; defaults to `nfft // 4`.
        eps: regularisation, relative to the mean power of the mixture.
        segment_frames: frames per independently filtered chunk, which bounds memory and
            makes the spatial model local in time; None filters the whole signal at once.
    Returns:
        The filtered estimates, same shape and dtype as `estimates`. They sum to `mix`.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}.")
    if iterations == 0:
        return estimates
    squeeze = mix.dim() == 2
    if squeeze:
        mix, estimates = mix[None], estimates[None]
    if estimates.shape[:1] + estimates.shape[2:] != mix.shape:
        raise ValueError(f"estimates {tuple(estimates.shape)} do not match the mixture "
                         f"{tuple(mix.shape)}: expected [B, J, C, T] and [B, C, T].")
    hop = hop or nfft // 4
    segment = None if segment_frames is None else segment_frames * hop
    if segment is None:
        out = _filter_segment(mix, estimates, iterations, nfft, hop, eps)
    else:
        def filter_chunk(mix_chunk: torch.Tensor, estimates_chunk: torch.Tensor) -> torch.Tensor:
            return _filter_segment(mix_chunk, estimates_chunk, iterations, nfft, hop, eps)
        out = overlap_add(filter_chunk, [mix, estimates], segment, CHUNK_OVERLAP)
    return out[0] if squeeze else out
