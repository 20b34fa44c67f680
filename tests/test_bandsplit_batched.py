"""The band-split models' bands run batched (`BandSplit`, `MaskEstimator`): the same outputs
and gradients as a plain per-band computation written here, on both of their paths (batched,
and band after band: what CPU runs with many tokens), the same checkpoint layout."""
import io
import itertools
import math
import typing as tp

import pytest
import torch
from torch.nn import functional as F

from separator.models import bandsplit
from separator.models.bandsplit import (BandSplit, MaskEstimator, group_bands, hz_bands,
                                        mel_bands, roformer_bands, run_batched)
from separator.models.bsrnn import BSRNN
from separator.models.roformer import (BSRoFormer, MelRoFormer, rotary_cos_sin, rotate,
                                       signed_sin)

TOLERANCE = 1e-5    # relative to the largest value
N_FFT = 512
BINS = N_FFT // 2 + 1
BANDS = {
    # 24 bands of 1 bin, 8 of 3, 8 of 6, 8 of 12, two of 32 and one of 1 bin (in no order)
    'bs_roformer': roformer_bands(N_FFT),
    'mel': mel_bands(N_FFT, 44100, 12),               # overlapping
    'hz': hz_bands(N_FFT, 44100),                      # widths 1 to 24, unsorted
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run much faster on one thread (see conftest)."""


@pytest.fixture(params=['batched', 'per_band'])
def path(request, monkeypatch):
    """Both paths of the modules: batched (any size) or band after band (`run_batched`)."""
    monkeypatch.setattr(bandsplit, 'CPU_BATCH_LIMIT', 10 ** 12 if request.param == 'batched'
                        else 0)
    return request.param


# ------------------------------------------------------------------ the reference


def reference_norm(x: torch.Tensor, norm: torch.nn.Module, kind: str) -> torch.Tensor:
    """A norm over the last dimension, from its own weights."""
    width = x.shape[-1]
    if kind == 'layer':
        return F.layer_norm(x, (width,), norm.weight, norm.bias, norm.eps)
    if kind == 'rms_l2':
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12) * width ** 0.5 * norm.weight
    return x / (x.square().mean(-1, keepdim=True) + norm.eps).sqrt() * norm.weight


def reference_band_split(module: BandSplit, spec: torch.Tensor, kind: str) -> torch.Tensor:
    """`[B, T, F, C, 2]` -> `[B, T, K, dim]`: each band's bins -> its norm -> its Linear."""
    B, T = spec.shape[:2]
    tokens = []
    for (start, stop), (norm, linear) in zip(module.bands, module.projections):
        features = spec[:, :, start:stop].reshape(B, T, -1)
        tokens.append(F.linear(reference_norm(features, norm, kind), linear.weight,
                               linear.bias))
    return torch.stack(tokens, dim=2)


def reference_masks(module: MaskEstimator, tokens: torch.Tensor, kind: tp.Optional[str],
                    layers: int) -> torch.Tensor:
    """`[B, T, K, dim]` -> `[B, T, bins, C, 2]`: each band's MLP, then per bin the mean of the
    masks of the bands that cover it."""
    B, T = tokens.shape[:2]
    channels = module.audio_channels
    summed = torch.zeros(B, T, module.n_bins, channels, 2)
    count = torch.zeros(module.n_bins)
    for index, ((start, stop), mlp) in enumerate(zip(module.bands, module.mlps)):
        modules = list(mlp)
        x = tokens[:, :, index]
        if kind is not None:
            x = reference_norm(x, modules.pop(0), kind)
        for linear in modules[:-2:2][:layers]:
            x = torch.tanh(F.linear(x, linear.weight, linear.bias))
        last = modules[2 * layers]
        values, gates = F.linear(x, last.weight, last.bias).chunk(2, dim=-1)
        summed[:, :, start:stop] += (values * torch.sigmoid(gates)).view(
            B, T, stop - start, channels, 2)
        count[start:stop] += 1
    return summed / count[:, None, None]


def relative_error(output: torch.Tensor, expected: torch.Tensor) -> float:
    return ((output - expected).abs().max() / expected.abs().max()).item()


def randomise(module: torch.nn.Module) -> None:
    """Every weight random (norm gains and biases too: their default 1 and 0 hide mistakes)."""
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param) / param.shape[-1] ** 0.5)


def gradients(module: torch.nn.Module, output: torch.Tensor, probe: torch.Tensor
              ) -> tp.List[torch.Tensor]:
    return list(torch.autograd.grad((output * probe).sum(), list(module.parameters())))


def assert_same_gradients(module: torch.nn.Module, output: torch.Tensor,
                          expected: torch.Tensor) -> None:
    probe = torch.randn_like(expected)
    for name, got, want in zip([name for name, _ in module.named_parameters()],
                               gradients(module, output, probe),
                               gradients(module, expected, probe)):
        assert relative_error(got, want) < TOLERANCE, name


