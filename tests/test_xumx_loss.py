"""X-UMX's training loss (optim.loss=xumx): the multi-domain loss with combinations."""
import itertools
import math

import pytest
import torch

from separator.losses import (check_loss_options, combination_sums, source_combinations,
                              source_losses, weighted_sdr, xumx_freq_loss, xumx_loss,
                              xumx_time_loss)
from separator.models.xumx import XUMX

from .conftest import TINY, history, run_dora, signature

SQRT2 = math.sqrt(2)


def test_weighted_sdr_on_hand_checked_signals():
    # Target y and the rest of the mixture x - y orthogonal and of equal energy: a = 1/2.
    target = torch.tensor([1., 0.])
    mix = torch.tensor([1., 1.])
    assert weighted_sdr(target, target, mix).item() == pytest.approx(-1)
    # The mixture as estimate: cos(x, y) = 1/sqrt2, nothing left for the rest (cos 0).
    assert weighted_sdr(mix, target, mix).item() == pytest.approx(-0.5 / SQRT2)
    # Silence: the target term is 0, the rest is the mixture (cos 1/sqrt2).
    assert weighted_sdr(torch.zeros(2), target, mix).item() == pytest.approx(-0.5 / SQRT2)
    # 2y: the right direction; its rest x - 2y = (-1, 1) against (0, 1).
    assert weighted_sdr(2 * target, target, mix).item() == pytest.approx(-0.5 - 0.5 / SQRT2)
    # a = |y|^2 / (|y|^2 + |x - y|^2): y = (3, 0), x - y = (0, 1), a = 9 / 10.
    target, mix = torch.tensor([3., 0.]), torch.tensor([3., 1.])
    assert weighted_sdr(-target, target, mix).item() == pytest.approx(
        0.9 - 0.1 * 1 / math.sqrt(37))  # x + y = (6, 1): cos with (0, 1) is 1 / sqrt 37


