"""Demucs v3, time domain only: the 64-channel model of Demucs' MDX 2021 Track A entry
(Défossez, "Hybrid Spectrogram and Waveform Source Separation", 2021, its time branch alone).

A U-Net on the waveform `[B, C, T]`:

* the mixture is optionally normalised (mean and std of its mono mix, per example), padded
  (half each side) to `valid_length`, and upsampled x2 (`resample`, julius' sinc resampler);
* each of the `depth` encoder layers: conv (kernel `kernel_size`, stride `stride`, no
  padding) -> [GroupNorm] -> GELU (ReLU) -> [DConv residual branch] -> [1x1 conv to twice
  the channels -> [GroupNorm] -> GLU] (`rewrite`; ReLU and same channels if `glu=False`);
  channels start at `channels` and are multiplied by `growth` at each layer;
* optionally a BLSTM over the deepest features (`lstm_layers`, off in v3);
* each decoder layer, mirroring: + skip -> [conv kernel 1 + 2 * context -> [GroupNorm] ->
  GLU] -> [DConv, `dconv_mode` 2 or 3] -> transposed conv -> [GroupNorm -> GELU] (not the
  outermost layer);
* the output is downsampled /2, un-normalised and trimmed (centre) to the input length.

GroupNorm (`norm_groups` groups) is in layers of index >= `norm_starts`. The DConv branch
(`dconv_depth` sub-layers of dilated convs in a space `dconv_comp` times smaller, each added
to its input through a LayerScale initialised at `dconv_init`) gets a BLSTM in layers of
index >= `dconv_lstm` and local attention in those >= `dconv_attn`: with the defaults
(depth 6, both 4), the two deepest layers. Negative `dconv_depth`: no dilation.

The constructor keywords, their defaults, the state dict (names, shapes and the order of
`parameters()`, hence also an optimizer's state) and the outputs are those of
`demucs.demucs.Demucs` (demucs 4.1.0); so is the initialisation for a given seed. Its
checkpoints load unchanged, as do those of the previous generation (Demucs v2 key names,
see `upgrade_state_dict`).

Full size (the defaults, 4 stereo sources): 133.8 M parameters (demucs' `conf/config.yaml`
has the same hyper-parameters, but `normalize: false`).
"""
import math
import typing as tp

import julius
import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from .hdemucs import BLSTM, LayerScale, LocalAttention, rescale_module


def valid_conv_length(length: int, depth: int, kernel_size: int, stride: int,
                      resample: bool) -> int:
    """The least input length >= `length` for which `depth` convs (no padding) leave no step
    over, through the x2 resampling if `resample`: the waveform U-Nets' (Demucs v2/v3)."""
    if resample:
        length *= 2
    for _ in range(depth):
        length = max(1, math.ceil((length - kernel_size) / stride) + 1)
    for _ in range(depth):
        length = (length - 1) * stride + kernel_size
    if resample:
        length = math.ceil(length / 2)
    return int(length)


