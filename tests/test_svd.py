"""The singular value penalty (`separator.svd.svd_penalty`): against the exact largest
singular values (torch.linalg.svdvals, computed here per layer), against demucs' own
`demucs.svd.svd_penalty` (demucs 4.1.0) for the same random draws, and its gradient."""
import random
import typing as tp

import demucs.svd
import pytest
import torch
from torch import nn

from separator.svd import power_iteration, svd_penalty


def small_model() -> nn.Module:
    """A conv, a transposed conv, a linear layer and an LSTM, with biases (never penalised)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(6, 10, 3), nn.ConvTranspose1d(10, 4, 5), nn.Linear(7, 9),
                         nn.LSTM(5, 3))


def sigma_max_squared(matrix: torch.Tensor) -> float:
    return torch.linalg.svdvals(matrix.double()).max().item() ** 2


def expected(model: nn.Module, convtr: bool, conv_only: bool = False) -> float:
    """Sum of sigma_max^2 over the weights, each written as the matrix the penalty means."""
    conv, convtr_layer, linear, lstm = model
    total = sigma_max_squared(conv.weight.reshape(10, 6 * 3))
    weight = convtr_layer.weight                       # [in 10, out 4, 5]
    if convtr:
        total += sigma_max_squared(weight.transpose(0, 1).reshape(4, 10 * 5))
    else:
        total += sigma_max_squared(weight.reshape(10, 4 * 5))
    if not conv_only:
        total += sigma_max_squared(linear.weight)
        total += sigma_max_squared(lstm.weight_ih_l0) + sigma_max_squared(lstm.weight_hh_l0)
    return total


@pytest.mark.parametrize('convtr', [True, False])
@pytest.mark.parametrize('conv_only', [False, True])
def test_exact_equals_svdvals(convtr, conv_only):
    model = small_model()
    penalty = svd_penalty(model, min_size=0, exact=True, convtr=convtr, conv_only=conv_only)
    reference = expected(model, convtr, conv_only)
    print(f"convtr={convtr} conv_only={conv_only}: {penalty.item():.6f} vs {reference:.6f}")
    assert penalty.item() == pytest.approx(reference, rel=1e-5)


def test_estimates_converge_to_exact():
    """Power method with many iterations, low-rank SVD with full rank: the exact values."""
    model = small_model()
    reference = expected(model, convtr=True)
    torch.manual_seed(1)
    powm = svd_penalty(model, min_size=0, powm=True, niters=500, bs=3).item()
    lowrank = svd_penalty(model, min_size=0, dim=9, niters=4).item()
    rough = svd_penalty(model, min_size=0, powm=True, niters=1).item()
    print(f"exact {reference:.6f}, power method {powm:.6f}, low rank {lowrank:.6f}, "
          f"power method 1 iteration {rough:.6f}")
    assert powm == pytest.approx(reference, rel=1e-4)
    assert lowrank == pytest.approx(reference, rel=1e-4)
    assert rough != pytest.approx(reference, rel=1e-4)


def test_power_iteration_largest_eigenvalue():
    torch.manual_seed(2)
    matrix = torch.randn(12, 20, dtype=torch.float64)
    gram = matrix @ matrix.t()
    estimate = power_iteration(gram, niters=1000, bs=2).item()
    assert estimate == pytest.approx(torch.linalg.eigvalsh(gram).max().item(), rel=1e-8)
    with pytest.raises(ValueError, match='square'):
        power_iteration(matrix)


@pytest.mark.parametrize('options', [dict(exact=True), dict(powm=True, niters=3, bs=2),
                                     dict(dim=2, niters=2), dict(convtr=False, dim=1)])
def test_same_as_demucs_for_the_same_draws(options):
    model = small_model()
    torch.manual_seed(3)
    theirs = demucs.svd.svd_penalty(model, min_size=0, **options).item()
    torch.manual_seed(3)
    ours = svd_penalty(model, min_size=0, **options).item()
    print(f"{options}: ours {ours:.6f}, demucs {theirs:.6f}")
    assert abs(ours - theirs) <= 1e-5 * theirs


def test_min_size_skips_small_layers():
    model = nn.Sequential(nn.Linear(512, 512), nn.Linear(64, 64))   # 1 MB, 16 kB
    big = sigma_max_squared(model[0].weight)
    penalty = svd_penalty(model, min_size=0.5, exact=True).item()
    assert penalty == pytest.approx(big, rel=1e-5)
    assert svd_penalty(model, min_size=2, exact=True).item() == 0


class Draws:
    """A `random.Random` stand-in returning given values."""

    def __init__(self, values: tp.List[float]):
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_proba_skips_and_rescales():
    model = small_model()
    full = svd_penalty(model, min_size=0, exact=True).item()
    skipped = svd_penalty(model, min_size=0, exact=True, proba=0.25, rng=Draws([0.3]))
    assert skipped.item() == 0 and skipped.dim() == 0
    kept = svd_penalty(model, min_size=0, exact=True, proba=0.25, rng=Draws([0.2])).item()
    assert kept == pytest.approx(full / 0.25, rel=1e-6)
    draws = random.Random(0)
    count = sum(svd_penalty(model, min_size=0, exact=True, proba=0.25, rng=draws).item() > 0
                for _ in range(400))
    assert 70 <= count <= 130, count
    with pytest.raises(ValueError, match='proba'):
        svd_penalty(model, proba=0)


@pytest.mark.parametrize('options', [dict(exact=True), dict(powm=True, niters=300),
                                     dict(dim=4, niters=4)])
def test_gradient_is_that_of_sigma_max_squared(options):
    """d sigma_max^2 / dW = 2 sigma_max u v^T (u, v its singular vectors)."""
    torch.manual_seed(4)
    layer = nn.Linear(4, 6)
    torch.manual_seed(5)
    svd_penalty(layer, min_size=0, **options).backward()
    u, s, vh = torch.linalg.svd(layer.weight.detach().double())
    gradient = 2 * s[0] * torch.outer(u[:, 0], vh[0])
    difference = (layer.weight.grad.double() - gradient).abs().max().item()
    print(f"{options}: max |grad - 2 s u v^T| = {difference:.2e}")
    assert difference <= 1e-3 * gradient.abs().max().item()
    assert layer.bias.grad is None
