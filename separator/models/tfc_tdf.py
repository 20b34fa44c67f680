"""TFC-TDF U-Net v3: the spectrogram U-Net of KUIELab's MDX-Net, in its SDX23 version.

Papers: "KUIELab-MDX-Net: A Two-Stream Neural Network for Music Demixing" (Kim, Choi, Chung,
Lee, Jung, MDX Workshop 2021) introduced the TFC-TDF U-Net for music demixing (after Choi
et al., "Investigating U-Nets with various intermediate blocks for spectrogram-based singing
voice separation", ISMIR 2020); "Sound Demixing Challenge 2023 Music Demixing Track
Technical Report: TFC-TDF-UNet v3" (Kim, Lee, Jung, 2023) made it one multi-source model
with channel-wise subbands and residual blocks. This module is written from the papers and
checked against the public code (kuielab/sdx23); hyper-parameter names follow its configs,
the defaults are those of ZFTurbo's MDX23C (TFC-TDF v3) MUSDB config (see Size below).

The network, for a mixture `[B, C, T]`:

* **STFT** (`spectro`: Hann, `n_fft`, `hop_length`, centred, normalised), complex as
  channels: `[B, 2C, n_fft // 2 + 1, frames]`. Only the `dim_f` lowest bins are kept; the
  output spectrogram is zero above them (with the SDX23 `n_fft=8192, dim_f=4096` that
  drops the Nyquist bin only; MDX21's models kept 2048 bins of n_fft 4096 to 16384,
  cutting at 22 kHz down to 5.5 kHz).
* **Channel-wise subbands** (Liu et al., Interspeech 2020): the `dim_f` bins are split into
  `num_subbands` equal groups stacked as channels, `[B, 2C * k, dim_f / k, frames]` (channel
  `c * k + band`). Below, the layout is `[B, channels, frames, freqs]`.
* A 1x1 **first conv** (no bias) to `num_channels`.
* `num_scales` **encoder scales**, each a TFC-TDF block then a downscale: norm-act and a
  conv of kernel = stride = `scale` (time, frequency), the channels growing by `growth`.
* A **TFC-TDF block** is `num_blocks_per_scale` residual units; each unit is
  `TFC1 -> (+ TDF) -> TFC2`, plus a 1x1 conv shortcut from its input to its output:
  TFC = norm-act-conv 3x3 (time-frequency convolution); TDF = norm-act-Linear(f -> f /
  `bottleneck_factor`)-norm-act-Linear(back to f) along the frequency axis (the
  time-distributed fully connected layer), added to its input.
* A **bottleneck** TFC-TDF block at the deepest scale.
* `num_scales` **decoder scales**: norm-act-transposed conv upscale (channels shrink by
  `growth`), concatenation with the encoder skip of that scale, a TFC-TDF block from twice
  the channels.
* The decoder output is **multiplied by the first conv's output** (the reference code's
  "reduce artifacts"), then a final 1x1 conv stack (conv-act-conv, no bias) over
  `[mixture subband spectrogram, features]` gives one complex spectrogram per source
  (subbands merged back, zero bins above `dim_f`), and the **iSTFT** gives the waveforms.

All convs and linears are bias-free, as in the reference code. `norm` is `InstanceNorm`
(affine, the SDX23 choice), `BatchNorm`, `GroupNorm<groups>` (e.g. `GroupNorm4`) or `none`;
`act` is `gelu`, `relu` or `elu` (`elu<alpha>`, e.g. `elu0.5`). There is no input
normalisation (as in the reference code).

Lengths: the frame axis is divided by `scale[0]` at each scale, so the input is zero-padded
at the end to a length whose `length // hop_length + 1` frames are a multiple of
`scale[0] ** num_scales` (and longer than `n_fft // 2` so that the STFT's reflect padding
works); the output is trimmed back to `T` samples. Any `T >= 1` works. The frequency axis
must divide exactly: `dim_f` must be a multiple of `num_subbands * scale[1] ** num_scales`.

Size: the paper-size defaults (`n_fft=8192, hop_length=1024, dim_f=4096, num_channels=128,
growth=128, num_scales=5, num_blocks_per_scale=2, bottleneck_factor=4, num_subbands=4,
scale=(2, 2)`, ZFTurbo's MDX23C config) have 112.0 M parameters with 4 stereo sources,
most of them in the 3x3 convs of the deep scales (768 channels at the bottom).
kuielab's own SDX23 Leaderboard A/B models (`num_channels=64, growth=64`) have 30.1 M; its
`hop_length=2048, num_channels=128, growth=64` models 45.8 M.

Recommended small config (learns on CPU; 0.32 M parameters with 4 stereo sources)::

    TFCTDFNet(sources, n_fft=1024, hop_length=256, dim_f=512, num_channels=16, growth=16,
              num_scales=3, num_blocks_per_scale=1, num_subbands=4)

One training step of it (forward + backward + Adam, batch 4 x 1 s stereo at 44.1 kHz) takes
about 0.35 s on one CPU thread.
"""
import math
import re
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..spec import check_stft, channels_to_complex, complex_to_channels, ispectro, spectro