# ------------------------------------------------------------------ the modules


@pytest.mark.parametrize('bands', list(BANDS))
@pytest.mark.parametrize('kind', ['rms', 'rms_l2', 'layer'])
@pytest.mark.parametrize('channels', [1, 2])
def test_band_split_matches_per_band(path, bands, kind, channels):
    torch.manual_seed(0)
    module = BandSplit(BANDS[bands], channels, 8, kind)
    randomise(module)
    spec = torch.randn(2, 5, BINS, channels, 2)
    output, expected = module(spec), reference_band_split(module, spec, kind)
    assert output.shape == expected.shape == (2, 5, len(BANDS[bands]), 8)
    assert relative_error(output, expected) < TOLERANCE
    assert_same_gradients(module, output, expected)


@pytest.mark.parametrize('bands', list(BANDS))
@pytest.mark.parametrize('kind, mask_norm', [('rms', True), ('rms_l2', True), ('layer', True),
                                             ('rms', False)])
@pytest.mark.parametrize('layers', [0, 1, 2])
def test_mask_estimator_matches_per_band(path, bands, kind, mask_norm, layers):
    torch.manual_seed(0)
    norm = kind if mask_norm else None
    module = MaskEstimator(BANDS[bands], 2, 8, 12, BINS, norm, layers)
    randomise(module)
    tokens = torch.randn(2, 5, len(BANDS[bands]), 8)
    output, expected = module(tokens), reference_masks(module, tokens, norm, layers)
    assert output.shape == expected.shape == (2, 5, BINS, 2, 2)
    assert output.dtype == torch.float32
    assert relative_error(output, expected) < TOLERANCE
    assert_same_gradients(module, output, expected)


def test_bands_in_any_order(path):
    """Bands given out of order (no band function does, a caller may): still each bin's."""
    bands = [(4, 10), (0, 4), (10, BINS)]
    torch.manual_seed(0)
    split, masks = BandSplit(bands, 1, 8), MaskEstimator(bands, 1, 8, 12, BINS)
    randomise(split)
    randomise(masks)
    spec, tokens = torch.randn(2, 3, BINS, 1, 2), torch.randn(2, 3, 3, 8)
    assert relative_error(split(spec), reference_band_split(split, spec, 'rms')) < TOLERANCE
    assert relative_error(masks(tokens), reference_masks(masks, tokens, 'rms', 1)) < TOLERANCE


# ------------------------------------------------------------------ the models

MODELS = {
    'bs_roformer': lambda **kw: BSRoFormer(['a', 'b'], dim=8, depth=1, heads=2, dim_head=4,
                                           n_fft=N_FFT, hop_length=128, dropout=0., **kw),
    'mel_roformer': lambda **kw: MelRoFormer(['a', 'b'], dim=8, depth=1, heads=2, dim_head=4,
                                             n_fft=N_FFT, hop_length=128, num_bands=12,
                                             dropout=0., **kw),
    'bsrnn': lambda **kw: BSRNN(['a', 'b'], dim=8, num_layers=1, rnn_hidden=8, n_fft=N_FFT,
                                hop_length=128, **kw),
}
OPTIONS = {   # lucidrains' options (imported checkpoints) and ours
    'bs_roformer': [{}, dict(rms_style='l2', mask_norm=False, mask_layers=2, zero_dc=True)],
    'mel_roformer': [{}, dict(rms_style='l2', mask_norm=False, mask_layers=0, zero_dc=True)],
    'bsrnn': [{}],
}


def with_reference_bands(model: bandsplit.BandSplitModel, kind: str,
                         mask_norm: tp.Optional[str], layers: int) -> None:
    """Make `model` run the reference band split and mask MLPs instead of its own."""
    split = model.band_split
    split.forward = lambda spec: reference_band_split(split, spec, kind)
    for estimator in model.mask_estimators:
        estimator.forward = (lambda tokens, estimator=estimator:
                             reference_masks(estimator, tokens, mask_norm, layers))


@pytest.mark.parametrize('name, options', [
    pytest.param(name, options, id=f"{name}-{'lucidrains' if options else 'ours'}")
    for name in MODELS for options in OPTIONS[name]])
def test_models_match_per_band(path, name, options):
    torch.manual_seed(0)
    model = MODELS[name](**options).eval()
    randomise(model)
    mix = torch.randn(2, 2, 3000)
    with torch.no_grad():
        output = model(mix)
        kind = 'layer' if name == 'bsrnn' else 'rms' if not options else 'rms_l2'
        with_reference_bands(model, kind, None if options else kind,
                             options.get('mask_layers', 1))
        expected = model(mix)
    assert relative_error(output, expected) < TOLERANCE


