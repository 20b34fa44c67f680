"""Tests for the band-split models: BSRNN, BS-RoFormer, Mel-RoFormer and their bands."""
import typing as tp

import pytest
import torch

from separator.models.bandsplit import (BS_ROFORMER_BINS, average_band_masks, band_coverage,
                                        check_bands, hz_bands, max_mel_bands,
                                        mel_filter_support, mel_bands, num_bins,
                                        roformer_bands)
from separator.models.bsrnn import BSRNN
from separator.models.roformer import BSRoFormer, MelRoFormer, apply_rotary, rotary_cos_sin
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import assert_overfits

SOURCES = ['low', 'bursts']
MUSDB = ['drums', 'bass', 'other', 'vocals']

# The recommended tiny CPU configs (module docstrings).
TINY = {
    'bsrnn': (BSRNN, dict(dim=16, num_layers=1, rnn_hidden=32, mask_mult=2, n_fft=1024,
                          hop_length=256)),
    'bs_roformer': (BSRoFormer, dict(dim=32, depth=1, heads=2, dim_head=16, dropout=0.,
                                     mask_mult=2, n_fft=1024, hop_length=256)),
    'mel_roformer': (MelRoFormer, dict(dim=32, depth=1, heads=2, dim_head=16, dropout=0.,
                                       mask_mult=2, n_fft=1024, hop_length=256, num_bands=24)),
}
# Even smaller, for the tests that only run forward / backward passes.
SMALL = {
    'bsrnn': (BSRNN, dict(dim=8, num_layers=2, rnn_hidden=8, mask_mult=2, n_fft=512,
                          hop_length=128)),
    'bs_roformer': (BSRoFormer, dict(dim=8, depth=2, heads=2, dim_head=4, mask_mult=2,
                                     n_fft=512, hop_length=128)),
    'mel_roformer': (MelRoFormer, dict(dim=8, depth=2, heads=2, dim_head=4, mask_mult=2,
                                       n_fft=512, hop_length=128, num_bands=16)),
}
NAMES = list(TINY)


