"""Exponential moving average of a model's weights."""
import typing as tp

import torch


class ModelEMA:
    """Keeps `shadow = decay * shadow + (1 - decay) * weights` for every float tensor,
    updated every optimizer step (`unit='batch'`) or at the end of every epoch
    (`unit='epoch'`, as Demucs's `ema.epoch`)."""

    def __init__(self, model: torch.nn.Module, decay: float, unit: str = 'batch'):
        if unit not in ('batch', 'epoch'):
            raise ValueError(f"an EMA is updated every batch or every epoch, not {unit!r}.")
        if not 0 <= decay < 1:
            raise ValueError(f"ema.{unit}: decay {decay} must be in [0, 1).")
        self.decay = decay
        self.unit = unit
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

    @property
    def name(self) -> str:
        """How validation names it: `ema_0.9995` (every batch), `ema_epoch_0.9`."""
        return f"ema_{self.decay}" if self.unit == 'batch' else f"ema_epoch_{self.decay}"

    def state_dict(self) -> tp.Dict[str, tp.Any]:
        return {'decay': self.decay, 'state': self.state}

    def load_state_dict(self, state: tp.Dict[str, tp.Any]) -> None:
        self.decay = state['decay']
        for key, value in state['state'].items():
            self.state[key].copy_(value)
