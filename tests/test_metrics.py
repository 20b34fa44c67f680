"""The separation metrics against values computed by hand: nSDR (MDX) and bss_eval SDR
(museval v4, the MUSDB convention: 1 s frames, median over the frames).

museval v4 scores *images* (`bss_eval(..., bsseval_sources_version=False)`): its SDR is
10 log10(|s|^2 / |e_spat + e_interf + e_artif|^2), and the three errors add up to the
estimate minus the reference, whatever the 512-tap distortion filters absorb. So per frame
it is the plain signal-to-error ratio 10 log10(|s|^2 / |s_hat - s|^2): nothing of the noise
is forgiven, and it is NOT gain invariant (bss_eval_sources, v3, is: it scores the estimate's
projection on the filtered reference). The tests below pin that definition.
"""
import math
import typing as tp

import numpy as np
import pytest
import torch

from separator.metrics import EPS, bss_sdr, nsdr

RATE = 8000   # bss_sdr's frames are `samplerate` samples long: 1 s


def db(ratio: float) -> float:
    return 10 * math.log10(ratio)


# ---------------------------------------------------------------- nSDR
def test_nsdr_of_half_the_reference_by_hand():
    """ref [1, 0, 0, 0], est [0.5, 0, 0, 0]: |ref|^2 = 1, |ref - est|^2 = 0.25, so
    10 log10(1 / 0.25) = 6.0206 dB; the eps (1e-7) added to both terms moves it by
    10 / ln 10 * (1e-7 - 4e-7) = -1.3e-6 dB, inside the 1e-5 tolerance."""
    ref = torch.tensor([[1., 0., 0., 0.]])          # [C=1, T=4]
    est = torch.tensor([[0.5, 0., 0., 0.]])
    assert nsdr(ref, est).item() == pytest.approx(6.020600, abs=1e-5)
    assert nsdr(ref, est).item() == pytest.approx(db((1 + EPS) / (0.25 + EPS)), abs=1e-9)


def test_nsdr_sums_channels_and_time_and_keeps_leading_dims():
    """Stereo: the energies add over channels and time before the ratio."""
    ref = torch.tensor([[[1., 0.], [0., 1.]],       # [S=2, C=2, T=2]
                        [[3., 0.], [0., 4.]]])
    est = torch.tensor([[[1., 0.], [0., 0.]],       # error energy 1 of 2: 3.0103 dB
                        [[3., 1.], [0., 4.]]])      # error energy 1 of 25: 13.9794 dB
    values = nsdr(ref, est)
    assert values.shape == (2,)
    assert values.tolist() == pytest.approx([3.010300, 13.979400], abs=1e-5)
    # A perfect estimate: 10 log10((25 + eps) / eps) = 10 log10(2.5e8) = 83.98 dB.
    assert nsdr(ref[1], ref[1]).item() == pytest.approx(83.9794, abs=1e-3)


def test_nsdr_eps_convention_on_silence():
    """Silent reference: silence scores 10 log10(eps / eps) = 0 dB; an error of energy 1
    scores 10 log10(1e-7 / (1 + 1e-7)) = -70 dB (not -inf)."""
    silent = torch.zeros(1, 4)
    assert nsdr(silent, silent).item() == 0
    assert nsdr(silent, torch.tensor([[1., 0., 0., 0.]])).item() == pytest.approx(-70., abs=1e-5)


# ---------------------------------------------------------------- bss_eval SDR (museval)
def noise(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, int(seconds * RATE)))


def at_ratio(reference: np.ndarray, ratios_db: tp.Sequence[float], seed: int) -> np.ndarray:
    """Independent white noise whose energy is `ratios_db[k]` dB below the reference's in
    the k-th 1 s frame (scaled frame by frame, so the ratio is exact in every frame)."""
    out = noise(reference.shape[-1] / RATE, reference.shape[0], seed)
    for k, ratio in enumerate(ratios_db):
        frame = slice(k * RATE, (k + 1) * RATE)
        out[:, frame] *= np.sqrt((reference[:, frame] ** 2).sum()
                                 / (out[:, frame] ** 2).sum() / 10 ** (ratio / 10))
    return out


def sdr(references: tp.Sequence[np.ndarray], estimates: tp.Sequence[np.ndarray]) -> np.ndarray:
    """bss_sdr of lists of [C, T] arrays (sources)."""
    return bss_sdr(torch.from_numpy(np.stack(references)), torch.from_numpy(np.stack(estimates)),
                   RATE)


def test_bss_sdr_of_noise_20_db_below():
    """3 s of white noise, estimate = reference + independent noise 20 dB below it in every
    frame: per frame |s_hat - s|^2 = |s|^2 / 100 exactly, so 20 dB in each frame and as
    their median, to float error (1e-6 dB). Had the distortion filter absorbed the part of
    the noise that lies in the 512-dimensional span of the delayed reference (about 512 /
    8000 of it, as in bss_eval_sources), the SDR would be 20.29 dB: outside the tolerance."""
    ref = noise(3)
    values = sdr([ref], [ref + at_ratio(ref, [20, 20, 20], seed=1)])
    assert values.shape == (1,)
    print(f"bss_sdr: {values[0]:.8f} dB (expected 20)")
    assert values[0] == pytest.approx(20., abs=1e-6)


def test_bss_sdr_per_source_stereo():
    """Two stereo sources, noise 20 and 10 dB below: each source gets its own ratio, in the
    order of the sources (channels summed inside each frame)."""
    refs = [noise(3, channels=2, seed=2), noise(3, channels=2, seed=3)]
    ests = [refs[0] + at_ratio(refs[0], [20] * 3, seed=4),
            refs[1] + at_ratio(refs[1], [10] * 3, seed=5)]
    assert sdr(refs, ests).tolist() == pytest.approx([20., 10.], abs=1e-6)


def test_bss_sdr_is_not_gain_invariant():
    """0.5 x the reference: the error is 0.5 x the reference, 10 log10(1 / 0.25) = 6.0206 dB
    in every frame (museval v4's image SDR; bss_eval_sources would score it > 300 dB)."""
    ref = noise(3)
    assert sdr([ref], [0.5 * ref])[0] == pytest.approx(6.020600, abs=1e-5)


def test_bss_sdr_median_drops_silent_frames():
    """Frames of 10, 20 and 40 dB, then one of a silent reference (the estimate is not silent
    there): museval gives NaN for the silent frame and the median of the other three is
    20 dB (their mean would be 23.3 dB). Had the silent frame counted, as -inf or +inf or
    any value, the median of four would be 15 dB or more than 20 dB."""
    ref = noise(4, seed=6)
    est = ref + at_ratio(ref, [10, 20, 40, 0], seed=7)
    ref[:, 3 * RATE:] = 0
    est[:, 3 * RATE:] = 0.1 * noise(1, seed=8)
    assert sdr([ref], [est])[0] == pytest.approx(20., abs=1e-6)


def test_bss_sdr_of_a_source_silent_throughout_is_nan():
    """A source silent over the whole track (museval refuses one) scores NaN, which the
    solver's median over tracks (np.nanmedian) ignores; the other sources keep their score,
    computed without it."""
    ref = noise(3, seed=9)
    est = ref + at_ratio(ref, [20] * 3, seed=10)
    values = sdr([ref, np.zeros_like(ref)], [est, 0.1 * noise(3, seed=11)])
    assert values[0] == pytest.approx(20., abs=1e-6) and np.isnan(values[1])
