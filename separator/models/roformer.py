"""BS-RoFormer: "Music Source Separation with Band-Split RoPE Transformer" (Lu, Wang, Kong,
Hung, 2023) and Mel-RoFormer: "Mel-Band RoFormer for Music Source Separation" (Wang, Lu,
Won, 2023).

Band-split spectrogram models (`bandsplit.py` has what they share with BSRNN) whose
sequence core is a stack of RoPE Transformers:

* the complex STFT (`n_fft`, `hop_length`) is cut into bands -> per band RMSNorm -> Linear to
  `dim` features (`BandSplit`). BS-RoFormer's bands do not overlap (`freqs_per_bands`, by
  default the paper's 62 bands for n_fft=2048, their edges scaled to other n_fft);
  Mel-RoFormer's `num_bands` bands are the supports of triangular mel filters, which overlap;
* `depth` blocks, each a Transformer layer along time (each band a sequence of frames), then
  one along bands (each frame a sequence of bands). A layer is pre-norm: RMSNorm ->
  multi-head attention (`heads` x `dim_head`, rotary position embeddings on queries and keys,
  `F.scaled_dot_product_attention`) -> Linear, residual; RMSNorm -> Linear (`ff_mult * dim`)
  -> GELU -> Linear, residual; `dropout` on attention weights and after each branch;
* a final RMSNorm, then per source, per band, RMSNorm -> MLP (`mask_mult * dim` hidden, Tanh)
  -> GLU gives the band's complex mask (`MaskEstimator`); masks of overlapping mel bands are
  averaged per bin. The masks multiply the mixture STFT.

The paper sizes (the defaults): dim 384, 8 heads of 64, FFN x 4, dropout 0.1, mask MLPs of
4 * dim, n_fft 2048 with a hop of 10 ms (441 samples at 44.1 kHz), 60 mel bands, 8 s
segments. BS-RoFormer's paper: "D = 384 [...], L = 12 for the number of Transformer blocks,
8 heads [...] and a dropout rate of 0.1" (its SDX23 system), and L=6 for the smaller
MUSDB18HQ-only models: "72.2 M parameters". The paper does not give `dim_head`: 72.2 M is
what dim_head = D / heads = 48 and one stereo source (one model per stem) give here
(72.16 M at depth=6; 74.5 M with dim_head=64, lucidrains/BS-RoFormer's default, which we
keep). With the defaults
(depth=12, dim_head=64): BS-RoFormer has 98.1 M parameters for one stereo source (47.3 M in
the 24 Transformer layers, 1.6 M in the band split, 49.3 M per source in the mask
estimators) and 246.0 M for 4 stereo sources; Mel-RoFormer 110.2 M and 289.7 M (its 60
overlapping bands hold 1979 bins instead of 1025: the band split and mask estimators are 1.9
times larger). The paper's hop of 441 does not divide n_fft, so such a model does not export
to ONNX (the exportable iSTFT needs n_fft to be a multiple of the hop): use 512 for that.

Recommended tiny CPU configs (learn the overfit test of the tests; BS-RoFormer 0.59 M
parameters with 2 mono sources, 1.69 M with 4 stereo ones, 62 bands at n_fft=1024;
Mel-RoFormer 0.68 M and 2.32 M)::

    BSRoFormer(sources, dim=32, depth=1, heads=2, dim_head=16, dropout=0., mask_mult=2,
               n_fft=1024, hop_length=256)
    MelRoFormer(sources, dim=32, depth=1, heads=2, dim_head=16, dropout=0., mask_mult=2,
                n_fft=1024, hop_length=256, num_bands=24)

One training step (forward + backward + Adam, batch 4 x 1 s stereo at 44.1 kHz, 4 sources)
takes about 0.8 s (BS-RoFormer) and 0.5 s (Mel-RoFormer) on one CPU thread.
"""
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import capture_init
from .bandsplit import (Band, BandSplitModel, RMSNorm, along_bands, along_time, mel_bands,
                        roformer_bands)


# ----------------------------------------------------------------------------------------
# Rotary position embeddings (Su et al., "RoFormer", 2021)


