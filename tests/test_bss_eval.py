"""`separator.bss_eval` (bss_eval v4 in torch) against museval 0.4.1, the reference, on every
source and frame: synthetic songs (`separator.data.synthetic`), filtered noise with silent and
channel-cancelling frames, overlapping and single frames, and the MUSDB excerpt shipped with
stempeg (The Easton Ellises - Falcon 69), within 0.01 dB.

museval computes SDR through the distortion-filter decomposition; `bss_eval_sdr` computes the
same number as the plain per-frame signal-to-error ratio (the three errors add up to
estimate - reference), so they agree to float error (1e-12 dB), except where an estimate
equals its reference over a frame: there museval's error is rounding noise (a finite ~400 dB)
and ours is exactly zero (+inf); those frames are checked as such.
"""
import typing as tp
from pathlib import Path

import museval
import numpy as np
import pytest
import scipy.signal as scipy_signal
import torch

from separator import bss_eval
from separator.data.synthetic import SOURCES, synthesize_track
from separator.metrics import bss_sdr
from separator.track_io import read_stems

TOLERANCE_DB = 0.01
PERFECT_DB = 200.   # museval's SDR of an estimate equal to its reference: rounding noise
FALCON = (Path(museval.__file__).parent.parent / 'stempeg' / 'data'
          / 'The Easton Ellises - Falcon 69.stem.mp4')


def reference_metrics(references: torch.Tensor, estimates: torch.Tensor, window: int,
                      hop: int) -> np.ndarray:
    """museval.evaluate's SDR, ISR, SIR, SAR [4, S, frames] of [S, C, T] tensors."""
    return np.stack(museval.evaluate(references.transpose(1, 2).double().numpy(),
                                     estimates.transpose(1, 2).double().numpy(),
                                     win=window, hop=hop))


def assert_equal_db(name: str, ours: torch.Tensor, theirs: np.ndarray,
                    tolerance: float = TOLERANCE_DB) -> None:
    """NaN exactly where museval has NaN, +inf where museval has rounding noise above
    PERFECT_DB (SDR of a perfect frame), the value within `tolerance` dB elsewhere."""
    ours = ours.cpu().numpy()
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    assert (np.isnan(ours) == np.isnan(theirs)).all(), (name, ours, theirs)
    perfect = theirs > PERFECT_DB
    assert np.isposinf(ours[perfect]).all(), (name, ours, theirs)
    finite = ~np.isnan(theirs) & ~perfect
    diff = np.abs(ours[finite] - theirs[finite])
    print(f"{name}: {finite.sum()} frames, max |ours - museval| {diff.max():.3e} dB, "
          f"{np.isnan(theirs).sum()} NaN, {perfect.sum()} perfect")
    assert diff.max() <= tolerance, (name, ours, theirs)


def coloured_noise(rng: np.random.Generator, sources: int, channels: int, length: int
                   ) -> np.ndarray:
    """Independent white noise through a different 2-pole filter per source and channel."""
    out = np.empty((sources, channels, length))
    for source in range(sources):
        for channel in range(channels):
            pole = rng.uniform(0.3, 0.95) * np.exp(1j * rng.uniform(0.1, 3.))
            out[source, channel] = scipy_signal.lfilter(
                [1.], np.poly([pole, pole.conjugate()]).real, rng.standard_normal(length))
    return out


