"""D3Net U-Net with local attention: Kazane Ryo no Danna's MDX21 model 2 (`model=d3unet`).

A Spleeter-like magnitude-mask U-Net (Hennequin et al., JOSS 2020) whose convolutions are D3
blocks ("Densely connected multidilated convolutional networks for dense prediction tasks",
Takahashi & Mitsufuji, CVPR 2021: D3Net), with two layers of 2-D local self-attention at the
bottleneck (after Parmar et al.'s Image Transformer, as used by Wu, Chen & Su, TASLP 2020).
Written from the paper, and checked for the structure and sizes against danna's public code
(yoyololicon/music-demixing-challenge-ismir-2021-entry, `model/unet_att.py`,
`model/d3net.py`, `configs/unet_attn.json`); the code here is our own.

For a mixture `[B, C, T]`:

* **STFT** (`spectro`: Hann, `n_fft` 4096, `hop_length` 1024, centred, normalised); the
  network sees the magnitudes of the `bins` lowest bins (danna: 1487, up to 16 kHz), laid out
  `[B, C, bins, frames]`, zero-padded to multiples of `2 ** len(layers)` on both axes.
* **D2 block** (growth `k`, `L` layers): layer `j` outputs `k` channels, BN-ReLU of a sum of
  3x3 convolutions, one per earlier feature map, the map `x_i` (`x_0` the block's input,
  `x_i` the output of layer `i - 1`) convolved with dilation `2 ** i`: the paper's
  multi-dilated convolution, each incoming group with its own dilation, so that the small
  dilations see the fine early features and the receptive field still doubles at each
  layer without aliasing. Computed as danna does: one conv per map, of dilation `2 ** i`,
  giving the `k` channels of each later layer at once (`k * (L - i)` channels; no bias, since
  BatchNorm follows). The block outputs all its layers' outputs concatenated (`k * L`).
* **D3 block** (`d2_blocks` = M): M D2 blocks densely connected: each sees the
  concatenation of the block's input and all earlier D2 outputs; the block outputs that
  concatenation with the last D2 output too (`in + M * k * L` channels).
* **Encoder**: per scale `i`, a D3 block of `layers[i]` layers per D2 block, then a 2x2
  average pooling (time and frequency). Its output is the skip of that scale; the deepest
  one goes to the bottleneck.
* **Bottleneck**: `attention_layers` (2) of local attention, each a 3x3 conv to queries, keys
  and values (`attention_dim`, split in `attention_heads` heads), windowed multi-head
  attention, a 3x3 conv (no bias) to `attention_channels`, BatchNorm, ReLU. Queries are
  grouped in blocks of `attention_block` = (bins, frames) (0: the whole axis; danna: all
  bins, 2 frames); each block attends to its own positions plus `attention_flange` =
  (bins, frames) around them (danna: 0, 3 frames). Keys outside the feature map are masked
  (danna's code let its zero padding in with a logit of 0: a `-1e-9` that was meant to be
  `-1e9`). The attention output is concatenated to its input.
* **Decoder**: per scale `i` from the second deepest up: a D3 block (`layers[i]`), a 3x3
  stride-2 transposed conv (no bias) to the channels of encoder scale `i`, BN, ReLU,
  `Dropout2d(dropout)` for the three deepest, then concatenation with the skip of scale `i`.
  Then a 5x5 stride-2 transposed conv back to the full size, BN, ReLU, and a 3x3 conv of
  dilation 2 to `S * C` mask logits.
* **Masks**: a sigmoid, one map per source and channel; above `bins` every mask is `1 / S`
  (danna: 0.25 for 4 sources; the high bins are split evenly, so the sources sum to the
  mixture there). The masks multiply the complex mixture STFT (mixture phase), and the
  inverse STFT gives exactly `T` samples. Any `T >= 1` works (a mixture shorter than
  `n_fft // 2 + 1` samples is zero-padded for the STFT, then trimmed).

danna trains on 11.88 s (512 frames) with their X-UMX loss (`optim.loss=xumx_mwf`: the
squared error of the complex STFTs of the 14 source combinations plus 10 x the combination
SDR of the waveforms; the model returns its complex STFTs for it, `with_spectrograms`), and
applies one multichannel Wiener iteration at inference (a bag setting here:
`separator.wiener`).

Differences from danna's code (same structure and parameter count): the spectrogram is the
normalised STFT (the first D2 layer's BatchNorm removes the scale); the padding makes every
scale exact (transposed convs with `output_padding=1`) instead of cropping and re-padding;
the masks above `bins` are `1 / S`; attention masks its padding.

Size: the defaults (`layers=[5, 4, 3, 2, 2, 2], growth=12, d2_blocks=2,
attention_channels=256, attention_dim=128, attention_heads=8`) have 15.68 M parameters
with 4 stereo sources (danna's `UNetAttn()`: the same layers and widths, 122 to 434 channels
down the encoder): 5.7 M in the two deepest decoder scales, 3.0 M in the attention.

Recommended small config (0.72 M parameters with 4 stereo sources)::

    D3UNet(sources, n_fft=1024, hop_length=512, bins=256, layers=[2, 2, 2, 2], growth=8,
           attention_channels=32, attention_dim=16, attention_heads=2)

One training step of it (forward + backward + Adam, batch 4 x 1 s stereo at 44.1 kHz) takes
about 1.3 s on one CPU thread: the D3 blocks run at the full resolution of the first scales,
so a D3Net costs more per parameter than the strided U-Nets.
"""
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..spec import check_stft, ispectro, spectro

