"""Tests for Hybrid Transformer Demucs and its cross-domain transformer."""

import pytest
import torch

from separator.models import MODELS, get_model_class
from separator.models.htdemucs import HTDemucs, max_freq_depth
from separator.models.transformer import (CrossDomainTransformer, TransformerLayer,
                                          sin_embedding, sin_embedding_2d)
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import assert_overfits

SOURCES = ['low', 'bursts']


def tiny(**kwargs) -> HTDemucs:
    """A very small model: nfft 512 (256 bins -> 4 after 3 layers), transformer dim 8."""
    config = dict(audio_channels=2, channels=4, depth=3, nfft=512, dconv_depth=1,
                  dconv_comp=2, bottom_channels=8, t_layers=3, t_heads=2)
    config.update(kwargs)
    return HTDemucs(SOURCES, **config)


@pytest.mark.parametrize('cac', [True, False])
@pytest.mark.parametrize('length', [44100, 44100 + 123, 3000, 1])
def test_output_shape_any_length(cac, length):
    torch.manual_seed(0)
    model = tiny(cac=cac)
    out = model(torch.randn(2, 2, length))
    assert out.shape == (2, len(SOURCES), 2, length)
    assert torch.isfinite(out).all()


def test_mono_post_norm_cross_first_no_bottom():
    torch.manual_seed(0)
    model = tiny(audio_channels=1, bottom_channels=0, t_norm_first=False, t_cross_first=True,
                 t_layer_scale=False, t_layers=2)
    assert model.transformer.is_cross == [True, False]
    assert model(torch.randn(1, 1, 5000)).shape == (1, 2, 1, 5000)
    no_transformer = tiny(t_layers=0)
    assert no_transformer.transformer is None
    assert no_transformer(torch.randn(1, 2, 5000)).shape == (1, 2, 2, 5000)


def test_attributes_and_registry():
    model = tiny()
    assert model.sources == SOURCES and model.samplerate == 44100
    assert model.audio_channels == 2 and model.segment == 7.8
    assert MODELS['htdemucs'] is HTDemucs and get_model_class('htdemucs') is HTDemucs


def test_gradient_reaches_both_branches_and_transformer():
    torch.manual_seed(0)
    model = tiny()
    out = model(torch.randn(2, 2, 3000))
    out.square().mean().backward()
    transformer = model.transformer
    weights = [model.time_encoder[0].conv.weight, model.freq_encoder[0].conv.weight,
               model.freq_emb.weight, model.freq_to_bottom.weight, model.time_to_bottom.weight]
    for layers in [transformer.freq_layers, transformer.time_layers]:
        weights += [layers[0].attn.in_proj_weight, layers[1].attn.in_proj_weight,
                    layers[1].ffn[0].weight, layers[1].scale_attn.scale]
    for weight in weights:
        assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_cross_attention_connects_the_branches():
    torch.manual_seed(0)
    xf, xt = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 11)
    xf2 = xf + torch.randn_like(xf)
    self_only = CrossDomainTransformer(8, layers=1, heads=2, layer_scale=False).eval()
    with torch.no_grad():
        assert torch.equal(self_only(xf, xt)[1], self_only(xf2, xt)[1])
    crossed = CrossDomainTransformer(8, layers=2, heads=2, layer_scale=False).eval()
    with torch.no_grad():
        outf, outt = crossed(xf, xt)
        assert outf.shape == xf.shape and outt.shape == xt.shape
        assert not torch.allclose(outt, crossed(xf2, xt)[1])
    with pytest.raises(ValueError, match='other'):
        TransformerLayer(8, 2, cross=True)(xt.transpose(1, 2))


def test_positional_embeddings():
    emb = sin_embedding(torch.arange(6), 8)
    assert emb.shape == (6, 8)
    assert torch.allclose(emb[0], torch.tensor([1.] * 4 + [0.] * 4))
    emb2d = sin_embedding_2d(freqs=3, frames=4, dim=8, device=torch.device('cpu'))
    assert emb2d.shape == (12, 8)
    # time-major tokens: token t * freqs + f; first half encodes t, second half f.
    grid = emb2d.view(4, 3, 8)
    assert torch.equal(grid[:, 0, :4], grid[:, 2, :4])
    assert torch.equal(grid[0, :, 4:], grid[3, :, 4:])
    assert len({tuple(row.tolist()) for row in emb2d}) == 12