NORMS = "InstanceNorm, BatchNorm, GroupNorm<groups> (e.g. GroupNorm4) or none"
ACTS = "gelu, relu, elu or elu<alpha> (e.g. elu0.5)"


# ----------------------------------------------------------------------------------------
# Norms and activations


def group_norm_groups(norm: str) -> tp.Optional[int]:
    """The number of groups of a `GroupNorm<groups>` norm name, None for other names."""
    match = re.fullmatch(r'GroupNorm(\d+)', norm)
    return int(match.group(1)) if match else None


def check_norm(norm: str, channel_counts: tp.Sequence[int]) -> None:
    """Raise a ValueError naming the fix if `norm` is unknown or its groups don't divide
    every channel count of the network."""
    if norm in ('InstanceNorm', 'BatchNorm', 'none'):
        return
    groups = group_norm_groups(norm)
    if groups is None or groups < 1:
        raise ValueError(f"Unknown norm {norm!r}: use {NORMS}.")
    bad = sorted({count for count in channel_counts if count % groups})
    if bad:
        raise ValueError(f"norm={norm} needs channel counts divisible by {groups}, but the "
                         f"network has {bad}: make num_channels and growth multiples of "
                         f"{groups}, or use fewer groups.")


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2d norm layer over `channels` channels (see `check_norm` for the names)."""
    if norm == 'InstanceNorm':
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == 'BatchNorm':
        return nn.BatchNorm2d(channels)
    if norm == 'none':
        return nn.Identity()
    groups = group_norm_groups(norm)
    assert groups is not None, norm
    return nn.GroupNorm(groups, channels)


def elu_alpha(act: str) -> tp.Optional[float]:
    """The alpha of an `elu` / `elu<alpha>` activation name, None for other names."""
    if act == 'elu':
        return 1.0
    if act.startswith('elu'):
        try:
            return float(act[3:])
        except ValueError:
            return None
    return None


def check_act(act: str) -> None:
    """Raise a ValueError naming the fix if `act` is not an activation name."""
    if act not in ('gelu', 'relu') and elu_alpha(act) is None:
        raise ValueError(f"Unknown act {act!r}: use {ACTS}.")


def make_act(act: str) -> nn.Module:
    """The activation layer named `act` (see `check_act`)."""
    if act == 'gelu':
        return nn.GELU()
    if act == 'relu':
        return nn.ReLU()
    alpha = elu_alpha(act)
    assert alpha is not None, act
    return nn.ELU(alpha)


def norm_act(norm: str, act: str, channels: int, layer: nn.Module) -> nn.Sequential:
    """The pre-activation pattern of the network: norm, activation, then `layer`."""
    return nn.Sequential(make_norm(norm, channels), make_act(act), layer)


# ----------------------------------------------------------------------------------------
# Layers. Feature maps are `[B, channels, frames, freqs]`.


class TDF(nn.Module):
    """Time-distributed fully connected layers along frequency: norm-act-Linear(freqs ->
    freqs // bottleneck) then norm-act-Linear(back to freqs), the same for every frame.
    Returns the residual only (the caller adds it)."""
    def __init__(self, channels: int, freqs: int, bottleneck_factor: int, norm: str,
                 act: str):
        super().__init__()
        hidden = freqs // bottleneck_factor
        self.squeeze = norm_act(norm, act, channels, nn.Linear(freqs, hidden, bias=False))
        self.expand = norm_act(norm, act, channels, nn.Linear(hidden, freqs, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.squeeze(x))


class TFCTDFUnit(nn.Module):
    """One residual unit: TFC (norm-act-conv3x3), + TDF, TFC, plus a 1x1 conv shortcut."""
    def __init__(self, in_channels: int, channels: int, freqs: int, bottleneck_factor: int,
                 norm: str, act: str):
        super().__init__()
        self.tfc1 = norm_act(norm, act, in_channels,
                             nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))
        self.tdf = TDF(channels, freqs, bottleneck_factor, norm, act)
        self.tfc2 = norm_act(norm, act, channels,
                             nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        self.shortcut = nn.Conv2d(in_channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tfc1(x)
        y = y + self.tdf(y)
        return self.tfc2(y) + self.shortcut(x)


class TFCTDFBlock(nn.Sequential):
    """`units` TFC-TDF units, the first from `in_channels` to `channels` channels."""
    def __init__(self, in_channels: int, channels: int, units: int, freqs: int,
                 bottleneck_factor: int, norm: str, act: str):
        super().__init__(*[
            TFCTDFUnit(in_channels if index == 0 else channels, channels, freqs,
                       bottleneck_factor, norm, act)
            for index in range(units)])


class EncoderScale(nn.Module):
    """A TFC-TDF block (its output is the skip), then norm-act-strided conv downscale."""
    def __init__(self, channels: int, out_channels: int, units: int, freqs: int,
                 scale: tp.Tuple[int, int], bottleneck_factor: int, norm: str, act: str):
        super().__init__()
        self.block = TFCTDFBlock(channels, channels, units, freqs, bottleneck_factor, norm,
                                 act)
        self.downscale = norm_act(norm, act, channels, nn.Conv2d(
            channels, out_channels, scale, stride=scale, bias=False))

    def forward(self, x: torch.Tensor) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        skip = self.block(x)
        return self.downscale(skip), skip


class DecoderScale(nn.Module):
    """Norm-act-transposed conv upscale, concatenation with the skip, a TFC-TDF block."""
    def __init__(self, in_channels: int, channels: int, units: int, freqs: int,
                 scale: tp.Tuple[int, int], bottleneck_factor: int, norm: str, act: str):
        super().__init__()
        self.upscale = norm_act(norm, act, in_channels, nn.ConvTranspose2d(
            in_channels, channels, scale, stride=scale, bias=False))
        self.block = TFCTDFBlock(2 * channels, channels, units, freqs, bottleneck_factor,
                                 norm, act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upscale(x), skip], dim=1))


# ----------------------------------------------------------------------------------------
# Subbands


def split_subbands(x: torch.Tensor, subbands: int) -> torch.Tensor:
    """`[B, D, F, T]` -> `[B, D * subbands, F / subbands, T]`: channel `d * subbands + k`
    holds the `k`-th group of `F / subbands` consecutive bins of channel `d`."""
    B, D, Fr, T = x.shape
    return x.reshape(B, D * subbands, Fr // subbands, T)


def merge_subbands(x: torch.Tensor, subbands: int) -> torch.Tensor:
    """Inverse of `split_subbands`: `[B, D * subbands, F, T]` -> `[B, D, F * subbands, T]`."""
    B, D, Fr, T = x.shape
    return x.reshape(B, D // subbands, Fr * subbands, T)


# ----------------------------------------------------------------------------------------
# Hyper-parameter checks


def check_positive(**values: int) -> None:
    """Raise a ValueError if one of the named integer hyper-parameters is below 1."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")


