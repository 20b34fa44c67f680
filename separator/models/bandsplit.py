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

**Bands in batches.** The per-band layers run batched rather than one band after another
(`BandBatches`): the bands are cut into a few batches of similar widths (`group_bands`:
BS-RoFormer's 62 bands make 6, one per width), and each batch's norms and Linears are one
masked batched norm and one `torch.baddbmm` over its bands' features zero-padded to its
widest band (a band's norm statistics are over its own features only; the padded weights
are zeros, so the padding stays zero and its outputs are dropped). The mask MLPs' norms and
hidden layers, the same size for every band, are one batched op over all bands. The
parameters stay per band, as they always were (`BandSplit.projections`,
`MaskEstimator.mlps`: the checkpoint layout, what the importers write and what older
checkpoints hold; the batching adds no saved state): each forward stacks (and pads) them,
a copy of the weights, cheap next to the matmuls, whose gradients flow back to each band's
parameters (stacked parameters, mapped to and from these names by state-dict hooks, would
save that copy but leave the bands' modules without parameters of their own). On CPU a batch runs batched only while each band's activations are small
(`CPU_BATCH_LIMIT`: beyond, the batched tensors leave the caches and one band after
another is faster); on GPUs always (one kernel instead of one per band).

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


# ----------------------------------------------------------------------------------------
# Bands in batches

# What one more batch of bands costs, in bins of zero padding (see `group_bands`): the fixed
# cost of a batched matmul (a few ops forward and backward, or kernel launches) against the
# work on padded zeros.
BATCH_OVERHEAD_BINS = 16

# On CPU, a batch of bands runs as one batched op only while each band's activations are at
# most this many values (tokens x features): beyond, the batched tensors no longer fit in the
# caches and one band after another (each band's activations cache-resident) is faster
# (measured on a 2-core EPYC, one thread: the batched mask MLPs take 0.4x the time of the
# per-band ones at 44 tokens x 64 hidden features, 0.7x at 87 x 96, 1.1x at 348 x 96 or
# 87 x 512, 1.5x at 518 x 512). Accelerators always run batched (a kernel per band is what
# costs there).
CPU_BATCH_LIMIT = 2 ** 14


def run_batched(x: torch.Tensor, values_per_band: int) -> bool:
    """Whether bands whose activations are `values_per_band` each run batched on x's device
    (`CPU_BATCH_LIMIT`); always when compiled, exported or traced (one graph for any size,
    no guard on it: the fewer ops the better there)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or x.device.type != 'cpu':
        return True
    return values_per_band <= CPU_BATCH_LIMIT


def group_bands(widths: tp.Sequence[int], overhead: int = BATCH_OVERHEAD_BINS
                ) -> tp.List[tp.List[int]]:
    """Band indices in batches of similar widths (`widths`: bins per band), each to run as
    one batched matmul over its bands zero-padded to its widest: the bands sorted by width
    (ties in band order), cut where the padded bins plus `overhead` per batch are the fewest
    (dynamic programming over the cuts). BS-RoFormer's 62 bands make 6 batches (2, 4, 12,
    24, 48 and 128 or 129 bins), Mel-RoFormer's 60 mel bands 14 (6 % of padding)."""
    order = sorted(range(len(widths)), key=lambda band: widths[band])
    sorted_widths = [widths[band] for band in order]
    cost = [0.] + [math.inf] * len(order)      # cost[end]: of the best cuts of order[:end]
    last_cut = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end):
            candidate = cost[start] + (end - start) * sorted_widths[end - 1] + overhead
            if candidate < cost[end]:
                cost[end], last_cut[end] = candidate, start
    batches = []
    end = len(order)
    while end:
        batches.append(order[last_cut[end]:end])
        end = last_cut[end]
    return batches[::-1]


