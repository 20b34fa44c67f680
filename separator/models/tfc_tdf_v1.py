"""TFC-TDF U-Net as KUIELab trained it for the Music Demixing Challenge 2021 (`ConvTDFNet`).

Paper: "KUIELab-MDX-Net: A Two-Stream Neural Network for Music Demixing" (Kim, Choi, Chung,
Lee, Jung, MDX Workshop 2021), the time-frequency stream; after "Investigating U-Nets with
various intermediate blocks for spectrogram-based singing voice separation" (Choi et al.,
ISMIR 2020). Written from the paper and checked against the public code: kuielab/mdx-net
(`src/models/mdxnet.py` `ConvTDFNet`, `src/models/modules.py` `TFC_TDF`,
`configs/model/ConvTDFNet_<source>.yaml`, branches Leaderboard_A/B) and
kuielab/mdx-net-submission (`models.py` `Conv_TDF_net_trim`, the inference copy). The
SDX23 version (v3: subbands, residual units, concatenated skips) is `models/tfc_tdf.py`.

The network, for a mixture `[B, C, T]`:

* **STFT**: Hann (periodic), `n_fft`, `hop_length`, centred, *not* normalised (their
  `torch.stft` call: `spectro`'s values times `sqrt(n_fft)`, so that their weights and
  BatchNorm statistics see what they were trained on). Complex as channels
  `[B, 2C, bins, frames]` (left re, left im, right re, right im); only the `dim_f` lowest
  bins are kept. The output spectrogram is zero above them. MDX21 kept 2048 bins at hop
  1024 and chose n_fft per source, i.e. the cut-off: vocals 6144 (14.7 kHz), drums 4096
  (all but Nyquist), bass 16384 (5.5 kHz), other 8192 (11 kHz).
* **first conv**: 1x1 conv to `growth` channels, BatchNorm, ReLU; then the layout becomes
  `[B, channels, frames, freqs]`.
* `num_blocks // 2` **encoder scales**: a TFC-TDF block (its output is the skip), then a
  conv of kernel = stride = (2, 2) adding `growth` channels, BatchNorm, ReLU.
* A **TFC-TDF block** (no dense connections, unlike the ISMIR 2020 TFC): TFC =
  `num_layers` x (conv `kernel_size` x `kernel_size`, BatchNorm, ReLU), channels unchanged;
  then `x + TDF(x)` with TDF = Linear(f -> f // `bottleneck_factor`), BatchNorm, ReLU,
  Linear(back to f), BatchNorm, ReLU along the frequency axis, the same for every frame
  (`bottleneck_factor=0`: a single Linear(f -> f), BatchNorm, ReLU; `None`: no TDF).
  The linears have a bias only with `tdf_bias` (MDX21: none); every conv has one.
* A **bottleneck** TFC-TDF block at the deepest scale.
* `num_blocks // 2` **decoder scales**: transposed conv (2, 2) removing `growth` channels,
  BatchNorm, ReLU, **multiplied** elementwise by the encoder skip of that scale
  (multiplicative skip connections: no concatenation), a TFC-TDF block.
* A **final** 1x1 conv (with bias, no activation) to `2C` channels per source: the complex
  spectrogram of each source directly (no mask), then the iSTFT.

Sources: MDX21's models are one per source (`sources` of length 1). A longer list shares
the U-Net and gives each source its own `2C` output channels of the final conv (their
submission's multi-target `target_name='*'` layout, source-major): with one source the
model is exactly theirs. One STFT (one `n_fft`) per model: to give each source its own
cut-off, train one model per source (the `kuielab_<source>` variants).

State dict: the names of mdx-net's `ConvTDFNet` (whose Lightning checkpoints and the
published ONNX files come from): `first_conv.{0 conv, 1 bn}`, `encoding_blocks.i.tfc.H.j.
{0 conv, 1 bn}`, `encoding_blocks.i.tdf.{0 linear, 1 bn, 3 linear, 4 bn}`, `ds.i.{0, 1}`,
`bottleneck_block.*`, `us.i.{0 transposed conv, 1 bn}`, `decoding_blocks.i.*`,
`final_conv.0`. Their checkpoints also hold `window` and `freq_pad` (constant nn.Parameters:
drop them). The submission's `Conv_TDF_net_trim` names map as `ds_dense.i.H.j` ->
`encoding_blocks.i.tfc.H.j`, `ds_dense.i.tdf` -> `encoding_blocks.i.tdf`, `mid_dense.H` ->
`bottleneck_block.tfc.H`, `mid_dense.tdf` -> `bottleneck_block.tdf`, `us_dense` ->
`decoding_blocks` (same `H` -> `tfc.H`); `first_conv`, `ds`, `us`, `final_conv` unchanged.
Their ONNX graphs (input `input` `[B, 4, 2048, frames]`, output `output`, same shape; the
frames fixed at export: 512 in the leaderboard branches) are `network` below, on the
unnormalised STFT; an importer would read their initializers (BatchNorms may be folded into
the preceding convs there).

Lengths: each scale halves frames and bins, so the frames must be a multiple of
`2 ** (num_blocks // 2)` (32 for MDX21) and `dim_f` must be one. The input is zero-padded
at the end to a length whose `length // hop_length + 1` frames are such a multiple (and
longer than `n_fft // 2`, for the STFT's reflect padding); the output is trimmed back to
`T`. Any `T >= 1` works. MDX21 trained on chunks of `hop * (dim_t - 1)` = 261120 samples
(5.92 s), i.e. `dim_t` = 256 frames: the default `segment`.

Size: MDX21's published config (`num_blocks=11, num_layers=3, growth=32, kernel_size=3,
bottleneck_factor=8, dim_f=2048`, stereo, one source) has 7,423,236 parameters whatever the
n_fft (their ONNX files of this config, 29,703,204 bytes each, are these float32 weights and
a graph of 10-20 KB); their leaderboard B drums model (`num_blocks=9`) 5,480,196.

Recommended small config (0.10 M parameters with 4 stereo sources, most of them in the
TDF linears of the first scale)::

    ConvTDFNet(sources, n_fft=1024, hop_length=256, dim_f=256, num_blocks=5, num_layers=1,
               growth=8, bottleneck_factor=4)

One training step of it (forward + backward + Adam, batch 4 x 1 s stereo at 44.1 kHz) takes
about 0.3 s on one CPU thread. It learns more slowly than v3's small config (no path from
the mixture to the output but through the U-Net, no mask): with MDX21's loss (MSE on the
waveforms) it beats silence and the mixture on every source of the synthetic tiny XP after
48 steps of Adam at lr 1e-2.
"""
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..spec import channels_to_complex, complex_to_channels, ispectro, spectro
from .tfc_tdf import PaddedFrames, check_positive, check_stft_bins


def conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    """The post-activation pattern of the network: a layer, BatchNorm, ReLU (indices 0, 1, 2
    as in the reference state dicts)."""
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())


class TFC(nn.Module):
    """Time-frequency convolutions: `layers` x (conv k x k, BatchNorm, ReLU), `channels` to
    `channels`, not densely connected. The list is `H` as in the reference."""
    def __init__(self, channels: int, layers: int, kernel_size: int):
        super().__init__()
        self.H = nn.ModuleList(
            conv_bn_relu(nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2),
                         channels)
            for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.H:
            x = layer(x)
        return x


def make_tdf(channels: int, freqs: int, bottleneck_factor: int, bias: bool) -> nn.Sequential:
    """Time-distributed fully connected layers along the last (frequency) axis, each followed
    by BatchNorm and ReLU: f -> f // bottleneck_factor -> f, or a single f -> f when
    `bottleneck_factor` is 0."""
    if bottleneck_factor == 0:
        return conv_bn_relu(nn.Linear(freqs, freqs, bias=bias), channels)
    hidden = freqs // bottleneck_factor
    return nn.Sequential(*conv_bn_relu(nn.Linear(freqs, hidden, bias=bias), channels),
                         *conv_bn_relu(nn.Linear(hidden, freqs, bias=bias), channels))


