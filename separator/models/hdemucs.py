"""Hybrid Demucs: "Hybrid Spectrogram and Waveform Source Separation" (Défossez, 2021).

A U-Net with two parallel encoders/decoders that meet in the middle:

* the **time branch** works on the waveform `[B, C, T]`: every layer is a strided 1d
  convolution (kernel `kernel_size`, stride `stride`), so after `n` layers it runs at
  `T / stride ** n` steps;
* the **frequency branch** works on the STFT (`nfft`, hop `nfft // 4`, last bin dropped so
  there are `nfft // 2` bins, frame `k` centred on the hop-block `k` of the signal so frames
  line up with the time branch). Input is either the complex spectrogram with real and
  imaginary parts as channels (`cac=True`, the branch outputs a complex spectrogram) or the
  magnitude (`cac=False`, the branch outputs a magnitude that is given the mixture phase).
  Its layers are 2d convolutions with kernel `(kernel_size, 1)` and stride `(stride, 1)`:
  they stride along frequency only, the time axis stays at one step per STFT frame.

When the frequency axis has shrunk to at most `kernel_size` bins, the next frequency layer
uses a kernel covering all remaining bins, which collapses the frequency axis to 1. At that
same layer the time branch has a stride of `stride ** n_freq_layers`; if this equals the hop
length both branches are sequences with one step per STFT frame and the same number of
channels: the time branch's conv output is added to the frequency branch's conv output
(the *merge*). The remaining `depth - n_freq_layers` layers are shared 1d layers (stride
`time_stride`). The decoder mirrors this: shared layers, then at the split the shared
sequence feeds both the frequency decoder (transposed conv back to all the bins) and the
time decoder (transposed 1d conv). The output is the iSTFT of the frequency branch plus the
time branch output. Each branch is normalised (mixture mean/std, per example) at the input
and de-normalised at the output.

Each encoder layer: conv -> [GroupNorm] -> GELU -> DConv residual branch -> 1x1 conv -> GLU.
Each decoder layer: + skip -> conv (kernel 1 + 2 * context) -> GLU -> transposed conv ->
GELU (not on the outermost layer).

Consistent hyper-parameters with `kernel_size=8, stride=4`: `nfft=4096, depth>=5` (the paper,
depth 6), `nfft=1024, depth>=4`, `nfft=256, depth>=3`. Other `nfft` raise a ValueError.

`compat='demucs'` computes exactly what demucs' own `HDemucs` (demucs 4.1.0) computes with the
same weights, for models imported from Demucs packages (`separator.importers.demucs`): the
input is not padded to the valid length; instead, as there, the spectrogram pads the signal
(by reflection) to a multiple of the hop, each time layer pads its input with zeros to a
multiple of its stride and each time decoder layer trims back to the length its encoder
layer got. `compat='demucs_old'` is demucs' `hybrid_old=True` (the padding bug of some MDX
2021 models: zero padding around the spectrogram). The weights are the same in every mode.

Recommended small config (trains on CPU; 0.22 M parameters with 4 stereo sources)::

    HDemucs(sources, channels=8, depth=4, nfft=1024, dconv_depth=1)

One training step (forward + backward + Adam, batch 4 x 2 s stereo at 44.1 kHz) takes about
0.7 s on a 2-core CPU. The full size defaults (channels=48, depth=6, nfft=4096) have 66.6 M
parameters, 83.6 M with `dconv_lstm=2, dconv_attn=2` (the paper's setting: LSTM and local
attention in the two deepest layers; demucs' `dconv_lstm=4` is a start index, ours a count).
"""
import math
import typing as tp
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..spec import channels_to_complex, complex_to_channels, ispectro, spectro, with_phase_of


# ----------------------------------------------------------------------------------------
# Hyper-parameter checks


def count_freq_layers(nfft: int, kernel_size: int, stride: int) -> tp.Tuple[int, bool]:
    """Number of frequency layers needed to collapse `nfft // 2` bins to one.

    Returns `(layers, exact)`, `exact` False when a layer would not divide the bins evenly.
    """
    freqs = nfft // 2
    layers = 0
    exact = True
    while freqs > 1:
        layers += 1
        if freqs <= kernel_size:
            freqs = 1  # the collapsing layer: kernel covers all remaining bins
        else:
            exact = exact and freqs % stride == 0
            freqs //= stride
    return layers, exact


