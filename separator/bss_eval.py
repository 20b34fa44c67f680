"""bss_eval v4 in torch: the MUSDB convention exactly as museval 0.4.1 computes it, batched over
sources and frames, on the device of the inputs.

museval (`museval.evaluate(refs, ests, win, hop)`, i.e. `metrics.bss_eval` with
`framewise_filters=False, bsseval_sources_version=False`) scores source *images*:

* 512-tap distortion filters are fitted once on the whole track, by least squares with the
  Gram matrix of the delayed references plus `eps * I` (numpy's float eps): `C` projects
  estimate j on all the references (every source and channel), `Cj` on reference j alone.
* Each frame (`window` samples every `hop`; museval drops a last partial frame, and a track
  no longer than `window` is one frame) takes the references of that frame alone, zero padded
  by 511 samples, and splits the estimate into
  `s_true` (the reference), `e_spat = Cj * s_j - s_true`, `e_interf = C * s - Cj * s_j` and
  `e_artif = estimate - C * s`; SDR = |s_true|^2 / |e_spat + e_interf + e_artif|^2,
  ISR = |s_true|^2 / |e_spat|^2, SIR = |Cj * s_j|^2 / |e_interf|^2,
  SAR = |C * s|^2 / |e_artif|^2 (energies summed over channels and samples), and a zero
  denominator gives +inf.
* A frame in which any reference or any estimate is silent (its sum over channels is zero at
  every sample) is NaN for every source and metric. (museval refuses outright a reference or
  estimate silent over the whole track; here all its frames are NaN instead.)

The three errors add up to `estimate - s_true` whatever the filters are, so the SDR is the
plain per-frame signal-to-error ratio `10 log10(|s|^2 / |s_hat - s|^2)`: `bss_eval_sdr`
computes that directly (0.1 s for 4 stereo sources x 30 s on 2 CPU cores, where museval takes
20-60 s), and only ISR/SIR/SAR (`bss_eval_images`: 5-6 s there) fit the filters. museval
reaches the same SDR through the decomposition, so both agree to float error, except where an
estimate equals its reference in a frame: museval's error is then rounding noise (a finite
~400 dB), here it is exactly zero (+inf).

ISR and SIR (and less so SAR) are only as well defined as the filter solve: when the Gram
matrix of the delayed references is near-singular (a stereo image that is a delayed, scaled
copy of one mono signal; band-limited stems), museval's own ISR/SIR move by up to 16 dB, and
on the MUSDB excerpt shipped with stempeg SIR by 0.03 dB, when the references are perturbed by
1e-15 relative. There these agree with museval only as well as museval agrees with itself;
on well-conditioned references they agree to 1e-13 dB (tests/test_bss_eval.py).
"""
import typing as tp

import torch
import torch.nn.functional as F

FILTERS_LEN = 512
# museval adds numpy's float64 eps times the identity to the Gram matrix.
EPS = torch.finfo(torch.float64).eps
# Real elements of one chunk of frame spectra in `bss_eval_images` (bounds memory: 16 MiB x a
# few tensors of this size, whatever the track length).
_CHUNK_ELEMENTS = 2 ** 21


class Images(tp.NamedTuple):
    """bss_eval v4 metrics per source and frame, each [S, frames], in dB."""
    sdr: torch.Tensor
    isr: torch.Tensor
    sir: torch.Tensor
    sar: torch.Tensor


def num_frames(length: int, window: int, hop: int) -> int:
    """museval's frame count: whole windows only, or one frame if the track is not longer."""
    if window < length:
        return (length - window + hop) // hop
    return 1