@pytest.mark.parametrize('name', list(MODELS))
def test_checkpoint_layout_and_round_trip(name, path):
    """The per-band parameter names and shapes of today's checkpoints, no more (the batching
    buffers are not saved); a saved state dict loads into a fresh model, which then computes
    the same."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    randomise(model)
    state = model.state_dict()
    bands, dim = model.bands, model.dim
    hidden = int(4 * dim)
    expected: tp.Dict[str, tp.Tuple[int, ...]] = {}
    for index, (start, stop) in enumerate(bands):
        features = (stop - start) * 2 * 2
        norm = f'band_split.projections.{index}.0'
        expected[f'{norm}.weight'] = (features,)
        if name == 'bsrnn':
            expected[f'{norm}.bias'] = (features,)
        expected[f'band_split.projections.{index}.1.weight'] = (dim, features)
        expected[f'band_split.projections.{index}.1.bias'] = (dim,)
        for source in range(2):
            mlp = f'mask_estimators.{source}.mlps.{index}'
            expected[f'{mlp}.0.weight'] = (dim,)
            if name == 'bsrnn':
                expected[f'{mlp}.0.bias'] = (dim,)
            expected.update({f'{mlp}.1.weight': (hidden, dim), f'{mlp}.1.bias': (hidden,),
                             f'{mlp}.3.weight': (2 * features, hidden),
                             f'{mlp}.3.bias': (2 * features,)})
    outside = {key: tuple(value.shape) for key, value in state.items()
               if key.startswith(('band_split.', 'mask_estimators.'))}
    assert outside == expected
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    fresh = MODELS[name]().eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    mix = torch.randn(1, 2, 2000)
    with torch.no_grad():
        assert torch.equal(fresh(mix), model(mix))
    assert all(torch.equal(value, fresh.state_dict()[key]) for key, value in state.items())


# ------------------------------------------------------------------ the batches


def test_group_bands_is_the_cheapest_cut():
    """Sorted by width, cut where padded bins + overhead per batch are the fewest: checked
    against every cut of 6 bands."""
    widths = [4, 2, 100, 4, 2, 9]
    overhead = 16
    order = sorted(range(len(widths)), key=lambda band: widths[band])

    def cost(batches: tp.Sequence[tp.Sequence[int]]) -> int:
        return sum(len(batch) * max(widths[band] for band in batch) + overhead
                   for batch in batches)

    cuts = [[order[start:stop] for start, stop in zip((0, *ends), (*ends, len(order)))]
            for size in range(len(order))
            for ends in itertools.combinations(range(1, len(order)), size)]
    best = min(cost(batches) for batches in cuts)
    batches = group_bands(widths, overhead)
    assert sorted(band for batch in batches for band in batch) == list(range(len(widths)))
    assert cost(batches) == best
    assert batches == [[1, 4, 0, 3], [5], [2]]     # 2, 2, 4, 4 | 9 | 100 bins


def test_paper_bands_batch_by_width():
    """BS-RoFormer's 62 bands: one batch per width (the 128 and 129 bins together);
    Mel-RoFormer's 60 overlapping bands: a few batches, little padding."""
    bands = roformer_bands(2048)
    batches = group_bands([stop - start for start, stop in bands])
    assert [len(batch) for batch in batches] == [24, 12, 8, 8, 8, 2]
    assert [band for batch in batches for band in batch] == list(range(62))
    widths = [stop - start for start, stop in mel_bands(2048, 44100, 60)]
    batches = group_bands(widths)
    padded = sum(len(batch) * max(widths[band] for band in batch) for batch in batches)
    assert len(batches) < 20 and padded < 1.1 * sum(widths)


def test_batched_off_cpu_and_on_cpu_while_small():
    assert run_batched(torch.empty(0, device='meta'), 10 ** 9)
    assert run_batched(torch.empty(0), bandsplit.CPU_BATCH_LIMIT)
    assert not run_batched(torch.empty(0), bandsplit.CPU_BATCH_LIMIT + 1)


# ------------------------------------------------------------------ the rotary embedding


@pytest.mark.parametrize('interleaved', [False, True])
def test_rotate_turns_each_channel_pair(interleaved):
    """`rotate` (the attention's) turns channel pairs (i, i + d/2), or (2i, 2i + 1), of
    position p by p * 10000 ** (-2i / d)."""
    torch.manual_seed(0)
    length, dim = 7, 8
    x = torch.randn(3, length, dim)
    cos, sin = rotary_cos_sin(length, dim, x.device, x.dtype, interleaved=interleaved)
    output = rotate(x, cos, signed_sin(sin, interleaved), interleaved)
    expected = torch.empty_like(x)
    for position, pair in itertools.product(range(length), range(dim // 2)):
        first, second = (2 * pair, 2 * pair + 1) if interleaved else (pair, pair + dim // 2)
        angle = position * 10000 ** (-2 * pair / dim)
        c, s = math.cos(angle), math.sin(angle)
        expected[:, position, first] = x[:, position, first] * c - x[:, position, second] * s
        expected[:, position, second] = x[:, position, second] * c + x[:, position, first] * s
    assert torch.allclose(output, expected, atol=1e-5)