def leaky_estimates(references: torch.Tensor, noise: float, leak: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Estimates with a gain error, leakage of the other sources, a short echo and noise, so
    that every error term of bss_eval is present."""
    mix = references.sum(0, keepdim=True)
    echo = torch.roll(references, 7, -1)
    return (0.9 * references + leak * (mix - references) + 0.05 * echo
            + noise * references.std() * torch.randn(references.shape, generator=generator,
                                                     dtype=references.dtype))


# ---------------------------------------------------------------- synthetic tracks
def test_synthetic_song_with_silent_frames():
    """A 4-stem synthetic song (float32, 16 kHz, 4.6 s: 4 frames of 1 s, the partial last one
    dropped as museval does) in which the bass and vocals rest in frame 0 and the drums are
    silenced in frame 2: NaN for every source in both frames."""
    rate = 16000
    stems = synthesize_track(np.random.default_rng(1), 4.6, samplerate=rate)
    references = torch.from_numpy(np.stack([stems[name] for name in SOURCES]))
    references[0, :, 2 * rate:3 * rate] = 0
    estimates = leaky_estimates(references, 0.05, 0.1, torch.Generator().manual_seed(0))
    theirs = reference_metrics(references, estimates, rate, rate)
    ours = bss_eval.bss_eval_sdr(references, estimates, rate)
    assert ours.shape == (4, 4) and ours.dtype == torch.float64
    assert np.isnan(theirs[0][:, [0, 2]]).all() and np.isfinite(theirs[0][:, [1, 3]]).all()
    assert_equal_db('synthetic song SDR', ours, theirs[0])
    median = bss_eval.median_sdr(references, estimates, rate).numpy()
    np.testing.assert_allclose(median, np.nanmedian(theirs[0], axis=1), atol=TOLERANCE_DB)


def test_noise_overlapping_frames_all_metrics():
    """Filtered noise, 3 stereo sources, 6000-sample frames every 4000 (overlap), with every
    NaN rule of museval: a reference silent in frame 3, a reference whose channels cancel
    (L = -R: zero channel sum) in frame 6, an estimate silent in frame 7; and an estimate
    equal to its reference in frame 0 (museval: ~400 dB of rounding noise; ours +inf).
    All four metrics: the references are well conditioned, so ISR/SIR/SAR agree too."""
    rng = np.random.default_rng(1)
    references = torch.from_numpy(coloured_noise(rng, 3, 2, 36800))
    estimates = leaky_estimates(references, 0.1, 0.2, torch.Generator().manual_seed(1))
    references[1, :, 12000:19000] = 0
    references[2, 1, 24000:30000] = -references[2, 0, 24000:30000]
    estimates[0, :, 28000:] = 0
    estimates[2, :, :4000] = references[2, :, :4000]
    estimates[2, :, 4000:6000] = references[2, :, 4000:6000]
    theirs = reference_metrics(references, estimates, 6000, 4000)
    ours = bss_eval.bss_eval_images(references, estimates, 8000, window=6000, hop=4000)
    assert np.isnan(theirs[0][:, [3, 6, 7]]).all() and (theirs[0][2, 0] > PERFECT_DB)
    assert_equal_db('noise SDR', ours.sdr, theirs[0])
    for index, name in enumerate(['ISR', 'SIR', 'SAR'], 1):
        assert_equal_db(f'noise {name}', getattr(ours, name.lower()), theirs[index])
    np.testing.assert_array_equal(ours.sdr.numpy(), bss_eval.bss_eval_sdr(
        references, estimates, 8000, window=6000, hop=4000).numpy())


def test_single_frame_and_shorter_estimates():
    """A track shorter than the window is one frame; estimates shorter than the references
    are zero padded, longer ones cut (museval.evaluate's pad_or_truncate)."""
    rng = np.random.default_rng(2)
    references = torch.from_numpy(coloured_noise(rng, 2, 2, 3 * 8000))
    estimates = leaky_estimates(references, 0.2, 0.1, torch.Generator().manual_seed(2))
    for cut in (estimates[..., :-300], torch.cat([estimates, estimates[..., :500]], -1)):
        theirs = reference_metrics(references, cut, 4 * 8000, 4 * 8000)
        ours = bss_eval.bss_eval_sdr(references, cut, 8000, window=4 * 8000)
        assert ours.shape == (2, 1)
        assert_equal_db('single frame SDR', ours, theirs[0])


def test_bss_sdr_impls_agree_with_a_source_silent_throughout():
    """bss_sdr drops a reference silent throughout (museval refuses one) and scores it NaN,
    with either impl; the other sources agree within 0.01 dB. The torch impl alone also
    scores such a track framewise: every frame of the silent source is NaN, and, as a
    silent frame of any source is NaN for all, so is every frame of the others."""
    rate = 8000
    stems = synthesize_track(np.random.default_rng(5), 4.2, samplerate=rate)
    references = torch.from_numpy(np.stack([stems[name] for name in SOURCES[:3]]))
    references[1] = 0
    estimates = leaky_estimates(references, 0.1, 0.1, torch.Generator().manual_seed(5))
    ours = bss_sdr(references, estimates, rate)
    theirs = bss_sdr(references, estimates, rate, impl='museval')
    print(f"bss_sdr torch {ours}, museval {theirs}")
    assert np.isnan(ours[1]) and np.isnan(theirs[1]) and np.isfinite(theirs[[0, 2]]).all()
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE_DB)
    assert bss_eval.bss_eval_sdr(references, estimates, rate).isnan().all()
    with pytest.raises(ValueError, match="unknown impl 'fast'.*torch, museval"):
        bss_sdr(references, estimates, rate, impl='fast')


# ---------------------------------------------------------------- MUSDB excerpt
@pytest.fixture(scope='module')
def falcon() -> tp.Tuple[torch.Tensor, torch.Tensor, int]:
    """The stems [4, 2, T] (drums, bass, other, vocals) and mixture [2, T] of the excerpt."""
    assert FALCON.exists(), f"{FALCON} missing: reinstall stempeg (museval's dependency)"
    audio, rate = read_stems(FALCON)                    # [5, 2, T], the mixture first
    audio = torch.from_numpy(audio)
    return audio[1:], audio[0], rate


@pytest.mark.parametrize('kind', ['mixture/4', 'noisy'])
def test_musdb_excerpt(falcon, kind):
    """6.08 s of a real MUSDB track (6 frames, the last 0.08 s dropped): the mixture split
    evenly, and the references plus noise (float32, as the solver passes them)."""
    references, mix, rate = falcon
    if kind == 'mixture/4':
        estimates = (mix / 4).expand_as(references).contiguous()
    else:
        generator = torch.Generator().manual_seed(6)
        estimates = references + 0.05 * torch.randn(references.shape, generator=generator,
                                                     dtype=references.dtype)
    references, estimates = references.float(), estimates.float()
    theirs = reference_metrics(references, estimates, rate, rate)
    ours = bss_eval.bss_eval_sdr(references, estimates, rate)
    assert ours.shape == (4, 6)
    assert_equal_db(f'Falcon 69, {kind}', ours, theirs[0])
    np.testing.assert_allclose(bss_sdr(references, estimates, rate),
                               np.nanmedian(theirs[0], axis=1), atol=TOLERANCE_DB)


# ---------------------------------------------------------------- pieces
def test_nanmedian_is_numpys():
    """numpy's nanmedian (mean of the two middle values; NaN skipped; +-inf kept; NaN for a
    row of NaN), which torch.nanmedian is not (it takes the lower middle value)."""
    nan, inf = float('nan'), float('inf')
    rows = [[1., 4., 2., 3.], [nan, 5., nan, 1.], [nan, nan, nan, nan], [inf, 2., nan, 1.],
            [inf, inf, nan, nan], [-inf, inf, 0., nan], [7., nan, nan, nan]]
    values = torch.tensor(rows, dtype=torch.float64)
    with np.errstate(all='ignore'), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(np.array(rows), axis=1)
    np.testing.assert_array_equal(bss_eval.nanmedian(values).numpy(), expected)
    np.testing.assert_array_equal(bss_eval.nanmedian(values.T, dim=0).numpy(), expected)


def test_correlations_against_numpy():
    """The block-FFT cross-correlations at lags -3..3 against np.correlate, on signals whose
    length is not a multiple of the block."""
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((2, 3, 1000))
    out = bss_eval.correlations(torch.from_numpy(x), torch.from_numpy(y), 3, fft_size=64)
    for p in range(3):
        for q in range(3):
            full = np.correlate(y[q], x[p], mode='full')     # lag k at index 999 + k
            np.testing.assert_allclose(out[p, q].numpy(), full[996:1003], atol=1e-10)


def test_shape_errors_name_the_fix():
    references = torch.zeros(2, 2, 100)
    with pytest.raises(ValueError, match=r'\[sources, channels, time\]'):
        bss_eval.bss_eval_sdr(references[0], references[0], 10)
    with pytest.raises(ValueError, match='one estimate per reference'):
        bss_eval.bss_eval_sdr(references, torch.zeros(3, 2, 100), 10)
