"""Exponential moving average of a model's weights."""
import typing as tp

import torch


class ModelEMA:
    """Keeps `shadow = decay * shadow + (1 - decay) * weights` for every float tensor."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = model
        self.state = {key: value.detach().clone()
                      for key, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        for key, value in self.model.state_dict().items():
            shadow = self.state[key]
            if value.dtype.is_floating_point:
                shadow.mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> tp.Dict[str, tp.Any]:
        return {'decay': self.decay, 'state': self.state}

    def load_state_dict(self, state: tp.Dict[str, tp.Any]) -> None:
        self.decay = state['decay']
        for key, value in state['state'].items():
            self.state[key].copy_(value)
