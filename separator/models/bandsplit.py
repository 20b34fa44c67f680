"""What the band-split spectrogram models (BSRNN, BS-RoFormer, Mel-RoFormer) share.

Band-split models (Luo & Yu, "Music Source Separation with Band-split RNN", 2022) work on
the complex STFT of the mixture, cut along frequency into `K` **bands** (contiguous ranges of
bins, narrow at low frequencies, wide at high ones):

* **band split** (`BandSplit`): per band, the complex bins of all audio channels as real
  features (`bins * channels * 2` of them: real and imaginary parts) -> RMSNorm or LayerNorm
  -> Linear to `dim`, one norm and one Linear per band (the bands have different widths).
  This gives a `[B, T, K, dim]` tensor: one token per frame and band;
* a **sequence core**, the model's own (`BandSplitModel.sequence_model`): BLSTMs (BSRNN) or
  RoPE Transformers (BS-RoFormer, Mel-RoFormer) alternating along time (for each band) and
  along bands (for each frame), `[B, T, K, dim]` -> `[B, T, K, dim]`;
* **mask estimation** (`MaskEstimator`, one per source): per band, norm -> MLP (Linear
  `dim -> hidden`, Tanh, Linear `hidden -> 2 * out`, GLU) giving that band's complex mask for
  its `out = bins * channels * 2` real values. Bands that overlap (the mel bands) give several
  masks for a bin: they are averaged (summed and divided by the number of bands covering it).
  For imported lucidrains / MSST RoFormers: no norm (`mask_norm=False`), 0 or more hidden
  layers (`mask_layers`), the masks of bin 0 zeroed (`zero_dc`);
* each source is its complex mask times the mixture STFT, inverted to exactly the input
  length.

The STFT is `spec.spectro` / `spec.ispectro`: Hann window of `n_fft`, hop `hop_length`,
normalized, centred with reflect padding (inputs of at most `n_fft // 2` samples are
zero-padded first, then trimmed). FFTs run in float32, so the models run under bf16 autocast.
The mixture is not normalised: the norm of each band's features makes the tokens independent
of its level, and the masks multiply the mixture itself.

Band definitions (each a list of `(start, stop)` bin ranges, `n_fft // 2 + 1` bins in all):

* `hz_bands`: BSRNN's bands, given as `(upper edge, bandwidth)` pairs in Hz; the paper's vocals
  scheme (`BSRNN_VOCALS_SPLITS`): 100 Hz bands up to 1 kHz, 250 Hz up to 4 kHz, 500 Hz up to
  8 kHz, 1 kHz up to 16 kHz, 2 kHz up to 20 kHz and one band for the rest: 41 bands at 44.1 kHz
  with `n_fft=2048`. A bin belongs to the first band whose upper edge is above its frequency;
  bands left without bins (small `n_fft`) or above Nyquist (low sample rates) are dropped;
* `roformer_bands`: BS-RoFormer's bins per band (`BS_ROFORMER_BINS`, for `n_fft=2048`:
  2 bins x 24, 4 x 12, 12 x 8, 24 x 8, 48 x 8, then 128 and 129: 62 bands), scaled to other
  `n_fft` by scaling the band edges (bands that become empty are dropped), or any explicit
  list whose sum is the number of bins;
* `mel_bands`: Mel-RoFormer's overlapping bands: `num_bands` triangular mel filters (Slaney's
  mel scale, as librosa's `filters.mel`, from 0 Hz to Nyquist), each band the bins where its
  filter is nonzero, plus bin 0 in the first band and the Nyquist bin in the last one (where
  the first and last triangles vanish), so every bin is covered at least once.
"""
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..spec import check_stft, ispectro, spectro
from .base import SeparationModel

Band = tp.Tuple[int, int]   # STFT bins [start, stop)

# BSRNN's vocals band-split scheme (Luo & Yu 2022): (upper edge, bandwidth) in Hz, then one
# band for the rest up to Nyquist.
BSRNN_VOCALS_SPLITS: tp.Tuple[tp.Tuple[float, float], ...] = (
    (1000, 100), (4000, 250), (8000, 500), (16000, 1000), (20000, 2000))