def test_combinations():
    assert len(source_combinations(4)) == 14 and len(source_combinations(2)) == 2
    assert source_combinations(2) == [(0,), (1,)]
    assert source_combinations(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    four = source_combinations(4)
    assert four[:4] == [(0,), (1,), (2,), (3,)] and (0, 1, 2, 3) not in four
    assert len(set(four)) == 14
    with pytest.raises(ValueError, match='at least 2'):
        source_combinations(1)
    x = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    sums = combination_sums(x)
    assert sums.shape == (2, 14, 3)
    for k, combination in enumerate(four):
        assert torch.equal(sums[:, k], sum(x[:, i] for i in combination))


def test_perfect_estimate_costs_nothing():
    torch.manual_seed(0)
    sources = torch.randn(3, 4, 2, 1000)
    losses = xumx_time_loss(sources, sources)
    assert losses.shape == (3,) and torch.allclose(losses, torch.zeros(3), atol=1e-6)
    magnitudes = torch.rand(3, 4, 2, 5, 7)
    total = xumx_loss(sources, magnitudes, sources, magnitudes)
    assert torch.allclose(total, torch.zeros(3), atol=1e-5)


def test_time_term_matches_a_direct_computation():
    torch.manual_seed(0)
    sources, estimate = torch.randn(2, 4, 2, 900), torch.randn(2, 4, 2, 900)
    mix = sources.sum(1)
    combinations = [c for size in (1, 2, 3) for c in itertools.combinations(range(4), size)]
    for edge in [0, 200]:
        cut = slice(edge, 900 - edge)  # the official code ignores 200 samples at both ends
        rows = torch.stack([direct_weighted_sdr(estimate[:, list(c)].sum(1)[..., cut],
                                                sources[:, list(c)].sum(1)[..., cut],
                                                mix[..., cut])
                            for c in combinations], 1)  # [B, 14, C]
        loss = xumx_time_loss(estimate, sources, edge=edge)
        assert torch.allclose(loss, 1 + rows.mean((1, 2)), atol=1e-6)
    # The mixture defaults to the sum of the sources.
    assert torch.equal(xumx_time_loss(estimate, sources, mix), xumx_time_loss(estimate, sources))


def direct_weighted_sdr(y_hat, y, x):
    """The formula written out, without eps: [..., T] -> [...]."""
    def cos(u, v):
        return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    a = y.pow(2).sum(-1) / (y.pow(2).sum(-1) + (x - y).pow(2).sum(-1))
    return -a * cos(y_hat, y) - (1 - a) * cos(x - y_hat, x - y)


def test_frequency_term_matches_a_direct_computation():
    torch.manual_seed(0)
    estimate, target = torch.rand(2, 4, 2, 9, 5), torch.rand(2, 4, 2, 9, 5)
    mses = [((estimate[:, list(c)].sum(1) - target[:, list(c)].sum(1)) ** 2).mean()
            for size in (1, 2, 3) for c in itertools.combinations(range(4), size)]
    assert len(mses) == 14
    loss = xumx_freq_loss(estimate, target)
    assert loss.shape == (2,)
    assert loss.mean().item() == pytest.approx(sum(mses).item() / 14, rel=1e-6)
    # The official balance: the frequency term in the units of an unnormalised STFT.
    sources = torch.randn(2, 4, 2, 1000)
    total = xumx_loss(sources, estimate, sources, target, alpha=10., magnitude_scale=4.)
    assert torch.allclose(total, 16 * loss, atol=1e-5)
    with pytest.raises(ValueError, match='differ in shape'):
        xumx_freq_loss(estimate, target[..., :4])


def test_model_magnitudes_times_sqrt_nfft_are_the_unnormalised_stft():
    model = XUMX(['a', 'b'], nfft=512, hop_length=128, hidden_size=8, lstm_layers=1)
    wav = torch.randn(1, 2, 2, 3000)
    plain = torch.stft(wav.reshape(-1, 3000), 512, 128, window=torch.hann_window(512),
                       center=True, pad_mode='reflect', return_complex=True).abs()
    assert torch.allclose(model.magnitude(wav).reshape(plain.shape) * math.sqrt(512), plain,
                          atol=1e-4)


@pytest.mark.parametrize('silent', ['one', 'all'])
def test_gradient_is_finite_on_silent_targets(silent):
    torch.manual_seed(0)
    sources = torch.randn(2, 4, 2, 600)
    sources[:, 1] = 0
    if silent == 'all':
        sources.zero_()
    estimate = torch.randn(2, 4, 2, 600, requires_grad=True)
    magnitudes = torch.rand(2, 4, 2, 5, 7, requires_grad=True)
    for guess in [estimate, torch.zeros_like(estimate, requires_grad=True)]:
        loss = xumx_loss(guess, magnitudes, sources, torch.zeros(2, 4, 2, 5, 7)).mean()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(guess.grad).all()
        assert torch.isfinite(magnitudes.grad).all()


def test_options_that_make_no_sense_are_refused():
    check_loss_options('xumx')
    check_loss_options('l1', [1, 2, 1, 1], 0.9)
    with pytest.raises(ValueError, match='weights=null'):
        check_loss_options('xumx', [1, 2, 1, 1])
    with pytest.raises(ValueError, match='optim.loss_truncation=null'):
        check_loss_options('xumx', None, 0.9)
    with pytest.raises(ValueError, match='xumx_loss'):
        source_losses(torch.zeros(1, 2, 1, 9), torch.zeros(1, 2, 1, 9), 'xumx')


TINY_XUMX = ['model=xumx', 'xumx.nfft=1024', 'xumx.hop_length=256', 'xumx.hidden_size=16',
             'xumx.lstm_layers=1']


def test_xumx_xp_trains_with_a_finite_loss(tiny_data, tmp_path):
    args = [*TINY, f'dset.musdb={tiny_data}', *TINY_XUMX, 'optim.loss=xumx', 'epochs=1',
            'max_batches=2', 'test.every=0', 'test.max_tracks=1']
    sig = signature(run_dora(['run', *args], tmp_path))
    entry = history(tmp_path, sig)[0]
    # Noise-like tracks: far from perfect, so the time term is well above 0.
    assert math.isfinite(entry['train']['loss']) and entry['train']['loss'] > 1
    assert math.isfinite(entry['valid']['loss'])  # the L1 of the waveforms


def test_xumx_loss_needs_a_magnitude_model(tiny_data, tmp_path):
    args = [*TINY, f'dset.musdb={tiny_data}', 'model=hdemucs', 'optim.loss=xumx',
            'epochs=1', 'max_batches=1', 'test.every=0']
    result = run_dora(['run', *args], tmp_path, check=False)
    assert result.returncode != 0
    assert 'optim.loss=xumx needs a model with magnitude estimates (model=xumx' in (
        result.stdout + result.stderr)
