"""The multichannel Wiener filter post-step (separator.wiener) on synthetic stereo sources."""
import math
import typing as tp

import pytest
import torch

from separator.metrics import nsdr
from separator.wiener import wiener_filter

SAMPLERATE = 16000
NFFT = 1024  # small STFTs keep the tests fast; the defaults (4096) are tested once


def pan(mono: torch.Tensor, left: float, right: float) -> torch.Tensor:
    return torch.stack([left * mono, right * mono])


def tone(frequencies: tp.Sequence[float], length: int) -> torch.Tensor:
    """Sum of sines at `frequencies`, the k-th of amplitude 1 / k."""
    time = torch.arange(length) / SAMPLERATE
    return sum(torch.sin(2 * math.pi * f * time) / (k + 1) for k, f in enumerate(frequencies))


def band_sources(length: int = 2 * SAMPLERATE + 1) -> torch.Tensor:
    """Two stereo sources in disjoint bands (tones below 600 Hz, above 2.5 kHz): [2, 2, T]."""
    return torch.stack([pan(tone([300, 500], length), 0.9, 0.3),
                        pan(0.7 * tone([3000, 4500], length), 0.2, 1.)])


def music_like_sources(length: int = 2 * SAMPLERATE + 1, seed: int = 0) -> torch.Tensor:
    """Melody (harmonic notes), drums (noise bursts), bass (low sine), panned apart: [3, 2, T].

    They overlap in time and frequency, but each is sparse in the time-frequency plane, as
    music is: where the Wiener filter helps.
    """
    generator = torch.Generator().manual_seed(seed)
    melody = torch.zeros(length)
    note = length // 4
    for index, fundamental in enumerate([220, 330, 262, 392]):
        decay = torch.exp(-2 * torch.arange(note) / SAMPLERATE)
        harmonics = [fundamental * k for k in range(1, 6)]
        melody[index * note:(index + 1) * note] = tone(harmonics, note) * decay
    drums = torch.zeros(length)
    hit = length // 8
    for index in range(8):
        decay = torch.exp(-torch.arange(hit) / (0.03 * SAMPLERATE))
        drums[index * hit:(index + 1) * hit] = torch.randn(hit, generator=generator) * decay
    bass = 0.8 * tone([55], length)
    return torch.stack([pan(melody, 0.8, 0.4), pan(drums, 0.3, 0.9), pan(bass, 0.7, 0.7)])


def with_leakage(sources: torch.Tensor, leakage: float = 0.3) -> torch.Tensor:
    """Estimates holding their source plus `leakage` times each other source."""
    mix = sources.sum(0)
    return torch.stack([source + leakage * (mix - source) for source in sources])



@pytest.mark.parametrize('iterations', [1, 3])
def test_mixture_consistency(iterations):
    generator = torch.Generator().manual_seed(0)
    sources = music_like_sources()
    mix = sources.sum(0)
    # Far off estimates: wrong levels, noise; one source silent in the first half.
    estimates = 0.5 * with_leakage(sources, 0.5) + 0.1 * torch.randn(sources.shape,
                                                                     generator=generator)
    estimates[0, :, :SAMPLERATE] = 0
    out = wiener_filter(mix, estimates, iterations, nfft=NFFT)
    assert out.shape == estimates.shape and out.dtype == estimates.dtype
    assert (out.sum(0) - mix).abs().max() < 1e-4
    assert not torch.allclose(out, estimates, atol=1e-2)


def test_mixture_consistency_chunked_batch():
    """Chunks (segment_frames) and batch items are filtered independently, still consistent."""
    sources = torch.stack([music_like_sources(seed=0), 2 * music_like_sources(seed=1)])
    mix = sources.sum(1)
    estimates = with_leakage(sources[0])[None].expand_as(sources).contiguous()
    out = wiener_filter(mix, estimates, 1, nfft=NFFT, segment_frames=20)
    assert (out.sum(1) - mix).abs().max() < 1e-4
    # Item 0 alone gives the same result: items do not share statistics.
    alone = wiener_filter(mix[:1], estimates[:1], 1, nfft=NFFT, segment_frames=20)
    assert torch.allclose(alone, out[:1], atol=1e-5)


def test_disjoint_bands_oracle():
    """Disjoint sources with the right bands but wrong levels (x0.5, x2) come out exact."""
    sources = band_sources()
    estimates = torch.stack([0.5 * sources[0], 2 * sources[1]])
    out = wiener_filter(sources.sum(0), estimates, 1, nfft=NFFT)
    assert (nsdr(sources, estimates) < 7).all()
    assert (nsdr(sources, out) > 60).all()


def test_improves_leaky_estimates():
    sources = music_like_sources()
    estimates = with_leakage(sources)
    before = nsdr(sources, estimates)
    one = nsdr(sources, wiener_filter(sources.sum(0), estimates, 1, nfft=NFFT))
    three = nsdr(sources, wiener_filter(sources.sum(0), estimates, 3, nfft=NFFT))
    assert (one > before + 3).all(), (before, one)
    assert three.mean() > one.mean() + 3, (one, three)  # EM keeps improving here


def test_centred_sources_are_stable():
    """Everything panned centre: the mixture covariance is singular in every bin."""
    sources = music_like_sources()
    sources = sources.mean(1, keepdim=True).expand_as(sources)
    out = wiener_filter(sources.sum(0), with_leakage(sources), 2, nfft=NFFT)
    assert out.isfinite().all()
    assert (nsdr(sources, out) > nsdr(sources, with_leakage(sources)) + 3).all()


def test_gradient_flows():
    sources = music_like_sources(length=SAMPLERATE)
    estimates = with_leakage(sources)
    estimates[1, :, :SAMPLERATE // 2] = 0  # silent stretch: 0 / 0 must not appear
    estimates.requires_grad_()
    out = wiener_filter(sources.sum(0), estimates, 2, nfft=NFFT, segment_frames=20)
    (out - sources).square().sum().backward()
    assert estimates.grad is not None and estimates.grad.isfinite().all()
    assert estimates.grad.abs().sum() > 0


@pytest.mark.parametrize('length', [16001, 777, 3])
def test_length_kept(length):
    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(2, length, generator=generator)
    estimates = torch.stack([mix / 4, 3 * mix / 4]) + 0.01 * torch.randn(2, 2, length,
                                                                      generator=generator)
    out = wiener_filter(mix, estimates, 1, nfft=NFFT)
    assert out.shape == estimates.shape
    assert (out.sum(0) - mix).abs().max() < 1e-4


def test_defaults_and_off():
    sources = band_sources(length=44100 + 1)
    mix, estimates = sources.sum(0), with_leakage(sources)
    assert wiener_filter(mix, estimates, 0) is estimates
    out = wiener_filter(mix, estimates)  # nfft 4096, hop 1024, one iteration
    assert out.shape == estimates.shape
    assert (out.sum(0) - mix).abs().max() < 1e-4
    assert (nsdr(sources, out) > nsdr(sources, estimates) + 3).all()
    with pytest.raises(ValueError, match='do not match'):
        wiener_filter(mix, estimates[:, :1])
