"""Tests for CrossNet-Open-Unmix (X-UMX) and Open-Unmix (`bridge=False`)."""

import pytest
import torch

from separator.models.xumx import XUMX, bandwidth_bins
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import assert_overfits

SOURCES = ['low', 'bursts', 'other']


def tiny(**kwargs) -> XUMX:
    """A very small model: nfft 512 (257 bins, 186 below 16 kHz), hidden size 16."""
    config = dict(audio_channels=2, nfft=512, hop_length=128, hidden_size=16, lstm_layers=2)
    config.update(kwargs)
    return XUMX(SOURCES, **config)


@pytest.mark.parametrize('channels', [1, 2])
@pytest.mark.parametrize('length', [1, 255, 5001])
def test_output_shape_any_length(channels, length):
    torch.manual_seed(0)
    model = tiny(audio_channels=channels, train_wiener_iterations=1)
    mix = torch.randn(1, channels, length)
    for train in [True, False]:  # batch 1: BatchNorm over batch x frames in train mode
        out = model.train(train)(mix)
        assert out.shape == (1, len(SOURCES), channels, length)
        assert torch.isfinite(out).all()


def test_silent_input_and_attributes():
    model = tiny()
    assert model.sources == SOURCES and model.samplerate == 44100
    assert model.audio_channels == 2 and model.segment == 6.0
    assert model.in_bins == bandwidth_bins(44100, 512, 16000) == 186
    for train in [True, False]:
        out = model.train(train)(torch.zeros(2, 2, 3000))
        assert torch.isfinite(out).all() and out.abs().max() == 0
    with pytest.raises(ValueError, match=r'\[batch, 2, time\]'):
        model(torch.randn(1, 1, 3000))


def test_bandwidth_bins():
    assert bandwidth_bins(44100, 4096, 16000) == 1487  # open-unmix's max_bin
    assert bandwidth_bins(44100, 4096, 22050) == 2049
    assert bandwidth_bins(44100, 4096, 1) == 1


def perturbed_outputs(model: XUMX, mix: torch.Tensor) -> torch.Tensor:
    """Outputs of `model` (eval mode) before and after changing source 0's fc1: [2, B, S...]."""
    model.eval()
    with torch.no_grad():
        before = model(mix)
        model.networks[0].fc1.weight.add_(0.5 * torch.randn_like(model.networks[0].fc1.weight))
        return torch.stack([before, model(mix)])


def test_bridge_connects_the_sources():
    torch.manual_seed(0)
    mix = torch.randn(2, 2, 4000)
    before, after = perturbed_outputs(tiny(bridge=False, wiener_iterations=0), mix)
    assert not torch.allclose(before[:, 0], after[:, 0])
    assert torch.equal(before[:, 1:], after[:, 1:])  # Open-Unmix: independent networks
    before, after = perturbed_outputs(tiny(bridge=True, wiener_iterations=0), mix)
    for source in range(len(SOURCES)):  # X-UMX: the averages reach every source
        assert not torch.allclose(before[:, source], after[:, source])
    # The Wiener filter couples even independent networks.
    before, after = perturbed_outputs(tiny(bridge=False, wiener_iterations=1), mix)
    assert not torch.allclose(before[:, 1], after[:, 1])


@pytest.mark.parametrize('sources, iterations, frames', [(SOURCES, 1, 300), (SOURCES, 2, 4),
                                                         (['all'], 1, 300)])
def test_wiener_sources_sum_to_the_mixture(sources, iterations, frames):
    torch.manual_seed(0)
    model = XUMX(sources, nfft=512, hop_length=128, hidden_size=16, lstm_layers=1,
                 wiener_iterations=iterations, wiener_frames=frames).eval()
    mix = torch.randn(2, 2, 6000)
    with torch.no_grad():
        out = model(mix)
        assert torch.allclose(out.sum(1), mix, atol=1e-4)
        model.wiener_iterations = 0  # soft-mask estimates: no mixture consistency
        assert not torch.allclose(model(mix).sum(1), mix, atol=1e-2)