class BandBatches:
    """How `BandSplit` and `MaskEstimator` run their per-band layers batched: the bands in
    batches of similar widths (`group_bands`), each band's features (`features` per bin: the
    channels' real and imaginary parts) zero-padded to the widest band of its batch.

    Attributes:
        bands: `(start, stop)` bin ranges; `widths`: their bins.
        batches: band indices per batch; `order`: all of them, batch after batch.
        padded: bins of each batch's bands once padded (its widest band's).
        in_order: `order` is the bands' own order (widths that never decrease).
    """
    def __init__(self, bands: tp.Sequence[Band], audio_channels: int,
                 overhead: int = BATCH_OVERHEAD_BINS):
        self.bands = list(bands)
        self.features = 2 * audio_channels
        self.widths = [stop - start for start, stop in self.bands]
        self.batches = group_bands(self.widths, overhead)
        self.order = [band for batch in self.batches for band in batch]
        self.padded = [max(self.widths[band] for band in batch) for batch in self.batches]
        self.in_order = self.order == list(range(len(self.bands)))

    def spans(self) -> tp.Iterator[tp.Tuple[int, tp.List[int], int]]:
        """(position in `order` of its first band, band indices, padded bins) per batch."""
        start = 0
        for batch, padded in zip(self.batches, self.padded):
            yield start, batch, padded
            start += len(batch)

    def is_padded(self, batch: tp.Sequence[int], padded: int) -> bool:
        return any(self.widths[band] != padded for band in batch)

    def feature_range(self, batch: tp.Sequence[int], padded: int
                      ) -> tp.Optional[tp.Tuple[int, int]]:
        """The batch's features as one range of the flattened `[bins * features]` (bands of
        one width, next to each other, in order), or None where they must be gathered."""
        if self.is_padded(batch, padded):
            return None
        for band, following in zip(batch, batch[1:]):
            if following != band + 1 or self.bands[following][0] != self.bands[band][1]:
                return None
        return self.bands[batch[0]][0] * self.features, self.bands[batch[-1]][1] * self.features

    def padded_bins(self, batch: tp.Sequence[int], padded: int, pad_bin: int) -> tp.List[int]:
        """The STFT bin of each padded bin of the batch, band after band; `pad_bin` for the
        padding."""
        bins: tp.List[int] = []
        for band in batch:
            start, stop = self.bands[band]
            bins += list(range(start, stop)) + [pad_bin] * (padded - (stop - start))
        return bins

    def real_features(self, batch: tp.Sequence[int]) -> tp.List[int]:
        return [self.widths[band] * self.features for band in batch]


