"""Singular value penalty (Défossez 2021, after Yoshida & Miyato 2017): a training loss term,
the sum over the model's large weights of an estimate of their largest singular value
squared, which keeps the network Lipschitz-smooth (Demucs' MDX 2021 models, `svd.*` config).

Each parameter of `numel / 2 ** 18 >= min_size` (its size in MB in float32) is seen as a
matrix: a conv weight `[out, in, k...]` as `[out, in * k...]` (with `convtr`, a transposed
conv's `[in, out, k...]` is first transposed to `[out, in, k...]`), a matrix as it is
(Linear, LSTM; skipped with `conv_only`); vectors (biases, norms) are skipped. Its largest
singular value squared is estimated by

* `torch.svd_lowrank` with `dim` directions and `niters` subspace iterations (default);
* the power method (`powm`) on the smaller Gram matrix, `niters` iterations from `bs`
  random starts (the mean of their estimates);
* the exact SVD (`exact`, for reporting at validation).

All are differentiable. With `proba` < 1 the penalty is computed on a random fraction of the
steps only (0 otherwise) and divided by `proba`, so that its expectation does not change. The
draw uses a `random.Random` shared by every process of a distributed run (the same seed and
the same number of calls: all ranks skip together, as each rank's backward must be alike).
"""
import random
import typing as tp

import torch
from torch import nn

# Draws of `proba`: seeded alike in every process, see the module docstring.
PENALTY_RNG = random.Random(1234)

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def power_iteration(gram: torch.Tensor, niters: int = 1, bs: int = 1) -> torch.Tensor:
    """The largest eigenvalue of the symmetric positive `gram` by the power method: `niters`
    iterations from `bs` random starting vectors, the mean of their estimates."""
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"power_iteration needs a square matrix, got {tuple(gram.shape)}.")
    if niters < 1:
        raise ValueError(f"svd.niters={niters} must be >= 1 for the power method.")
    vectors = torch.randn(gram.shape[0], bs, device=gram.device, dtype=gram.dtype)
    for _ in range(niters):
        product = gram.mm(vectors)
        norm = product.norm(dim=0, keepdim=True)
        vectors = product / (1e-10 + norm)
    return norm.mean()


def as_matrix(module: nn.Module, param: torch.Tensor, convtr: bool = True,
              conv_only: bool = False) -> tp.Optional[torch.Tensor]:
    """`param` of `module` as the matrix whose singular values are penalised, or None when
    it is not penalised (a vector; a matrix with `conv_only`)."""
    if param.dim() <= 1:
        return None
    if param.dim() == 2:
        return None if conv_only else param
    if convtr and isinstance(module, _TRANSPOSED):
        param = param.transpose(0, 1)
    return param.reshape(len(param), -1)


def largest_singular_squared(matrix: torch.Tensor, dim: int = 1, niters: int = 2,
                             powm: bool = False, exact: bool = False, bs: int = 1
                             ) -> torch.Tensor:
    """An estimate of the largest singular value of `matrix`, squared (see module doc)."""
    if exact:
        return torch.linalg.svdvals(matrix).max() ** 2
    if powm:
        rows, cols = matrix.shape
        gram = matrix.mm(matrix.t()) if rows < cols else matrix.t().mm(matrix)
        return power_iteration(gram, niters, bs)
    return torch.svd_lowrank(matrix, q=dim, niter=niters)[1][0] ** 2


def penalised_matrices(model: nn.Module, min_size: float = 0.1, convtr: bool = True,
                       conv_only: bool = False) -> tp.Iterator[tp.Tuple[str, torch.Tensor]]:
    """`(name, matrix)` of every parameter that the penalty covers, in `model.modules()`
    order."""
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if param.numel() / 2 ** 18 < min_size:
                continue
            matrix = as_matrix(module, param, convtr, conv_only)
            if matrix is not None:
                yield f'{module_name}.{name}' if module_name else name, matrix


def svd_penalty(model: nn.Module, min_size: float = 0.1, dim: int = 1, niters: int = 2,
                powm: bool = False, convtr: bool = True, proba: float = 1.,
                conv_only: bool = False, exact: bool = False, bs: int = 1,
                rng: tp.Optional[random.Random] = None) -> torch.Tensor:
    """The sum over `model`'s large weights of their largest singular value squared.

    Args:
        min_size: MB (float32) under which a parameter is not penalised.
        dim, niters: directions and iterations of `torch.svd_lowrank` (iterations of the
            power method with `powm`).
        powm: power method instead of the low-rank SVD. bs: its random starts.
        convtr: transposed convs as `[out, in * k]` matrices like convs (False: `[in, out *
            k]`, as some of demucs' models were trained).
        proba: probability that the penalty is computed at this call (else 0), the result
            being divided by it.
        conv_only: only the conv weights (not Linear, LSTM...).
        exact: the exact SVD (slow; for validation).
        rng: the draws of `proba`; default: `PENALTY_RNG`, shared by all processes.
    Returns:
        a scalar tensor, differentiable (zero when skipped or when nothing is penalised).
    """
    if not 0 < proba <= 1:
        raise ValueError(f"svd.proba={proba} must be in (0, 1].")
    device = next(iter(model.parameters()), torch.zeros(())).device
    total = torch.zeros((), device=device)
    if (rng or PENALTY_RNG).random() > proba:
        return total
    for _, matrix in penalised_matrices(model, min_size, convtr, conv_only):
        total = total + largest_singular_squared(matrix, dim, niters, powm, exact, bs)
    return total / proba