def rotary_cos_sin(length: int, dim_head: int, device: torch.device, dtype: torch.dtype,
                   base: float = 10000.) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines `[length, dim_head]` of the rotation angles `position * base **
    (-2 i / dim_head)` of channel pairs `(i, i + dim_head // 2)`."""
    exponents = torch.arange(0, dim_head, 2, device=device, dtype=torch.float32) / dim_head
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * (
        base ** -exponents)[None]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs `(i, i + d // 2)` of `x` `[..., L, d]` by the angles of each
    position: the dot product of two rotated vectors depends on their relative position."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


# ----------------------------------------------------------------------------------------
# Transformer layers


class RotaryAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary embeddings, on `[N, L, dim]`."""
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.dropout = dropout
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, L, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).view(N, L, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                      # [N, heads, L, dim_head]
        cos, sin = rotary_cos_sin(L, self.dim_head, x.device, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = self.dropout if self.training else 0.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = self.to_out(out.transpose(1, 2).reshape(N, L, self.heads * self.dim_head))
        return F.dropout(out, dropout, self.training)


class FeedForward(nn.Sequential):
    """Pre-norm feed-forward: RMSNorm -> Linear -> GELU -> Linear, with dropout."""
    def __init__(self, dim: int, mult: float, dropout: float):
        hidden = int(mult * dim)
        super().__init__(RMSNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, dim), nn.Dropout(dropout))


class TransformerLayer(nn.Module):
    """Attention then feed-forward, each a residual branch, on `[N, L, dim]`."""
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: float, dropout: float):
        super().__init__()
        self.attn = RotaryAttention(dim, heads, dim_head, dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ff(x)


class RoFormerBlock(nn.Module):
    """A Transformer layer along time (each band), then one along bands (each frame)."""
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: float, dropout: float):
        super().__init__()
        self.time_transformer = TransformerLayer(dim, heads, dim_head, ff_mult, dropout)
        self.band_transformer = TransformerLayer(dim, heads, dim_head, ff_mult, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return along_bands(self.band_transformer, along_time(self.time_transformer, x))


def resolve_dim_head(dim: int, heads: int, dim_head: tp.Optional[int]) -> int:
    """`dim_head`, or `dim // heads` when None; ValueError naming the fix if unusable."""
    if heads < 1:
        raise ValueError(f"heads must be >= 1, got {heads} (the paper: 8).")
    if dim_head is None:
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}: change dim or "
                             f"heads, or set dim_head (e.g. 64) explicitly.")
        dim_head = dim // heads
    if dim_head < 2 or dim_head % 2:
        raise ValueError(f"dim_head={dim_head} must be even and >= 2 (rotary embeddings rotate "
                         f"channel pairs): e.g. dim_head=64.")
    return dim_head


class RoFormer(BandSplitModel):
    """What BS-RoFormer and Mel-RoFormer share: all but their bands (built by their own
    constructors, which record their arguments for model packages)."""
    def __init__(self, sources: tp.Sequence[str], audio_channels: int, samplerate: int,
                 segment: float, bands: tp.Sequence[Band], bands_fix: str, dim: int, depth: int,
                 heads: int, dim_head: tp.Optional[int], ff_mult: float, dropout: float,
                 mask_mult: float, n_fft: int, hop_length: int):
        dim_head = resolve_dim_head(dim, heads, dim_head)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth} (the paper: 12, or 6).")
        if not 0 <= dropout < 1 or ff_mult <= 0:
            raise ValueError(f"Need 0 <= dropout < 1 and ff_mult > 0, got dropout={dropout}, "
                             f"ff_mult={ff_mult} (the paper: 0.1 and 4).")
        super().__init__(sources, audio_channels, samplerate, segment, bands, bands_fix, dim,
                         n_fft, hop_length, mask_mult, norm='rms')
        self.depth = depth
        self.heads = heads
        self.dim_head = dim_head
        self.blocks = nn.ModuleList(RoFormerBlock(dim, heads, dim_head, ff_mult, dropout)
                                    for _ in range(depth))
        self.final_norm = RMSNorm(dim)

    def sequence_model(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)


class BSRoFormer(RoFormer):
    """Band-Split RoPE Transformer. See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate: sample rate in Hz (metadata; the bands are given in bins).
        segment: training segment in seconds (metadata for chunked inference; the paper: 8).
        dim: features per band token (the paper's D = 384).
        depth: blocks of (time Transformer layer, band Transformer layer) (the paper's L).
        heads, dim_head: attention heads and features per head (None: dim // heads).
        ff_mult: hidden features of the feed-forward, times `dim`.
        dropout: on the attention weights and after each residual branch.
        mask_mult: hidden features of the mask MLPs, times `dim`.
        n_fft, hop_length: STFT size and hop (the paper: 2048 and 10 ms).
        freqs_per_bands: bins per band, summing to `n_fft // 2 + 1`; None: the paper's bands
            for n_fft=2048, their edges scaled to `n_fft` (`bandsplit.roformer_bands`).
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 8., dim: int = 384, depth: int = 12, heads: int = 8,
                 dim_head: tp.Optional[int] = 64, ff_mult: float = 4, dropout: float = 0.1,
                 mask_mult: float = 4, n_fft: int = 2048, hop_length: int = 441,
                 freqs_per_bands: tp.Optional[tp.Sequence[int]] = None):
        bands = roformer_bands(n_fft, freqs_per_bands)
        fix = "change freqs_per_bands (bins per band, summing to n_fft // 2 + 1)."
        super().__init__(sources, audio_channels, samplerate, segment, bands, fix, dim, depth,
                         heads, dim_head, ff_mult, dropout, mask_mult, n_fft, hop_length)


class MelRoFormer(RoFormer):
    """Mel-Band RoFormer: BS-RoFormer with overlapping mel bands. See the module docstring.

    Args:
        num_bands: mel bands (the paper: 60), see `bandsplit.mel_bands`; `samplerate` places
            them. The other arguments are those of `BSRoFormer` (without `freqs_per_bands`).
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 8., dim: int = 384, depth: int = 12, heads: int = 8,
                 dim_head: tp.Optional[int] = 64, ff_mult: float = 4, dropout: float = 0.1,
                 mask_mult: float = 4, n_fft: int = 2048, hop_length: int = 441,
                 num_bands: int = 60):
        bands = mel_bands(n_fft, samplerate, num_bands)
        fix = "change num_bands or n_fft."
        super().__init__(sources, audio_channels, samplerate, segment, bands, fix, dim, depth,
                         heads, dim_head, ff_mult, dropout, mask_mult, n_fft, hop_length)