def consistent_nffts(kernel_size: int, stride: int) -> tp.List[tp.Tuple[int, int]]:
    """`(nfft, minimum depth)` pairs for which the two branches line up at the merge."""
    found = []
    for log in range(6, 15):  # nfft 64 to 16384
        nfft = 2 ** log
        layers, exact = count_freq_layers(nfft, kernel_size, stride)
        if exact and stride ** layers == nfft // 4:
            found.append((nfft, layers))
    return found


def check_kernel_stride(kernel_size: int, stride: int) -> None:
    """Raise a ValueError unless a layer divides lengths exactly by its stride."""
    if stride < 2 or kernel_size < stride or (kernel_size - stride) % 2:
        raise ValueError(f"Need stride >= 2 and kernel_size >= stride with kernel_size - stride "
                         f"even (so a layer divides the length exactly by its stride), got "
                         f"kernel_size={kernel_size}, stride={stride}. Use e.g. 8 and 4.")


def check_hyperparams(nfft: int, depth: int, kernel_size: int, stride: int,
                      time_stride: int) -> int:
    """Raise a ValueError explaining the fix if the config can't merge the branches.

    Returns the number of frequency layers (the index of the merge layer + 1).
    """
    check_kernel_stride(kernel_size, stride)
    if time_stride < 2 or time_stride % 2:
        raise ValueError(f"time_stride must be an even number >= 2, got {time_stride}.")
    options = consistent_nffts(kernel_size, stride)
    choices = ', '.join(f"nfft={n} with depth>={d}" for n, d in options) or 'none'
    hint = (f"Consistent choices for kernel_size={kernel_size}, stride={stride}: {choices}.")
    if nfft % 4 or nfft < 16:
        raise ValueError(f"nfft={nfft} must be a multiple of 4 (hop = nfft // 4). {hint}")
    layers, exact = count_freq_layers(nfft, kernel_size, stride)
    hop = nfft // 4
    if not exact or stride ** layers != hop:
        raise ValueError(
            f"nfft={nfft} is inconsistent with kernel_size={kernel_size}, stride={stride}: the "
            f"frequency branch needs {layers} layers to collapse its {nfft // 2} bins, after "
            f"which the time branch has a stride of {stride}**{layers}={stride ** layers}, "
            f"which must equal the STFT hop nfft // 4 = {hop} for the branches to merge"
            f"{'' if exact else ' (and the bins must divide evenly by the stride)'}. {hint}")
    if depth < layers:
        raise ValueError(f"depth={depth} is too small for nfft={nfft}: the frequency branch needs "
                         f"{layers} layers before it merges with the time branch, so use "
                         f"depth>={layers} or a smaller nfft. {hint}")
    return layers


# ----------------------------------------------------------------------------------------
# Spectrogram aligned with the time branch (shared with HTDemucs)


def aligned_spectro(x: torch.Tensor, nfft: int) -> torch.Tensor:
    """`[B, C, T]` (T multiple of hop = nfft // 4) -> `[B, C, nfft // 2, T // hop]` complex.

    Frame k is centred on the middle of samples [k * hop, (k + 1) * hop), like the k-th
    step of a time branch with a total stride of hop. The Nyquist bin is dropped.
    """
    hop = nfft // 4
    frames = x.shape[-1] // hop
    pad = 3 * hop // 2
    x = F.pad(x, (pad, pad), mode='reflect')
    z = spectro(x, nfft, hop)[..., :-1, :]  # drop the last (Nyquist) bin
    assert z.shape[-1] == frames + 4, (z.shape, frames)
    return z[..., 2:2 + frames]


def aligned_ispectro(z: torch.Tensor, nfft: int, length: int) -> torch.Tensor:
    """Inverse of `aligned_spectro`: `[*, nfft // 2, frames]` -> `[*, length]`."""
    hop = nfft // 4
    pad = 3 * hop // 2
    # frames trimmed in `aligned_spectro`, and the Nyquist bin (padded as real pairs: ONNX)
    z = torch.view_as_complex(F.pad(torch.view_as_real(z), (0, 0, 2, 2, 0, 1)))
    x = ispectro(z, hop, length=length + 2 * pad)
    return x[..., pad:pad + length]


COMPATS = ('separator', 'demucs', 'demucs_old')   # `compat` of the hybrid models