def center_trim(x: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the middle `length` steps of `x` (the odd extra step is cut on the right)."""
    delta = x.shape[-1] - length
    if delta < 0:
        raise ValueError(f"center_trim: {x.shape[-1]} steps, cannot keep {length}.")
    return x[..., delta // 2:x.shape[-1] - (delta - delta // 2)]


def dconv_layer(channels: int, hidden: int, dilation: int, kernel: int, init: float,
                lstm: bool, attn: bool) -> nn.Sequential:
    """One DConv sub-layer: conv to `hidden` -> GroupNorm(1) -> GELU -> [BLSTM] ->
    [LocalAttention] -> 1x1 conv to 2 * channels -> GroupNorm(1) -> GLU -> LayerScale.

    Modules are created in demucs' order (the convs, then attention, then the BLSTM), so
    that a seed gives demucs' initial weights."""
    head: tp.List[nn.Module] = [
        nn.Conv1d(channels, hidden, kernel, dilation=dilation, padding=dilation * (kernel // 2)),
        nn.GroupNorm(1, hidden), nn.GELU()]
    tail: tp.List[nn.Module] = [
        nn.Conv1d(hidden, 2 * channels, 1), nn.GroupNorm(1, 2 * channels), nn.GLU(1),
        LayerScale(channels, init)]
    middle: tp.List[nn.Module] = [LocalAttention(hidden)] if attn else []
    if lstm:
        middle.insert(0, BLSTM(hidden, layers=2, max_steps=200, skip=True, demucs_windows=True))
    return nn.Sequential(*head, *middle, *tail)


class DConv(nn.Module):
    """Residual branch: `abs(depth)` sub-layers (`dconv_layer`), each added to its input,
    in a space of `channels / compress` channels; dilation 2 ** index unless `depth` < 0."""
    def __init__(self, channels: int, compress: float = 4, depth: int = 2, init: float = 1e-4,
                 attn: bool = False, lstm: bool = False, kernel: int = 3):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"DConv: kernel={kernel} must be odd.")
        hidden = int(channels / compress)
        dilate = depth > 0
        self.layers = nn.ModuleList(
            dconv_layer(channels, hidden, 2 ** index if dilate else 1, kernel, init, lstm, attn)
            for index in range(abs(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


def upgrade_state_dict(state: tp.Mapping[str, torch.Tensor], depth: int
                       ) -> tp.Dict[str, torch.Tensor]:
    """A copy of `state` with the key names of Demucs v2 checkpoints renamed.

    v2 layers had no norm module: what is now module 3 of an encoder or decoder layer (the
    rewrite conv of an encoder without DConv, the transposed conv of a decoder) was module 2.
    """
    state = dict(state)
    for index in range(depth):
        for part in ('encoder', 'decoder'):
            for name in ('bias', 'weight'):
                old, new = f'{part}.{index}.2.{name}', f'{part}.{index}.3.{name}'
                if old in state and new not in state:
                    state[new] = state.pop(old)
    return state


class Demucs(SeparationModel):
    """Demucs v3, time domain (see the module docstring).

    Args (those of `demucs.demucs.Demucs`, same defaults):
        sources: names of the sources; audio_channels: 1 (mono) or 2 (stereo).
        channels: channels of the first layer, times `growth` at each next layer.
        depth: encoder (and decoder) layers.
        rewrite: 1x1 convs (kernel 1 + 2 * context in the decoder) after / before each conv.
        lstm_layers: layers of a BLSTM over the deepest features, 0: none.
        kernel_size, stride: of the encoder convs and decoder transposed convs.
        context: the decoder's rewrite conv has kernel 1 + 2 * context.
        gelu: GELU after the convs, else ReLU. glu: GLU after the rewrite convs, else ReLU.
        norm_starts, norm_groups: GroupNorm(norm_groups) in layers of index >= norm_starts.
        dconv_mode: DConv branches in 1: the encoder, 2: the decoder, 3: both, 0: none.
        dconv_depth, dconv_comp, dconv_init: their sub-layers, channel compression and
            LayerScale init.
        dconv_attn, dconv_lstm: local attention / BLSTM in the DConv of layers of index >= it.
        normalize: normalise the input by its mono mix's mean and std, undo it at the output.
        resample: work at twice the sample rate (upsample in, downsample out).
        rescale: reference std of the conv weights' rescaling at init (0: off).
        samplerate, segment: the contract's metadata (segment: seconds of chunked inference;
            demucs trained on 11 s and sets 44 s).
    """
    @capture_init
    def __init__(self, sources: tp.Sequence[str], audio_channels: int = 2, channels: int = 64,
                 growth: float = 2., depth: int = 6, rewrite: bool = True, lstm_layers: int = 0,
                 kernel_size: int = 8, stride: int = 4, context: int = 1, gelu: bool = True,
                 glu: bool = True, norm_starts: int = 4, norm_groups: int = 4,
                 dconv_mode: int = 1, dconv_depth: int = 2, dconv_comp: float = 4,
                 dconv_attn: int = 4, dconv_lstm: int = 4, dconv_init: float = 1e-4,
                 normalize: bool = True, resample: bool = True, rescale: float = 0.1,
                 samplerate: int = 44100, segment: float = 4 * 10):
        super().__init__(sources, audio_channels, samplerate, segment)
        self.kernel_size = kernel_size
        self.stride = stride
        self.context = context
        self.depth = depth
        self.channels = channels
        self.resample = resample
        self.normalize = normalize
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.skip_scales = nn.ModuleList()   # always empty, as in demucs
        self._glu = glu
        self._scale = 2 if glu else 1
        self._act: tp.Type[nn.Module] = nn.GELU if gelu else nn.ReLU
        self._rewrite = rewrite

        chin = audio_channels
        for index in range(depth):
            groups = norm_groups if index >= norm_starts else 0
            dconv_kw = dict(depth=dconv_depth, init=dconv_init, compress=dconv_comp,
                            attn=index >= dconv_attn, lstm=index >= dconv_lstm)
            self.encoder.append(self._encoder_layer(
                chin, channels, groups, dconv_kw if dconv_mode & 1 else None))
            chout = chin if index > 0 else len(self.sources) * audio_channels
            self.decoder.insert(0, self._decoder_layer(
                channels, chout, groups, dconv_kw if dconv_mode & 2 else None, last=index == 0))
            chin = channels
            channels = int(growth * channels)
        self.lstm = BLSTM(chin, lstm_layers, max_steps=None, skip=False) if lstm_layers else None
        if rescale:
            rescale_module(self, reference=rescale)

    # -- layers -------------------------------------------------------------------------

    def _norm(self, groups: int, channels: int) -> nn.Module:
        return nn.GroupNorm(groups, channels) if groups else nn.Identity()

    def _rewrite_act(self) -> nn.Module:
        return nn.GLU(dim=1) if self._glu else nn.ReLU()

    def _encoder_layer(self, chin: int, chout: int, groups: int,
                       dconv_kw: tp.Optional[dict]) -> nn.Sequential:
        mods = [nn.Conv1d(chin, chout, self.kernel_size, self.stride),
                self._norm(groups, chout), self._act()]
        if dconv_kw is not None:
            mods.append(DConv(chout, **dconv_kw))
        if self._rewrite:
            mods += [nn.Conv1d(chout, self._scale * chout, 1),
                     self._norm(groups, self._scale * chout), self._rewrite_act()]
        return nn.Sequential(*mods)

    def _decoder_layer(self, chin: int, chout: int, groups: int, dconv_kw: tp.Optional[dict],
                       last: bool) -> nn.Sequential:
        mods: tp.List[nn.Module] = []
        if self._rewrite:
            mods += [nn.Conv1d(chin, self._scale * chin, 2 * self.context + 1,
                               padding=self.context),
                     self._norm(groups, self._scale * chin), self._rewrite_act()]
        if dconv_kw is not None:
            mods.append(DConv(chin, **dconv_kw))
        mods.append(nn.ConvTranspose1d(chin, chout, self.kernel_size, self.stride))
        if not last:
            mods += [self._norm(groups, chout), self._act()]
        return nn.Sequential(*mods)

    # -- lengths ------------------------------------------------------------------------

    def valid_length(self, length: int) -> int:
        """The input length for which no conv leaves steps over; `forward` pads any input to
        it (half each side) and trims the output back."""
        return valid_conv_length(length, self.depth, self.kernel_size, self.stride,
                                 self.resample)

    # -- forward ------------------------------------------------------------------------

    def _normalize(self, mix: torch.Tensor
                   ) -> tp.Tuple[torch.Tensor, tp.Union[torch.Tensor, float], tp.Union[
                       torch.Tensor, float]]:
        """`(normalised mix, mean, std)`, by the mono mix's statistics per example."""
        if not self.normalize:
            return mix, 0., 1.
        mono = mix.mean(dim=1, keepdim=True)
        mean = mono.mean(dim=-1, keepdim=True)
        std = mono.std(dim=-1, keepdim=True)
        return (mix - mean) / (1e-5 + std), mean, std

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"Demucs expects a mixture [batch, {self.audio_channels}, time], "
                             f"got {tuple(mix.shape)}.")
        length = int(mix.shape[-1])   # a constant when traced: the pads and trims are fixed
        x, mean, std = self._normalize(mix)
        delta = self.valid_length(length) - length
        x = F.pad(x, (delta // 2, delta - delta // 2))
        if self.resample:
            x = julius.resample_frac(x, 1, 2)

        saved = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x + center_trim(saved.pop(), x.shape[-1]))

        if self.resample:
            x = julius.resample_frac(x, 2, 1)
        x = center_trim(x * std + mean, length)
        return x.view(x.shape[0], len(self.sources), self.audio_channels, length)

    def load_state_dict(self, state_dict: tp.Mapping[str, tp.Any], strict: bool = True,
                        assign: bool = False):
        """As `nn.Module.load_state_dict`, also for Demucs v2 key names."""
        return super().load_state_dict(upgrade_state_dict(state_dict, self.depth),
                                       strict=strict, assign=assign)
