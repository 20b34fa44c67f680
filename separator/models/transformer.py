"""Cross-domain Transformer Encoder of Hybrid Transformer Demucs (Rouard et al., 2023).

It sits between the encoders and the decoders of HTDemucs and works on two sequences:

* the **spectral** tokens: the frequency branch output `[B, C, F, T1]` flattened time-major
  (token `t1 * F + f`), with a 2D sinusoidal positional embedding: half of the channels
  encode the frame `t1`, the other half the frequency bin `f`;
* the **temporal** tokens: the time branch output `[B, C, T2]`, with a 1D sinusoidal
  positional embedding of the step `t2`.

The two sequences have different lengths and rates: nothing needs to line up, the
cross-attention layers let each token look at all the tokens of the other branch.

Layers alternate between self-attention within each branch (one layer per branch, not
shared) and cross-attention between branches (spectral queries on temporal keys/values and
the other way round, both computed from the *inputs* of the layer). With
`cross_first=False` (the paper's choice) layers 0, 2, 4... are self-attention.

Each layer is a usual Transformer encoder layer (attention then feed-forward, each as a
residual branch) with optional extras used by the paper:

* `norm_first`: pre-norm (LayerNorm before the attention and the feed-forward) instead of
  post-norm;
* `layer_scale`: each residual branch is multiplied by a learnt per-channel scale that
  starts at 1e-4, so the layer starts close to the identity;
* `norm_out` (only with `norm_first`): a GroupNorm with one group (normalises each example
  over all its tokens and channels) at the end of each layer.
"""
import math
import typing as tp

import torch
from torch import nn

from .hdemucs import LayerScale


# ----------------------------------------------------------------------------------------
# Positional embeddings


def sin_embedding(positions: torch.Tensor, dim: int,
                  max_period: float = 10000.) -> torch.Tensor:
    """Sinusoidal embedding `[N, dim]` of the (float) positions `[N]`.

    The first half of the channels are cosines, the second half sines, with periods in
    geometric progression from 2 pi to about `max_period` (times 2 pi).
    """
    if dim % 2:
        raise ValueError(f"Sinusoidal embeddings need an even dimension, got {dim}.")
    half = dim // 2
    exponents = torch.arange(half, device=positions.device, dtype=torch.float32)
    frequencies = max_period ** (-exponents / max(half - 1, 1))
    phase = positions.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def sin_embedding_2d(freqs: int, frames: int, dim: int, device: torch.device,
                     max_period: float = 10000.) -> torch.Tensor:
    """2D sinusoidal embedding `[frames * freqs, dim]` for time-major spectral tokens.

    Channels `[:dim // 2]` encode the frame, channels `[dim // 2:]` the frequency bin.
    """
    if dim % 4:
        raise ValueError(f"2D sinusoidal embeddings need a dimension multiple of 4, got {dim}.")
    half = dim // 2
    time_emb = sin_embedding(torch.arange(frames, device=device), half, max_period)
    freq_emb = sin_embedding(torch.arange(freqs, device=device), half, max_period)
    emb = torch.cat([time_emb[:, None, :].expand(frames, freqs, half),
                     freq_emb[None, :, :].expand(frames, freqs, half)], dim=2)
    return emb.reshape(frames * freqs, dim)