def test_package_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny(cac=False, channels=6, bottom_channels=0, t_heads=3).eval()
    mix = torch.randn(1, 2, 2000)
    path = tmp_path / 'model.th'
    atomic_save(serialize_model(model), path)
    loaded = load_model(safe_load(path)).eval()
    assert isinstance(loaded, HTDemucs) and not loaded.cac and loaded.bottom_channels == 0
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))


def test_onnx_export_magnitude_model(tmp_path):
    """HTDemucs (the transformer, and the magnitude path with the mixture's phase) in ONNX."""
    from tools.export import export_onnx
    torch.manual_seed(0)
    model = tiny(cac=False, segment=0.25)
    difference = export_onnx(serialize_model(model), tmp_path / 'model.onnx')
    assert difference < 1e-4 and (tmp_path / 'model.onnx').exists()


def test_invalid_hyperparams_name_the_fix():
    assert max_freq_depth(4096, 8, 4) == 4 and max_freq_depth(1024, 8, 4) == 3
    with pytest.raises(ValueError, match=r'depth<=3, or nfft>=2048'):
        HTDemucs(SOURCES, nfft=1024, depth=4)
    with pytest.raises(ValueError, match='kernel_size'):
        HTDemucs(SOURCES, kernel_size=7, stride=4)
    with pytest.raises(ValueError, match='bottom_channels'):
        tiny(bottom_channels=30, t_heads=4)
    with pytest.raises(ValueError, match='t_heads'):
        tiny(bottom_channels=0, t_heads=3)  # 16 channels at the bottom
    with pytest.raises(ValueError, match='t_dropout'):
        tiny(t_dropout=1.)
    with pytest.raises(ValueError, match='source'):
        HTDemucs([])


def test_paper_size():
    with torch.device('meta'):
        model = HTDemucs(['drums', 'bass', 'other', 'vocals'])
    params = sum(p.numel() for p in model.parameters())
    assert 40e6 < params < 43e6, params  # the paper: about 41 M
    assert len(model.transformer.freq_layers) == 5 and model.transformer.dim == 512


def test_overfits_one_example():
    """The model fits one example (`assert_overfits`)."""
    assert_overfits(lambda: HTDemucs(SOURCES, audio_channels=1, channels=8, depth=4, nfft=2048,
                                     dconv_depth=1, dconv_comp=4, bottom_channels=32,
                                     t_layers=2, t_heads=4))


def test_per_source_decoders():
    """Each source has its own decoders: changing one source's decoder changes that source
    only; the package keeps the option; the model still learns."""
    torch.manual_seed(0)
    model = tiny(per_source_decoders=True).eval()
    assert len(model.time_decoder) == len(SOURCES) == len(model.freq_decoder)
    mix = torch.randn(2, 2, 4000)
    with torch.no_grad():
        before = model(mix)
        model.time_decoder[1][0].conv_tr.weight.add_(0.1)
        model.freq_decoder[1][1].conv_tr.weight.add_(0.1)
        after = model(mix)
    assert before.shape == (2, len(SOURCES), 2, 4000)
    assert torch.equal(before[:, 0], after[:, 0]) and not torch.allclose(before[:, 1],
                                                                        after[:, 1])
    loaded = load_model(serialize_model(model)).eval()
    with torch.no_grad():
        assert loaded.per_source_decoders and torch.equal(loaded(mix), after)
    assert_overfits(lambda: HTDemucs(SOURCES, audio_channels=1, channels=8, depth=3, nfft=512,
                                     dconv_depth=1, dconv_comp=4, bottom_channels=16,
                                     t_layers=1, t_heads=2, per_source_decoders=True),
                    steps=40)