DROPOUT_LAYERS = 3          # the deepest decoder scales that drop out (danna's, as Spleeter)


# ----------------------------------------------------------------------------------------
# D2 and D3 blocks. Feature maps are `[B, channels, freqs, frames]`.


class D2Block(nn.Module):
    """`layers` densely connected layers of multi-dilated 3x3 convs, `growth` channels each;
    outputs their concatenation (`growth * layers` channels). See the module docstring."""

    def __init__(self, in_channels: int, growth: int, layers: int):
        super().__init__()
        self.growth = growth
        # Conv `i` reads map x_i (the input, then layer i-1's output) with dilation 2 ** i and
        # gives its share of every layer j >= i at once.
        self.convs = nn.ModuleList([
            nn.Conv2d(in_channels if i == 0 else growth, growth * (layers - i), 3,
                      padding=2 ** i, dilation=2 ** i, bias=False)
            for i in range(layers)])
        self.norms = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(growth), nn.ReLU())
                                    for _ in range(layers)])

    @property
    def out_channels(self) -> int:
        return self.growth * len(self.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pending: tp.List[torch.Tensor] = []   # sums waiting for the later layers
        outputs = []
        for conv, norm in zip(self.convs, self.norms):
            shares = list(conv(x).split(self.growth, 1))
            if pending:
                shares = [share + waiting for share, waiting in zip(shares, pending)]
            x = norm(shares[0])
            pending = shares[1:]
            outputs.append(x)
        return torch.cat(outputs, 1)


class D3Block(nn.Module):
    """`blocks` D2 blocks, each fed the concatenation of the input and the earlier D2
    outputs; outputs the input and every D2 output concatenated."""

    def __init__(self, in_channels: int, blocks: int, growth: int, layers: int):
        super().__init__()
        self.d2 = nn.ModuleList([D2Block(in_channels + b * growth * layers, growth, layers)
                                 for b in range(blocks)])
        self.out_channels = in_channels + blocks * growth * layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for d2 in self.d2:
            features.append(d2(torch.cat(features, 1)))
        return torch.cat(features, 1)


# ----------------------------------------------------------------------------------------
# 2-D local attention


def _blocks_of(x: torch.Tensor, block: tp.Sequence[int], flange: tp.Sequence[int]
               ) -> torch.Tensor:
    """`[B, H, D, F, T]` padded by `flange` on both sides -> the windows of every query
    block, `[B, H, nF, nT, window positions, D]` (window = block + flange on each side)."""
    window_f, window_t = block[0] + 2 * flange[0], block[1] + 2 * flange[1]
    windows = x.unfold(3, window_f, block[0]).unfold(4, window_t, block[1])
    B, H, D, nF, nT = windows.shape[:5]
    return windows.permute(0, 1, 3, 4, 5, 6, 2).reshape(B, H, nF, nT, window_f * window_t, D)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    block: tp.Sequence[int], flange: tp.Sequence[int]) -> torch.Tensor:
    """Blocked 2-D local attention. `q, k, v`: `[B, heads, D, F, T]` (q already scaled).

    The `F x T` grid is cut into query blocks of `block` = (bins, frames) (0: the whole
    axis); the queries of a block attend to the keys of the block widened by `flange` =
    (bins, frames) on each side, within the grid (positions outside it are masked).
    Returns `[B, heads, D, F, T]`."""
    B, H, D, Fr, T = q.shape
    block = [block[0] or Fr, block[1] or T]
    pad_f, pad_t = (-Fr) % block[0], (-T) % block[1]
    nF, nT = (Fr + pad_f) // block[0], (T + pad_t) // block[1]
    queries = F.pad(q, (0, pad_t, 0, pad_f)).reshape(B, H, D, nF, block[0], nT, block[1])
    queries = queries.permute(0, 1, 3, 5, 4, 6, 2).reshape(B, H, nF, nT, -1, D)
    around = (flange[1], flange[1] + pad_t, flange[0], flange[0] + pad_f)
    keys = _blocks_of(F.pad(k, around), block, flange)
    values = _blocks_of(F.pad(v, around), block, flange)
    inside = F.pad(torch.ones_like(q[:1, :1, :1], dtype=torch.bool), around)
    inside = _blocks_of(inside, block, flange)[0, 0, :, :, None, :, 0]   # [nF, nT, 1, W]
    logits = (queries @ keys.transpose(-1, -2)).masked_fill(~inside, float('-inf'))
    out = logits.softmax(-1) @ values                                    # [B, H, nF, nT, Q, D]
    out = out.reshape(B, H, nF, nT, block[0], block[1], D).permute(0, 1, 6, 2, 4, 3, 5)
    return out.reshape(B, H, D, nF * block[0], nT * block[1])[..., :Fr, :T]


