"""D3Net U-Net with local attention (`model=d3unet`, danna's MDX21 model 2): any length, the
parameter count of its layers counted by hand, the D2/D3 blocks against the paper's formula,
the masks above `bins`, the attention's window (against a direct computation, and by
perturbation), learning (also with danna's complex-spectrogram loss), package round trip,
TorchScript."""
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from separator.criterion import xumx_criterion
from separator.models import MODELS
from separator.models.d3unet import D3Block, D3UNet, LocalAttention, local_attention
from separator.spec import ispectro
from separator.states import atomic_save, load_model, safe_load, serialize_model
from tools.export import export_torchscript

from .conftest import SOURCES, assert_overfits

TINY = dict(n_fft=256, hop_length=64, bins=64, layers=[2, 1], growth=4, d2_blocks=2,
            attention_channels=8, attention_dim=8, attention_heads=2,
            attention_block=[0, 2], attention_flange=[0, 1])


def tiny(**kwargs) -> D3UNet:
    torch.manual_seed(0)
    return D3UNet(SOURCES, **{**TINY, **kwargs})


def test_registered_and_any_length():
    assert MODELS['d3unet'] is D3UNet
    model = tiny().eval()
    for length in (1, 97, 257, 4409):         # below and above n_fft // 2, primes
        mix = torch.randn(2, 2, length)
        with torch.no_grad():
            out = model(mix)
        assert out.shape == (2, 4, 2, length) and torch.isfinite(out).all(), length
    with pytest.raises(ValueError, match=r"\[batch, 2, time\]"):
        model(torch.randn(2, 1, 1000))


def test_parameter_count_by_hand():
    """layers [2, 1], growth k = 4, 2 D2 blocks per D3, 4 stereo sources, 2 attention layers
    (8 channels, dim 8). D2 of L layers from c channels: conv i (3x3) reads c (i = 0) or k
    channels and writes k * (L - i), no bias; a BatchNorm of k per layer."""
    k = 4
    def d2_two_layers(c):
        return 9 * (c * 2 * k + k * k) + 2 * 2 * k
    def d2_one_layer(c):
        return 9 * c * k + 2 * k
    count = d2_two_layers(2) + d2_two_layers(2 + 8)          # encoder 0: 2 -> 18 channels
    count += d2_one_layer(18) + d2_one_layer(18 + 4)          # encoder 1: 18 -> 26
    count += 9 * 26 * 24 + 24 + 9 * 8 * 8 + 2 * 8            # attention 1: qkv, out, BN
    count += 9 * 8 * 24 + 24 + 9 * 8 * 8 + 2 * 8              # attention 2
    count += d2_two_layers(26 + 8) + d2_two_layers(34 + 8)    # decoder 0: 34 -> 50
    count += 9 * 50 * 18 + 2 * 18                             # its transposed conv, BN
    count += 25 * (2 * 18) * 18 + 2 * 18                      # last transposed conv 5x5, BN
    count += 9 * 18 * 8 + 8                                   # mask conv to 4 x 2 maps
    assert sum(p.numel() for p in tiny().parameters()) == count


def test_d2_block_is_multi_dilated_and_dense():
    """The D2 block against the paper's formula, layer by layer: layer j = BN-ReLU of the
    sum over i <= j of a 3x3 conv of x_i (x_0 the input, x_i layer i-1's output) with
    dilation 2 ** i, the weights layer j's share of conv i; the output concatenates them.
    A D3 block concatenates its input and its D2 blocks', each fed all earlier features."""
    torch.manual_seed(0)
    block = D3Block(3, blocks=2, growth=2, layers=3).eval()
    for d2 in block.d2:       # non-trivial BatchNorm statistics
        for norm in d2.norms:
            norm[0].running_mean.uniform_(-.5, .5)
            norm[0].running_var.uniform_(.5, 2)
    x = torch.randn(1, 3, 16, 20)

    def d2_by_formula(d2, features):
        maps, outputs = [features], []
        for j in range(3):
            total = sum(F.conv2d(maps[i], d2.convs[i].weight[2 * (j - i):2 * (j - i + 1)],
                                 padding=2 ** i, dilation=2 ** i) for i in range(j + 1))
            outputs.append(d2.norms[j](total))
            maps.append(outputs[-1])
        return torch.cat(outputs, 1)

    with torch.no_grad():
        first = d2_by_formula(block.d2[0], x)
        second = d2_by_formula(block.d2[1], torch.cat([x, first], 1))
        assert torch.allclose(block(x), torch.cat([x, first, second], 1), atol=1e-5)
    assert block(x).shape[1] == block.out_channels == 3 + 2 * 2 * 3


def test_masks_above_bins_split_the_mixture_evenly():
    """A 16 kHz sine, above `bins` (11 kHz here): each of the 4 sources gets a quarter (away
    from the abrupt start and end, which spread over every bin)."""
    model = tiny().eval()
    time = torch.arange(8000) / 44100
    mix = torch.sin(2 * torch.pi * 16000 * time).expand(1, 2, -1).contiguous()
    with torch.no_grad():
        out = model(mix)
    middle = slice(256, -256)       # one n_fft from either end
    assert (out - mix[:, None] / 4)[..., middle].abs().max() < 1e-3


