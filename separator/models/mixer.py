"""The Mixer of KUIELab-MDX-Net (Kim et al., "KUIELab-MDX-Net: A Two-Stream Neural Network
for Music Demixing", MDX Workshop 2021): a learnt linear blend of trained separators.

MDX-Net ran two streams, TFC-TDF U-Nets and Demucs, and the Mixer turned their estimates
and the mixture into the final sources with one linear layer per sample: each output
channel of each source is a weighted sum of every input channel (the mixture's and every
estimate's), weights learnt on the training set while the separators stay frozen. It can
undo a systematic leak (some vocals in `other`) that a fixed per-source bag weight cannot.

Here the separators are any trained XPs (`model=mixer mixer.models=[SIG, ...]`, any mix of
architectures with the same sources, channels and sample rate): `builders.get_model` reads
their best weights, the Mixer holds them as frozen submodules (always in eval mode, run
without gradients), and only the 1x1 convolution `blend` trains. It starts as the plain
average of the separators' estimates (the bag with equal weights), so training can only
improve on that. The Mixer is then a model like any other: its package holds the
separators' architectures and weights, and `tools.export` / `separator` use it as is.
"""
import typing as tp

import torch
from torch import nn

from .base import SeparationModel, capture_init


class Mixer(SeparationModel):
    """A learnt linear blend of frozen separators. See the module docstring.

    Args:
        sources: names of the sources, those of every separator, in the same order.
        audio_channels, samplerate: those of every separator.
        segment: seconds per chunk for chunked inference.
        separators: packages (`klass`, `args`, `kwargs`, without weights) of the separators;
            `load_separators` sets their weights.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 7.8,
                 separators: tp.Sequence[dict] = ()):
        if not separators:
            raise ValueError("The Mixer needs at least one separator: mixer.models=[SIG, ...] "
                             "(signatures of trained XPs).")
        super().__init__(sources, audio_channels, samplerate, segment)
        # Packages are read by states, which imports the registry, which imports this file.
        from ..states import build_model
        self.separators = nn.ModuleList(build_model(package) for package in separators)
        for index, model in enumerate(self.separators):
            mine = (self.sources, self.audio_channels, self.samplerate)
            theirs = (list(model.sources), model.audio_channels, model.samplerate)
            if theirs != mine:
                raise ValueError(f"Separator {index} ({type(model).__name__}) has sources, "
                                 f"channels and sample rate {theirs}, the Mixer {mine}: mix "
                                 f"only XPs trained on the same sources and audio (dset.*).")
        self.separators.requires_grad_(False)
        S, C, M = len(self.sources), audio_channels, len(self.separators)
        self.blend = nn.Conv1d((M * S + 1) * C, S * C, 1, bias=False)
        with torch.no_grad():  # start as the average of the separators' estimates
            average = [torch.eye(S * C) / M] * M + [torch.zeros(S * C, C)]  # mixture: 0
            self.blend.weight.copy_(torch.cat(average, 1)[..., None])

    def load_separators(self, states: tp.Sequence[dict]) -> None:
        """Set the separators' weights (one state dict each, in order)."""
        if len(states) != len(self.separators):
            raise ValueError(f"{len(states)} states for {len(self.separators)} separators.")
        for model, state in zip(self.separators, states):
            model.load_state_dict(state)

    def train(self, mode: bool = True) -> 'Mixer':
        super().train(mode)
        self.separators.eval()  # frozen: no dropout, no BatchNorm statistics updates
        return self

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, S, C, T]."""
        B, C, T = mix.shape
        with torch.no_grad():
            estimates = [model(mix).flatten(1, 2) for model in self.separators]
        inputs = torch.cat([*estimates, mix], 1)           # [B, (M S + 1) C, T]
        return self.blend(inputs).view(B, len(self.sources), C, T)