def demucs_sin_embedding(length: int, dim: int, device: torch.device,
                         max_period: float = 10000.) -> torch.Tensor:
    """`sin_embedding` of the steps 0..length-1 computed as demucs does (it divides by the
    periods where `sin_embedding` multiplies by the frequencies: equal up to rounding)."""
    half = dim // 2
    positions = torch.arange(length, device=device)[:, None]
    exponents = torch.arange(half, device=device)[None, :]
    phase = positions / (max_period ** (exponents / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def demucs_sin_embedding_2d(freqs: int, frames: int, dim: int, device: torch.device,
                            max_period: float = 10000.) -> torch.Tensor:
    """demucs' 2D embedding `[frames * freqs, dim]` for time-major spectral tokens.

    Unlike `sin_embedding_2d`, sines and cosines alternate (even channels sines, odd ones
    cosines), the first half of the channels encodes the frame and the second the bin, at
    frequencies `max_period ** (-2 k / (dim / 2))`."""
    if dim % 4:
        raise ValueError(f"2D sinusoidal embeddings need a dimension multiple of 4, got {dim}.")
    half = dim // 2
    frequencies = torch.exp(torch.arange(0., half, 2) * -(math.log(max_period) / half))
    time_phase = torch.arange(0., frames)[:, None] * frequencies     # [frames, half / 2]
    freq_phase = torch.arange(0., freqs)[:, None] * frequencies      # [freqs, half / 2]
    emb = torch.zeros(frames, freqs, dim)
    emb[:, :, 0:half:2] = torch.sin(time_phase)[:, None]
    emb[:, :, 1:half:2] = torch.cos(time_phase)[:, None]
    emb[:, :, half::2] = torch.sin(freq_phase)[None]
    emb[:, :, half + 1::2] = torch.cos(freq_phase)[None]
    return emb.reshape(frames * freqs, dim).to(device)


POS_EMBEDS = ('separator', 'demucs')


# ----------------------------------------------------------------------------------------
# Layers


class ChannelLastLayerScale(LayerScale):
    """`LayerScale` for `[B, N, C]` tensors (channels last)."""
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class TokenGroupNorm(nn.GroupNorm):
    """GroupNorm for `[B, N, C]` tokens: with one group, normalises each example over all
    its tokens and channels."""
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TransformerLayer(nn.Module):
    """One encoder layer on `[B, N, C]` tokens: (cross-)attention then feed-forward.

    Self-attention (`cross=False`): queries, keys and values come from `x`.
    Cross-attention (`cross=True`): queries from `x`, keys and values from `other`, a
    sequence of any length from the other branch (normalised by its own LayerNorm when
    `norm_first`).

    Args:
        dim: number of channels of the tokens, must be divisible by `heads`.
        heads: number of attention heads.
        hidden_scale: the feed-forward hidden layer has `int(dim * hidden_scale)` channels.
        dropout: dropout on the attention weights and after each residual branch.
        norm_first: pre-norm if True, else post-norm.
        norm_out: GroupNorm(1) at the end of the layer (only used with `norm_first`).
        layer_scale: learnt per-channel scale on both residual branches, initialised to
            `layer_scale_init`.
        gelu: GELU activation in the feed-forward, else ReLU.

    The attention is `nn.MultiheadAttention` without returned weights, which runs PyTorch's
    `scaled_dot_product_attention` (flash / memory-efficient kernels where available).
    """
    checkpoint_unit = True     # optim.checkpointing recomputes it (separator/checkpointing.py)

    def __init__(self, dim: int, heads: int, cross: bool = False, hidden_scale: float = 4.,
                 dropout: float = 0., norm_first: bool = True, norm_out: bool = True,
                 layer_scale: bool = True, layer_scale_init: float = 1e-4,
                 gelu: bool = True):
        super().__init__()
        self.cross = cross
        self.norm_first = norm_first
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        hidden = int(dim * hidden_scale)
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU() if gelu else nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, dim))
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        # Keys/values of a pre-norm cross-attention get their own norm.
        self.norm_other = nn.LayerNorm(dim) if cross and norm_first else None
        self.norm_out = TokenGroupNorm(1, dim) if norm_first and norm_out else None
        self.scale_attn: nn.Module = nn.Identity()
        self.scale_ffn: nn.Module = nn.Identity()
        if layer_scale:
            self.scale_attn = ChannelLastLayerScale(dim, layer_scale_init)
            self.scale_ffn = ChannelLastLayerScale(dim, layer_scale_init)
        self.dropout_attn = nn.Dropout(dropout)
        self.dropout_ffn = nn.Dropout(dropout)

    def _attend(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        out = self.attn(queries, keys, keys, need_weights=False)[0]
        return self.scale_attn(self.dropout_attn(out))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_ffn(self.dropout_ffn(self.ffn(x)))

    def forward(self, x: torch.Tensor, other: tp.Optional[torch.Tensor] = None) -> torch.Tensor:
        """`x`: `[B, N, C]`, `other`: `[B, M, C]` (cross-attention only) -> `[B, N, C]`."""
        if self.cross != (other is not None):
            raise ValueError("A cross-attention layer needs `other`, a self-attention layer "
                             "must not get it.")
        if self.norm_first:
            queries = self.norm_attn(x)
            if other is None:
                keys = queries
            else:
                assert self.norm_other is not None
                keys = self.norm_other(other)
            x = x + self._attend(queries, keys)
            x = x + self._feed_forward(self.norm_ffn(x))
            if self.norm_out is not None:
                x = self.norm_out(x)
        else:
            keys = x if other is None else other
            x = self.norm_attn(x + self._attend(x, keys))
            x = self.norm_ffn(x + self._feed_forward(x))
        return x


# ----------------------------------------------------------------------------------------
# The cross-domain transformer


class CrossDomainTransformer(nn.Module):
    """Transformer over the spectral and temporal sequences of HTDemucs (module docstring).

    Args:
        dim: channels of both branches' tokens; a multiple of `heads` and of 4 (2D
            positional embedding).
        layers: number of layers *per branch*, alternating self- and cross-attention.
        heads, hidden_scale, dropout, norm_first, norm_out, layer_scale, gelu: see
            `TransformerLayer`.
        cross_first: if True, layers 0, 2, 4... are cross-attention, else self-attention.
        norm_in: LayerNorm of the tokens before adding the positional embeddings.
        max_period: longest period of the sinusoidal embeddings.
        weight_pos_embed: weight of the positional embeddings.
        pos_embed: 'separator' (`sin_embedding_2d`, `sin_embedding`), or 'demucs' (demucs'
            own embeddings, `demucs_sin_embedding_2d`, for models imported from demucs).
    """
    def __init__(self, dim: int, layers: int = 5, heads: int = 8, hidden_scale: float = 4.,
                 dropout: float = 0., cross_first: bool = False, norm_in: bool = True,
                 norm_first: bool = True, norm_out: bool = True, layer_scale: bool = True,
                 gelu: bool = True, max_period: float = 10000., weight_pos_embed: float = 1.,
                 pos_embed: str = 'separator'):
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed!r} is unknown: use one of "
                             f"{', '.join(POS_EMBEDS)}.")
        self.pos_embed = pos_embed
        if heads < 1 or dim % heads:
            raise ValueError(f"Transformer dimension {dim} is not divisible by {heads} heads: "
                             f"change the number of heads or the dimension.")
        if dim % 4:
            raise ValueError(f"Transformer dimension {dim} must be a multiple of 4 (2D "
                             f"positional embedding).")
        self.dim = dim
        self.max_period = max_period
        self.weight_pos_embed = weight_pos_embed
        self.norm_in_freq: nn.Module = nn.LayerNorm(dim) if norm_in else nn.Identity()
        self.norm_in_time: nn.Module = nn.LayerNorm(dim) if norm_in else nn.Identity()
        layer_kw = dict(heads=heads, hidden_scale=hidden_scale, dropout=dropout,
                        norm_first=norm_first, norm_out=norm_out, layer_scale=layer_scale,
                        gelu=gelu)
        self.is_cross = [(index % 2 == 0) == cross_first for index in range(layers)]
        self.freq_layers = nn.ModuleList(
            [TransformerLayer(dim, cross=cross, **layer_kw) for cross in self.is_cross])
        self.time_layers = nn.ModuleList(
            [TransformerLayer(dim, cross=cross, **layer_kw) for cross in self.is_cross])

    def forward(self, xf: torch.Tensor, xt: torch.Tensor
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """`xf`: spectral `[B, C, F, T1]`, `xt`: temporal `[B, C, T2]` -> same shapes."""
        B, C, Fr, T1 = xf.shape
        T2 = xt.shape[-1]
        if self.pos_embed == 'demucs':
            pos_freq = demucs_sin_embedding_2d(Fr, T1, C, xf.device, self.max_period)
            pos_time = demucs_sin_embedding(T2, C, xt.device, self.max_period)
        else:
            pos_freq = sin_embedding_2d(Fr, T1, C, xf.device, self.max_period)
            pos_time = sin_embedding(torch.arange(T2, device=xt.device), C, self.max_period)
        pos_freq, pos_time = pos_freq.to(xf.dtype), pos_time.to(xt.dtype)

        # [B, C, F, T1] -> [B, T1 * F, C], time-major tokens.
        freq_tokens = xf.permute(0, 3, 2, 1).reshape(B, T1 * Fr, C)
        freq_tokens = self.norm_in_freq(freq_tokens) + self.weight_pos_embed * pos_freq
        time_tokens = self.norm_in_time(xt.transpose(1, 2))
        time_tokens = time_tokens + self.weight_pos_embed * pos_time

        for cross, freq_layer, time_layer in zip(self.is_cross, self.freq_layers,
                                                 self.time_layers):
            if cross:  # both directions attend to the other branch's layer input
                freq_tokens, time_tokens = (freq_layer(freq_tokens, time_tokens),
                                            time_layer(time_tokens, freq_tokens))
            else:
                freq_tokens, time_tokens = freq_layer(freq_tokens), time_layer(time_tokens)

        xf = freq_tokens.view(B, T1, Fr, C).permute(0, 3, 2, 1)
        xt = time_tokens.transpose(1, 2)
        return xf, xt