def check_scale(scale: tp.Sequence[int]) -> tp.Tuple[int, int]:
    """`scale` as a `(time, frequency)` pair of strides >= 1, else a ValueError."""
    if len(scale) != 2 or any(int(step) != step or step < 1 for step in scale):
        raise ValueError(f"scale must be two integers >= 1 (time, frequency strides), got "
                         f"{list(scale)}: e.g. scale=[2, 2].")
    return int(scale[0]), int(scale[1])


def check_stft_bins(n_fft: int, hop_length: int, dim_f: int) -> None:
    """Raise a ValueError naming the fix if the STFT settings are inconsistent."""
    check_stft(n_fft, hop_length)
    bins = n_fft // 2 + 1
    if not 1 <= dim_f <= bins:
        raise ValueError(f"dim_f={dim_f} must be between 1 and n_fft // 2 + 1 = {bins} (the "
                         f"number of STFT bins): lower dim_f or raise n_fft.")


def check_freqs(dim_f: int, num_subbands: int, num_scales: int, freq_scale: int,
                bottleneck_factor: int) -> None:
    """Raise a ValueError naming the fix unless the frequency axis divides exactly down to
    the bottleneck, where the TDF still has at least one hidden unit."""
    divisor = num_subbands * freq_scale ** num_scales
    if dim_f % divisor:
        lower = dim_f // divisor * divisor
        hint = f"dim_f={lower} or {lower + divisor}" if lower else f"dim_f={divisor}"
        raise ValueError(
            f"dim_f={dim_f} must be a multiple of num_subbands * scale[1] ** num_scales = "
            f"{num_subbands} * {freq_scale} ** {num_scales} = {divisor}: use {hint}, or "
            f"fewer subbands or scales.")
    bottom = dim_f // divisor
    if bottom < bottleneck_factor:
        raise ValueError(
            f"The deepest scale has {bottom} frequency bins per subband (dim_f / "
            f"(num_subbands * scale[1] ** num_scales)), fewer than bottleneck_factor="
            f"{bottleneck_factor}, so its TDF would have no hidden unit: use "
            f"bottleneck_factor<={bottom}, a larger dim_f, or fewer subbands or scales.")


