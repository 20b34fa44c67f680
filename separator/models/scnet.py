"""SCNet: Sparse Compression Network (Tong et al., "SCNet: Sparse Compression Network for Music
Source Separation", ICASSP 2024, arXiv:2401.13276).

Written from the paper and checked against the public code (starrytong/SCNet, MIT:
`scnet/SCNet.py`, `scnet/separation.py`, `conf/config.yaml`). Constructor arguments keep the
reference's names (`nfft`, `hop_size`, `band_SR`, ...) and the parameters its module names, so
that its checkpoints load unchanged (`separator/importers/scnet.py`).

The network, for a mixture `[B, C, T]`:

* **Padding**: zeros at the end, one to two hops, so that the padded length is a multiple of
  `hop_size` with an odd quotient: the STFT then has an even number of frames, which the
  separation network's FFT along time needs (the reference's rule; here also at least
  `nfft // 2 + 1` samples, which the reference does not handle: inputs under 2048 samples).
* **STFT**: `nfft`, `hop_size`, centred (reflect), `normalized`, and a *rectangular* window
  of `win_size` ones (the reference passes no window to `torch.stft`). Complex as channels
  `[B, 2C, nfft // 2 + 1, frames]` (channel `2c` real, `2c + 1` imaginary), then divided by
  the standard deviation of all of it after removing its mean (per example); the output is
  scaled back with the same numbers.
* **Encoder**: `len(dims) - 1` sparse down-sample (SD) blocks. An SD block splits the
  frequency axis into three bands, low/mid/high: the first `ceil(F * band_SR[0])` bins, up to
  `ceil(F * (band_SR[0] + band_SR[1]))`, the rest (the third ratio is not used). Each band
  has its own conv over frequency (kernel `band_kernel[i]` x 1, stride `band_stride[i]`; the
  band is zero-padded so that stride 1 keeps its size and a stride > 1 divides it), then its
  own convolution module of `conv_depths[i]` residual layers run along time for each bin
  (GroupNorm, 1-d conv to 2h channels, GLU, depthwise conv, GroupNorm, Swish, 1x1 conv back;
  h = channels / `compress`, kernels `conv_kernel`), then GELU. The bands are concatenated
  again (that is the skip), and a 3x3 "global" conv gives the block's output. With the
  defaults, 2049 bins (bands of 359, 803, 887) become 359 + 201 + 56 = 616, then 108 + 61 +
  17 = 186, then 33 + 19 + 5 = 57 at the separation network.
* **Separation network**: `num_dplayer` dual-path layers at `dims[-1]` channels. A dual-path
  layer is a residual BLSTM along frequency (each frame), then one along time (each bin):
  GroupNorm(1), BLSTM of `expand` x channels per direction, Linear back, plus the input.
  Between layers the features switch domain: after even layers an orthonormal real FFT along
  time (real and imaginary parts stacked as channels: 2x the channels, frames // 2 + 1
  "frames"), after odd layers the inverse FFT. So odd layers run on twice the channels in
  the time-frequency domain of the features, and `num_dplayer` must be even.
* **Decoder**: per scale, deepest first, a fusion layer (add the skip, repeat the channels
  twice, 3x3 conv, GLU) then a sparse up-sample (SU) layer: per band, a transposed conv
  (kernel, stride of the band) cut back symmetrically to the band's size before the SD
  layer. The last one outputs `dims[0] * len(sources)` channels: one complex-as-channels
  spectrogram per source (channel `s * 2C + 2c + re/im`), directly (no mask).
* **iSTFT** with the same settings, cut to `T` samples.

Size (4 stereo sources): the published SCNet config (`dims=[4, 32, 64, 128]`, `num_dplayer=6`,
the other defaults here) has 10,578,768 parameters (8.89 M of them in the separation
network), which the paper reports as 10.08 M (10,578,768 / 2 ** 20 = 10.09). SCNet-large
(`dims=[4, 64, 128, 256]`, `band_SR=[0.225, 0.372, 0.403]`) has 42,181,232 (40.2 x 2 ** 20).
The band ratios do not change the parameter count.

Recommended small config (learns on CPU)::

    SCNet(sources, nfft=512, hop_size=128, win_size=512, dims=[4, 16, 32],
          conv_depths=[1, 1, 1], num_dplayer=2)
"""
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..spec import _istft_overlap_add, channels_to_complex, complex_to_channels

# An SD block's output, skip, band sizes after and before its SD layer.
BlockOutput = tp.Tuple[torch.Tensor, torch.Tensor, tp.List[int], tp.List[int]]


