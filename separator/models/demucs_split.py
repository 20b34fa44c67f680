"""Demucs with one decoder per source: Kazane Ryo no Danna's MDX21 model 3 ("DemucsSplit",
yoyololicon/music-demixing-challenge-ismir-2021-entry, model/demucs.py; 4th on leaderboard A
in a blend with X-UMX and a D3Net U-Net).

The time-domain Demucs (v2) whose decoder is split into S independent decoders, one per
source, by grouped convolutions (S groups):

* the mixture is standardised by its mono mix's mean and std (per example), padded half each
  side to `valid_length`, and upsampled x2 (`resample`, julius' sinc resampler);
* each of the `depth` encoder layers: conv (kernel `kernel_size`, stride `stride`, no
  padding) -> ReLU -> 1x1 conv to twice the channels -> GLU; channels start at `channels`
  and double at each layer;
* a BLSTM (`lstm_layers`) over the deepest features, then a Linear to twice the channels:
  S slices of them, one per source, start the S decoders;
* each decoder layer, shared by none of the sources: a grouped conv (kernel 3, S groups) of
  the S decoders' features plus a conv (kernel 3, no bias) of the encoder's skip (shared:
  each source reads all of it), a GLU within each source's group, a grouped transposed conv
  (S groups, kernel `kernel_size`, stride `stride`), ReLU (but the outermost layer, which
  gives each source its audio channels);
* the output is downsampled /2, un-standardised and trimmed (centre) to the input length.

Parameter names are theirs (`encoder`, `convs_1x1`, `dec_pre_convs`, `decoder`, `lstm`,
`lstm_linear`), so that their checkpoints load by name; convolutions are rescaled at
initialisation (`rescale`, as Demucs). Their code fixes 4 stereo sources; here any S sources
and C channels, provided every grouped layer divides by S. They trained it with L1 on 10 s
segments, batch 3 with 21 accumulated batches, Adam 3e-4, mixed precision (variant=danna_demucs).

Full size (`channels=48`, depth 6, 4 stereo sources): 191,928,152 parameters, 103.9 M of them
in the BLSTM and its Linear (1536 channels deep down).
"""
import typing as tp

import julius
import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from .demucs import center_trim, valid_conv_length
from .hdemucs import rescale_module


class DemucsSplit(SeparationModel):
    """Demucs with one decoder per source (see the module docstring).

    Args:
        sources, audio_channels, samplerate, segment: the model contract (models/base.py).
        channels: channels of the first encoder layer, doubled at each next one.
        depth: encoder (and decoder) layers.
        rescale: reference std of the convolutions' weights at initialisation (0: none).
        resample: upsample x2 before the encoder, downsample after the decoder.
        kernel_size, stride: of the encoder convs and decoder transposed convs.
        lstm_layers: layers of the BLSTM over the deepest features.
    """

    @capture_init
    def __init__(self, sources: tp.Sequence[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 10., channels: int = 48,
                 depth: int = 6, rescale: float = 0.1, resample: bool = True,
                 kernel_size: int = 8, stride: int = 4, lstm_layers: int = 2):
        super().__init__(sources, audio_channels, samplerate, segment)
        count = len(self.sources)
        widths = [channels * 2 ** index for index in range(depth)]
        if any((2 * width) % count for width in widths):
            raise ValueError(f"demucs_split: every decoder layer is split into {count} "
                             f"decoders (one per source), so twice the channels of every "
                             f"layer {widths} must divide by {count}: choose "
                             f"demucs_split.channels as a multiple of {count}.")
        self.kernel_size = kernel_size
        self.stride = stride
        self.depth = depth
        self.resample = resample
        self.encoder = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        self.dec_pre_convs = nn.ModuleList()
        self.decoder = nn.ModuleList()
        in_channels = audio_channels
        for index, width in enumerate(widths):
            self.encoder.append(nn.Sequential(
                nn.Conv1d(in_channels, width, kernel_size, stride), nn.ReLU(),
                nn.Conv1d(width, 2 * width, 1), nn.GLU(dim=1)))
            out_channels = 2 * in_channels if index > 0 else count * audio_channels
            self.convs_1x1.insert(0, nn.Conv1d(width, 4 * width, 3, padding=1, bias=False))
            self.dec_pre_convs.insert(0, nn.Conv1d(2 * width, 4 * width, 3, padding=1,
                                                   groups=count))
            decode: tp.List[nn.Module] = [nn.ConvTranspose1d(2 * width, out_channels,
                                                             kernel_size, stride, groups=count)]
            if index > 0:
                decode.append(nn.ReLU())
            self.decoder.insert(0, nn.Sequential(*decode))
            in_channels = width
        self.lstm = nn.LSTM(in_channels, in_channels, num_layers=lstm_layers,
                            bidirectional=True)
        self.lstm_linear = nn.Linear(2 * in_channels, 2 * in_channels)
        if rescale:
            rescale_module(self, reference=rescale)

    def valid_length(self, length: int) -> int:
        """The input length for which no conv leaves steps over; `forward` pads any input to
        it (half each side) and trims the output back."""
        return valid_conv_length(length, self.depth, self.kernel_size, self.stride,
                                 self.resample)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"DemucsSplit expects a mixture [batch, {self.audio_channels}, "
                             f"time], got {tuple(mix.shape)}.")
        length = int(mix.shape[-1])
        count = len(self.sources)
        mono = mix.mean(1, keepdim=True)
        mean = mono.mean(-1, keepdim=True)
        # (a single sample has no std: left unscaled)
        std = (mono.std(-1, keepdim=True) if length > 1 else torch.zeros_like(mean)) + 1e-5
        x = (mix - mean) / std
        delta = self.valid_length(length) - length
        x = F.pad(x, (delta // 2, delta - delta // 2))
        if self.resample:
            x = julius.resample_frac(x, 1, 2)
        saved = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        x = self.lstm(x.permute(2, 0, 1))[0]
        x = self.lstm_linear(x).permute(1, 2, 0)
        for decode, pre_conv, skip_conv in zip(self.decoder, self.dec_pre_convs,
                                               self.convs_1x1):
            skip = saved.pop()
            x = pre_conv(x) + skip_conv(skip[..., :x.shape[-1]])
            value, gate = x.view(x.shape[0], count, -1, x.shape[-1]).chunk(2, 2)
            x = decode((value * gate.sigmoid()).flatten(1, 2))   # a GLU per source
        if self.resample:
            x = julius.resample_frac(x, 2, 1)
        x = center_trim(x * std + mean, length)
        return x.view(x.shape[0], count, self.audio_channels, length)
