"""Tests for the Hybrid Demucs model, its STFT helpers and the model registry."""

import pytest
import torch

from separator.models import MODELS, get_model_class
from separator.models.hdemucs import BLSTM, HDemucs, check_hyperparams
from separator.spec import (_istft_overlap_add, channels_to_complex, complex_to_channels,
                                   ispectro, spectro)
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import assert_overfits

SOURCES = ['low', 'bursts']


def tiny(**kwargs) -> HDemucs:
    """A very small model: nfft 256 (hop 64), 3 freq layers + 1 shared layer."""
    config = dict(audio_channels=2, channels=4, depth=4, nfft=256, dconv_depth=1)
    config.update(kwargs)
    return HDemucs(SOURCES, **config)


def test_spec_round_trip():
    x = torch.randn(2, 3, 4000)
    z = spectro(x, 256, 64)
    assert z.shape == (2, 3, 129, 4000 // 64 + 1) and z.is_complex()
    assert torch.allclose(ispectro(z, 64, length=4000), x, atol=1e-5)
    zz = z[..., :-1, :]
    assert torch.equal(channels_to_complex(complex_to_channels(zz)), zz)
    assert torch.equal(complex_to_channels(zz)[:, 1], zz[:, 0].imag)


@pytest.mark.parametrize('n_fft', [256, 4096])
def test_exportable_istft_equals_torch_istft(n_fft):
    """The inverse STFT written for torch.onnx.export gives torch.istft's output, any
    length (also cut short or left to its natural length)."""
    z = spectro(torch.randn(2, 3, 10000), n_fft).reshape(6, n_fft // 2 + 1, -1)
    window = torch.hann_window(n_fft)
    for length in (10000, 9000, None):
        expected = torch.istft(z, n_fft, n_fft // 4, window=window, normalized=True,
                               center=True, length=length)
        ours = _istft_overlap_add(z, window, n_fft // 4, length)
        assert ours.shape == expected.shape
        assert torch.allclose(ours, expected, atol=1e-5)
    with pytest.raises(ValueError, match='multiple of hop_length'):
        _istft_overlap_add(z, window, n_fft // 4 - 1, None)


@pytest.mark.parametrize('cac', [True, False])
@pytest.mark.parametrize('length', [44100, 44100 + 123, 3000, 1])
def test_output_shape_any_length(cac, length):
    torch.manual_seed(0)
    model = tiny(cac=cac)
    out = model(torch.randn(2, 2, length))
    assert out.shape == (2, len(SOURCES), 2, length)
    assert torch.isfinite(out).all()


def test_paper_size_hyperparams_and_small_config_build():
    # nfft=4096 needs 5 frequency layers (4 ** 5 = 1024 = hop), nfft=1024 needs 4.
    assert check_hyperparams(4096, 6, 8, 4, 2) == 5
    assert check_hyperparams(1024, 4, 8, 4, 2) == 4
    model = HDemucs(SOURCES, channels=8, depth=4, nfft=1024, dconv_depth=1)
    assert len(model.shared_encoder) == 0 and len(model.freq_encoder) == 4
    assert model.sources == SOURCES and model.samplerate == 44100
    assert model.audio_channels == 2 and model.segment == 10.


def test_lstm_attention_and_mono():
    torch.manual_seed(0)
    model = tiny(audio_channels=1, depth=5, dconv_lstm=2, dconv_attn=2, cac=False)
    assert any(isinstance(m, BLSTM) for m in model.modules())
    out = model(torch.randn(1, 1, 5000))
    assert out.shape == (1, 2, 1, 5000)
    # BLSTM over windows for long sequences keeps the length.
    blstm = BLSTM(4, max_steps=16)
    assert blstm(torch.randn(2, 4, 101)).shape == (2, 4, 101)


def test_gradient_reaches_both_branches():
    torch.manual_seed(0)
    model = tiny()
    out = model(torch.randn(2, 2, 3000))
    out.square().mean().backward()
    for layer in [model.time_encoder[0], model.freq_encoder[0]]:
        grad = layer.conv.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    assert model.freq_emb.weight.grad.abs().sum() > 0


def test_package_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny(cac=False, channels=6).eval()
    mix = torch.randn(1, 2, 2000)
    path = tmp_path / 'model.th'
    atomic_save(serialize_model(model), path)
    loaded = load_model(safe_load(path)).eval()
    assert isinstance(loaded, HDemucs) and not loaded.cac
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))


def test_invalid_hyperparams_name_the_fix():
    with pytest.raises(ValueError, match='nfft=1024 with depth>=4'):
        HDemucs(SOURCES, nfft=2048)
    with pytest.raises(ValueError, match='depth>=4'):
        HDemucs(SOURCES, nfft=1024, depth=3)
    with pytest.raises(ValueError, match='kernel_size'):
        HDemucs(SOURCES, kernel_size=7, stride=4)


def test_registry():
    assert MODELS['hdemucs'] is HDemucs
    assert get_model_class('hdemucs') is HDemucs
    with pytest.raises(ValueError, match='hdemucs'):
        get_model_class('nope')


def test_overfits_one_example():
    """The model fits one example (`assert_overfits`)."""
    assert_overfits(lambda: HDemucs(SOURCES, audio_channels=1, channels=8, depth=4, nfft=1024,
                                    dconv_depth=1), steps=60)
