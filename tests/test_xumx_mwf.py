"""danna's X-UMX loss (MDX21 model 1, `optim.loss=xumx_mwf`): the multi-domain loss with
combinations, its frequency term the squared error of the complex STFTs after the
differentiable multichannel Wiener filter. Checked against their formulas written out here
(yoyololicon/music-demixing-challenge-ismir-2021-entry, loss.py: complex_mse_loss, sdr_loss),
and trained through the filter."""
import itertools
import math

import torch

from separator.criterion import XUMXLoss
from separator.losses import check_loss_options
from separator.models.xumx import XUMX

from .conftest import TINY, history, run_dora, signature

NFFT = 256


def danna_complex_mse(y_hat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Their complex_mse_loss: 14 combinations of 4 sources, each the sum of squared real and
    imaginary errors over the whole batch divided by the element count, averaged."""
    terms = []
    for size in (1, 2, 3):
        for combination in itertools.combinations(range(4), size):
            diff = sum(y_hat[:, i] for i in combination) - sum(target[:, i] for i in combination)
            real, imag = diff.real.reshape(-1), diff.imag.reshape(-1)
            terms.append((real @ real + imag @ imag) / real.numel())
    return sum(terms) / len(terms)


def danna_sdr_loss(pred: torch.Tensor, target: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Their sdr_loss: 1 + the mean over the 14 combinations, batch and channels of
    -a cos(y^, y) - (1 - a) cos(x - y^, x - y), a = |y|^2 / (|x - y|^2 + |y|^2)."""
    rows_hat, rows, mixes = [], [], []
    for size in (1, 2, 3):
        for combination in itertools.combinations(range(4), size):
            rows_hat.append(sum(pred[:, i] for i in combination).reshape(-1, pred.shape[-1]))
            rows.append(sum(target[:, i] for i in combination).reshape(-1, pred.shape[-1]))
            mixes.append(mix.reshape(-1, mix.shape[-1]))
    x_hat, x, y = torch.cat(rows_hat), torch.cat(rows), torch.cat(mixes)
    noise, noise_hat = y - x, y - x_hat
    x_norm, x_hat_norm = (x * x).sum(-1), (x_hat * x_hat).sum(-1)
    noise_norm, noise_hat_norm = (noise * noise).sum(-1), (noise_hat * noise_hat).sum(-1)
    alpha = x_norm / (noise_norm + x_norm + 1e-10)
    clean = (x * x_hat).sum(-1) / (x_norm.sqrt() * x_hat_norm.sqrt() + 1e-10)
    rest = (noise * noise_hat).sum(-1) / (noise_norm.sqrt() * noise_hat_norm.sqrt() + 1e-10)
    return 1 + (-alpha * clean - (1 - alpha) * rest).mean()


def model(train_iterations: int = 1) -> XUMX:
    torch.manual_seed(0)
    return XUMX(['drums', 'bass', 'other', 'vocals'], nfft=NFFT, hop_length=64, hidden_size=8,
                lstm_layers=1, train_wiener_iterations=train_iterations).train()


def test_loss_equals_dannas_formulas():
    """With the model's spectra and waveforms, the criterion is their complex MSE (in the
    units of an unnormalised STFT: x nfft) plus 10 x their SDR loss, batch-averaged."""
    net = model()
    generator = torch.Generator().manual_seed(1)
    sources = 0.1 * torch.randn(3, 4, 2, 4001, generator=generator)
    mix = sources.sum(1)
    criterion = XUMXLoss(net.stft, net.n_fft, alpha=10., complex_spectra=True)
    assert criterion.model_kwargs == {'with_spectrograms': True}
    output = net(mix, **criterion.model_kwargs)
    estimate, spectra = output
    assert spectra.is_complex() and spectra.shape[:3] == (3, 4, 2)
    loss, per_source = criterion(output, mix, sources)
    targets = net.stft(sources).to(spectra.dtype)
    expected = (danna_complex_mse(spectra, targets) * NFFT
                + 10 * danna_sdr_loss(estimate.double(), sources.double(), mix.double()))
    assert per_source.shape == (3, 4)
    torch.testing.assert_close(loss.double(), expected.double(), rtol=1e-5, atol=1e-6)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_spectra_are_after_the_wiener_filter():
    """Trained through one EM iteration, the spectra the loss sees are the filter's: they
    sum to the mixture STFT (mixture consistency), which the mixture-phase estimates of the
    magnitudes (no iteration) do not."""
    mix = 0.1 * torch.randn(2, 2, 3001, generator=torch.Generator().manual_seed(2))
    for iterations, consistent in [(1, True), (0, False)]:
        _estimate, spectra = model(iterations)(mix, with_spectrograms=True)
        mix_spec = model(iterations).stft(mix).to(spectra.dtype)
        error = (spectra.sum(1) - mix_spec).abs().max() / mix_spec.abs().max()
        assert (error < 1e-4) == consistent, (iterations, error)


def test_options_and_model_are_checked():
    for weights, truncation in [([1, 1, 1, 2], None), (None, 0.5)]:
        try:
            check_loss_options('xumx_mwf', weights, truncation)
        except ValueError as error:
            assert 'optim.loss=xumx_mwf' in str(error) and 'combinations' in str(error)
        else:
            raise AssertionError((weights, truncation))


def test_xp_trains_through_the_filter(tiny_data, tmp_path):
    args = [*TINY, f'dset.musdb={tiny_data}', 'model=xumx', 'xumx.nfft=1024',
            'xumx.hop_length=256', 'xumx.hidden_size=16', 'xumx.lstm_layers=1',
            'xumx.train_wiener_iterations=1', 'optim.loss=xumx_mwf', 'epochs=1',
            'max_batches=2', 'test.every=0', 'test.max_tracks=1']
    sig = signature(run_dora(['run', *args], tmp_path))
    entry = history(tmp_path, sig)[0]
    assert math.isfinite(entry['train']['loss']) and entry['train']['loss'] > 1
    assert math.isfinite(entry['valid']['loss'])
    wrong = run_dora(['run', *TINY, f'dset.musdb={tiny_data}', 'optim.loss=xumx_mwf',
                      'epochs=1'], tmp_path, check=False)
    assert wrong.returncode != 0
    assert 'optim.loss=xumx_mwf needs a model with magnitude estimates' in wrong.stderr
