"""Tests for the TFC-TDF U-Net v3 (KUIELab's MDX-Net, SDX23 version)."""

import pytest
import torch

from separator.spec import spectro
from separator.models.tfc_tdf import TFCTDFNet, merge_subbands, split_subbands
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import assert_overfits

SOURCES = ['low', 'bursts']


def tiny(**kwargs) -> TFCTDFNet:
    """A very small model: n_fft 256 (129 bins, 128 kept), 2 subbands of 64 bins -> 16 at
    the bottom after 2 scales, 4 channels growing by 4."""
    config = dict(audio_channels=2, n_fft=256, hop_length=64, dim_f=128, num_subbands=2,
                  num_channels=4, growth=4, num_scales=2, num_blocks_per_scale=1,
                  bottleneck_factor=2)
    config.update(kwargs)
    return TFCTDFNet(SOURCES, **config)


@pytest.mark.parametrize('subbands', [1, 2])
@pytest.mark.parametrize('channels', [1, 2])
@pytest.mark.parametrize('length', [1, 100, 255, 3001, 8192])
def test_output_shape_any_length(subbands, channels, length):
    torch.manual_seed(0)
    model = tiny(audio_channels=channels, num_subbands=subbands)
    out = model(torch.randn(2, channels, length))
    assert out.shape == (2, len(SOURCES), channels, length)
    assert torch.isfinite(out).all()


def test_valid_length_fits_the_downscales():
    model = tiny(scale=[4, 2])      # 16 frames per bottom frame
    for length in [1, 64, 1000, 44100]:
        padded = model.valid_length(length)
        frames = padded // model.hop_length + 1
        assert padded >= length and padded > model.n_fft // 2
        assert frames % 16 == 0
        shorter = (frames - 16 - 1) * model.hop_length    # one multiple of 16 frames less
        assert shorter < length or shorter <= model.n_fft // 2
        assert spectro(torch.zeros(padded), 256, 64).shape[-1] == frames


def test_single_hidden_unit_at_the_bottom_gets_two_frames():
    """InstanceNorm can't normalise one value: a 1-unit TDF needs 2 frames at the bottom."""
    torch.manual_seed(0)
    model = tiny(bottleneck_factor=16)      # 16 bins at the bottom -> 1 hidden unit
    assert model.valid_frames(1) == 8 and tiny().valid_frames(1) == 4
    assert model(torch.randn(1, 2, 1)).shape == (1, 2, 2, 1)


def test_attributes():
    model = tiny(segment=2.5, samplerate=22050)
    assert model.sources == SOURCES and model.samplerate == 22050
    assert model.audio_channels == 2 and model.segment == 2.5
    with torch.device('meta'):
        assert TFCTDFNet(SOURCES).segment == 261120 / 44100   # SDX23's 256 frames


def test_subbands_round_trip():
    x = torch.arange(2 * 4 * 12 * 3.).view(2, 4, 12, 3)
    bands = split_subbands(x, 3)
    assert bands.shape == (2, 12, 4, 3)
    assert torch.equal(bands[:, 3 * 1 + 2], x[:, 1, 8:12])   # channel d * k + band
    assert torch.equal(merge_subbands(bands, 3), x)


def test_bins_above_dim_f_are_zero():
    torch.manual_seed(0)
    model = tiny(dim_f=64)          # keep 64 of the 129 bins
    mix = torch.randn(1, 2, 8000)
    with torch.no_grad():
        frames = model.valid_frames(8000)
        spec = spectro(torch.nn.functional.pad(mix, (0, model.valid_length(8000) - 8000)),
                       256, 64)
        assert spec.shape[-1] == frames
        sources = model.separate_spectrogram(spec)
        assert sources.shape == (1, 2, 2, 129, frames)
        assert sources[..., 64:, :].abs().max() == 0
        assert sources[..., :64, :].abs().max() > 0
        # The waveforms are band-limited too, up to the window's leakage of a bin or two.
        energy = spectro(model(mix), 256, 64).abs().pow(2).sum((0, 1, 2, 4))
        assert energy[66:].sum() < 1e-3 * energy.sum()


def test_gradient_reaches_all_parts():
    torch.manual_seed(0)
    model = tiny()
    model(torch.randn(2, 2, 3000)).square().mean().backward()
    unit = model.encoder[0].block[0]
    weights = [model.first_conv.weight, unit.tfc1[2].weight, unit.tdf.squeeze[2].weight,
               unit.tdf.expand[2].weight, unit.shortcut.weight,
               model.encoder[1].downscale[2].weight, model.bottleneck[0].tdf.squeeze[2].weight,
               model.decoder[0].upscale[2].weight, model.decoder[-1].block[0].tfc2[2].weight,
               model.decoder[-1].block[0].tdf.expand[2].weight,
               model.final_conv[0].weight, model.final_conv[2].weight]
    for weight in weights:
        assert weight.grad is not None and weight.grad.abs().sum() > 0