def small(name: str, **kwargs) -> torch.nn.Module:
    klass, config = SMALL[name]
    return klass(SOURCES, **{**config, **kwargs})


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run much faster on one thread (see conftest)."""


# ------------------------------------------------------------------ bands


def test_bsrnn_hz_bands_paper_scheme():
    bands = hz_bands(2048, 44100)
    assert len(bands) == 41    # the paper's vocals scheme: 10 + 12 + 8 + 8 + 2 + 1 bands
    check_bands(bands, 1025, 'bug')
    assert bands[0] == (0, 5) and bands[-1] == (929, 1025)   # 0-100 Hz: bins 0 to 86 Hz
    assert all(b[1] == c[0] for b, c in zip(bands, bands[1:]))   # contiguous, no overlap
    assert sum(stop - start for start, stop in bands) == 1025
    # bin k is in the band whose [low, high) Hz range holds k * 44100 / 2048
    bin_hz = 44100 / 2048
    assert 9 * bin_hz < 200 <= 10 * bin_hz and bands[1] == (5, 10)
    for n_fft, samplerate in [(256, 44100), (512, 44100), (4096, 48000), (2048, 16000)]:
        bands = hz_bands(n_fft, samplerate)
        check_bands(bands, num_bins(n_fft), 'bug')
        assert sum(stop - start for start, stop in bands) == num_bins(n_fft)
    assert len(hz_bands(256, 44100)) < 41       # empty 100 Hz bands (172 Hz bins) dropped
    # at 16 kHz the bands stop at Nyquist (8 kHz), whose bin is a band of its own
    assert len(hz_bands(2048, 16000)) == 10 + 12 + 8 + 1
    assert hz_bands(2048, 16000)[-1] == (1024, 1025)
    assert hz_bands(2048, 44100, [[11025, 11025]]) == [(0, 512), (512, 1025)]


def test_roformer_bands_paper_and_scaled():
    bands = roformer_bands(2048)
    assert [stop - start for start, stop in bands] == list(BS_ROFORMER_BINS)
    assert len(bands) == 62 and sum(BS_ROFORMER_BINS) == 1025
    for n_fft in [256, 512, 1024, 4096]:
        bands = roformer_bands(n_fft)
        check_bands(bands, num_bins(n_fft), 'bug')
        assert sum(stop - start for start, stop in bands) == num_bins(n_fft)
    widths = [stop - start for start, stop in roformer_bands(4096)]
    assert widths[:-1] == [2 * w for w in BS_ROFORMER_BINS[:-1]] and widths[-1] == 257
    assert len(roformer_bands(512)) < 62     # the 1/2-bin bands of n_fft=512 merge
    assert roformer_bands(8, [2, 3]) == [(0, 2), (2, 5)]


def test_mel_bands_overlap_and_cover_every_bin():
    bands = mel_bands(2048, 44100, 60)
    assert len(bands) == 60 and bands[0][0] == 0 and bands[-1][1] == 1025
    coverage = band_coverage(bands, 1025)
    assert coverage.min() == 1 and coverage.max() == 2      # overlapping triangles
    assert sum(stop - start for start, stop in bands) == coverage.sum() > 1025
    assert all(b[0] < c[0] and b[1] < c[1] for b, c in zip(bands, bands[1:]))
    for n_fft, samplerate, count in [(512, 44100, 32), (1024, 22050, 40), (4096, 48000, 60)]:
        check_bands(mel_bands(n_fft, samplerate, count), num_bins(n_fft), 'bug')


def test_mel_bands_match_librosa_filters():
    """torchaudio's Slaney filters are librosa's `filters.mel` (which lucidrains' Mel-RoFormer
    uses): same nonzero bins, plus bin 0 and the Nyquist bin (where they vanish)."""
    torchaudio = pytest.importorskip('torchaudio')
    for n_fft, count in [(2048, 60), (1024, 24)]:
        filters = torchaudio.functional.melscale_fbanks(
            num_bins(n_fft), 0., 22050., count, 44100, norm='slaney', mel_scale='slaney').T
        expected = filters > 0
        expected[0, 0] = expected[-1, -1] = True
        assert torch.equal(mel_filter_support(n_fft, 44100, count), expected)


def test_overlapping_band_masks_are_averaged():
    # bins 0, 1, 2; band 0 = bins [0, 2), band 1 = bins [1, 3): bin 1 is in both
    mask0 = torch.tensor([1., 3.]).view(1, 1, 2, 1, 1).expand(1, 1, 2, 1, 2)
    mask1 = torch.tensor([5., 7.]).view(1, 1, 2, 1, 1).expand(1, 1, 2, 1, 2)
    merged = average_band_masks([mask0, mask1], [(0, 2), (1, 3)], 3)
    assert merged.shape == (1, 1, 3, 1, 2)
    assert merged[0, 0, :, 0, 0].tolist() == [1., 4., 7.]   # (3 + 5) / 2 for bin 1
    assert small('mel_roformer').mask_estimators[0].overlapping
    assert not small('bs_roformer').mask_estimators[0].overlapping


def test_mask_estimator_averages_its_overlapping_bands():
    torch.manual_seed(0)
    model = small('mel_roformer')
    estimator = model.mask_estimators[0]
    tokens = torch.randn(2, 3, len(model.bands), model.dim)
    per_band = [mlp(tokens[:, :, k]).view(2, 3, -1, 2, 2)
                for k, mlp in enumerate(estimator.mlps)]
    expected = average_band_masks(per_band, model.bands, num_bins(model.n_fft))
    assert torch.allclose(estimator(tokens), expected, atol=1e-6)


def test_rotary_embedding_is_relative():
    """Rotated queries and keys: their dot product depends on the offset between positions."""
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rotary_cos_sin(10, 8, torch.device('cpu'), torch.float32)

    def score(m, n):
        return apply_rotary(q, cos[m], sin[m]) @ apply_rotary(k, cos[n], sin[n])
    assert torch.allclose(score(3, 1), score(9, 7), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)
    assert torch.allclose(apply_rotary(q, cos[0], sin[0]), q)


# ------------------------------------------------------------------ models


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('channels', [1, 2])
@pytest.mark.parametrize('length', [1, 255, 511, 4097])
def test_output_shape_any_length(name, channels, length):
    """Any length, also 1 and shorter than n_fft // 2 = 256 (zero-padded) and n_fft."""
    torch.manual_seed(0)
    model = small(name, audio_channels=channels)
    out = model(torch.randn(2, channels, length))
    assert out.shape == (2, len(SOURCES), channels, length)
    assert torch.isfinite(out).all()