class LocalAttention(nn.Module):
    """A 3x3 conv to queries, keys, values (`dim` each), multi-head `local_attention`, a 3x3
    conv (no bias) to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, heads: int,
                 block: tp.Sequence[int], flange: tp.Sequence[int]):
        super().__init__()
        self.heads = heads
        self.block = [int(b) for b in block]
        self.flange = [int(f) for f in flange]
        self.qkv = nn.Conv2d(in_channels, 3 * dim, 3, padding=1)
        self.out = nn.Conv2d(dim, out_channels, 3, padding=1, bias=False)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, in, F, T]` -> the attention output `[B, dim, F, T]` (before `out`)."""
        B, _, Fr, T = x.shape
        q, k, v = self.qkv(x).reshape(B, self.heads, 3, -1, Fr, T).unbind(2)
        q = q * q.shape[2] ** -0.5
        out = local_attention(q, k, v, self.block, self.flange)
        return out.reshape(B, -1, Fr, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attend(x))


# ----------------------------------------------------------------------------------------
# The U-Net


class Bottleneck(nn.Module):
    """`layers` of LocalAttention-BN-ReLU; returns the input and their output concatenated."""

    def __init__(self, in_channels: int, channels: int, dim: int, heads: int, layers: int,
                 block: tp.Sequence[int], flange: tp.Sequence[int]):
        super().__init__()
        self.attention = nn.Sequential(*[
            nn.Sequential(LocalAttention(in_channels if index == 0 else channels, channels,
                                         dim, heads, block, flange),
                          nn.BatchNorm2d(channels), nn.ReLU())
            for index in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.attention(x)], 1)