def pad_features(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` zero-padded along its last dimension to `width`."""
    extra = width - tensor.shape[-1]
    return F.pad(tensor, (0, extra)) if extra else tensor


def pad_glu_outputs(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Weight `[2 * out, in]` or bias `[2 * out]` of a Linear followed by a GLU -> for `width`
    outputs of the GLU: each half (values, then gates) zero-padded to `width` rows (the padded
    outputs are 0 * sigmoid(0) = 0)."""
    out = tensor.shape[0] // 2
    if out == width:
        return tensor
    halves = tensor.reshape(2, out, -1)
    return F.pad(halves, (0, 0, 0, width - out)).reshape(2 * width, *tensor.shape[1:])


def batched_norm(x: torch.Tensor, kind: str, eps: float, weight: torch.Tensor,
                 bias: tp.Optional[torch.Tensor], counts: tp.Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
    """`make_norm(kind, ...)` of each band at once: `x` `[bands, N, W]`, each band's own
    `weight` (and LayerNorm's `bias`) `[bands, W]`. With `counts` `[bands, 1, 1]`, band `k`
    has only `counts[k]` real features, then zeros (also zeros in `weight` and `bias`): its
    statistics are those of its real features and its padding stays zero. Computed in
    float32, returned in x's dtype (as `RMSNorm`)."""
    y = x.float()
    weight, width = weight.float()[:, None], y.shape[-1]

    def mean(values: torch.Tensor) -> torch.Tensor:
        if counts is None:
            return values.mean(-1, keepdim=True)
        return values.sum(-1, keepdim=True) / counts

    if kind == 'layer':
        assert bias is not None
        centred = y - mean(y)
        if counts is not None:   # the padding must not count in the variance
            centred = centred * (torch.arange(width, device=y.device) < counts)
        y = centred * torch.rsqrt(mean(centred.square()) + eps)
        return (y * weight + bias.float()[:, None]).to(x.dtype)
    if kind == 'rms_l2':     # F.normalize(y) * sqrt(features) * weight, per band
        scale = width ** 0.5 if counts is None else counts.sqrt()
        norm = y.square().sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
        return (y / norm * scale * weight).to(x.dtype)
    return (y * torch.rsqrt(mean(y.square()) + eps) * weight).to(x.dtype)


def norm_eps(norm: nn.Module) -> float:
    return float(getattr(norm, 'eps', 0.))


class BandSplit(nn.Module):
    """Per band: its complex bins of all channels as real features -> norm -> Linear to `dim`.

    The bands run in batches of similar widths (`BandBatches`): a batch's norms and Linears
    are one batched norm and one `baddbmm` over its bands' features zero-padded to its widest
    band, the per-band weights (`projections`, one `Sequential(norm, Linear)` per band: the
    checkpoint layout) stacked and padded on the fly. A batch of bands of one width, next to
    each other, reads its features in place; others gather theirs, and do so only while
    small on CPU (`run_batched`; else their bands run one after another).

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
        self.norm = norm
        self.projections = nn.ModuleList(
            nn.Sequential(make_norm(norm, width), nn.Linear(width, dim))
            for width in band_widths(bands, audio_channels))
        self.batches = BandBatches(bands, audio_channels)
        self.n_bins = max(stop for _, stop in self.bands)
        features = self.batches.features
        # per batch: its range of the flattened features, or None and where to gather them
        # (`gather_index[offset:offset + length]`; the padding reads a zero feature after the
        # last)
        self.ranges = [self.batches.feature_range(batch, padded)
                       for _, batch, padded in self.batches.spans()]
        gather: tp.List[int] = []
        self.gather_offsets = []
        for (_, batch, padded), span in zip(self.batches.spans(), self.ranges):
            self.gather_offsets.append(len(gather))
            if span is None:
                gather += [bin_ * features + offset
                           for bin_ in self.batches.padded_bins(batch, padded, self.n_bins)
                           for offset in range(features)]
        self.register_buffer('gather_index', torch.tensor(gather, dtype=torch.long,
                                                          device='cpu'), persistent=False)
        counts = [count for batch in self.batches.batches
                  for count in self.batches.real_features(batch)]
        self.register_buffer('feature_counts', torch.tensor(counts, dtype=torch.float32,
                                                            device='cpu'), persistent=False)

    def stacked(self, batch: tp.Sequence[int], width: int) -> tp.Tuple[torch.Tensor, ...]:
        """The batch's norm weights (and biases: LayerNorm) `[n, width]`, Linear weights
        `[n, width, dim]` and biases `[n, 1, dim]`, zero-padded to `width` features."""
        modules = [self.projections[band] for band in batch]
        norm_weight = torch.stack([pad_features(norm.weight, width) for norm, _ in modules])
        norm_bias = (torch.stack([pad_features(norm.bias, width) for norm, _ in modules])
                     if self.norm == 'layer' else None)
        weight = torch.stack([pad_features(linear.weight, width) for _, linear in modules])
        bias = torch.stack([linear.bias for _, linear in modules])
        return norm_weight, norm_bias, weight.transpose(1, 2), bias[:, None]

    def project_batch(self, x: torch.Tensor, start: int, batch: tp.Sequence[int],
                      padded: int) -> torch.Tensor:
        """Features `[N, n * width]` of the batch's `n` bands (padded to `width`) -> their
        tokens `[n, N, dim]`. `start`: the batch's first position in `batches.order`."""
        width = padded * self.batches.features
        x = x.view(x.shape[0], len(batch), width).transpose(0, 1)       # [n, N, width]
        counts = None
        if self.batches.is_padded(batch, padded):
            counts = self.feature_counts[start:start + len(batch), None, None]
        norm_weight, norm_bias, weight, bias = self.stacked(batch, width)
        normed = batched_norm(x, self.norm, norm_eps(self.projections[batch[0]][0]),
                              norm_weight, norm_bias, counts)
        return torch.baddbmm(bias, normed, weight)

    def project(self, flat: torch.Tensor, band: int) -> torch.Tensor:
        """One band's tokens `[N, dim]` from the flattened spectrogram `[N, bins * features]`,
        by its own modules."""
        start, stop = self.bands[band]
        features = self.batches.features
        return self.projections[band](flat[:, start * features:stop * features])

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """`[B, T, F, C, 2]` real spectrogram -> `[B, T, K, dim]` band tokens (a view of a
        band-major `[K, B, T, dim]` tensor: what the Transformers along time want)."""
        B, T = spec.shape[:2]
        flat = spec[:, :, :self.n_bins].reshape(B * T, -1)
        padded_flat: tp.Optional[torch.Tensor] = None
        tokens: tp.List[tp.Optional[torch.Tensor]] = [None] * len(self.bands)   # [B * T, dim]
        for index, (start, batch, padded) in enumerate(self.batches.spans()):
            span, length = self.ranges[index], len(batch) * padded * self.batches.features
            if span is not None:
                x = flat[:, span[0]:span[1]]
            elif run_batched(spec, B * T * length // len(batch)):
                if padded_flat is None:
                    padded_flat = F.pad(flat, (0, self.batches.features))
                offset = self.gather_offsets[index]
                x = padded_flat.index_select(1, self.gather_index[offset:offset + length])
            else:
                for band in batch:
                    tokens[band] = self.project(flat, band)
                continue
            for band, band_tokens in zip(batch, self.project_batch(x, start, batch, padded)):
                tokens[band] = band_tokens
        return torch.stack(tokens).view(len(self.bands), B, T, -1).permute(1, 2, 0, 3)


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

    Batched (the per-band MLPs in `mlps` are the checkpoint layout, their weights stacked on
    the fly): the norms and the hidden layers of all bands are one batched norm and one
    `baddbmm` each (every band has `dim` inputs and `hidden` outputs); the last Linear (to
    each band's own width) runs in batches of similar widths (`BandBatches`), padded to the
    widest; the padded outputs are dropped. On CPU with many tokens (`run_batched`) the MLPs
    run one band after another instead (`per_band`).

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
        self.n_bins = n_bins
        self.norm = norm
        self.layers = layers
        self.mlps = nn.ModuleList(MaskMLP(dim, hidden, width, norm, layers)
                                  for width in band_widths(bands, audio_channels))
        self.hidden_features = hidden if layers else dim
        self.batches = BandBatches(bands, audio_channels)
        coverage = band_coverage(bands, n_bins)
        self.overlapping = bool((coverage != 1).any())
        # the bands one after the other from bin 0: their masks side by side are the masks
        edges = [bin_ for band in self.bands for bin_ in band]
        self.contiguous = not self.overlapping and edges == sorted(edges)
        # ... and so are those of the batches (in band order, none padded)
        self.direct = (self.contiguous and self.batches.in_order
                       and not any(self.batches.is_padded(batch, padded)
                                   for _, batch, padded in self.batches.spans()))
        self.register_buffer('band_order', torch.tensor(self.batches.order, device='cpu'),
                             persistent=False)
        self.register_buffer('band_bins', torch.cat([
            torch.arange(start, stop, device='cpu') for start, stop in self.bands]),
            persistent=False)
        bins = [bin_ for _, batch, padded in self.batches.spans()
                for bin_ in self.batches.padded_bins(batch, padded, n_bins)]
        self.register_buffer('bin_index', torch.tensor(bins, device='cpu'), persistent=False)
        self.register_buffer('inverse_coverage', 1 / coverage.float(), persistent=False)

    def layer(self, mlp: nn.Module, index: int) -> nn.Module:
        """The `index`-th Linear of a `MaskMLP` (its last: `self.layers`)."""
        return mlp[(0 if self.norm is None else 1) + 2 * index]

    def hidden(self, x: torch.Tensor, mlps: tp.Sequence[nn.Module]) -> torch.Tensor:
        """Band-major tokens `[K, N, dim]` (the bands of `mlps`) -> after the norm and the
        hidden layers `[K, N, hidden]` (or `[K, N, dim]` normed with no hidden layer)."""
        if self.norm is not None:
            norms = [mlp[0] for mlp in mlps]
            x = batched_norm(x, self.norm, norm_eps(norms[0]),
                             torch.stack([norm.weight for norm in norms]),
                             torch.stack([norm.bias for norm in norms])
                             if self.norm == 'layer' else None)
        for index in range(self.layers):
            linears = [self.layer(mlp, index) for mlp in mlps]
            weight = torch.stack([linear.weight for linear in linears]).transpose(1, 2)
            bias = torch.stack([linear.bias for linear in linears])[:, None]
            x = torch.tanh(torch.baddbmm(bias, x, weight))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, K, dim]` band tokens -> `[B, T, F, C, 2]` float32 complex mask (re, im):
        `batched`, or on CPU with many tokens `per_band` (`run_batched`)."""
        B, T = x.shape[:2]
        if run_batched(x, B * T * self.hidden_features):
            return self.batched(x)
        return self.per_band(x)

    def per_band(self, x: torch.Tensor) -> torch.Tensor:
        """`forward`, one band after another."""
        B, T = x.shape[:2]
        per_band = x.movedim(2, 0).contiguous().unbind(0)     # K x [B, T, dim], contiguous
        masks = torch.cat([mlp(tokens) for tokens, mlp in zip(per_band, self.mlps)], dim=-1)
        masks = masks.float().view(B, T, -1, self.audio_channels, 2)
        if self.contiguous:
            return masks        # the bands in order, one after the other: one mask per bin
        return overlap_add_masks(masks, self.band_bins, self.inverse_coverage)

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        """`forward`, the bands batched."""
        B, T, K, _ = x.shape
        tokens = x.permute(2, 0, 1, 3)                                 # [K, B, T, dim]
        if not self.batches.in_order:
            tokens = tokens.index_select(0, self.band_order)
        mlps = [self.mlps[band] for band in self.batches.order]
        hidden = self.hidden(tokens.reshape(K, B * T, -1), mlps)
        features = self.batches.features
        masks = []
        # split, not sliced: the gradient of each slice would be a zero-filled full copy
        per_batch = hidden.split([len(batch) for batch in self.batches.batches])
        for (start, batch, padded), inputs in zip(self.batches.spans(), per_batch):
            width = padded * features
            linears = [self.layer(mlp, self.layers) for mlp in mlps[start:start + len(batch)]]
            weight = torch.stack([pad_glu_outputs(linear.weight, width) for linear in linears])
            bias = torch.stack([pad_glu_outputs(linear.bias, width) for linear in linears])
            out = torch.baddbmm(bias[:, None], inputs, weight.transpose(1, 2))
            masks.append(F.glu(out, dim=-1).transpose(0, 1).reshape(B * T, -1))
        mask = torch.cat(masks, dim=-1).float()
        if self.direct:
            return mask.view(B, T, self.n_bins, self.audio_channels, 2)
        summed = mask.new_zeros(B * T, self.n_bins + 1, features).index_add(
            1, self.bin_index, mask.view(B * T, -1, features))[:, :self.n_bins]
        if self.overlapping:
            summed = summed * self.inverse_coverage[:, None]
        return summed.view(B, T, self.n_bins, self.audio_channels, 2)


def apply_masks(masks: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """Complex masks `[B, S, T, F, C, 2]` times the mixture `[B, C, F, T, 2]` (real,
    imaginary pairs) -> complex `[B, S, C, F, T]`. Real arithmetic on contiguous real and
    imaginary parts (fast, and ONNX-exportable: the exporter lacks most complex ops)."""
    mask_re, mask_im = masks.permute(5, 0, 1, 4, 3, 2).contiguous()     # [B, S, C, F, T]
    spec_re, spec_im = spec.permute(4, 0, 1, 2, 3).contiguous()[:, :, None]   # [B, 1, C, F, T]
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