def test_gradients_reach_the_networks_through_the_wiener_filter():
    torch.manual_seed(0)
    model = tiny(train_wiener_iterations=1).train()
    mix = torch.randn(2, 2, 3000)
    waveforms, magnitudes = model(mix, with_magnitudes=True)
    assert torch.allclose(waveforms.sum(1), mix, atol=1e-4)  # the filter ran in train mode
    assert magnitudes.shape == model.magnitude(torch.randn(2, 3, 2, 3000)).shape
    assert magnitudes.shape == (2, 3, 2, 257, 3000 // 128 + 1)
    (waveforms[:, 0] - 0.5 * mix).abs().mean().backward()
    for net in model.networks:
        for weight in [net.fc1.weight, net.lstm.weight_ih_l0, net.lstm.weight_hh_l1,
                       net.fc3.weight, net.input_mean, net.output_scale]:
            assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_package_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny(bridge=False, bidirectional=False, bandwidth=8000, wiener_frames=None)
    model.train()(torch.randn(2, 2, 3000))  # updates the BatchNorm running statistics
    model.eval()
    mix = torch.randn(1, 2, 2000)
    path = tmp_path / 'model.th'
    atomic_save(serialize_model(model), path)
    loaded = load_model(safe_load(path)).eval()
    assert isinstance(loaded, XUMX) and not loaded.bridge and loaded.wiener_frames is None
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))


def test_invalid_hyperparams_name_the_fix():
    with pytest.raises(ValueError, match=r'bandwidth<=22050'):
        XUMX(SOURCES, bandwidth=30000)
    with pytest.raises(ValueError, match=r'bandwidth<=8000'):
        XUMX(SOURCES, samplerate=16000, bandwidth=16000)
    with pytest.raises(ValueError, match=r'hop_length=1024'):
        XUMX(SOURCES, hop_length=4096)
    with pytest.raises(ValueError, match=r'hidden_size=512, or bidirectional=False'):
        XUMX(SOURCES, hidden_size=511)
    with pytest.raises(ValueError, match='nfft'):
        XUMX(SOURCES, nfft=1023)
    with pytest.raises(ValueError, match='lstm_layers'):
        XUMX(SOURCES, lstm_layers=0)
    with pytest.raises(ValueError, match='lstm_dropout'):
        XUMX(SOURCES, lstm_dropout=1.)
    with pytest.raises(ValueError, match='train_wiener_iterations'):
        XUMX(SOURCES, train_wiener_iterations=-1)
    with pytest.raises(ValueError, match='wiener_frames'):
        XUMX(SOURCES, wiener_frames=0)
    with pytest.raises(ValueError, match='source'):
        XUMX([])


@pytest.mark.parametrize('bridge', [True, False])
def test_paper_size(bridge):
    with torch.device('meta'):
        model = XUMX(['drums', 'bass', 'other', 'vocals'], bridge=bridge)
    params = sum(p.numel() for p in model.parameters())
    # Per source: fc1 2974 x 512, 3-layer BLSTM 4.73 M, fc2 1024 x 512, fc3 512 x 4098, BNs
    # and scales: 8.89 M, as Open-Unmix's 8.9 M per target; X-UMX adds no parameter.
    assert 35.4e6 < params < 35.8e6, params
    assert model.in_bins == 1487 and model.out_bins == 2049


def test_overfits_one_example():
    """The model fits one example (`assert_overfits`)."""
    assert_overfits(lambda: XUMX(['low', 'bursts'], audio_channels=1, hidden_size=32,
                                 lstm_layers=1, nfft=1024, hop_length=256), lr=1e-2)


@pytest.mark.parametrize('iterations', [0, 1])
def test_bfloat16_autocast(iterations):
    torch.manual_seed(0)
    model = tiny(train_wiener_iterations=iterations, wiener_iterations=iterations)
    mix = torch.randn(2, 2, 3000)
    for train in [True, False]:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model.train(train)(mix)
        assert out.shape == (2, 3, 2, 3000) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