def up_stage(d3: D3Block, out_channels: int, dropout: float) -> nn.Sequential:
    """A decoder scale: D3 block, 3x3 stride-2 transposed conv (exactly twice the size),
    BN, ReLU, dropout (`dropout` 0: none)."""
    return nn.Sequential(
        d3, nn.ConvTranspose2d(d3.out_channels, out_channels, 3, stride=2, padding=1,
                               output_padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.Dropout2d(dropout) if dropout else nn.Identity())


class D3AttentionUNet(nn.Module):
    """Magnitudes `[B, C, F, T]` (F and T multiples of `2 ** len(layers)`) -> mask logits
    `[B, outputs, F, T]`. See the module docstring."""

    def __init__(self, channels: int, outputs: int, layers: tp.Sequence[int], growth: int,
                 d2_blocks: int, attention_channels: int, attention_dim: int,
                 attention_heads: int, attention_layers: int, attention_block: tp.Sequence[int],
                 attention_flange: tp.Sequence[int], dropout: float):
        super().__init__()
        self.down = nn.ModuleList()
        widths = []                     # output channels of each encoder scale
        for depth_layers in layers:
            d3 = D3Block(channels, d2_blocks, growth, depth_layers)
            self.down.append(nn.Sequential(d3, nn.AvgPool2d(2)))
            channels = d3.out_channels
            widths.append(channels)
        self.bottleneck = Bottleneck(channels, attention_channels, attention_dim,
                                     attention_heads, attention_layers, attention_block,
                                     attention_flange)
        channels += attention_channels
        self.up = nn.ModuleList()
        for index in range(len(layers) - 2, -1, -1):
            d3 = D3Block(channels, d2_blocks, growth, layers[index])
            dropped = len(self.up) < DROPOUT_LAYERS
            self.up.append(up_stage(d3, widths[index], dropout if dropped else 0.))
            channels = 2 * widths[index]
        self.end = nn.Sequential(
            nn.ConvTranspose2d(channels, widths[0], 5, stride=2, padding=2, output_padding=1,
                               bias=False),
            nn.BatchNorm2d(widths[0]), nn.ReLU(),
            nn.Conv2d(widths[0], outputs, 3, padding=2, dilation=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = self.bottleneck(skips.pop())
        for stage in self.up:
            x = torch.cat([stage(x), skips.pop()], 1)
        return self.end(x)


def check_hyperparams(audio_channels: int, n_fft: int, hop_length: int, bins: int,
                      layers: tp.Sequence[int], growth: int, d2_blocks: int,
                      attention_channels: int, attention_dim: int, attention_heads: int,
                      attention_layers: int, attention_block: tp.Sequence[int],
                      attention_flange: tp.Sequence[int], dropout: float) -> None:
    """Raise a ValueError naming the fix for any invalid hyper-parameter of `D3UNet`."""
    if audio_channels < 1:
        raise ValueError(f"audio_channels must be >= 1, got {audio_channels}.")
    check_stft(n_fft, hop_length, 'n_fft')
    if not 1 <= bins <= n_fft // 2 + 1:
        raise ValueError(f"bins={bins} must be between 1 and n_fft // 2 + 1 = "
                         f"{n_fft // 2 + 1}.")
    if len(layers) < 2 or any(int(n) != n or n < 1 for n in layers):
        raise ValueError(f"layers={list(layers)} must list >= 2 positive integers, the D2 "
                         f"layers of each scale (danna's [5, 4, 3, 2, 2, 2]).")
    for name, value in [('growth', growth), ('d2_blocks', d2_blocks),
                        ('attention_channels', attention_channels),
                        ('attention_layers', attention_layers),
                        ('attention_heads', attention_heads)]:
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if attention_dim < 1 or attention_dim % attention_heads:
        raise ValueError(f"attention_dim={attention_dim} must be a positive multiple of "
                         f"attention_heads={attention_heads}.")
    if (len(attention_block) != 2 or len(attention_flange) != 2
            or min(attention_block) < 0 or min(attention_flange) < 0):
        raise ValueError(f"attention_block={list(attention_block)} and attention_flange="
                         f"{list(attention_flange)} must be [bins, frames] pairs of integers "
                         f">= 0 (a block of 0: the whole axis), e.g. [0, 2] and [0, 3].")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout} must be in [0, 1).")


class D3UNet(SeparationModel):
    """danna's D3Net U-Net with local attention (MDX21 model 2). See the module docstring.

    Args:
        sources: names of the sources (one mask per source and channel).
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate, segment: metadata; `segment` is the training segment in seconds (danna:
            11.88 s, 512 frames).
        n_fft, hop_length: STFT size (Hann window of that length) and hop.
        bins: the lowest STFT bins the network sees; the masks above are `1 / len(sources)`.
        layers: D2 layers per D2 block at each scale (encoder and decoder alike); its length
            is the number of scales.
        growth: channels of each D2 layer (D3Net's growth rate k).
        d2_blocks: D2 blocks per D3 block (M).
        attention_channels: output channels of each attention layer.
        attention_dim: query/key/value channels (all heads together).
        attention_heads: attention heads.
        attention_layers: attention layers at the bottleneck.
        attention_block: [bins, frames] of a query block at the bottleneck (0: the whole axis).
        attention_flange: [bins, frames] that each block's keys reach beyond it, each side.
        dropout: Dropout2d after the three deepest decoder scales (train mode).
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 11.88, n_fft: int = 4096, hop_length: int = 1024,
                 bins: int = 1487, layers: tp.Sequence[int] = (5, 4, 3, 2, 2, 2),
                 growth: int = 12, d2_blocks: int = 2, attention_channels: int = 256,
                 attention_dim: int = 128, attention_heads: int = 8, attention_layers: int = 2,
                 attention_block: tp.Sequence[int] = (0, 2),
                 attention_flange: tp.Sequence[int] = (0, 3), dropout: float = 0.4):
        check_hyperparams(audio_channels, n_fft, hop_length, bins, layers, growth, d2_blocks,
                          attention_channels, attention_dim, attention_heads, attention_layers,
                          attention_block, attention_flange, dropout)
        super().__init__(sources, audio_channels, samplerate, segment)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.bins = bins
        self.scale = 2 ** len(layers)
        self.network = D3AttentionUNet(
            audio_channels, len(self.sources) * audio_channels, list(layers), growth,
            d2_blocks, attention_channels, attention_dim, attention_heads, attention_layers,
            list(attention_block), list(attention_flange), dropout)

    def masks(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Mixture magnitudes `[B, C, bins, N]` -> masks `[B, S, C, n_fft // 2 + 1, N]`."""
        B, C, Fr, N = magnitude.shape
        x = F.pad(magnitude, (0, (-N) % self.scale, 0, (-Fr) % self.scale))
        masks = self.network(x)[..., :Fr, :N].sigmoid().reshape(B, -1, C, Fr, N)
        rest = self.n_fft // 2 + 1 - Fr
        return F.pad(masks, (0, 0, 0, rest), value=1 / len(self.sources))

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """Complex STFT `[*, T]` -> `[*, n_fft // 2 + 1, N]`, `wav` zero-padded to more than
        `n_fft // 2` samples (the reflect padding needs it); also the targets of
        `optim.loss=xumx_mwf` (danna's complex-spectrogram loss)."""
        length = wav.shape[-1]
        padded = max(length, self.n_fft // 2 + 1)
        return spectro(F.pad(wav, (0, padded - length)), self.n_fft, self.hop_length)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Magnitude STFT `[*, T]` -> `[*, F, N]` (the targets of `optim.loss=xumx`)."""
        return self.stft(wav).abs()

    def forward(self, mix: torch.Tensor, with_spectrograms: bool = False,
                with_magnitudes: bool = False) -> tp.Any:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T >= 1; with
        `with_spectrograms` (or `with_magnitudes`) also their complex STFTs (or magnitudes)
        `[B, S, C, F, N]`, for the multi-domain losses (`optim.loss=xumx_mwf`, `xumx`)."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"Expected a mixture [batch, {self.audio_channels}, time], "
                             f"got {tuple(mix.shape)}.")
        length = mix.shape[-1]
        spec = self.stft(mix)
        masks = self.masks(spec[:, :, :self.bins].abs())
        # Real-valued product (as `spec.with_phase_of`), which ONNX export translates.
        masked = torch.view_as_complex((torch.view_as_real(spec)[:, None]
                                        * masks[..., None]).contiguous())
        padded = max(length, self.n_fft // 2 + 1)
        sources = ispectro(masked, self.hop_length, padded)[..., :length].to(mix.dtype)
        if with_spectrograms:
            return sources, masked
        if with_magnitudes:
            return sources, masked.abs()
        return sources