def padded_frames(length: int, hop: int, n_fft: int, multiple: int, min_frames: int) -> int:
    """STFT frames of a U-Net's padded input for `length` samples: at least
    `length // hop + 1`, a multiple of `multiple` (the time downscales), at least
    `min_frames` multiples, and enough for the STFT's reflect padding (more than `n_fft // 2`
    samples). Shared by the TFC-TDF U-Nets (v3 and KUIELab's v1)."""
    needed = max(math.ceil(length / hop), n_fft // (2 * hop) + 1) + 1
    return multiple * max(math.ceil(needed / multiple), min_frames)


class PaddedFrames:
    """The valid lengths of a spectrogram U-Net whose frames count must be a multiple of
    `frame_multiple` (its time downscales) and leave `min_bottom_frames` at the bottom; the
    model sets `hop_length`, `n_fft` and `min_bottom_frames`."""
    hop_length: int
    n_fft: int
    min_bottom_frames: int
    frame_multiple: int

    def valid_frames(self, length: int) -> int:
        """Frames of the padded input for a `length` samples input: at least
        `length // hop + 1`, a multiple of `frame_multiple`, and enough for the STFT's
        reflect padding (more than `n_fft // 2` samples)."""
        return padded_frames(length, self.hop_length, self.n_fft, self.frame_multiple,
                             self.min_bottom_frames)

    def valid_length(self, length: int) -> int:
        """Samples of the zero-padded input for a `length` samples input (>= `length`)."""
        return (self.valid_frames(length) - 1) * self.hop_length


class TFCTDFNet(PaddedFrames, SeparationModel):
    """TFC-TDF U-Net v3 (KUIELab, SDX23). See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate, segment: metadata; `segment` is the training segment in seconds (the
            default is SDX23's chunk of 261120 samples, 256 frames of hop 1024).
        n_fft, hop_length: STFT size and hop.
        dim_f: number of low STFT bins the network sees; the output is zero above them.
            Must be a multiple of `num_subbands * scale[1] ** num_scales`.
        num_subbands: groups of bins stacked as channels (1: no subbands).
        num_channels: channels after the first 1x1 conv (first scale).
        growth: channels added at each downscale (removed at each upscale).
        num_scales: encoder (and decoder) scales.
        num_blocks_per_scale: TFC-TDF units in each block.
        bottleneck_factor: the TDF's hidden size is the number of bins divided by this.
        scale: (time, frequency) kernel and stride of the down- and upscale convs.
        norm: `InstanceNorm` (affine), `BatchNorm`, `GroupNorm<groups>` or `none`.
        act: `gelu`, `relu`, `elu` or `elu<alpha>`.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 261120 / 44100,
                 n_fft: int = 8192, hop_length: int = 1024, dim_f: int = 4096,
                 num_subbands: int = 4, num_channels: int = 128, growth: int = 128,
                 num_scales: int = 5, num_blocks_per_scale: int = 2,
                 bottleneck_factor: int = 4, scale: tp.Sequence[int] = (2, 2),
                 norm: str = 'InstanceNorm', act: str = 'gelu'):
        super().__init__(sources, audio_channels, samplerate, segment)
        check_positive(audio_channels=audio_channels, num_subbands=num_subbands,
                       num_channels=num_channels, num_scales=num_scales,
                       num_blocks_per_scale=num_blocks_per_scale,
                       bottleneck_factor=bottleneck_factor)
        if growth < 0:
            raise ValueError(f"growth must be >= 0, got {growth}.")
        time_scale, freq_scale = check_scale(scale)
        check_stft_bins(n_fft, hop_length, dim_f)
        check_freqs(dim_f, num_subbands, num_scales, freq_scale, bottleneck_factor)
        channel_counts = [num_channels + index * growth for index in range(num_scales + 1)]
        check_norm(norm, channel_counts)
        check_act(act)

        self.n_fft = n_fft
        self.hop_length = hop_length
        self.dim_f = dim_f
        self.num_subbands = num_subbands
        self.num_scales = num_scales
        self.scale = (time_scale, freq_scale)

        spec_channels = 2 * audio_channels * num_subbands   # complex as channels, subbands
        freqs = dim_f // num_subbands
        units = num_blocks_per_scale
        layer_kw = {'bottleneck_factor': bottleneck_factor, 'norm': norm, 'act': act}
        self.first_conv = nn.Conv2d(spec_channels, num_channels, 1, bias=False)
        self.encoder = nn.ModuleList()
        for index in range(num_scales):
            self.encoder.append(EncoderScale(channel_counts[index], channel_counts[index + 1],
                                             units, freqs, self.scale, **layer_kw))
            freqs //= freq_scale
        self.bottleneck = TFCTDFBlock(channel_counts[-1], channel_counts[-1], units, freqs,
                                      **layer_kw)
        self.decoder = nn.ModuleList()
        for index in reversed(range(num_scales)):
            freqs *= freq_scale
            self.decoder.append(DecoderScale(channel_counts[index + 1], channel_counts[index],
                                             units, freqs, self.scale, **layer_kw))
        self.final_conv = nn.Sequential(
            nn.Conv2d(num_channels + spec_channels, num_channels, 1, bias=False),
            make_act(act),
            nn.Conv2d(num_channels, len(self.sources) * spec_channels, 1, bias=False))
        # TDF hidden size at the bottom: a single value per map can't be instance-normed.
        bottom_hidden = dim_f // (num_subbands * freq_scale ** num_scales) // bottleneck_factor
        self.min_bottom_frames = 1 if bottom_hidden > 1 else 2

    # -- lengths ----------------------------------------------------------------------

    @property
    def frame_multiple(self) -> int:
        """The number of STFT frames must be a multiple of this (the time downscales)."""
        return self.scale[0] ** self.num_scales

    # -- forward ----------------------------------------------------------------------

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder, bottleneck and decoder on `[B, num_channels, frames, freqs]`."""
        skips = []
        for scale in self.encoder:
            x, skip = scale(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for scale in self.decoder:
            x = scale(x, skips.pop())
        return x

    def separate_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """`[B, C, n_fft // 2 + 1, frames]` complex mixture STFT -> `[B, S, C, n_fft // 2 + 1,
        frames]` complex source STFTs, zero above `dim_f` bins. `frames` must be a multiple
        of `frame_multiple`."""
        B, C, bins, frames = spec.shape
        mix = complex_to_channels(spec[:, :, :self.dim_f])
        mix = split_subbands(mix, self.num_subbands).transpose(-1, -2)  # [B, D, frames, f]
        first = self.first_conv(mix)
        x = self._unet(first) * first                                 # "reduce artifacts"
        x = self.final_conv(torch.cat([mix, x], dim=1))
        x = merge_subbands(x.transpose(-1, -2), self.num_subbands)    # [B, S * 2C, dim_f, T]
        x = F.pad(x.float(), (0, 0, 0, bins - self.dim_f))           # zero bins above dim_f
        return channels_to_complex(x.reshape(B, len(self.sources), 2 * C, bins, frames))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T >= 1."""
        length = mix.shape[-1]
        padded = self.valid_length(length)
        x = F.pad(mix, (0, padded - length))
        spec = spectro(x, self.n_fft, self.hop_length)
        sources = self.separate_spectrogram(spec)
        return ispectro(sources, self.hop_length, length=padded)[..., :length]