def direct_local_attention(q, k, v, block, flange):
    """For each query position alone: softmax over the keys of its block's window."""
    _, _, _, Fr, T = q.shape
    bf, bt = block[0] or Fr, block[1] or T
    out = torch.zeros_like(q)
    for f in range(Fr):
        for t in range(T):
            rows = slice(max(0, f // bf * bf - flange[0]), (f // bf + 1) * bf + flange[0])
            cols = slice(max(0, t // bt * bt - flange[1]), (t // bt + 1) * bt + flange[1])
            keys = k[..., rows, cols].flatten(-2)                     # [B, H, D, W]
            weights = torch.einsum('bhd,bhdw->bhw', q[..., f, t], keys).softmax(-1)
            out[..., f, t] = torch.einsum('bhw,bhdw->bhd', weights, v[..., rows, cols].flatten(-2))
    return out


@pytest.mark.parametrize('block,flange', [([2, 3], [1, 1]), ([0, 2], [0, 3]), ([3, 4], [0, 2])])
def test_local_attention_equals_direct_computation(block, flange):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 3, 7, 10, generator=generator) for _ in range(3))
    expected = direct_local_attention(q, k, v, block, flange)
    assert torch.allclose(local_attention(q, k, v, block, flange), expected, atol=1e-6)


def test_attention_sees_only_its_window():
    """Blocks of 2 bins x 3 frames, flange 1: the query at (3, 4) attends to bins 1-4, frames
    2-6; with the 3x3 conv before, the attention there reads input bins 0-5, frames 1-7."""
    torch.manual_seed(0)
    layer = LocalAttention(3, 4, dim=4, heads=2, block=[2, 3], flange=[1, 1]).eval()
    x = torch.randn(1, 3, 8, 12)
    with torch.no_grad():
        reference = layer.attend(x)[..., 3, 4]
        def at_query_after_bump(f, t):
            bumped = x.clone()
            bumped[..., f, t] += 10.
            return layer.attend(bumped)[..., 3, 4]
        for outside in [(6, 4), (3, 0), (3, 8), (0, 9), (7, 11)]:
            assert torch.equal(at_query_after_bump(*outside), reference), outside
        for inside in [(0, 1), (5, 7), (5, 4), (3, 4)]:
            assert not torch.allclose(at_query_after_bump(*inside), reference), inside


def test_overfits():
    assert_overfits(lambda: D3UNet(['low', 'bursts'], audio_channels=1, n_fft=512,
                                   hop_length=256, bins=128, layers=[2, 2, 1], growth=4,
                                   attention_channels=8, attention_dim=8, attention_heads=2))


def test_trains_with_dannas_complex_loss():
    """optim.loss=xumx_mwf (danna's loss of this model): the model returns the complex STFTs
    its waveforms are the iSTFT of, and the loss reaches the weights through them."""
    model = tiny()
    generator = torch.Generator().manual_seed(0)
    sources = torch.randn(2, 4, 2, 4000, generator=generator)
    mix = sources.sum(1)
    waveforms, spectra = model(mix, with_spectrograms=True)
    assert spectra.shape == (2, 4, 2, 129, 4000 // 64 + 1) and spectra.is_complex()
    assert torch.allclose(ispectro(spectra, 64, 4000), waveforms, atol=1e-5)
    criterion = xumx_criterion(OmegaConf.create({'optim': {'loss': 'xumx_mwf',
                                                           'xumx_alpha': 10.}}), model)
    loss, _ = criterion(model(mix, **criterion.model_kwargs), mix, sources)
    loss.backward()
    grad = model.network.bottleneck.attention[0][0].qkv.weight.grad
    assert torch.isfinite(loss) and grad is not None and grad.abs().sum() > 0


def test_package_round_trip_and_torchscript(tmp_path):
    """danna served TorchScript: the traced model equals PyTorch; the package rebuilds it
    from its constructor arguments."""
    model = tiny(segment=0.25).eval()
    package = serialize_model(model)
    assert package['model'] == 'd3unet' and package['kwargs']['layers'] == [2, 1]
    atomic_save(package, tmp_path / 'model.th')
    loaded = load_model(safe_load(tmp_path / 'model.th')).eval()
    mix = torch.randn(1, 2, 11025, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(mix), model(mix))
    difference = export_torchscript(package, tmp_path / 'model.ts')
    print(f"TorchScript vs PyTorch: max abs diff {difference:.2e}")
    assert difference < 1e-5 and (tmp_path / 'model.ts').exists()


def test_bad_hyperparameters_name_the_fix():
    with pytest.raises(ValueError, match=r"multiple of attention_heads"):
        tiny(attention_dim=6, attention_heads=4)
    with pytest.raises(ValueError, match=r">= 2 positive integers"):
        tiny(layers=[3])
    with pytest.raises(ValueError, match=r"n_fft // 2 \+ 1 = 129"):
        tiny(bins=200)