@pytest.mark.parametrize('norm, act', [('BatchNorm', 'relu'), ('GroupNorm2', 'elu'),
                                       ('none', 'elu0.5')])
def test_norms_and_activations(norm, act):
    torch.manual_seed(0)
    model = tiny(norm=norm, act=act, num_blocks_per_scale=2)
    out = model(torch.randn(2, 2, 2000))
    assert out.shape == (2, 2, 2, 2000) and torch.isfinite(out).all()
    kinds = {type(module).__name__ for module in model.modules()}
    expected = {'BatchNorm': 'BatchNorm2d', 'GroupNorm2': 'GroupNorm', 'none': 'Identity'}
    assert expected[norm] in kinds and 'InstanceNorm2d' not in kinds
    assert {'relu': 'ReLU'}.get(act, 'ELU') in kinds and 'GELU' not in kinds


def test_package_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny(audio_channels=1, num_subbands=4, scale=[2, 1], norm='GroupNorm4').eval()
    mix = torch.randn(1, 1, 2000)
    path = tmp_path / 'model.th'
    atomic_save(serialize_model(model), path)
    loaded = load_model(safe_load(path)).eval()
    assert isinstance(loaded, TFCTDFNet) and loaded.scale == (2, 1)
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))


def test_bfloat16_autocast():
    torch.manual_seed(0)
    model = tiny()
    mix = torch.randn(2, 2, 3000)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(mix)
    assert out.shape == (2, 2, 2, 3000) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.abs().mean().backward()
    assert model.first_conv.weight.grad is not None


def test_onnx_export(tmp_path):
    from tools.export import export_onnx
    torch.manual_seed(0)
    model = tiny(segment=0.25)
    difference = export_onnx(serialize_model(model), tmp_path / 'model.onnx')
    assert difference < 1e-4 and (tmp_path / 'model.onnx').exists()


def test_invalid_hyperparams_name_the_fix():
    with pytest.raises(ValueError, match=r'multiple of num_subbands \* scale\[1\] \*\* '
                                         r'num_scales = 2 \* 2 \*\* 2 = 8: use dim_f=120'):
        tiny(dim_f=124)
    with pytest.raises(ValueError, match='lower dim_f or raise n_fft'):
        tiny(dim_f=256)
    with pytest.raises(ValueError, match='bottleneck_factor<=16'):
        tiny(bottleneck_factor=32)
    with pytest.raises(ValueError, match='hop_length'):
        tiny(hop_length=200)
    with pytest.raises(ValueError, match=r'make num_channels and growth multiples of 3'):
        tiny(norm='GroupNorm3')
    with pytest.raises(ValueError, match='GroupNorm<groups>'):
        tiny(norm='LayerNorm')
    with pytest.raises(ValueError, match='gelu, relu, elu'):
        tiny(act='tanh')
    with pytest.raises(ValueError, match=r'scale=\[2, 2\]'):
        tiny(scale=[2])
    with pytest.raises(ValueError, match='num_scales must be >= 1'):
        tiny(num_scales=0)
    with pytest.raises(ValueError, match='growth'):
        tiny(growth=-1)
    with pytest.raises(ValueError, match='source'):
        TFCTDFNet([])


def test_paper_size():
    with torch.device('meta'):
        model = TFCTDFNet(['drums', 'bass', 'other', 'vocals'])
        kuielab = TFCTDFNet(['drums', 'bass', 'other', 'vocals'], num_channels=64, growth=64)
    params = sum(p.numel() for p in model.parameters())
    # 112.0 M (num_channels=growth=128, ZFTurbo's MDX23C config). The 3x3 convs alone have
    # 9 * 128 ** 2 * (4 * 55 + 4 * 36 + 5 * 55) = 94.2 M: encoder scales of c = 128 * i
    # channels (i = 1..5, sum of i ** 2 = 55) with 4 convs c -> c, the bottleneck (c = 768
    # = 128 * 6) with 4, decoder blocks with 2c -> c (twice the weights), c -> c, c -> c.
    # The rest: 1x1 shortcut, scale and final convs (14.9 M), TDF linears (2.8 M).
    # kuielab's SDX23 leaderboard A/B config (num_channels=growth=64): 30.1 M.
    assert 111e6 < params < 113e6, params
    assert 29.5e6 < sum(p.numel() for p in kuielab.parameters()) < 30.5e6
    assert model.bottleneck[0].tfc1[2].weight.shape == (768, 768, 3, 3)
    assert model.bottleneck[0].tdf.squeeze[2].weight.shape == (8, 32)   # 4096 / 4 / 32 bins


def test_overfits_one_example():
    """The model fits one example (`assert_overfits`)."""
    assert_overfits(lambda: TFCTDFNet(SOURCES, audio_channels=1, n_fft=1024, hop_length=256,
                                      dim_f=512, num_channels=16, growth=16, num_scales=3,
                                      num_blocks_per_scale=1, num_subbands=4))
