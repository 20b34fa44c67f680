"""Demucs with one decoder per source (`model=demucs_split`, danna's MDX21 model 3): any
length, independent decoders, the parameter count of its layers counted by hand, learning,
TorchScript."""
import pytest
import torch

from separator.models import MODELS
from separator.models.demucs_split import DemucsSplit
from separator.states import atomic_save, load_model, safe_load, serialize_model
from tools.export import export_torchscript

from .conftest import SOURCES, assert_overfits


def small(**kwargs) -> DemucsSplit:
    torch.manual_seed(0)
    return DemucsSplit(SOURCES, channels=8, depth=3, lstm_layers=1, **kwargs)


def test_registered_and_any_length():
    assert MODELS['demucs_split'] is DemucsSplit
    model = small().eval()
    for length in (1, 97, 4409, 44101):
        mix = torch.randn(2, 2, length)
        with torch.no_grad():
            out = model(mix)
        assert out.shape == (2, 4, 2, length) and torch.isfinite(out).all(), length
        assert model.valid_length(length) >= length


def test_parameter_count_by_hand():
    """channels c, depth 3 (widths c, 2c, 4c), 4 stereo sources, a 1-layer BLSTM."""
    c, k = 8, 8
    widths, inputs = [c, 2 * c, 4 * c], [2, c, 2 * c]
    outputs = [4 * 2, 2 * c, 4 * c]          # transposed convs: sources x channels at the top
    count = 0
    for width, fan_in, out in zip(widths, inputs, outputs):
        count += fan_in * width * k + width            # encoder conv
        count += width * 2 * width + 2 * width         # its 1x1 rewrite (GLU)
        count += width * 4 * width * 3                 # skip conv, kernel 3, no bias
        count += (2 * width // 4) * 4 * width * 3 + 4 * width    # grouped pre-conv, 4 groups
        count += 2 * width * (out // 4) * k + out      # grouped transposed conv
    deep = widths[-1]
    count += 2 * (4 * deep * (deep + deep) + 2 * 4 * deep)   # BLSTM, 1 layer, 2 directions
    count += 2 * deep * 2 * deep + 2 * deep                  # its Linear
    assert sum(p.numel() for p in small().parameters()) == count


def test_decoders_are_independent():
    """Changing the weights of one source's group in every decoder layer changes that
    source's output only."""
    model = small(resample=False).eval()
    mix = torch.randn(1, 2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(mix)
        for pre_conv, decode in zip(model.dec_pre_convs, model.decoder):
            rows = pre_conv.out_channels // 4
            pre_conv.weight[2 * rows:3 * rows] += 0.05      # source 2's group
            transposed = decode[0]
            group_in = transposed.in_channels // 4
            transposed.weight[2 * group_in:3 * group_in] += 0.05
        after = model(mix)
    changed = [(after[:, s] - before[:, s]).abs().max().item() for s in range(4)]
    assert changed[2] > 1e-3 and max(changed[:2] + changed[3:]) == 0, changed


def test_sources_must_divide_the_groups():
    with pytest.raises(ValueError, match=r"multiple of 3"):
        DemucsSplit(['a', 'b', 'c'], channels=8, depth=2)
    DemucsSplit(['a', 'b', 'c'], channels=6, depth=2)


def test_overfits():
    assert_overfits(lambda: DemucsSplit(['low', 'bursts'], audio_channels=1, channels=8,
                                        depth=3, lstm_layers=1))


def test_package_round_trip_and_torchscript(tmp_path):
    """danna served TorchScript: the traced model equals PyTorch; the package rebuilds it."""
    model = small(segment=0.5).eval()
    package = serialize_model(model)
    assert package['model'] == 'demucs_split'
    atomic_save(package, tmp_path / 'model.th')
    loaded = load_model(safe_load(tmp_path / 'model.th')).eval()
    mix = torch.randn(1, 2, 22050, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(mix), model(mix))
    difference = export_torchscript(package, tmp_path / 'model.ts')
    print(f"TorchScript vs PyTorch: max abs diff {difference:.2e}")
    assert difference < 1e-5 and (tmp_path / 'model.ts').exists()