# ----------------------------------------------------------------------------------------
# Band arithmetic (the reference's rules, on the frequency axis)


def band_bounds(freqs: int, band_SR: tp.Sequence[float]) -> tp.List[tp.Tuple[int, int]]:
    """The (start, end) bins of the low, mid and high bands of `freqs` bins."""
    low = math.ceil(freqs * band_SR[0])
    mid = math.ceil(freqs * (band_SR[0] + band_SR[1]))
    return [(0, low), (low, mid), (mid, freqs)]


def band_padding(size: int, stride: int, kernel: int) -> tp.Tuple[int, int]:
    """Zeros (before, after) a band of `size` bins before its SD conv: `kernel - 1` for a
    stride of 1 (the size is kept), else up to a multiple of the stride."""
    total = kernel - 1 if stride == 1 else (stride - size % stride) % stride
    return total // 2, total - total // 2


def band_output(size: int, stride: int, kernel: int) -> int:
    """Bins of a band of `size` bins after its padding and SD conv."""
    return (size + sum(band_padding(size, stride, kernel)) - kernel) // stride + 1


# ----------------------------------------------------------------------------------------
# Encoder


class ConvolutionModule(nn.Module):
    """`depth` residual layers on `[N, channels, time]`: GroupNorm(1), conv to 2h, GLU,
    depthwise conv, GroupNorm(1), Swish, 1x1 conv back (h = channels / compress)."""
    def __init__(self, channels: int, depth: int, compress: float, kernel: int):
        super().__init__()
        hidden = int(channels / compress)
        self.layers = nn.ModuleList([nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.Conv1d(channels, 2 * hidden, kernel, padding=kernel // 2),
            nn.GLU(1),
            nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden),
            nn.GroupNorm(1, hidden),
            nn.SiLU(),        # Swish: x * sigmoid(x)
            nn.Conv1d(hidden, channels, 1),
        ) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class SparseDownsample(nn.Module):
    """The SD layer: the three bands, each padded and through its own strided conv."""
    def __init__(self, channels_in: int, channels_out: int, band_SR: tp.Sequence[float],
                 band_stride: tp.Sequence[int], band_kernel: tp.Sequence[int]):
        super().__init__()
        self.band_SR = list(band_SR)
        self.strides = list(band_stride)
        self.kernels = list(band_kernel)
        self.convs = nn.ModuleList([
            nn.Conv2d(channels_in, channels_out, (kernel, 1), (stride, 1))
            for stride, kernel in zip(band_stride, band_kernel)])

    def forward(self, x: torch.Tensor) -> tp.Tuple[tp.List[torch.Tensor], tp.List[int]]:
        """`[B, C, F, T]` -> the bands after their convs, and their sizes before."""
        outputs, sizes = [], []
        bounds = band_bounds(x.shape[2], self.band_SR)
        for conv, stride, kernel, (start, end) in zip(self.convs, self.strides, self.kernels,
                                                      bounds):
            before, after = band_padding(end - start, stride, kernel)
            outputs.append(conv(F.pad(x[:, :, start:end], (0, 0, before, after))))
            sizes.append(end - start)
        return outputs, sizes


class SparseDownBlock(nn.Module):
    """An SD block: SD layer, a convolution module per band (along time, each bin), GELU,
    the bands concatenated (the skip), a 3x3 conv."""
    def __init__(self, channels_in: int, channels_out: int, band_SR: tp.Sequence[float],
                 band_stride: tp.Sequence[int], band_kernel: tp.Sequence[int],
                 conv_depths: tp.Sequence[int], compress: float, conv_kernel: int):
        super().__init__()
        self.SDlayer = SparseDownsample(channels_in, channels_out, band_SR, band_stride,
                                        band_kernel)
        self.conv_modules = nn.ModuleList([
            ConvolutionModule(channels_out, depth, compress, conv_kernel)
            for depth in conv_depths])
        self.globalconv = nn.Conv2d(channels_out, channels_out, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> BlockOutput:
        """Returns the output, the skip, the band sizes after and before the SD layer."""
        bands, sizes = self.SDlayer(x)
        processed = []
        for module, band in zip(self.conv_modules, bands):
            B, C, Fr, T = band.shape
            along_time = band.permute(0, 2, 1, 3).reshape(B * Fr, C, T)
            processed.append(F.gelu(module(along_time).view(B, Fr, C, T).permute(0, 2, 1, 3)))
        lengths = [band.shape[2] for band in processed]
        skip = torch.cat(processed, dim=2)
        return self.globalconv(skip), skip, lengths, sizes


# ----------------------------------------------------------------------------------------
# Decoder


class FusionLayer(nn.Module):
    """Adds the skip, repeats the channels twice, 3x3 conv, GLU (back to `channels`)."""
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.glu(self.conv((x + skip).repeat(1, 2, 1, 1)), dim=1)


class SparseUpsample(nn.Module):
    """The SU layer: per band, a transposed conv, cut symmetrically to its size before the
    SD layer; the bands concatenated again."""
    def __init__(self, channels_in: int, channels_out: int, band_stride: tp.Sequence[int],
                 band_kernel: tp.Sequence[int]):
        super().__init__()
        self.convtrs = nn.ModuleList([
            nn.ConvTranspose2d(channels_in, channels_out, (kernel, 1), (stride, 1))
            for stride, kernel in zip(band_stride, band_kernel)])

    def forward(self, x: torch.Tensor, lengths: tp.Sequence[int],
                sizes: tp.Sequence[int]) -> torch.Tensor:
        outputs, start = [], 0
        for convtr, length, size in zip(self.convtrs, lengths, sizes):
            out = convtr(x[:, :, start:start + length])
            cut = abs(size - out.shape[2]) // 2
            outputs.append(out[:, :, cut:cut + size])
            start += length
        return torch.cat(outputs, dim=2)


# ----------------------------------------------------------------------------------------
# Separation network


class DualPathRNN(nn.Module):
    """A residual BLSTM along frequency (each frame), then one along time (each bin), each
    GroupNorm(1) -> BLSTM (`expand` x channels per direction) -> Linear, on `[B, C, F, T]`."""
    def __init__(self, channels: int, expand: int):
        super().__init__()
        hidden = channels * expand
        self.lstm_layers = nn.ModuleList([
            nn.LSTM(channels, hidden, num_layers=1, bidirectional=True, batch_first=True)
            for _ in range(2)])
        self.linear_layers = nn.ModuleList([nn.Linear(2 * hidden, channels) for _ in range(2)])
        self.norm_layers = nn.ModuleList([nn.GroupNorm(1, channels) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, Fr, T = x.shape
        y = self.norm_layers[0](x).transpose(1, 3).reshape(B * T, Fr, C)
        y = self.linear_layers[0](self.lstm_layers[0](y)[0])
        x = x + y.view(B, T, Fr, C).transpose(1, 3)
        y = self.norm_layers[1](x).transpose(1, 2).reshape(B * Fr, C, T).transpose(1, 2)
        y = self.linear_layers[1](self.lstm_layers[1](y)[0])
        return x + y.transpose(1, 2).reshape(B, Fr, C, T).transpose(1, 2)


def features_to_frequency(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal real FFT along time (dim 3), real and imaginary parts as channels:
    `[B, C, F, T]` -> `[B, 2C, F, T // 2 + 1]`, in float32."""
    z = torch.view_as_real(torch.fft.rfft(x.float(), dim=3, norm='ortho'))
    return torch.cat([z[..., 0], z[..., 1]], dim=1)


def features_to_time(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `features_to_frequency` (for an even number of frames)."""
    real, imag = x.float().chunk(2, dim=1)
    z = torch.view_as_complex(torch.stack([real, imag], dim=-1))
    return torch.fft.irfft(z, dim=3, norm='ortho')


class SeparationNet(nn.Module):
    """`num_layers` dual-path layers, alternately on the features and on their FFT along
    time (odd layers: twice the channels)."""
    def __init__(self, channels: int, expand: int, num_layers: int):
        super().__init__()
        self.dp_modules = nn.ModuleList([
            DualPathRNN(channels * (2 if index % 2 else 1), expand)
            for index in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.dp_modules):
            x = layer(x)
            x = features_to_time(x) if index % 2 else features_to_frequency(x)
        return x


# ----------------------------------------------------------------------------------------
# Hyper-parameter checks


def check_triple(name: str, values: tp.Sequence[tp.Any]) -> None:
    """The band lists have one value per band (low, mid, high)."""
    if len(values) != 3:
        raise ValueError(f"{name}={list(values)} needs 3 values (low, mid, high bands), as in "
                         f"the published config.")


def check_bands(band_SR: tp.Sequence[float], band_stride: tp.Sequence[int],
                band_kernel: tp.Sequence[int], conv_depths: tp.Sequence[int]) -> None:
    """Raise a ValueError naming the fix for band settings the network cannot use."""
    for name, values in [('band_SR', band_SR), ('band_stride', band_stride),
                         ('band_kernel', band_kernel), ('conv_depths', conv_depths)]:
        check_triple(name, values)
    if min(band_SR[:2]) <= 0 or band_SR[0] + band_SR[1] >= 1:
        raise ValueError(f"band_SR={list(band_SR)}: the low and mid ratios must be > 0 with a "
                         f"sum < 1 (the high band is the rest), e.g. [0.175, 0.392, 0.433].")
    for stride, kernel in zip(band_stride, band_kernel):
        if stride < 1 or kernel < stride:
            raise ValueError(f"band_stride={list(band_stride)}, band_kernel="
                             f"{list(band_kernel)}: each stride must be >= 1 and each kernel "
                             f"at least its stride, e.g. [1, 4, 16] and [3, 4, 16].")
    if min(conv_depths) < 0:
        raise ValueError(f"conv_depths={list(conv_depths)} must be >= 0.")


def check_freqs(nfft: int, dims: tp.Sequence[int], band_SR: tp.Sequence[float],
                band_stride: tp.Sequence[int], band_kernel: tp.Sequence[int]) -> None:
    """Every band of every SD block must keep at least one bin."""
    freqs = nfft // 2 + 1
    for depth in range(len(dims) - 1):
        bounds = band_bounds(freqs, band_SR)
        sizes = [end - start for start, end in bounds]
        outputs = [band_output(size, stride, kernel) if size > 0 else 0
                   for size, stride, kernel in zip(sizes, band_stride, band_kernel)]
        if min(sizes) < 1 or min(outputs) < 1:
            raise ValueError(f"nfft={nfft}: SD block {depth} gets {freqs} bins, split into "
                             f"bands of {sizes} bins, down to {outputs}: a band is empty. "
                             f"Raise nfft or use fewer dims.")
        freqs = sum(outputs)


class SCNet(SeparationModel):
    """SCNet (Tong et al. 2024). See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo); `dims[0]` must be twice this.
        samplerate, segment: metadata; `segment` is the training segment in seconds (the
            reference trains on 11 s).
        dims: channels of the spectrogram (2 x audio_channels, complex as channels), then of
            each SD block's output; one SD block (and one decoder scale) per step.
        nfft, hop_size, win_size, normalized: the STFT (rectangular window of `win_size`).
        band_SR: the low and mid bands' shares of the bins (the third, the high band's, is
            the rest and is not read).
        band_stride, band_kernel: per band, the stride (down-sampling) and the kernel of the
            SD convs over frequency, and of the SU transposed convs.
        conv_depths: per band, the residual layers of the convolution module.
        compress: the convolution modules' hidden channels are channels / compress.
        conv_kernel: kernel of their convs along time (odd).
        num_dplayer: dual-path layers of the separation network (even).
        expand: the BLSTMs' hidden size per direction is this times their channels.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 11.,
                 dims: tp.Sequence[int] = (4, 32, 64, 128),
                 nfft: int = 4096, hop_size: int = 1024, win_size: int = 4096,
                 normalized: bool = True,
                 band_SR: tp.Sequence[float] = (0.175, 0.392, 0.433),
                 band_stride: tp.Sequence[int] = (1, 4, 16),
                 band_kernel: tp.Sequence[int] = (3, 4, 16),
                 conv_depths: tp.Sequence[int] = (3, 2, 1), compress: float = 4,
                 conv_kernel: int = 3, num_dplayer: int = 6, expand: int = 1):
        super().__init__(sources, audio_channels, samplerate, segment)
        self._check(dims, nfft, hop_size, win_size, compress, conv_kernel, num_dplayer,
                    expand)
        check_bands(band_SR, band_stride, band_kernel, conv_depths)
        check_freqs(nfft, dims, band_SR, band_stride, band_kernel)
        self.dims = list(dims)
        self.n_fft = nfft
        self.hop_length = hop_size
        self.win_size = win_size
        self.normalized = normalized

        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for index in range(len(dims) - 1):
            self.encoder.append(SparseDownBlock(dims[index], dims[index + 1], band_SR,
                                                band_stride, band_kernel, conv_depths,
                                                compress, conv_kernel))
            out = dims[index] * (len(self.sources) if index == 0 else 1)
            self.decoder.insert(0, nn.Sequential(
                FusionLayer(dims[index + 1]),
                SparseUpsample(dims[index + 1], out, band_stride, band_kernel)))
        self.separation_net = SeparationNet(dims[-1], expand, num_dplayer)

    def _check(self, dims: tp.Sequence[int], nfft: int, hop_size: int, win_size: int,
               compress: float, conv_kernel: int, num_dplayer: int, expand: int) -> None:
        """Raise a ValueError naming the fix for hyper-parameters the network cannot use."""
        if len(dims) < 2 or dims[0] != 2 * self.audio_channels:
            raise ValueError(f"dims={list(dims)} must start with 2 x audio_channels = "
                             f"{2 * self.audio_channels} (the complex spectrogram's channels) "
                             f"and have at least one SD block after it, e.g. "
                             f"dims=[{2 * self.audio_channels}, 32, 64, 128].")
        if min(int(channels / compress) for channels in dims[1:]) < 1:
            raise ValueError(f"compress={compress} leaves no hidden channel in the "
                             f"convolution modules of dims={list(dims)}: lower it.")
        if nfft < 4 or nfft % 2:
            raise ValueError(f"nfft={nfft} must be even and >= 4 (e.g. 4096).")
        if not 1 <= hop_size <= win_size <= nfft:
            raise ValueError(f"hop_size={hop_size}, win_size={win_size}, nfft={nfft}: need "
                             f"1 <= hop_size <= win_size <= nfft (e.g. 1024, 4096, 4096).")
        if conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel={conv_kernel} must be odd (e.g. 3).")
        if num_dplayer < 0 or num_dplayer % 2:
            raise ValueError(f"num_dplayer={num_dplayer} must be even (>= 0): the dual-path "
                             f"layers alternate between the features and their FFT along "
                             f"time, and must end on the features (e.g. 6).")
        if expand < 1:
            raise ValueError(f"expand={expand} must be >= 1.")

    # -- lengths ----------------------------------------------------------------------

    def padding(self, length: int) -> int:
        """Zeros appended to `length` samples: to a multiple of the hop with an odd quotient
        (an even number of STFT frames), and beyond `nfft // 2` samples (reflect padding)."""
        hop = self.hop_length
        padding = hop - length % hop
        if (length + padding) // hop % 2 == 0:
            padding += hop
        while length + padding <= self.n_fft // 2:
            padding += 2 * hop
        return padding

    # -- STFT ----------------------------------------------------------------------------

    def _window(self, device: torch.device) -> torch.Tensor:
        """`win_size` ones, zero-padded on both sides to `nfft` (torch.stft's rule)."""
        left = (self.n_fft - self.win_size) // 2
        return F.pad(torch.ones(self.win_size, device=device),
                     (left, self.n_fft - self.win_size - left))

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, L]` -> complex `[N, nfft // 2 + 1, L // hop + 1]`, in float32."""
        with torch.autocast(x.device.type, enabled=False):
            return torch.stft(x.float(), self.n_fft, self.hop_length, win_length=self.n_fft,
                              window=self._window(x.device), center=True, pad_mode='reflect',
                              normalized=self.normalized, return_complex=True)

    def _istft(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of `_stft`: complex `[N, F, frames]` -> `[N, length]`."""
        window = self._window(z.device)
        with torch.autocast(z.device.type, enabled=False):
            if torch.compiler.is_exporting():   # torch.onnx.export: torch.istft does not export
                if not self.normalized:
                    z = z * self.n_fft ** -0.5
                return _istft_overlap_add(z, window, self.hop_length, length)
            return torch.istft(z, self.n_fft, self.hop_length, win_length=self.n_fft,
                               window=window, center=True, normalized=self.normalized,
                               length=length)

    # -- forward ----------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        B, C, length = mix.shape
        padded = length + self.padding(length)
        z = self._stft(F.pad(mix, (0, padded - length)).reshape(B * C, padded))
        x = complex_to_channels(z.view(B, C, *z.shape[1:]))        # [B, 2C, F, T]
        Fr, T = x.shape[2:]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)

        saved = []
        for block in self.encoder:
            x, skip, lengths, sizes = block(x)
            saved.append((skip, lengths, sizes))
        x = self.separation_net(x)
        for (fusion, upsample), (skip, lengths, sizes) in zip(self.decoder, reversed(saved)):
            x = upsample(fusion(x, skip), lengths, sizes)

        x = x * std + mean
        z = channels_to_complex(x.reshape(B, len(self.sources), 2 * C, Fr, T))
        out = self._istft(z.reshape(-1, Fr, T), padded)
        return out.view(B, len(self.sources), C, padded)[..., :length]