def test_attributes():
    for name in NAMES:
        model = small(name)
        assert model.sources == SOURCES and model.samplerate == 44100
        assert model.audio_channels == 2
    assert small('bsrnn').segment == 3. and small('bs_roformer').segment == 8.
    assert len(small('bsrnn').bands) == len(hz_bands(512, 44100))
    assert len(small('mel_roformer').bands) == 16


@pytest.mark.parametrize('name', NAMES)
def test_bf16_autocast_forward(name):
    torch.manual_seed(0)
    model = small(name)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(torch.randn(2, 2, 3000))
    assert out.shape == (2, 2, 2, 3000) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def _core_weights(model: torch.nn.Module) -> tp.List[torch.Tensor]:
    if isinstance(model, BSRNN):
        return [layer.weight_ih_l0 for layer in (model.layers[0].time_rnn.lstm,
                                                 model.layers[-1].band_rnn.lstm)]
    first, last = model.blocks[0], model.blocks[-1]
    return [first.time_transformer.attn.to_qkv.weight, last.band_transformer.ff[1].weight,
            model.final_norm.weight]


@pytest.mark.parametrize('name', NAMES)
def test_gradient_reaches_band_split_core_and_masks(name):
    torch.manual_seed(0)
    model = small(name)
    model(torch.randn(2, 2, 3000)).square().mean().backward()
    weights = [model.band_split.projections[0][1].weight,
               model.band_split.projections[-1][0].weight, *_core_weights(model)]
    for estimator in model.mask_estimators:
        weights += [estimator.mlps[0][1].weight, estimator.mlps[-1][3].weight]
    for weight in weights:
        assert weight.grad is not None and weight.grad.abs().sum() > 0


@pytest.mark.parametrize('name', NAMES)
def test_package_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = small(name, audio_channels=1, segment=2.).eval()
    mix = torch.randn(1, 1, 2000)
    path = tmp_path / 'model.th'
    atomic_save(serialize_model(model), path)
    loaded = load_model(safe_load(path)).eval()
    assert type(loaded) is type(model) and loaded.segment == 2. and loaded.bands == model.bands
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))


ONNX_MODELS = {   # a few bands each: the export time grows with the number of layers
    'bsrnn': lambda: BSRNN(SOURCES, segment=0.1, dim=8, num_layers=1, rnn_hidden=8, n_fft=256,
                           hop_length=64, band_splits=[[2000, 1000], [8000, 6000]]),
    'mel_roformer': lambda: MelRoFormer(SOURCES, segment=0.1, dim=8, depth=1, heads=2,
                                        dim_head=4, n_fft=256, hop_length=64, num_bands=4),
}


