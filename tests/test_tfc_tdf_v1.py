"""Tests for KUIELab's MDX21 TFC-TDF U-Net (`ConvTDFNet`, model=tfc_tdf_v1)."""
import math
import typing as tp

import pytest
import torch
from torch.nn import functional as F

import separator.models
from separator.models.tfc_tdf_v1 import ConvTDFNet
from separator.spec import spectro
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import assert_overfits

SOURCES = ['low', 'bursts']
MDX21_N_FFT = {'vocals': 6144, 'drums': 4096, 'bass': 16384, 'other': 8192}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run much faster on one thread (see conftest)."""


@pytest.fixture
def registered(monkeypatch):
    """The registry entry the integrator adds (`tfc_tdf_v1`), for packages and export."""
    monkeypatch.setitem(separator.models.MODELS, 'tfc_tdf_v1', ConvTDFNet)


def tiny(sources: tp.Sequence[str] = SOURCES, **kwargs) -> ConvTDFNet:
    """A very small model: n_fft 256 (129 bins, 64 kept), 2 scales (64 -> 16 bins), 4
    channels growing by 4, TDF 16 -> 4 -> 16 bins at the bottom."""
    config = dict(audio_channels=2, n_fft=256, hop_length=64, dim_f=64, num_blocks=5,
                  num_layers=2, growth=4, bottleneck_factor=4)
    config.update(kwargs)
    return ConvTDFNet(list(sources), **config)


def randomize_batchnorms(model: ConvTDFNet, frames: int = 16) -> ConvTDFNet:
    """Running statistics measured on random spectrograms, then random affine parameters, so
    that in eval mode no BatchNorm is the identity and the activations are not all cut by the
    ReLUs (a wrong wiring then shows in the output). Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(1)
    batchnorms = [module for module in model.modules()
                  if isinstance(module, torch.nn.BatchNorm2d)]
    for module in batchnorms:
        module.momentum = None            # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.network(100 * torch.randn(4, 2 * model.audio_channels, model.dim_f, frames,
                                            generator=generator))
    for module in batchnorms:
        size = module.num_features
        module.weight.data.copy_(1 + 0.3 * torch.randn(size, generator=generator))
        module.bias.data.copy_(0.3 * torch.randn(size, generator=generator))
    return model.eval()


# ----------------------------------------------------------------------------------------
# Shapes and lengths


@pytest.mark.parametrize('sources', [['vocals'], SOURCES])
@pytest.mark.parametrize('channels', [1, 2])
@pytest.mark.parametrize('length', [1, 2, 97, 4099, 8191])
def test_output_shape_prime_lengths(sources, channels, length):
    torch.manual_seed(0)
    model = tiny(sources, audio_channels=channels)
    out = model(torch.randn(2, channels, length))
    assert out.shape == (2, len(sources), channels, length)
    assert torch.isfinite(out).all()


def test_valid_length_fits_the_downscales():
    model = tiny(num_blocks=7)      # 3 scales: 8 frames per bottom frame
    for length in [1, 64, 1000, 44100]:
        padded = model.valid_length(length)
        frames = padded // model.hop_length + 1
        assert padded >= length and padded > model.n_fft // 2
        assert frames % 8 == 0
        shorter = (frames - 8 - 1) * model.hop_length    # one multiple of 8 frames less
        assert shorter < length or shorter <= model.n_fft // 2
        assert spectro(torch.zeros(padded), 256, 64).shape[-1] == frames


def test_mdx21_chunk_is_256_frames():
    """MDX21's training chunk, hop * (dim_t - 1) = 261120 samples, needs no padding: it is
    dim_t = 256 STFT frames, a multiple of the 32 of 5 scales. Also at bass' n_fft."""
    with torch.device('meta'):
        for n_fft in MDX21_N_FFT.values():
            model = ConvTDFNet(['x'], n_fft=n_fft)
            assert round(model.segment * 44100) == 261120 == model.valid_length(261120)
            assert model.valid_frames(261120) == 256 and model.frame_multiple == 32


def test_attributes():
    model = tiny(segment=2.5, samplerate=22050)
    assert model.sources == SOURCES and model.samplerate == 22050
    assert model.audio_channels == 2 and model.segment == 2.5
    assert (model.n_fft, model.hop_length, model.dim_f) == (256, 64, 64)


# ----------------------------------------------------------------------------------------
# Parity with the reference's computation


def test_bins_above_dim_f_are_zero():
    torch.manual_seed(0)
    model = randomize_batchnorms(tiny())
    mix = torch.randn(1, 2, 8000)
    with torch.no_grad():
        padded = model.valid_length(8000)
        spec = spectro(F.pad(mix, (0, padded - 8000)), 256, 64)
        sources = model.separate_spectrogram(spec)
    assert sources.shape == (1, 2, 2, 129, model.valid_frames(8000))
    assert sources[..., 64:, :].abs().max() == 0
    assert sources[..., :64, :].abs().max() > 0


