"""The Mixer of KUIELab-MDX-Net (Kim et al., "KUIELab-MDX-Net: A Two-Stream Neural Network
for Music Demixing", MDX Workshop 2021): a learnt linear blend of trained separators.

MDX-Net ran two streams, TFC-TDF U-Nets (one per source) and Demucs; its Mixer turned the
four TFC-TDF estimates and the mixture into the sources (Demucs joined after, in a fixed
per-source blend: grids/mdx21_kuielab.py), with one linear layer per sample: each output
channel of each source is a weighted sum of every input channel (the mixture's and every
estimate's), weights learnt on the training set while the separators stay frozen. It can
undo a systematic leak (some vocals in `other`) that a fixed per-source bag weight cannot.

Here the separators are any trained XPs (`model=mixer mixer.models=[SIG, ...]`, any mix of
architectures with the same sources, channels and sample rate): `builders.get_model` reads
their best weights, the Mixer holds them as frozen submodules (always in eval mode, run
without gradients), and only the 1x1 convolution `blend` trains. It starts as the plain
average of the separators' estimates (the bag with equal weights), so training can only
improve on that; with `targets` (the source each separator was trained on: KUIELab's one
model per source), each source starts as the estimate of the separators trained on it. The
Mixer is then a model like any other: its package holds the
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
        targets: None, or per separator the source it was trained on (None: all): each
            source then starts as the average of its own separators' estimates of it.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 7.8,
                 separators: tp.Sequence[dict] = (),
                 targets: tp.Optional[tp.Sequence[tp.Optional[str]]] = None):
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
            self.blend.weight.copy_(self.starting_blend(targets)[..., None])

    def starting_blend(self, targets: tp.Optional[tp.Sequence[tp.Optional[str]]]
                       ) -> torch.Tensor:
        """The blend's starting weights [S C, (M S + 1) C]: source s of the output is the
        average of the estimates of s by the separators trained on s (all of them without
        `targets`, or if none is), the mixture's weight 0."""
        S, C, M = len(self.sources), self.audio_channels, len(self.separators)
        targets = list(targets) if targets is not None else [None] * M
        if len(targets) != M or any(t is not None and t not in self.sources for t in targets):
            raise ValueError(f"mixer.targets={targets} must give, for each of the {M} "
                             f"separators, a source of {self.sources} (or null).")
        weight = torch.zeros(S * C, (M * S + 1) * C)
        for index, source in enumerate(self.sources):
            own = [m for m, target in enumerate(targets) if target in (source, None)]
            own = own or list(range(M))
            for m in own:
                rows = slice(index * C, (index + 1) * C)
                columns = slice((m * S + index) * C, (m * S + index + 1) * C)
                weight[rows, columns] = torch.eye(C) / len(own)
        return weight

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