@pytest.mark.parametrize('name', list(ONNX_MODELS))
def test_onnx_export(name, tmp_path):
    """STFT, band split, BLSTMs (BSRNN) or RoPE attention and the averaging of overlapping
    bands (index_add, Mel-RoFormer), iSTFT: all in the ONNX graph. (BS-RoFormer exports too:
    it is Mel-RoFormer without the overlaps; not tested, to save 5 s.)"""
    from tools.export import export_onnx
    torch.manual_seed(0)
    difference = export_onnx(serialize_model(ONNX_MODELS[name]()), tmp_path / 'model.onnx')
    assert difference < 1e-4 and (tmp_path / 'model.onnx').exists()


def test_paper_sizes():
    """Parameter counts of the paper sizes (stereo; `torch.device('meta')`: no memory).

    BSRNN (dim 128, 12 pairs of BLSTMs of 256 units per direction, mask MLPs of 512): 24
    BLSTM blocks of 0.856 M = 20.55 M, band split 0.54 M, mask estimator 6.93 M per source:
    28.0 M for one source. The paper does not give its count.
    BS-RoFormer: the paper gives 72.2 M for L=6 (one stem; D=384, 8 heads): dim_head 48 =
    D / heads gives 72.16 M here. With our defaults (L=12, dim_head 64) 98.1 M; Mel-RoFormer's
    60 overlapping bands cover 1979 bins instead of 1025, so its band split and mask
    estimator are 1.9 times larger: 110.2 M."""
    with torch.device('meta'):
        bsrnn = BSRNN(['vocals'])
        bsrnn4 = BSRNN(MUSDB)
        small_bs = BSRoFormer(['vocals'], depth=6, dim_head=48)
        bs = BSRoFormer(['vocals'])
        mel = MelRoFormer(['vocals'])
    assert len(bsrnn.bands) == 41 and len(bsrnn.layers) == 12
    assert 27.5e6 < num_params(bsrnn) < 28.5e6, num_params(bsrnn)
    assert 48e6 < num_params(bsrnn4) < 49.5e6, num_params(bsrnn4)     # + 3 x 6.93 M
    assert 71.7e6 < num_params(small_bs) < 72.7e6, num_params(small_bs)   # paper: 72.2 M
    assert len(bs.bands) == 62 and len(mel.bands) == 60 and bs.hop_length == 441
    assert 97e6 < num_params(bs) < 99e6, num_params(bs)
    assert 109e6 < num_params(mel) < 111.5e6, num_params(mel)


def test_invalid_hyperparams_name_the_fix():
    with pytest.raises(ValueError, match='set dim_head'):
        BSRoFormer(SOURCES, dim=30, heads=4, dim_head=None)
    with pytest.raises(ValueError, match='must be even'):
        BSRoFormer(SOURCES, dim=32, heads=2, dim_head=7)
    with pytest.raises(ValueError, match='change the last band to 7 bins'):
        BSRoFormer(SOURCES, n_fft=16, freqs_per_bands=[2, 2])
    with pytest.raises(ValueError, match=r'num_bands<=\d+ or a larger n_fft'):
        MelRoFormer(SOURCES, n_fft=256, num_bands=60)
    assert max_mel_bands(256, 44100) < 60
    with pytest.raises(ValueError, match='hop_length'):
        BSRNN(SOURCES, n_fft=512, hop_length=512)
    with pytest.raises(ValueError, match='increasing upper edges'):
        BSRNN(SOURCES, band_splits=[[4000, 250], [1000, 100]])
    with pytest.raises(ValueError, match="use one of group, layer"):
        BSRNN(SOURCES, norm='batch')
    with pytest.raises(ValueError, match='dropout'):
        MelRoFormer(SOURCES, dropout=1.)
    with pytest.raises(ValueError, match='source'):
        BSRNN([])
    with pytest.raises(ValueError, match='in no band'):
        check_bands([(0, 2), (3, 5)], 5, 'fix it')


@pytest.mark.parametrize('name', NAMES)
def test_overfits_one_example(name):
    """The model fits one example (`assert_overfits`)."""
    klass, config = TINY[name]
    assert_overfits(lambda: klass(SOURCES, audio_channels=1, **config), steps=30)
