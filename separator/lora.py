"""LoRA: low-rank adapters on a model's linear and convolution weights (Hu et al. 2021), the
way users fine-tune a published separator on little data.

Each adapted weight `W` (any layer whose weight is a matrix once its dims after the first are
flattened: Linear, Conv1d/2d, their transposes) becomes `W + (alpha / rank) * B @ A` through a
`torch.nn.utils.parametrize` parametrization: `W` is frozen, `A` (rank x fan-in, random) and
`B` (fan-out x rank, zero: the model starts as it was) learn. The state dict then names
`LAYER.parametrizations.weight.original` and `LAYER.parametrizations.weight.0.{down,up}`;
`merged_state` folds the adapters back into plain weights (what export writes: a package of the
plain architecture, no LoRA code needed to run it).
"""
import copy
import fnmatch
import math
import typing as tp

import torch
from torch import nn
from torch.nn.utils import parametrize

ADAPTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
PREFIX = '.parametrizations.weight'


class LowRankDelta(nn.Module):
    """The parametrization `W -> W + scale * (up @ down).view_as(W)`."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        rows, cols = weight.shape[0], weight[0].numel()
        self.scale = alpha / rank
        self.down = nn.Parameter(torch.empty(rank, cols, dtype=weight.dtype,
                                             device=weight.device))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.up = nn.Parameter(torch.zeros(rows, rank, dtype=weight.dtype, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.up @ self.down).view_as(weight)


def options(cfg: tp.Any) -> tp.Optional[dict]:
    """The `lora` config section as plain options, or None when LoRA is off (rank 0)."""
    section = cfg.get('lora')
    if not section or not section.rank:
        return None
    if not isinstance(section.rank, int) or section.rank < 0:
        raise ValueError(f"lora.rank={section.rank!r} must be a whole number (0: off).")
    if cfg.quant.diffq is not None:
        raise ValueError("lora.rank and quant.diffq exclude each other: fine-tune with LoRA, "
                         "export, then quantize another XP.")
    return {'rank': int(section.rank), 'alpha': float(section.alpha),
            'targets': list(section.targets or ['*'])}


def add_lora(model: nn.Module, rank: int, alpha: float,
             targets: tp.Sequence[str] = ('*',)) -> tp.List[str]:
    """Adapt every linear/conv layer of `model` whose name matches one of `targets`
    (shell-style patterns) and freeze every other parameter. Returns the adapted layers."""
    adapted = []
    for name, module in model.named_modules():
        if isinstance(module, ADAPTED) and any(fnmatch.fnmatchcase(name, pattern)
                                               for pattern in targets):
            adapted.append(name)
    if not adapted:
        raise ValueError(f"lora.targets={list(targets)} match no linear or convolution layer "
                         f"of {type(model).__name__}.")
    for param in model.parameters():
        param.requires_grad_(False)
    for name in adapted:
        module = model.get_submodule(name)
        parametrize.register_parametrization(module, 'weight',
                                             LowRankDelta(module.weight, rank, alpha))
    return adapted


def to_adapted_names(state: tp.Dict[str, torch.Tensor], model: nn.Module
                     ) -> tp.Dict[str, torch.Tensor]:
    """Plain weights (another XP's, a published checkpoint's) under the names of the adapted
    `model`: `L.weight` -> `L.parametrizations.weight.original`; its adapters keep theirs."""
    own = model.state_dict()
    renamed = {}
    for key, value in state.items():
        if key.endswith('.weight') and key[:-len('.weight')] + PREFIX + '.original' in own:
            key = key[:-len('.weight')] + PREFIX + '.original'
        renamed[key] = value
    for key, value in own.items():
        if key not in renamed and (key.endswith('.down') or key.endswith('.up')):
            renamed[key] = value
    return renamed


def merged_state(model: nn.Module, state: tp.Dict[str, torch.Tensor], lora: dict
                 ) -> tp.Dict[str, torch.Tensor]:
    """The plain weights of `state` (a state of `model` adapted with `lora`): each adapter
    folded into its weight, on a copy (the model is left as it is)."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if parametrize.is_parametrized(module, 'weight'):
            parametrize.remove_parametrizations(module, 'weight', leave_parametrized=False)
    add_lora(copied, **lora)
    copied.load_state_dict(state)
    for module in copied.modules():
        if parametrize.is_parametrized(module, 'weight'):
            parametrize.remove_parametrizations(module, 'weight', leave_parametrized=True)
    return {key: value.detach().clone() for key, value in copied.state_dict().items()}