def _prepare(references: torch.Tensor, estimates: torch.Tensor, samplerate: int,
             window: tp.Optional[int], hop: tp.Optional[int],
             dtype: tp.Optional[torch.dtype] = None
             ) -> tp.Tuple[torch.Tensor, torch.Tensor, int, int]:
    """Checks the shapes, casts to `dtype` (default: float32 or float64 as given, float64 for
    other types), pads or truncates the estimates to the length of the references (as
    `museval.evaluate` does), and resolves the frame size (1 s) and hop (the frame size)."""
    if references.dim() != 3 or estimates.dim() != 3:
        raise ValueError(f"bss_eval: references and estimates must be [sources, channels, "
                         f"time], got {tuple(references.shape)} and {tuple(estimates.shape)}")
    if references.shape[:2] != estimates.shape[:2]:
        raise ValueError(f"bss_eval: references {tuple(references.shape)} and estimates "
                         f"{tuple(estimates.shape)} differ in sources or channels: pass one "
                         f"estimate per reference, with the same channels")
    window = int(samplerate if window is None else window)
    hop = int(window if hop is None else hop)
    if window <= 0 or hop <= 0:
        raise ValueError(f"bss_eval: window ({window}) and hop ({hop}) must be positive "
                         f"sample counts")
    if dtype is None:
        dtype = torch.promote_types(references.dtype, estimates.dtype)
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float64
    references = references.to(dtype)
    estimates = estimates.to(references.device, dtype)
    length = references.shape[-1]
    if length == 0:
        raise ValueError("bss_eval: empty references (0 samples)")
    if estimates.shape[-1] >= length:
        estimates = estimates[..., :length]
    else:
        estimates = F.pad(estimates, (0, length - estimates.shape[-1]))
    return references, estimates, window, hop


