"""optim.loss=neg_sdr (aimless SDX23): the negative SDR in dB of each example and source."""
import math

import pytest
import torch

from separator.criterion import SourceLoss
from separator.losses import neg_sdr, source_losses
from separator.models.hdemucs import HDemucs


def test_known_ratios():
    torch.manual_seed(0)
    sources = torch.randn(3, 2, 2, 1000)
    noise = torch.randn(3, 2, 2, 1000)
    # Scale the noise of each (example, source) to a chosen energy ratio: SDR = 10 log10 r.
    ratios = torch.tensor([[1., 10.], [100., 0.5], [1000., 2.]])
    energy = sources.square().sum((2, 3)) / noise.square().sum((2, 3))
    noise = noise * (energy / ratios).sqrt()[..., None, None]
    losses = source_losses(sources + noise, sources, 'neg_sdr')
    assert losses.shape == (3, 2)
    assert torch.allclose(losses, -10 * torch.log10(ratios), atol=1e-4), losses
    # The same estimate scaled with its target: the loss does not change (it is in dB).
    assert torch.allclose(neg_sdr(7 * (sources + noise), 7 * sources), losses, atol=1e-4)


def test_silence_and_perfect_estimates_are_finite():
    sources = torch.zeros(1, 1, 2, 100)
    assert torch.isfinite(neg_sdr(sources, sources)).all()
    assert neg_sdr(sources, sources).item() == pytest.approx(0.)
    target = torch.ones(1, 1, 2, 100)
    assert neg_sdr(target, target).item() == pytest.approx(10 * math.log10(1e-7 / 200), abs=1e-3)


def test_a_model_fits_a_batch_with_it():
    """A small HDemucs trained with the negative SDR raises the SDR of one example by 3 dB+."""
    torch.manual_seed(0)
    time = torch.arange(22050) / 22050
    target = torch.stack([0.5 * torch.sin(2 * math.pi * 110 * time),
                          0.3 * torch.randn(22050) * ((time * 4) % 1 < 0.25).float()])
    target = target[None, :, None]                      # [1, S=2, C=1, T]
    model = HDemucs(['a', 'b'], audio_channels=1, samplerate=22050, channels=8, depth=3,
                    nfft=256, dconv_depth=1, dconv_lstm=0, dconv_attn=0, segment=1)
    loss = SourceLoss('neg_sdr')
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        value, _ = loss(model(target.sum(1)), target.sum(1), target)
        optim.zero_grad()
        value.backward()
        optim.step()
        history.append(value.item())
    assert min(history[-5:]) < history[0] - 3, history[::5]