def reference_stft(wav: torch.Tensor, n_fft: int, hop: int, dim_f: int) -> torch.Tensor:
    """mdx-net's `AbstractMDXNet.stft`, from torch's documented calls: Hann (periodic),
    centred, unnormalised; `[B, 2, T]` -> `[B, 4, dim_f, frames]` (L re, L im, R re, R im)."""
    window = torch.hann_window(n_fft, periodic=True)
    z = torch.stft(wav.reshape(-1, wav.shape[-1]), n_fft, hop, window=window, center=True,
                   return_complex=True)[:, :dim_f]
    z = torch.stack([z.real, z.imag], 1)                # [B * 2, 2, dim_f, frames]
    return z.reshape(wav.shape[0], 4, dim_f, -1)


def reference_istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """mdx-net's `AbstractMDXNet.istft`: zero bins above dim_f, unnormalised inverse STFT;
    `[B, 4, dim_f, frames]` -> `[B, 2, length]`."""
    B, _, dim_f, frames = spec.shape
    spec = F.pad(spec, (0, 0, 0, n_fft // 2 + 1 - dim_f)).reshape(B * 2, 2, -1, frames)
    window = torch.hann_window(n_fft, periodic=True)
    wav = torch.istft(torch.complex(spec[:, 0], spec[:, 1]), n_fft, hop, window=window,
                      center=True, length=length)
    return wav.reshape(B, 2, length)


def test_stft_framing_matches_reference():
    """The network sees what mdx-net's `stft` gives it (torch.stft's unnormalised values,
    channel layout) and its output goes through mdx-net's `istft`: the published weights
    would see their training input. Max abs diff relative to the signal's scale."""
    torch.manual_seed(0)
    model = tiny(['vocals'], n_fft=384, hop_length=64, dim_f=128)     # 3 hops per window
    seen = {}
    fixed_output = torch.randn(2, 4, 128, model.valid_frames(5000))

    def network(x):
        seen['input'] = x
        return fixed_output
    model.network = network
    mix = torch.randn(2, 2, model.valid_length(5000))
    out = model(mix)
    expected_in = reference_stft(mix, 384, 64, 128)
    expected_out = reference_istft(fixed_output, 384, 64, mix.shape[-1])
    diff_in = (seen['input'] - expected_in).abs().max() / expected_in.abs().max()
    diff_out = (out[:, 0] - expected_out).abs().max() / expected_out.abs().max()
    print(f"stft relative max abs diff {diff_in:.2e}, istft {diff_out:.2e}")
    assert diff_in < 1e-5 and diff_out < 1e-5


def reference_network(state: tp.Dict[str, torch.Tensor], x: torch.Tensor, scales: int,
                      layers: int) -> torch.Tensor:
    """mdx-net's `ConvTDFNet.forward` in eval mode, written with functional ops over a state
    dict with the reference's names (`first_conv`, `encoding_blocks.i.tfc.H.j`,
    `encoding_blocks.i.tdf`, `ds`, `bottleneck_block`, `us`, `decoding_blocks`,
    `final_conv`)."""
    def bn_relu(y, name):
        return F.relu(F.batch_norm(y, state[f'{name}.running_mean'],
                                   state[f'{name}.running_var'], state[f'{name}.weight'],
                                   state[f'{name}.bias'], training=False, eps=1e-5))

    def block(y, name):
        for j in range(layers):
            conv = f'{name}.tfc.H.{j}.0'
            y = bn_relu(F.conv2d(y, state[f'{conv}.weight'], state[f'{conv}.bias'],
                                 padding=1), f'{name}.tfc.H.{j}.1')
        hidden = bn_relu(F.linear(y, state[f'{name}.tdf.0.weight']), f'{name}.tdf.1')
        return y + bn_relu(F.linear(hidden, state[f'{name}.tdf.3.weight']), f'{name}.tdf.4')

    x = bn_relu(F.conv2d(x, state['first_conv.0.weight'], state['first_conv.0.bias']),
                'first_conv.1').transpose(-1, -2)
    skips = []
    for i in range(scales):
        x = block(x, f'encoding_blocks.{i}')
        skips.append(x)
        x = bn_relu(F.conv2d(x, state[f'ds.{i}.0.weight'], state[f'ds.{i}.0.bias'], stride=2),
                    f'ds.{i}.1')
    x = block(x, 'bottleneck_block')
    for i in range(scales):
        x = bn_relu(F.conv_transpose2d(x, state[f'us.{i}.0.weight'], state[f'us.{i}.0.bias'],
                                       stride=2), f'us.{i}.1')
        x = block(x * skips[-i - 1], f'decoding_blocks.{i}')
    x = x.transpose(-1, -2)
    return F.conv2d(x, state['final_conv.0.weight'], state['final_conv.0.bias'])


def test_network_matches_reference_state_dict_layout():
    torch.manual_seed(0)
    model = randomize_batchnorms(tiny(['vocals'], num_blocks=5, num_layers=3))
    x = 100 * torch.randn(2, 4, 64, 16)
    with torch.no_grad():
        ours = model.network(x)
        theirs = reference_network(model.state_dict(), x, scales=2, layers=3)
    diff = (ours - theirs).abs().max().item()
    print(f"network vs functional reference: max abs diff {diff:.2e} (output std "
          f"{ours.std():.2f})")
    assert ours.shape == (2, 4, 64, 16) and diff <= 1e-5
    # Every output channel varies with the input (it is not the final conv's bias alone).
    assert ours.std(dim=(-1, -2)).amin() > 0.01 * ours.abs().amax()
    assert model.state_dict()['bottleneck_block.tdf.0.weight'].shape == (4, 16)
    assert 'encoding_blocks.1.tdf.0.bias' not in model.state_dict()    # MDX21: bias=False


def test_multi_source_heads_share_the_unet():
    """S sources: one U-Net, the final 1x1 conv gives each source its own 2C channels
    (source-major); a one-source model is the same network with one head."""
    torch.manual_seed(0)
    model = tiny(['a', 'b', 'c'])
    assert model.final_conv[0].weight.shape == (12, 4, 1, 1)
    single = tiny(['b'])
    state = model.state_dict()
    state['final_conv.0.weight'] = state['final_conv.0.weight'][4:8]
    state['final_conv.0.bias'] = state['final_conv.0.bias'][4:8]
    single.load_state_dict(state)
    mix = torch.randn(1, 2, 3000)
    with torch.no_grad():
        assert torch.allclose(model.eval()(mix)[:, 1], single.eval()(mix)[:, 0], atol=1e-6)


@pytest.mark.parametrize('factor, names', [(0, ['0.weight']), (None, [])])
def test_tdf_variants(factor, names):
    """Their `bn=0` (one f -> f linear) and `bn=None` (no TDF) variants."""
    torch.manual_seed(0)
    model = tiny(bottleneck_factor=factor, tdf_bias=True)
    tdf = {name.split('.tdf.')[1] for name in model.state_dict()
           if name.startswith('bottleneck_block.tdf.') and name.endswith('weight')}
    assert sorted(tdf) == sorted(names + ['1.weight'] if names else [])
    if factor == 0:
        assert model.bottleneck_block.tdf[0].weight.shape == (16, 16)
        assert model.bottleneck_block.tdf[0].bias is not None
    out = model(torch.randn(2, 2, 2000))
    assert out.shape == (2, 2, 2, 2000) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------
# Published size


def mdx21_parameters(num_blocks: int, layers: int = 3, growth: int = 32, kernel: int = 3,
                     factor: int = 8, dim_f: int = 2048, dim_c: int = 4) -> int:
    """Parameters of mdx-net's ConvTDFNet counted by hand from its code: every conv has a
    bias, BatchNorms 2 per channel, the TDF linears none (bias: False). Scale i (0-based)
    has c = growth * (i + 1) channels and f = dim_f / 2 ** i bins."""
    def bn(c):
        return 2 * c

    def block(c, f):        # TFC: `layers` convs k x k + BN; TDF: f -> f/bn -> f, 2 BN
        return (layers * (kernel * kernel * c * c + c + bn(c))
                + 2 * f * (f // factor) + 2 * bn(c))

    scales = num_blocks // 2
    total = dim_c * growth + growth + bn(growth)                      # first conv, BN
    for i in range(scales):
        c, f = growth * (i + 1), dim_f // 2 ** i
        total += 2 * block(c, f)                                      # encoder + decoder
        total += 4 * c * (c + growth) + (c + growth) + bn(c + growth)  # ds: conv 2x2, BN
        total += 4 * (c + growth) * c + c + bn(c)                     # us: convT 2x2, BN
    total += block(growth * (scales + 1), dim_f // 2 ** scales)       # bottleneck
    return total + growth * dim_c + dim_c                             # final 1x1 conv


# FACT: MDX21's published configs (kuielab/mdx-net configs/model/ConvTDFNet_<source>.yaml:
# num_blocks 11, l 3, g 32, k 3, bn 8, bias False, dim_f 2048; their leaderboard B drums
# model, kuielab/mdx-net-submission leaderboard_B models.py: L=9) and the sizes of their
# ONNX files (Git LFS pointers in kuielab/mdx-net-submission: onnx_A/<source>.onnx and
# leaderboard_B onnx/{vocals,bass,other}.onnx 29,703,204 bytes; onnx/drums.onnx 21,930,313).
PUBLISHED = [(11, 7_423_236, 29_703_204), (9, 5_480_196, 21_930_313)]


@pytest.mark.parametrize('num_blocks, count, onnx_bytes', PUBLISHED)
def test_published_sizes(num_blocks, count, onnx_bytes):
    assert mdx21_parameters(num_blocks) == count
    for source, n_fft in MDX21_N_FFT.items():
        with torch.device('meta'):
            model = ConvTDFNet([source], n_fft=n_fft, num_blocks=num_blocks)
        assert sum(p.numel() for p in model.parameters()) == count, source
    # The published ONNX files are these float32 weights plus a graph: 10 KB (9.3 KB for
    # num_blocks=9) over 4 bytes per parameter, or 21 KB (17 KB) if the export folded the
    # BatchNorms that follow convs (2,688 and 1,920 values fewer). TDF biases alone would be
    # 9,000 (8,784) more values, 36 KB (35 KB).
    assert 0 < onnx_bytes - 4 * count < 32 * 1024


# ----------------------------------------------------------------------------------------
# Training, packages, export, errors


def test_overfits_one_example():
    """The model fits one example (`assert_overfits`)."""
    assert_overfits(lambda: ConvTDFNet(SOURCES, audio_channels=1, n_fft=1024, hop_length=256,
                                       dim_f=256, num_blocks=5, num_layers=2, growth=16,
                                       bottleneck_factor=4))


def test_gradient_reaches_all_parts():
    torch.manual_seed(0)
    model = tiny()
    model(torch.randn(2, 2, 3000)).square().mean().backward()
    missing = [name for name, param in model.named_parameters()
               if param.grad is None or not param.grad.abs().sum() > 0]
    assert not missing


def test_package_round_trip(registered, tmp_path):
    torch.manual_seed(0)
    model = tiny(audio_channels=1, num_blocks=3, bottleneck_factor=0)
    model(torch.randn(2, 1, 3000))       # training-mode BatchNorm statistics to save
    model.eval()
    mix = torch.randn(1, 1, 2000)
    path = tmp_path / 'model.th'
    package = serialize_model(model)
    assert package['model'] == 'tfc_tdf_v1'
    atomic_save(package, path)
    loaded = load_model(safe_load(path)).eval()
    assert isinstance(loaded, ConvTDFNet) and loaded.num_scales == 1
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))


def test_onnx_export(registered, tmp_path):
    from tools.export import export_onnx
    torch.manual_seed(0)
    model = randomize_batchnorms(tiny(segment=0.25))
    difference = export_onnx(serialize_model(model), tmp_path / 'model.onnx')
    print(f"onnxruntime vs torch: max abs diff {difference:.2e}")
    assert difference < 1e-4 and (tmp_path / 'model.onnx').exists()


def test_bfloat16_autocast():
    torch.manual_seed(0)
    model = tiny()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(torch.randn(2, 2, 3000))
    assert out.shape == (2, 2, 2, 3000) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_invalid_hyperparams_name_the_fix():
    with pytest.raises(ValueError, match='num_blocks=10 must be odd.*num_blocks=11'):
        tiny(num_blocks=10)
    with pytest.raises(ValueError, match=r'multiple of 2 \*\* \(num_blocks // 2\) = 4 .*: use '
                                         r'dim_f=60 or 64'):
        tiny(dim_f=62)
    with pytest.raises(ValueError, match='bottleneck_factor<=16'):
        tiny(bottleneck_factor=32)
    with pytest.raises(ValueError, match='bottleneck_factor must be >= 0'):
        tiny(bottleneck_factor=-1)
    with pytest.raises(ValueError, match='lower dim_f or raise n_fft'):
        tiny(dim_f=256)
    with pytest.raises(ValueError, match='hop_length'):
        tiny(hop_length=200)
    with pytest.raises(ValueError, match='kernel_size=4 must be odd'):
        tiny(kernel_size=4)
    with pytest.raises(ValueError, match='growth must be >= 1'):
        tiny(growth=0)
    with pytest.raises(ValueError, match='source'):
        ConvTDFNet([])


def test_bottom_of_one_bin_gets_two_frames():
    """BatchNorm needs 2 values per channel in training: a single bin (or TDF unit) at the
    bottom gets 2 bottom frames, so a batch of one 1-sample mixture still trains."""
    torch.manual_seed(0)
    model = tiny(bottleneck_factor=16)      # 16 bins at the bottom -> 1 TDF unit
    assert model.valid_frames(1) == 8 and tiny().valid_frames(1) == 4
    assert model(torch.randn(1, 2, 1)).shape == (1, 2, 2, 1)
    assert math.isfinite(model(torch.randn(1, 2, 1)).sum().item())