def _frames(signal: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """[..., T] -> [..., frames, n]: museval's frames (a view where possible)."""
    length = signal.shape[-1]
    if window >= length:
        return signal[..., None, :]
    return signal.unfold(-1, window, hop)[..., :num_frames(length, window, hop), :]


def silent_frames(references: torch.Tensor, estimates: torch.Tensor, window: int, hop: int
                  ) -> torch.Tensor:
    """[frames] bool: frames museval scores NaN, where some reference or estimate [S, C, T]
    sums to zero over its channels at every sample."""
    silent = torch.zeros((), dtype=torch.bool, device=references.device)
    for signals in (references, estimates):
        if signals.shape[1] > 2:
            # museval sums float64 copies; a sum of two floats is zero in any precision iff
            # they are opposite, but three or more may cancel differently in float32.
            signals = signals.double()
        mono = _frames(signals.sum(1), window, hop)             # [S, frames, n]
        silent = silent | (mono == 0).all(-1).any(0)
    return silent


def _db(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """museval's `_safe_db`: 10 log10(num / den), +inf where den is zero."""
    return torch.where(den == 0, torch.full_like(num, float('inf')),
                       10 * torch.log10(num / torch.where(den == 0, torch.ones_like(den), den)))


def _energy(frames: torch.Tensor) -> torch.Tensor:
    """[S, C, frames, n] -> [S, frames] float64: energy summed over channels and samples, in
    the precision of the frames (torch sums by cascade: 1e-7 relative error in float32)."""
    return frames.square().sum((1, 3)).double()


def _sdr(references: torch.Tensor, estimates: torch.Tensor, window: int, hop: int
         ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """SDR [S, frames] (float64) of prepared (equal length) signals, NaN on the silent frames,
    and those frames [frames] (bool).

    Float32 signals are scored in float32 (twice as fast as casting them): the error
    `estimate - reference` is then rounded by at most 2^-24 of itself and the energies summed
    to 1e-7 relative, about 1e-6 dB of SDR at any SDR (museval computes in float64)."""
    sdr = _db(_energy(_frames(references, window, hop)),
              _energy(_frames(estimates - references, window, hop)))
    silent = silent_frames(references, estimates, window, hop)
    return sdr.masked_fill(silent, float('nan')), silent


def bss_eval_sdr(references: torch.Tensor, estimates: torch.Tensor, samplerate: int,
                 window: tp.Optional[int] = None, hop: tp.Optional[int] = None
                 ) -> torch.Tensor:
    """bss_eval v4 SDR per source and frame [S, frames] (float64, NaN where museval gives NaN)
    of references and estimates [S, C, T] on any device; frames of `window` samples (default
    `samplerate`: 1 s) every `hop` (default `window`). Estimates are cut or zero padded to the
    length of the references."""
    references, estimates, window, hop = _prepare(references, estimates, samplerate, window,
                                                  hop)
    return _sdr(references, estimates, window, hop)[0]


def nanmedian(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """numpy's nanmedian along `dim`: the mean of the two middle values of an even count
    (torch.nanmedian takes the lower one), NaN where every value is NaN; +-inf count."""
    values = values.movedim(dim, -1)
    valid = (~values.isnan()).sum(-1)
    # NaNs sort last in torch.sort, so the first `valid` entries are the numbers, in order.
    ordered = values.sort(-1).values
    low = ((valid - 1).clamp(min=0) // 2)[..., None]
    high = (valid // 2).clamp(max=max(values.shape[-1] - 1, 0))[..., None]
    middle = (ordered.gather(-1, low) + ordered.gather(-1, high))[..., 0] / 2
    return middle.masked_fill(valid == 0, float('nan'))


def median_sdr(references: torch.Tensor, estimates: torch.Tensor, samplerate: int,
               window: tp.Optional[int] = None, hop: tp.Optional[int] = None) -> torch.Tensor:
    """The MUSDB score per source [S]: the median of `bss_eval_sdr` over the frames that are
    not NaN (np.nanmedian), NaN for a source without any."""
    return nanmedian(bss_eval_sdr(references, estimates, samplerate, window, hop), -1)


# ------------------------------------------------------------------ ISR, SIR, SAR (filters)
def _fast_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT size that pocketfft and cuFFT do quickly."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def correlations(x: torch.Tensor, y: torch.Tensor, max_lag: int, fft_size: int = 16384
                 ) -> torch.Tensor:
    """Linear cross-correlations of every row of x [P, T] with every row of y [Q, T] at lags
    -max_lag..max_lag: out[p, q, max_lag + k] = sum_t x[p, t] y[q, t + k] (zero outside).

    Computed by blocks: each block of x against the block of y widened by max_lag on both
    sides, one FFT of `fft_size` each, the cross spectra summed over blocks before a single
    inverse FFT per pair. Exact (no wrap-around) since a block plus 2 max_lag fits the FFT.
    """
    fft_size = max(fft_size, _fast_size(4 * max_lag + 2))
    block = fft_size - 2 * max_lag
    length = x.shape[-1]
    blocks = -(-length // block)
    x = F.pad(x, (0, blocks * block - length)).unflatten(-1, (blocks, block))
    y = F.pad(y, (max_lag, blocks * block - length + max_lag)).unfold(-1, block + 2 * max_lag,
                                                                         block)
    # A few blocks at a time: the spectra of a whole track would take GBs.
    step = max(1, _CHUNK_ELEMENTS // ((x.shape[0] + y.shape[0]) * fft_size))
    cross = 0
    for start in range(0, blocks, step):
        spec_x = torch.fft.rfft(x[:, start:start + step], fft_size).conj()   # [P, b, K]
        spec_y = torch.fft.rfft(y[:, start:start + step], fft_size)          # [Q, b, K]
        cross = cross + torch.einsum('pbk,qbk->pqk', spec_x, spec_y)
    return torch.fft.irfft(cross, fft_size)[..., :2 * max_lag + 1]


def _solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """museval's filter solve: (G + eps I) X = D by LU, by least squares where G + eps I is
    exactly singular (G [N, N], D [N, K]).

    LU as museval (np.linalg.solve), not Cholesky: the Gram matrix of band-limited sources is
    positive semi-definite only up to rounding (eigenvalues of -5e-12), and Cholesky fails.
    """
    regular = gram + EPS * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    factor, pivots, info = torch.linalg.lu_factor_ex(regular)
    if not bool(info):
        return torch.linalg.lu_solve(factor, pivots, rhs)
    driver = 'gelsd' if gram.device.type == 'cpu' else None
    return torch.linalg.lstsq(gram, rhs, driver=driver).solution


def _solve_each(grams: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """`_solve` of each of a batch [B, N, N], [B, N, K], one at a time: torch 2.11's batched
    CPU LU (MKL) fails ("DLASWP parameter 6") and hangs with more than one thread."""
    return torch.stack([_solve(gram, value) for gram, value in zip(grams, rhs)])


def projection_filters(references: torch.Tensor, estimates: torch.Tensor,
                       filters_len: int = FILTERS_LEN
                       ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """museval v4's distortion filters, fitted on whole signals [S, C, T] (float64).

    Returns `full` [S_est, S_ref, C_ref, filters_len, C_out], projecting estimate j on every
    reference, and `own` [S, C_ref, filters_len, C_out], on reference j alone; the projection
    of a signal x [S_ref, C_ref, T] is sum over (s, c) of x[s, c] convolved with filter[s, c, :,
    out].
    """
    sources, channels, _ = references.shape
    rows = sources * channels
    lag = filters_len - 1
    corr = correlations(references.flatten(0, 1),
                        torch.cat([references, estimates]).flatten(0, 1), lag)
    # Gram matrix of the delayed references: G[(p, a), (q, b)] = sum_t x_p(t - a) x_q(t - b).
    taps = torch.arange(filters_len, device=references.device)
    gram = corr[:, :rows][..., taps[:, None] - taps[None, :] + lag]       # [P, P, L, L]
    gram = gram.permute(0, 2, 1, 3).reshape(rows * filters_len, rows * filters_len)
    # Right-hand sides: D[(p, a), (j, c)] = sum_t x_p(t - a) estimate_j,c(t).
    rhs = corr[:, rows:, lag:].permute(0, 2, 1).reshape(rows * filters_len, rows)
    full = _solve(gram, rhs)
    full = full.reshape(sources, channels, filters_len, sources, channels).permute(3, 0, 1, 2, 4)
    size = channels * filters_len
    blocks = gram.reshape(sources, size, sources, size).diagonal(dim1=0, dim2=2)
    own_rhs = rhs.reshape(sources, size, sources, channels).diagonal(dim1=0, dim2=2)
    own = _solve_each(blocks.permute(2, 0, 1), own_rhs.permute(2, 0, 1))      # [S, C L, C]
    return full, own.reshape(sources, channels, filters_len, channels)


def _images_chunk(ref: torch.Tensor, est: torch.Tensor, full_spec: torch.Tensor,
                  own_spec: torch.Tensor, filters_len: int, fft_size: int
                  ) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ISR, SIR, SAR [S, f] of frames ref, est [S, C, f, n], given the filter spectra."""
    out_len = ref.shape[-1] + filters_len - 1
    spec = torch.fft.rfft(ref, fft_size)                                  # [S, C, f, K]
    proj_all = torch.fft.irfft(torch.einsum('icfk,jicok->jofk', spec, full_spec),
                               fft_size)[..., :out_len]
    proj_own = torch.fft.irfft(torch.einsum('jcfk,jcok->jofk', spec, own_spec),
                               fft_size)[..., :out_len]
    ref = F.pad(ref, (0, filters_len - 1))
    est = F.pad(est, (0, filters_len - 1))
    isr = _db(_energy(ref), _energy(proj_own - ref))
    sir = _db(_energy(proj_own), _energy(proj_all - proj_own))
    sar = _db(_energy(proj_all), _energy(est - proj_all))
    return isr, sir, sar


def bss_eval_images(references: torch.Tensor, estimates: torch.Tensor, samplerate: int,
                    window: tp.Optional[int] = None, hop: tp.Optional[int] = None,
                    filters_len: int = FILTERS_LEN) -> Images:
    """All four bss_eval v4 metrics per source and frame (museval.evaluate's SDR, ISR, SIR,
    SAR), each [S, frames] float64, NaN where museval gives NaN. Fits the distortion filters
    (one (S C 512)^2 linear solve), so it costs seconds where `bss_eval_sdr` costs
    milliseconds; the SDR is the same."""
    references, estimates, window, hop = _prepare(references, estimates, samplerate, window,
                                                  hop, torch.float64)
    sdr, silent = _sdr(references, estimates, window, hop)
    if bool(silent.all()):
        return Images(sdr, sdr.clone(), sdr.clone(), sdr.clone())
    full, own = projection_filters(references, estimates, filters_len)
    ref_frames = _frames(references, window, hop)
    est_frames = _frames(estimates, window, hop)
    sources, channels, frames, size = ref_frames.shape
    fft_size = _fast_size(size + filters_len - 1)
    full_spec = torch.fft.rfft(full.permute(0, 1, 2, 4, 3), fft_size)     # [J, I, C, O, K]
    own_spec = torch.fft.rfft(own.permute(0, 1, 3, 2), fft_size)          # [J, C, O, K]
    step = max(1, _CHUNK_ELEMENTS // (sources * channels * fft_size))
    parts = [_images_chunk(ref_frames[:, :, start:start + step],
                           est_frames[:, :, start:start + step], full_spec, own_spec,
                           filters_len, fft_size)
             for start in range(0, frames, step)]
    isr, sir, sar = (torch.cat(values, -1) for values in zip(*parts))
    return Images(*(metric.masked_fill(silent, float('nan')) for metric in (sdr, isr, sir, sar)))