class TFCTDF(nn.Module):
    """A TFC-TDF block: `x = TFC(x)`, then `x + TDF(x)` (no TDF if `bottleneck_factor` is
    None). Feature maps are `[B, channels, frames, freqs]`."""
    def __init__(self, channels: int, layers: int, freqs: int, kernel_size: int,
                 bottleneck_factor: tp.Optional[int], bias: bool):
        super().__init__()
        self.tfc = TFC(channels, layers, kernel_size)
        self.tdf = (None if bottleneck_factor is None
                    else make_tdf(channels, freqs, bottleneck_factor, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tfc(x)
        return x if self.tdf is None else x + self.tdf(x)


def check_blocks(num_blocks: int, dim_f: int, bottleneck_factor: tp.Optional[int]) -> None:
    """Raise a ValueError naming the fix unless the blocks make a U-Net whose frequency axis
    halves exactly at every scale, with at least one TDF hidden unit at the bottom."""
    if num_blocks < 1 or num_blocks % 2 == 0:
        raise ValueError(f"num_blocks={num_blocks} must be odd and >= 1 (num_blocks // 2 "
                         f"encoder blocks, the bottleneck block, as many decoder blocks): "
                         f"e.g. num_blocks=11 (MDX21).")
    if bottleneck_factor is not None and bottleneck_factor < 0:
        raise ValueError(f"bottleneck_factor must be >= 0 (0: a single f -> f linear) or "
                         f"null (no TDF), got {bottleneck_factor}.")
    multiple = 2 ** (num_blocks // 2)
    if dim_f % multiple:
        lower = dim_f // multiple * multiple
        hint = f"dim_f={lower} or {lower + multiple}" if lower else f"dim_f={multiple}"
        raise ValueError(f"dim_f={dim_f} must be a multiple of 2 ** (num_blocks // 2) = "
                         f"{multiple} (every scale halves the bins): use {hint}, or fewer "
                         f"blocks.")
    bottom = dim_f // multiple
    if bottleneck_factor and bottom < bottleneck_factor:
        raise ValueError(f"The deepest scale has dim_f / 2 ** (num_blocks // 2) = {bottom} "
                         f"bins, fewer than bottleneck_factor={bottleneck_factor}, so its TDF "
                         f"would have no hidden unit: use bottleneck_factor<={bottom}, a "
                         f"larger dim_f, or fewer blocks.")


class ConvTDFNet(PaddedFrames, SeparationModel):
    """KUIELab's MDX21 TFC-TDF U-Net (`ConvTDFNet`). See the module docstring.

    Args (their config keys in brackets):
        sources: names of the sources [target_name]; MDX21's models have one.
        audio_channels: 1 (mono) or 2 (stereo) [dim_c = 2 * audio_channels].
        samplerate, segment: metadata; `segment` is the training segment in seconds (the
            default is MDX21's chunk of 261120 samples, 256 frames [dim_t] of hop 1024).
        n_fft, hop_length: STFT size and hop [n_fft, hop_length].
        dim_f: number of low STFT bins the network sees; the output is zero above them
            [dim_f]. A multiple of `2 ** (num_blocks // 2)`.
        num_blocks: TFC-TDF blocks, odd: `num_blocks // 2` scales [num_blocks, L].
        num_layers: conv layers of each TFC [l].
        growth: channels of the first scale, added at each downscale [g].
        kernel_size: of the TFC convs [k].
        bottleneck_factor: TDF hidden size = bins / this; 0: one f -> f linear; None: no
            TDF [bn].
        tdf_bias: bias of the TDF linears [bias].
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 261120 / 44100,
                 n_fft: int = 6144, hop_length: int = 1024, dim_f: int = 2048,
                 num_blocks: int = 11, num_layers: int = 3, growth: int = 32,
                 kernel_size: int = 3, bottleneck_factor: tp.Optional[int] = 8,
                 tdf_bias: bool = False):
        super().__init__(sources, audio_channels, samplerate, segment)
        check_positive(audio_channels=audio_channels, num_layers=num_layers, growth=growth)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd (a 'same' convolution): "
                             f"e.g. kernel_size=3.")
        check_stft_bins(n_fft, hop_length, dim_f)
        check_blocks(num_blocks, dim_f, bottleneck_factor)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.dim_f = dim_f
        self.num_scales = num_blocks // 2
        # torch.stft's unnormalised values, which the reference weights expect
        self.stft_scale = math.sqrt(n_fft)

        dim_c = 2 * audio_channels
        block_kw = {'layers': num_layers, 'kernel_size': kernel_size,
                    'bottleneck_factor': bottleneck_factor, 'bias': tdf_bias}
        self.first_conv = conv_bn_relu(nn.Conv2d(dim_c, growth, 1), growth)
        self.encoding_blocks = nn.ModuleList()
        self.ds = nn.ModuleList()
        channels, freqs = growth, dim_f
        for _ in range(self.num_scales):
            self.encoding_blocks.append(TFCTDF(channels, freqs=freqs, **block_kw))
            self.ds.append(conv_bn_relu(nn.Conv2d(channels, channels + growth, 2, stride=2),
                                        channels + growth))
            channels, freqs = channels + growth, freqs // 2
        self.bottleneck_block = TFCTDF(channels, freqs=freqs, **block_kw)
        self.us = nn.ModuleList()
        self.decoding_blocks = nn.ModuleList()
        for _ in range(self.num_scales):
            self.us.append(conv_bn_relu(
                nn.ConvTranspose2d(channels, channels - growth, 2, stride=2), channels - growth))
            channels, freqs = channels - growth, freqs * 2
            self.decoding_blocks.append(TFCTDF(channels, freqs=freqs, **block_kw))
        self.final_conv = nn.Sequential(nn.Conv2d(growth, len(self.sources) * dim_c, 1))
        # BatchNorm needs 2 values per channel in training: 2 frames at the bottom if a
        # single bin (or TDF unit) is left there.
        bottom = dim_f // 2 ** self.num_scales
        hidden = bottom // bottleneck_factor if bottleneck_factor else bottom
        self.min_bottom_frames = 1 if min(bottom, hidden) > 1 else 2

    # -- lengths ----------------------------------------------------------------------

    @property
    def frame_multiple(self) -> int:
        """The number of STFT frames must be a multiple of this (the time downscales)."""
        return 2 ** self.num_scales

    # -- forward ----------------------------------------------------------------------

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's `ConvTDFNet.forward` (and its ONNX graphs): `[B, 2C, dim_f,
        frames]` unnormalised STFT, complex as channels -> `[B, S * 2C, dim_f, frames]`."""
        x = self.first_conv(x).transpose(-1, -2)          # [B, channels, frames, freqs]
        skips = []
        for block, down in zip(self.encoding_blocks, self.ds):
            x = block(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck_block(x)
        for up, block in zip(self.us, self.decoding_blocks):
            x = block(up(x) * skips.pop())                 # multiplicative skip connection
        return self.final_conv(x.transpose(-1, -2))

    def separate_spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """`[B, C, n_fft // 2 + 1, frames]` complex mixture STFT (`spectro`'s normalised
        scale) -> `[B, S, C, n_fft // 2 + 1, frames]` complex source STFTs, zero above
        `dim_f` bins. `frames` must be a multiple of `frame_multiple`."""
        B, C, bins, frames = spec.shape
        x = complex_to_channels(spec[:, :, :self.dim_f]) * self.stft_scale
        x = self.network(x).float() / self.stft_scale
        x = F.pad(x, (0, 0, 0, bins - self.dim_f))        # zero bins above dim_f
        return channels_to_complex(x.reshape(B, len(self.sources), 2 * C, bins, frames))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T >= 1."""
        length = mix.shape[-1]
        padded = self.valid_length(length)
        x = F.pad(mix, (0, padded - length))
        sources = self.separate_spectrogram(spectro(x, self.n_fft, self.hop_length))
        return ispectro(sources, self.hop_length, length=padded)[..., :length]