# BS-RoFormer's bins per band for n_fft=2048 (Lu et al. 2023): 62 bands, 1025 bins.
BS_ROFORMER_NFFT = 2048
BS_ROFORMER_BINS: tp.Tuple[int, ...] = ((2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8
                                        + (48,) * 8 + (128, 129))

NORMS = ('rms', 'rms_l2', 'layer')


# ----------------------------------------------------------------------------------------
# Band definitions


def num_bins(n_fft: int) -> int:
    """Number of bins of a one-sided STFT of size `n_fft`."""
    return n_fft // 2 + 1


def bands_from_edges(edges: tp.Sequence[int]) -> tp.List[Band]:
    """Contiguous bands between consecutive edges, empty ones dropped."""
    unique = sorted(set(edges))
    return list(zip(unique[:-1], unique[1:]))


def bands_from_widths(widths: tp.Sequence[int]) -> tp.List[Band]:
    """Contiguous bands of `widths` bins, from bin 0."""
    edges = [0]
    for width in widths:
        edges.append(edges[-1] + int(width))
    return list(zip(edges[:-1], edges[1:]))


def band_coverage(bands: tp.Sequence[Band], n_bins: int) -> torch.Tensor:
    """How many bands cover each bin, `[n_bins]` (int64)."""
    coverage = torch.zeros(n_bins, dtype=torch.long, device='cpu')
    for start, stop in bands:
        coverage[start:stop] += 1
    return coverage


def check_bands(bands: tp.Sequence[Band], n_bins: int, fix: str) -> None:
    """Raise a ValueError ending with `fix` unless every band is a non-empty range of the
    `n_bins` bins and every bin is in at least one band."""
    if not bands:
        raise ValueError(f"No bands for {n_bins} STFT bins: {fix}")
    for index, (start, stop) in enumerate(bands):
        if not 0 <= start < stop <= n_bins:
            raise ValueError(f"Band {index} covers bins [{start}, {stop}), not a non-empty "
                             f"range of the {n_bins} STFT bins: {fix}")
    missing = (band_coverage(bands, n_bins) == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"Bins {missing[:5]}{'...' if len(missing) > 5 else ''} are in no "
                         f"band: {fix}")


def hz_bands(n_fft: int, samplerate: float,
             splits: tp.Sequence[tp.Sequence[float]] = BSRNN_VOCALS_SPLITS) -> tp.List[Band]:
    """BSRNN's bands: `splits` are `(upper edge, bandwidth)` pairs in Hz, in increasing order:
    bands of `bandwidth` Hz from the previous upper edge (0 for the first) up to `upper edge`,
    then one band up to Nyquist. Bin `k` (frequency `k * samplerate / n_fft`) is in the first
    band whose upper edge is above its frequency; empty bands are dropped. A range that is not
    a multiple of its bandwidth is cut into the nearest whole number of equal bands."""
    edges_hz: tp.List[float] = []
    previous = 0.
    for pair in splits:
        if len(pair) != 2:
            raise ValueError(f"Band split {list(pair)} must be a pair [upper edge Hz, bandwidth "
                             f"Hz], e.g. [1000, 100] for 100 Hz bands up to 1 kHz.")
        upper, width = float(pair[0]), float(pair[1])
        if width <= 0 or upper <= previous:
            raise ValueError(f"Band splits {[list(p) for p in splits]} need positive bandwidths "
                             f"and increasing upper edges (each [upper edge Hz, bandwidth Hz]).")
        count = max(1, round((upper - previous) / width))
        edges_hz += [previous + (upper - previous) * step / count
                     for step in range(1, count + 1)]
        previous = upper
    bins = num_bins(n_fft)
    # bins below an edge: k * samplerate / n_fft < edge <=> k < edge * n_fft / samplerate
    edges = [min(bins, math.ceil(round(edge * n_fft / samplerate, 6))) for edge in edges_hz]
    return bands_from_edges([0, *edges, bins])


def roformer_bands(n_fft: int,
                   freqs_per_bands: tp.Optional[tp.Sequence[int]] = None) -> tp.List[Band]:
    """BS-RoFormer's bands: `freqs_per_bands` bins per band (their sum must be
    `n_fft // 2 + 1`), or by default the paper's bands for n_fft=2048 (`BS_ROFORMER_BINS`)
    with their edges scaled to `n_fft` (the same bands for n_fft=2048; for smaller n_fft the
    narrow bands merge)."""
    bins = num_bins(n_fft)
    if freqs_per_bands:
        widths = [int(width) for width in freqs_per_bands]
        total = sum(widths)
        if min(widths) < 1 or total != bins:
            raise ValueError(
                f"freqs_per_bands must be positive and sum to n_fft // 2 + 1 = {bins} bins "
                f"(n_fft={n_fft}), got a sum of {total}: change the last band to "
                f"{widths[-1] + bins - total} bins, or leave freqs_per_bands empty for the "
                f"paper's bands scaled to n_fft.")
        return bands_from_widths(widths)
    scale = n_fft / BS_ROFORMER_NFFT
    edges = [stop for _, stop in bands_from_widths(BS_ROFORMER_BINS)]
    return bands_from_edges([0, *[min(bins, math.floor(edge * scale + 0.5)) for edge in edges],
                             bins])


def hz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    linear = freq / (200. / 3)
    log = 15. + torch.log(freq.clamp_min(1e-10) / 1000.) / (math.log(6.4) / 27.)
    return torch.where(freq >= 1000., log, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    linear = mel * (200. / 3)
    log = 1000. * torch.exp((math.log(6.4) / 27.) * (mel - 15.))
    return torch.where(mel >= 15., log, linear)


def mel_filter_support(n_fft: int, samplerate: float, num_bands: int) -> torch.Tensor:
    """`[num_bands, n_fft // 2 + 1]` bool: where each of `num_bands` triangular mel filters
    (Slaney's mel scale, 0 Hz to Nyquist, as librosa's `filters.mel`) is nonzero, plus bin 0 in
    the first filter and the Nyquist bin in the last one."""
    cpu = {'dtype': torch.float64, 'device': 'cpu'}   # also inside `with torch.device('meta')`
    freqs = torch.arange(num_bins(n_fft), **cpu) * samplerate / n_fft
    nyquist = torch.tensor(samplerate / 2, **cpu)
    mels = torch.linspace(0., float(hz_to_mel(nyquist)), num_bands + 2, **cpu)
    points = mel_to_hz(mels)
    lower, upper = points[:-2, None], points[2:, None]
    support = (freqs[None] > lower) & (freqs[None] < upper)
    support[0, 0] = support[-1, -1] = True
    return support


def max_mel_bands(n_fft: int, samplerate: float) -> int:
    """The largest number of mel bands that leaves no band without bins."""
    count = 1
    while count < num_bins(n_fft) and mel_filter_support(n_fft, samplerate,
                                                         count + 1).any(1).all():
        count += 1
    return count


def mel_bands(n_fft: int, samplerate: float, num_bands: int) -> tp.List[Band]:
    """Mel-RoFormer's overlapping bands: the bins of each of `num_bands` mel filters
    (`mel_filter_support`); each band is a contiguous range and every bin is covered."""
    if num_bands < 1:
        raise ValueError(f"num_bands={num_bands} must be >= 1 (the paper: 60).")
    support = mel_filter_support(n_fft, samplerate, num_bands)
    bands = []
    for index, row in enumerate(support):
        where = row.nonzero().flatten()
        if not len(where):
            allowed = max_mel_bands(n_fft, samplerate)
            raise ValueError(
                f"Mel band {index} of num_bands={num_bands} covers no STFT bin with n_fft="
                f"{n_fft} at {samplerate} Hz (its filter is narrower than a bin): use "
                f"num_bands<={allowed} or a larger n_fft.")
        bands.append((int(where[0]), int(where[-1]) + 1))
    return bands


# ----------------------------------------------------------------------------------------
# Layers


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x ** 2) + eps) * weight` over the last dimension, computed in float32
    (also under bf16 autocast) and returned in the input's dtype.

    `l2=True`: lucidrains' formula instead, `x / max(||x||, 1e-12) * sqrt(dim) * weight`
    (`F.normalize`), the same but for inputs of (almost) zero energy and the rounding: what
    imported BS-/Mel-RoFormer checkpoints were trained with.
    """
    def __init__(self, dim: int, eps: float = 1e-10, l2: bool = False):
        super().__init__()
        self.eps = eps
        self.l2 = l2
        self.scale = dim ** 0.5
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        if self.l2:
            return (F.normalize(y, dim=-1) * self.scale * self.weight).to(x.dtype)
        y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


def make_norm(kind: str, dim: int) -> nn.Module:
    """RMSNorm (`'rms'`, or `'rms_l2'`: lucidrains' formula, see `RMSNorm`) or LayerNorm
    (`'layer'`) over the last dimension."""
    if kind in ('rms', 'rms_l2'):
        return RMSNorm(dim, l2=kind == 'rms_l2')
    if kind == 'layer':
        return nn.LayerNorm(dim)
    raise ValueError(f"Unknown norm {kind!r}: use one of {', '.join(NORMS)}.")


def band_widths(bands: tp.Sequence[Band], audio_channels: int) -> tp.List[int]:
    """Real features per band: its bins times the channels times 2 (real and imaginary)."""
    return [(stop - start) * audio_channels * 2 for start, stop in bands]


class BandSplit(nn.Module):
    """Per band: its complex bins of all channels as real features -> norm -> Linear to `dim`.

    Args:
        bands: `(start, stop)` bin ranges.
        audio_channels: channels of the spectrogram.
        dim: features per band token.
        norm: `'rms'` (RMSNorm, the RoFormers) or `'layer'` (LayerNorm, BSRNN).
    """
    def __init__(self, bands: tp.Sequence[Band], audio_channels: int, dim: int,
                 norm: str = 'rms'):
        super().__init__()
        self.bands = list(bands)
        self.projections = nn.ModuleList(
            nn.Sequential(make_norm(norm, width), nn.Linear(width, dim))
            for width in band_widths(bands, audio_channels))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """`[B, T, F, C, 2]` real spectrogram -> `[B, T, K, dim]` band tokens."""
        B, T = spec.shape[:2]
        tokens = [project(spec[:, :, start:stop].reshape(B, T, -1))
                  for (start, stop), project in zip(self.bands, self.projections)]
        return torch.stack(tokens, dim=2)


class MaskMLP(nn.Sequential):
    """norm -> Linear(dim, hidden) -> Tanh -> Linear(hidden, 2 * out) -> GLU.

    `norm=None`: no norm (the MLP starts with its first Linear, as lucidrains' mask
    estimators); `layers`: hidden layers (Linear -> Tanh), 1 by default, 0 for a single
    Linear(dim, 2 * out) -> GLU."""
    def __init__(self, dim: int, hidden: int, out: int, norm: tp.Optional[str],
                 layers: int = 1):
        modules: tp.List[nn.Module] = [] if norm is None else [make_norm(norm, dim)]
        width = dim
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        super().__init__(*modules, nn.Linear(width, 2 * out), nn.GLU(dim=-1))


def average_band_masks(masks: tp.Sequence[torch.Tensor], bands: tp.Sequence[Band],
                       n_bins: int) -> torch.Tensor:
    """Per-band masks `[B, T, stop - start, C, 2]` -> `[B, T, n_bins, C, 2]`, each bin the mean
    of the masks of the bands that cover it."""
    index = torch.cat([torch.arange(start, stop) for start, stop in bands]).to(masks[0].device)
    coverage = band_coverage(bands, n_bins).to(masks[0])
    return overlap_add_masks(torch.cat(list(masks), dim=2), index, 1 / coverage)


def overlap_add_masks(masks: torch.Tensor, index: torch.Tensor,
                      inverse_coverage: torch.Tensor) -> torch.Tensor:
    """Concatenated band masks `[B, T, N, C, 2]`, bin `index[n]` for entry n -> `[B, T, F, C,
    2]`: summed per bin, times `inverse_coverage` `[F]` (1 / number of bands per bin)."""
    B, T, _, C, _ = masks.shape
    summed = masks.new_zeros(B, T, inverse_coverage.shape[0], C, 2).index_add(2, index, masks)
    return summed * inverse_coverage[:, None, None]


class MaskEstimator(nn.Module):
    """One source's complex mask: per band, `MaskMLP` on its tokens; the masks of overlapping
    bands are averaged per bin.

    Args:
        bands: `(start, stop)` bin ranges; they may overlap but must cover all `n_bins`.
        audio_channels: channels of the spectrogram.
        dim: features per band token.
        hidden: hidden features of the MLPs.
        n_bins: STFT bins.
        norm: `'rms'`, `'rms_l2'` or `'layer'`; None: MLPs without a norm.
        layers: hidden layers of the MLPs (`MaskMLP`).
    """
    def __init__(self, bands: tp.Sequence[Band], audio_channels: int, dim: int, hidden: int,
                 n_bins: int, norm: tp.Optional[str] = 'rms', layers: int = 1):
        super().__init__()
        self.bands = list(bands)
        self.audio_channels = audio_channels
        self.mlps = nn.ModuleList(MaskMLP(dim, hidden, width, norm, layers)
                                  for width in band_widths(bands, audio_channels))
        coverage = band_coverage(bands, n_bins)
        self.overlapping = bool((coverage != 1).any())
        if self.overlapping:
            index = torch.cat([torch.arange(start, stop, device='cpu') for start, stop in bands])
            self.register_buffer('bin_index', index, persistent=False)
            self.register_buffer('inverse_coverage', 1 / coverage.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, K, dim]` band tokens -> `[B, T, F, C, 2]` float32 complex mask (re, im)."""
        B, T = x.shape[:2]
        per_band = x.movedim(2, 0).contiguous().unbind(0)     # K x [B, T, dim], contiguous
        masks = torch.cat([mlp(tokens) for tokens, mlp in zip(per_band, self.mlps)], dim=-1)
        masks = masks.float().view(B, T, -1, self.audio_channels, 2)
        if not self.overlapping:
            return masks        # contiguous bands, in order: already one mask per bin
        return overlap_add_masks(masks, self.bin_index, self.inverse_coverage)


def apply_masks(masks: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """Complex masks `[B, S, T, F, C, 2]` times the mixture `[B, C, F, T, 2]` (real,
    imaginary pairs) -> complex `[B, S, C, F, T]`. Real arithmetic on contiguous real and
    imaginary parts (fast, and ONNX-exportable: the exporter lacks most complex ops)."""
    mask_re, mask_im = masks.permute(5, 0, 1, 4, 3, 2).contiguous()     # [B, S, C, F, T]
    spec_re, spec_im = spec.permute(4, 0, 1, 2, 3)[:, :, None]           # [B, 1, C, F, T]
    real = mask_re * spec_re - mask_im * spec_im
    imag = mask_re * spec_im + mask_im * spec_re
    return torch.view_as_complex(torch.stack([real, imag], dim=-1))


def along_time(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a `[N, L, D]` sequence module to `[B, T, K, D]` along time, for each band."""
    B, T, K, D = x.shape
    y = module(x.transpose(1, 2).reshape(B * K, T, D))
    return y.view(B, K, T, D).transpose(1, 2)


