"""`optim.checkpointing`: activation checkpointing of the sequence layers (every LSTM, and every
layer class that sets `checkpoint_unit = True`: the transformer layers of HTDemucs and of the
RoFormers).

A checkpointed layer keeps only its input during the forward pass and recomputes its inside
during the backward pass: the activations of a transformer or LSTM layer (attention inputs,
feed-forward hidden states, LSTM gates over a long sequence), which dominate the memory of the
RoFormers and of HTDemucs at long segments, are then held for one layer at a time. It costs
one more forward pass of those layers. Gradients are the same (dropout draws are replayed:
`torch.utils.checkpoint` restores the random state), so an XP may switch it on or off when it
resumes (the key does not change the signature).

Layers inside a checkpointed layer are not checkpointed again. Only training calls (module in
training mode, gradients enabled) checkpoint: evaluation and export run the plain forward.
The wrapper is a bound method on the module, so `copy.deepcopy` (the EMAs' copies) rebinds
it to the copy.
"""
import types
import typing as tp

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def is_unit(module: nn.Module) -> bool:
    """A layer that `optim.checkpointing` recomputes in the backward pass."""
    return isinstance(module, nn.LSTM) or getattr(type(module), 'checkpoint_unit', False)


def _checkpointed_forward(self: nn.Module, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
    forward = type(self).forward.__get__(self)
    if self.training and torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def enable_checkpointing(model: nn.Module) -> tp.List[str]:
    """Checkpoint every outermost unit of `model`; the names of the layers checkpointed."""
    names: tp.List[str] = []
    for name, module in model.named_modules():
        if not is_unit(module) or any(name.startswith(f'{done}.') for done in names):
            continue
        module.forward = types.MethodType(_checkpointed_forward, module)
        names.append(name)
    return names