def check_compat(compat: str, allowed: tp.Sequence[str] = COMPATS) -> None:
    if compat not in allowed:
        raise ValueError(f"compat={compat!r} is unknown: use one of {', '.join(allowed)} "
                         f"('separator' for models trained here).")


def pad1d(x: torch.Tensor, left: int, right: int, mode: str = 'constant') -> torch.Tensor:
    """`F.pad` of the last axis; a reflect padding longer than the signal is done as demucs
    does it: zeros first on the right (as many as needed, at most `right`), then reflect."""
    length = x.shape[-1]
    if mode == 'reflect' and length <= max(left, right):
        extra = max(left, right) - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        x = F.pad(x, (extra_left, extra_right))
        left, right = left - extra_left, right - extra_right
    return F.pad(x, (left, right), mode=mode)


def demucs_spectro(x: torch.Tensor, nfft: int, old: bool = False) -> torch.Tensor:
    """`aligned_spectro` of a signal of any length, padded as demucs' hybrid models do: by
    reflection (zeros with `old`, demucs' `hybrid_old`) up to a multiple of the hop."""
    hop = nfft // 4
    frames = math.ceil(x.shape[-1] / hop)
    pad = 3 * hop // 2
    x = pad1d(x, pad, pad + frames * hop - x.shape[-1], 'constant' if old else 'reflect')
    z = spectro(x, nfft, hop)[..., :-1, :]
    assert z.shape[-1] == frames + 4, (z.shape, frames)
    return z[..., 2:2 + frames]


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Zeros on the right of `x` up to a multiple of `stride` (demucs' time layers)."""
    return F.pad(x, (0, -x.shape[-1] % stride))


# ----------------------------------------------------------------------------------------
# Building blocks


def rescale_module(module: nn.Module, reference: float) -> None:
    """Demucs' init trick: divide each conv's weights and bias by sqrt(std / reference).

    This brings the weight std closer to `reference`; it is empirical but helps training.
    """
    convs = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    for sub in module.modules():
        if isinstance(sub, convs):
            scale = (sub.weight.detach().std() / reference) ** 0.5
            sub.weight.data /= scale
            if sub.bias is not None:
                sub.bias.data /= scale


def apply_over_time(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a `[N, C, T]` module to `[B, C, T]`, or to `[B, C, F, T]` (each bin separately)."""
    if x.dim() == 3:
        return module(x)
    B, C, Fr, T = x.shape
    y = module(x.permute(0, 2, 1, 3).reshape(B * Fr, C, T))
    return y.view(B, Fr, -1, T).permute(0, 2, 1, 3)


def norm_or_identity(groups: int, channels: int) -> nn.Module:
    return nn.GroupNorm(groups, channels) if groups else nn.Identity()


class LayerScale(nn.Module):
    """Per-channel learnt scale, initialised small so a residual branch starts near off."""
    def __init__(self, channels: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * x


class BLSTM(nn.Module):
    """Bidirectional LSTM over `[N, C, T]`, then a Linear back to `C`; residual with `skip`.

    Long sequences are cut into windows of `max_steps` overlapping by half; only the centre
    of each window is kept, so every step sees at least `max_steps // 4` of context. Demucs
    counts ceil(T / hop) windows (some of them past the end), we count the fewest that cover
    T: `demucs_windows` counts as Demucs (the time-domain Demucs, and HDemucs models of compat
    'demucs', see `use_demucs_windows`).
    """
    checkpoint_unit = True     # optim.checkpointing recomputes it

    def __init__(self, dim: int, layers: int = 2, max_steps: tp.Optional[int] = 200,
                 skip: bool = True, demucs_windows: bool = False):
        super().__init__()
        if max_steps is not None and max_steps % 4:
            raise ValueError(f"BLSTM: max_steps={max_steps} must be a multiple of 4.")
        self.max_steps = max_steps
        self.skip = skip
        self.demucs_windows = demucs_windows
        self.lstm = nn.LSTM(dim, dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lstm(x.permute(2, 0, 1))[0]
        return self.linear(y).permute(1, 2, 0)

    def _run_windows(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        width = tp.cast(int, self.max_steps)
        hop = width // 2
        margin = hop // 2
        frames = math.ceil(T / hop) if self.demucs_windows else math.ceil((T - width) / hop) + 1
        padded = F.pad(x, (0, (frames - 1) * hop + width - T))
        windows = padded.unfold(-1, width, hop)  # [B, C, frames, width]
        windows = windows.permute(0, 2, 1, 3).reshape(B * frames, C, width)
        out = self._run(windows).view(B, frames, C, width)
        parts = [out[:, 0, :, :width - margin]]
        parts += [out[:, k, :, margin:width - margin] for k in range(1, frames - 1)]
        parts.append(out[:, -1, :, margin:])
        return torch.cat(parts, -1)[..., :T]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_steps is not None and x.shape[-1] > self.max_steps:
            y = self._run_windows(x)
        else:
            y = self._run(x)
        return x + y if self.skip else y


class LocalAttention(nn.Module):
    """Attention without positional embedding but with a learnt locality penalty.

    Each query predicts weights for `ndecay` penalties `-d * |t - s|` (d = 1..ndecay), which
    lets heads choose how local they are. A step does not attend to itself.
    """
    checkpoint_unit = True     # optim.checkpointing recomputes it

    def __init__(self, channels: int, heads: int = 4, ndecay: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"Local attention: {channels} channels do not divide into {heads} "
                             f"heads; change `channels`, `growth` or `dconv_comp`.")
        self.heads = heads
        self.ndecay = ndecay
        # Created in Demucs' order, so that a seed gives Demucs' initial weights.
        self.content = nn.Conv1d(channels, channels, 1)
        self.query = nn.Conv1d(channels, channels, 1)
        self.key = nn.Conv1d(channels, channels, 1)
        self.query_decay = nn.Conv1d(channels, heads * ndecay, 1)
        # Start with small decays (sigmoid(-2)), i.e. a wide initial window.
        self.query_decay.weight.data *= 0.01
        self.query_decay.bias.data.fill_(-2.)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T = x.shape
        H = self.heads
        queries = self.query(x).view(B, H, -1, T)
        keys = self.key(x).view(B, H, -1, T)
        dots = torch.einsum('bhct,bhcs->bhts', keys, queries) / keys.shape[2] ** 0.5
        steps = torch.arange(T, device=x.device, dtype=x.dtype)
        distance = (steps[:, None] - steps[None, :]).abs()
        decays = torch.arange(1, self.ndecay + 1, device=x.device, dtype=x.dtype)
        decay_kernel = -decays[:, None, None] * distance / self.ndecay ** 0.5  # [D, T, T]
        decay_q = torch.sigmoid(self.query_decay(x).view(B, H, -1, T)) / 2
        dots = dots + torch.einsum('dts,bhds->bhts', decay_kernel, decay_q)
        eye = torch.eye(T, device=x.device, dtype=torch.bool)
        dots = dots.masked_fill(eye, -100.)
        weights = torch.softmax(dots, dim=2)  # over keys t
        content = self.content(x).view(B, H, -1, T)
        result = torch.einsum('bhts,bhct->bhcs', weights, content).reshape(B, C, T)
        return x + self.proj(result)


class DConv(nn.Module):
    """Residual branch of dilated 1d convolutions (over time) in a compressed space.

    Each of the `depth` sub-layers: conv k=3 dilation 2**d to `channels // compress`,
    GroupNorm, GELU, [BLSTM], [LocalAttention], 1x1 conv to 2 * channels, GroupNorm, GLU,
    LayerScale; its output is added to its input.
    """
    def __init__(self, channels: int, compress: int = 4, depth: int = 2, init: float = 1e-3,
                 lstm: bool = False, attn: bool = False, kernel: int = 3):
        super().__init__()
        hidden = max(1, channels // compress)
        self.layers = nn.ModuleList()
        for d in range(depth):
            dilation = 2 ** d
            mods: tp.List[nn.Module] = [
                nn.Conv1d(channels, hidden, kernel, dilation=dilation,
                          padding=dilation * (kernel // 2)),
                nn.GroupNorm(1, hidden), nn.GELU()]
            if lstm:
                mods.append(BLSTM(hidden))
            if attn:
                mods.append(LocalAttention(hidden))
            mods += [nn.Conv1d(hidden, 2 * channels, 1), nn.GroupNorm(1, 2 * channels),
                     nn.GLU(1), LayerScale(channels, init)]
            self.layers.append(nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class FreqEmbedding(nn.Module):
    """Learnt embedding per frequency bin, `[C, F]`, added after the first freq layer.

    Convolutions along frequency are translation invariant; this tells them where they
    are. Initialised smooth along frequency (normalised random walk); the stored weight is
    divided by `lr_scale` and multiplied back in forward, which multiplies its effective
    learning rate by `lr_scale`.
    """
    def __init__(self, freqs: int, channels: int, lr_scale: float = 10.):
        super().__init__()
        walk = torch.randn(freqs, channels).cumsum(0)
        walk = walk / torch.arange(1, freqs + 1).float().sqrt()[:, None]
        self.weight = nn.Parameter(walk.t().contiguous() / lr_scale)
        self.lr_scale = lr_scale

    def forward(self) -> torch.Tensor:
        return self.weight * self.lr_scale


class EncLayer(nn.Module):
    """One encoder layer, on time (`[B, C, T]`) or on frequency (`[B, C, F, T]`).

    Output length is exactly input length / stride (inputs are multiples of the stride).
    `conv_only`: just the strided conv, used by the time branch at the merge layer, where
    its output is injected into the frequency layer's conv output.
    """
    def __init__(self, chin: int, chout: int, kernel: int, stride: int, pad: int,
                 freq: bool, norm_groups: int = 0, conv_only: bool = False,
                 dconv_kw: tp.Optional[dict] = None):
        super().__init__()
        if freq:
            self.conv: nn.Module = nn.Conv2d(chin, chout, (kernel, 1), (stride, 1), (pad, 0))
        else:
            self.conv = nn.Conv1d(chin, chout, kernel, stride, pad)
        self.conv_only = conv_only
        if conv_only:
            return
        self.norm1 = norm_or_identity(norm_groups, chout)
        self.dconv = DConv(chout, **dconv_kw) if dconv_kw is not None else None
        rewrite = nn.Conv2d if freq else nn.Conv1d
        self.rewrite = rewrite(chout, 2 * chout, 1)
        self.norm2 = norm_or_identity(norm_groups, 2 * chout)

    def forward(self, x: torch.Tensor, inject: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.conv(x)
        if self.conv_only:
            return y
        if inject is not None:  # time branch output [B, C, T] added to [B, C, 1, T]
            y = y + inject[:, :, None]
        y = F.gelu(self.norm1(y))
        if self.dconv is not None:
            y = apply_over_time(self.dconv, y)
        return F.glu(self.norm2(self.rewrite(y)), dim=1)


class DecLayer(nn.Module):
    """One decoder layer, mirror of `EncLayer`.

    forward returns `(output, pre)`, `pre` being the features just before the transposed
    conv: at the split point it is what the time branch decodes from.
    `conv_only`: just the transposed conv (time branch at the split, no skip).
    """
    def __init__(self, chin: int, chout: int, kernel: int, stride: int, pad: int,
                 freq: bool, last: bool, norm_groups: int = 0, conv_only: bool = False,
                 context: int = 1):
        super().__init__()
        self.freq = freq
        self.pad = pad
        self.stride = stride
        self.last = last
        self.conv_only = conv_only
        if freq:
            self.conv_tr: nn.Module = nn.ConvTranspose2d(chin, chout, (kernel, 1), (stride, 1))
        else:
            self.conv_tr = nn.ConvTranspose1d(chin, chout, kernel, stride)
        self.norm2 = norm_or_identity(norm_groups, chout)
        if conv_only:
            return
        rewrite = nn.Conv2d if freq else nn.Conv1d
        self.rewrite = rewrite(chin, 2 * chin, 1 + 2 * context, 1, context)
        self.norm1 = norm_or_identity(norm_groups, 2 * chin)

    def forward(self, x: torch.Tensor, skip: tp.Optional[torch.Tensor] = None,
                length: tp.Optional[int] = None) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """`length`: of the time output (default: input length * stride), the length the
        mirror encoder layer got before padding it (`compat='demucs'`)."""
        if self.conv_only:
            y = x
        else:
            assert skip is not None
            y = F.glu(self.norm1(self.rewrite(x + skip)), dim=1)
        z = self.norm2(self.conv_tr(y))
        if self.freq:
            size = y.shape[2] * self.stride if self.pad else z.shape[2]
            z = z[:, :, self.pad:self.pad + size]
        else:
            size = y.shape[-1] * self.stride if length is None else length
            z = z[..., self.pad:self.pad + size]
        if not self.last:
            z = F.gelu(z)
        return z, y


# ----------------------------------------------------------------------------------------
# The model


@dataclass
class HybridInput:
    """A mixture made ready for both branches of a hybrid model (`hybrid_input`)."""
    xt: torch.Tensor            # [B, C, padded] waveform, normalised
    xf: torch.Tensor            # [B, C * (2 if cac else 1), F, frames] spectrogram, normalised
    z: torch.Tensor             # the complex spectrogram of the padded mixture
    stats_t: tp.Tuple[torch.Tensor, torch.Tensor]     # mean and std of the waveform
    stats_f: tp.Tuple[torch.Tensor, torch.Tensor]     # and of the spectrogram channels
    length: int
    padded: int


def hybrid_input(model: nn.Module, mix: torch.Tensor) -> HybridInput:
    """Pad `mix` [B, C, T] to the model's valid length and normalise the waveform and its
    spectrogram (complex as channels, or magnitude), each by its mean and std.

    With `model.compat` 'demucs' / 'demucs_old', `mix` is not padded (`xt` has T steps):
    only the spectrogram pads it, as demucs does (`demucs_spectro`)."""
    if mix.dim() != 3 or mix.shape[1] != model.audio_channels:
        raise ValueError(f"Expected a mixture [batch, {model.audio_channels}, time], "
                         f"got {tuple(mix.shape)}.")
    length = mix.shape[-1]
    mean_t = mix.mean(dim=(1, 2), keepdim=True)
    std_t = mix.std(dim=(1, 2), keepdim=True)
    if model.compat == 'separator':
        padded = model.valid_length(length)
        mix = F.pad(mix, (0, padded - length))
        z = aligned_spectro(mix, model.n_fft)
    else:
        padded = math.ceil(length / model.hop_length) * model.hop_length
        z = demucs_spectro(mix, model.n_fft, old=model.compat == 'demucs_old')
    xf = complex_to_channels(z) if model.cac else z.abs()
    mean_f = xf.mean(dim=(1, 2, 3), keepdim=True)
    std_f = xf.std(dim=(1, 2, 3), keepdim=True)
    return HybridInput(xt=(mix - mean_t) / (1e-5 + std_t), xf=(xf - mean_f) / (1e-5 + std_f),
                       z=z, stats_t=(mean_t, std_t), stats_f=(mean_f, std_f), length=length,
                       padded=padded)


def hybrid_output(model: nn.Module, inputs: HybridInput, xt: torch.Tensor,
                  xf: torch.Tensor) -> torch.Tensor:
    """The sources [B, S, C, T]: both branches' outputs un-normalised, the spectrogram one
    (complex as channels, or magnitude with the mixture's phase) inverted, and summed."""
    B, C = inputs.xt.shape[:2]
    S = len(model.sources)
    mean_f, std_f = inputs.stats_f
    mean_t, std_t = inputs.stats_t
    xf = xf.view(B, S, -1, *xf.shape[-2:]) * std_f[:, None] + mean_f[:, None]
    if model.cac:
        zout = channels_to_complex(xf)
    else:  # estimated magnitude with the phase of the mixture
        zout = with_phase_of(inputs.z, xf)
    if model.compat == 'demucs_old':   # demucs' hybrid_old: the frames start at sample 0
        zout = torch.view_as_complex(F.pad(torch.view_as_real(zout), (0, 0, 2, 2, 0, 1)))
        out = ispectro(zout, model.hop_length, length=inputs.padded)
    else:
        out = aligned_ispectro(zout, model.n_fft, inputs.padded)
    xt = xt.view(B, S, C, -1)   # `padded` steps, or with compat 'demucs' the input's length
    out = out[..., :xt.shape[-1]]
    if model.compat == 'separator':
        out = out + xt * std_t[:, None] + mean_t[:, None]
    else:   # demucs' order of the sums
        out = out + (xt * std_t[:, None] + mean_t[:, None])
    return out[..., :inputs.length]


def use_demucs_windows(model: nn.Module, compat: str) -> None:
    """With compat 'demucs' / 'demucs_old', the BLSTMs cut long sequences as Demucs does."""
    for module in model.modules():
        if isinstance(module, BLSTM):
            module.demucs_windows = compat != 'separator'


def hybrid_setup(model: nn.Module, nfft: int, depth: int, cac: bool,
                 layer_lists: tp.Sequence[str], compat: str = 'separator') -> None:
    """What HDemucs and HTDemucs set up alike beyond the model contract: their STFT and
    depth, and their empty layer lists, registered in the order of `layer_lists` (the order
    of `parameters()`, hence of the optimizer's state in checkpoints: keep it). Decoders are
    stored outermost layer first and run in reverse order."""
    model.n_fft = nfft
    model.hop_length = nfft // 4
    model.depth = depth
    model.cac = cac
    model.compat = compat
    for name in layer_lists:
        setattr(model, name, nn.ModuleList())


class HDemucs(SeparationModel):
    """Hybrid (waveform + spectrogram) Demucs. See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate, segment: metadata; `segment` is the training segment in seconds.
        channels: hidden channels of the first layer, times `growth` at each layer.
        nfft: STFT size, hop is nfft // 4. Must be consistent with depth/kernel/stride.
        depth: number of encoder (and decoder) layers, including the shared ones.
        kernel_size, stride: of the time layers and of the frequency layers (along freq).
        time_stride: stride of the shared layers after the merge (kernel 2 * time_stride).
        cac: complex as channels, else magnitude in and magnitude (with mixture phase) out.
        context: decoder 1x1 "rewrite" convs have kernel 1 + 2 * context.
        norm_starts, norm_groups: GroupNorm(norm_groups) in layers of index >= norm_starts.
        dconv_depth, dconv_comp, dconv_init: DConv residual branch depth, channel
            compression and LayerScale init.
        dconv_lstm, dconv_attn: number of deepest encoder layers whose DConv has a BLSTM /
            local attention (the paper uses 2 and 2 at depth 6).
        freq_emb: weight of the frequency embedding (0 disables it).
        emb_scale: learning-rate multiplier of the frequency embedding.
        rescale: reference std for the weight rescaling at init (0 disables it).
        compat: 'separator', or 'demucs' / 'demucs_old' to compute what demucs' HDemucs
            (with `hybrid_old=False` / `True`) computes: its padding (module docstring).
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 10., channels: int = 48, growth: int = 2, nfft: int = 4096,
                 depth: int = 6, kernel_size: int = 8, stride: int = 4, time_stride: int = 2,
                 cac: bool = True, context: int = 1, norm_starts: int = 4, norm_groups: int = 4,
                 dconv_depth: int = 2, dconv_comp: int = 4, dconv_init: float = 1e-3,
                 dconv_lstm: int = 0, dconv_attn: int = 0, freq_emb: float = 0.2,
                 emb_scale: float = 10., rescale: float = 0.1, compat: str = 'separator'):
        super().__init__(sources, audio_channels, samplerate, segment)
        check_compat(compat)
        self.n_freq_layers = check_hyperparams(nfft, depth, kernel_size, stride, time_stride)
        hybrid_setup(self, nfft, depth, cac,
                     ['time_encoder', 'freq_encoder', 'shared_encoder', 'time_decoder',
                      'freq_decoder', 'shared_decoder'], compat)
        self.stride = stride
        self.time_stride = time_stride

        n_freq = self.n_freq_layers
        pad = (kernel_size - stride) // 2
        out_channels = len(self.sources) * audio_channels
        spec_mult = 2 if cac else 1
        chin_t, chin_f = audio_channels, audio_channels * spec_mult
        chout = channels
        freqs = nfft // 2
        emb_channels = emb_freqs = 0
        for index in range(depth):
            first, merge = index == 0, index == n_freq - 1
            groups = norm_groups if index >= norm_starts else 0
            dconv_kw = {'compress': dconv_comp, 'depth': dconv_depth, 'init': dconv_init,
                        'lstm': index >= depth - dconv_lstm, 'attn': index >= depth - dconv_attn}
            dec_out_t = out_channels if first else chin_t
            dec_out_f = out_channels * spec_mult if first else chin_f
            if index < n_freq:
                self.time_encoder.append(EncLayer(
                    chin_t, chout, kernel_size, stride, pad, freq=False, norm_groups=groups,
                    conv_only=merge, dconv_kw=dconv_kw))
                self.time_decoder.append(DecLayer(
                    chout, dec_out_t, kernel_size, stride, pad, freq=False, last=first,
                    norm_groups=groups, conv_only=merge, context=context))
                if merge:  # kernel covers all remaining bins, frequency axis -> 1
                    f_kernel, f_stride, f_pad = freqs, 1, 0
                    freqs = 1
                else:
                    f_kernel, f_stride, f_pad = kernel_size, stride, pad
                    freqs //= stride
                self.freq_encoder.append(EncLayer(
                    chin_f, chout, f_kernel, f_stride, f_pad, freq=True, norm_groups=groups,
                    dconv_kw=dconv_kw))
                self.freq_decoder.append(DecLayer(
                    chout, dec_out_f, f_kernel, f_stride, f_pad, freq=True, last=first,
                    norm_groups=groups, context=context))
                if first:
                    emb_channels, emb_freqs = chout, freqs
            else:
                tkernel, tpad = 2 * time_stride, time_stride // 2
                self.shared_encoder.append(EncLayer(
                    chin_t, chout, tkernel, time_stride, tpad, freq=False, norm_groups=groups,
                    dconv_kw=dconv_kw))
                self.shared_decoder.append(DecLayer(
                    chout, dec_out_t, tkernel, time_stride, tpad, freq=False, last=False,
                    norm_groups=groups, context=context))
            chin_t = chin_f = chout
            chout = int(growth * chout)

        self.freq_emb_weight = freq_emb
        self.freq_emb = FreqEmbedding(emb_freqs, emb_channels, emb_scale) if freq_emb else None
        if rescale:
            rescale_module(self, reference=rescale)
        use_demucs_windows(self, compat)

    # -- lengths ----------------------------------------------------------------------

    @property
    def total_stride(self) -> int:
        """Input lengths are padded to a multiple of this."""
        return self.hop_length * self.time_stride ** (self.depth - self.n_freq_layers)

    def valid_length(self, length: int) -> int:
        """Smallest length >= `length` the network handles exactly (padded internally);
        any length with compat 'demucs' (which pads as it goes, as demucs does)."""
        if self.compat != 'separator':
            return length
        total = self.total_stride
        # At least 2 hops so the reflect padding of the spectrogram is possible.
        return max(math.ceil(length / total), math.ceil(2 * self.hop_length / total)) * total

    # -- forward ----------------------------------------------------------------------

    def _pad_time(self, x: torch.Tensor, stride: int, lengths: tp.List[int]) -> torch.Tensor:
        """With compat 'demucs': remember the length of a time layer's input and pad it to a
        multiple of its stride (the decoder trims back to that length). Else `x` as is: the
        input was padded to the valid length, every length divides."""
        if self.compat == 'separator':
            return x
        lengths.append(x.shape[-1])
        return pad_to_stride(x, stride)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T."""
        inputs = hybrid_input(self, mix)
        xt, xf = inputs.xt, inputs.xf
        lengths_t: tp.List[int] = []   # compat 'demucs': time lengths before each layer
        lengths_s: tp.List[int] = []   # and before each shared layer
        demucs = self.compat != 'separator'

        # Encoder: parallel branches, merged at the last frequency layer.
        skips_t, skips_f = [], []
        for index, (tenc, fenc) in enumerate(zip(self.time_encoder, self.freq_encoder)):
            xt = tenc(self._pad_time(xt, self.stride, lengths_t))
            if tenc.conv_only:
                xf = fenc(xf, inject=xt)
            else:
                skips_t.append(xt)
                xf = fenc(xf)
            if index == 0 and self.freq_emb is not None:
                xf = xf + self.freq_emb_weight * self.freq_emb()[None, :, :, None]
            skips_f.append(xf)
        x = xf[:, :, 0]  # merged, frequency axis is 1: [B, C, T / hop]
        skips_s = []
        for enc in self.shared_encoder:
            x = enc(self._pad_time(x, self.time_stride, lengths_s))
            skips_s.append(x)

        # Decoder: the deepest input is zero, the signal comes through the skips.
        x = torch.zeros_like(x)
        for dec in reversed(self.shared_decoder):
            x, _ = dec(x, skips_s.pop(), lengths_s.pop() if demucs else None)
        xf = x[:, :, None]
        xt = None
        for fdec, tdec in zip(reversed(self.freq_decoder), reversed(self.time_decoder)):
            xf, pre = fdec(xf, skips_f.pop())
            length = lengths_t.pop() if demucs else None
            if tdec.conv_only:  # split: the time branch starts from the shared features
                xt, _ = tdec(pre[:, :, 0], length=length)
            else:
                xt, _ = tdec(xt, skips_t.pop(), length)
        assert not skips_f and not skips_t and not skips_s and not lengths_t and not lengths_s

        return hybrid_output(self, inputs, xt, xf)