def along_bands(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a `[N, L, D]` sequence module to `[B, T, K, D]` along bands, for each frame."""
    B, T, K, D = x.shape
    return module(x.reshape(B * T, K, D)).view(B, T, K, D)


# ----------------------------------------------------------------------------------------
# The shared model


def check_common(sources: tp.Sequence[str], audio_channels: int, segment: float, dim: int,
                 mask_mult: float, mask_layers: int = 1) -> None:
    """Raise a ValueError naming the fix for arguments every band-split model takes."""
    if not sources:
        raise ValueError("A band-split model needs at least one source.")
    if audio_channels < 1:
        raise ValueError(f"audio_channels must be >= 1, got {audio_channels}.")
    if segment <= 0:
        raise ValueError(f"segment must be > 0 seconds, got {segment}.")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}.")
    if mask_mult <= 0 or int(mask_mult * dim) < 1:
        raise ValueError(f"mask_mult={mask_mult} must be > 0 (the mask MLPs have "
                         f"mask_mult * dim hidden features; the papers: 4).")
    if mask_layers < 0:
        raise ValueError(f"mask_layers={mask_layers} must be >= 0 (hidden layers of the mask "
                         f"MLPs; the papers: 1).")


class BandSplitModel(SeparationModel):
    """STFT -> `BandSplit` -> `sequence_model` -> one `MaskEstimator` per source -> masked
    mixture STFT -> iSTFT. Subclasses build their sequence core after calling `__init__` and
    define `sequence_model` (`[B, T, K, dim]` -> `[B, T, K, dim]`).

    Args:
        sources, audio_channels, samplerate, segment: as every model of the package.
        bands: `(start, stop)` bin ranges covering the `n_fft // 2 + 1` bins (checked).
        bands_fix: how to fix bad `bands`, for the error message.
        dim: features per band token.
        n_fft, hop_length: STFT size and hop.
        mask_mult: hidden features of the mask MLPs, times `dim`.
        norm: `'rms'`, `'rms_l2'` or `'layer'`, of the band split and of the mask MLPs.
        mask_norm: whether the mask MLPs start with a norm (lucidrains' do not).
        mask_layers: hidden layers of the mask MLPs (`MaskMLP`).
        zero_dc: zero the masks at bin 0 (DC), as lucidrains' and MSST's `zero_dc`.
    """
    def __init__(self, sources: tp.Sequence[str], audio_channels: int, samplerate: int,
                 segment: float, bands: tp.Sequence[Band], bands_fix: str, dim: int,
                 n_fft: int, hop_length: int, mask_mult: float, norm: str,
                 mask_norm: bool = True, mask_layers: int = 1, zero_dc: bool = False):
        check_common(sources, audio_channels, segment, dim, mask_mult, mask_layers)
        check_stft(n_fft, hop_length)
        if norm not in NORMS:
            raise ValueError(f"Unknown norm {norm!r}: use one of {', '.join(NORMS)}.")
        check_bands(bands, num_bins(n_fft), bands_fix)
        super().__init__(sources, audio_channels, samplerate, segment)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.bands = list(bands)
        self.dim = dim
        self.zero_dc = zero_dc
        self.band_split = BandSplit(bands, audio_channels, dim, norm)
        hidden = int(mask_mult * dim)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(bands, audio_channels, dim, hidden, num_bins(n_fft),
                          norm if mask_norm else None, mask_layers)
            for _ in self.sources)

    def sequence_model(self, x: torch.Tensor) -> torch.Tensor:
        """The model's core, `[B, T, K, dim]` -> `[B, T, K, dim]`."""
        raise NotImplementedError

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T >= 1."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"Expected a mixture [batch, {self.audio_channels}, time], "
                             f"got {tuple(mix.shape)}.")
        length = mix.shape[-1]
        # reflect padding of the centred STFT needs more than n_fft // 2 samples
        padded = F.pad(mix, (0, max(0, self.n_fft // 2 + 1 - length)))
        spec = torch.view_as_real(spectro(padded, self.n_fft, self.hop_length))  # [B,C,F,T,2]
        tokens = self.band_split(spec.permute(0, 3, 2, 1, 4).contiguous())  # [B, T, K, dim]
        tokens = self.sequence_model(tokens)
        masks = torch.stack([estimate(tokens) for estimate in self.mask_estimators], dim=1)
        if self.zero_dc:    # masks [B, S, T, F, C, 2]: nothing of bin 0 comes through
            masks = torch.cat([torch.zeros_like(masks[:, :, :, :1]), masks[:, :, :, 1:]], dim=3)
        estimates = apply_masks(masks, spec)                                 # [B, S, C, F, T]
        return ispectro(estimates, self.hop_length, length=padded.shape[-1])[..., :length]
