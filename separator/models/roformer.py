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

Checkpoints of lucidrains' BS-RoFormer / Mel-Band RoFormer and of
Music-Source-Separation-Training (`separator.importers.roformer`) run on these models with
the options of `OPTIONS_DOC` (their defaults are the architecture above): lucidrains'
RMSNorm and rotary channel pairs, sigmoid gates on the attention heads, value residuals,
Transformers of several layers (each ending with an RMSNorm in Mel-RoFormer), optional
linear-attention (XCiT) Transformers over all tokens, MSST's skip connections between
blocks, mask MLPs without a norm and of any depth, the DC bin zeroed. Imported models compute
what lucidrains' code computes (to ~3e-7 on the tests' small models).

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
from .bandsplit import Band, BandSplitModel, make_norm, mel_bands, roformer_bands

RMS_STYLES = ('eps', 'l2')               # ours; lucidrains' (`bandsplit.RMSNorm`)
ROTARY_STYLES = ('half', 'interleaved')  # ours; rotary_embedding_torch's (lucidrains')
KINDS = ('linear', 'time', 'band')       # the Transformers of a block, in order


# ----------------------------------------------------------------------------------------
# Rotary position embeddings (Su et al., "RoFormer", 2021)


def rotary_cos_sin(length: int, dim_head: int, device: torch.device, dtype: torch.dtype,
                   base: float = 10000., interleaved: bool = False
                   ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines `[length, dim_head]` of the rotation angles `position * base **
    (-2 i / dim_head)` of channel pairs `(i, i + dim_head // 2)`, or with `interleaved` of
    channel pairs `(2 i, 2 i + 1)`, the angles computed as `rotary_embedding_torch` does
    (lucidrains' RoFormers): the same rotations of other channels, bit for bit theirs."""
    if interleaved:
        exponents = torch.arange(0, dim_head, 2, device='cpu').float() / dim_head
        inverse = (1. / (base ** exponents)).to(device)
        angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inverse
        angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)
    exponents = torch.arange(0, dim_head, 2, device=device, dtype=torch.float32) / dim_head
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * (
        base ** -exponents)[None]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 interleaved: bool = False) -> torch.Tensor:
    """Rotate channel pairs `(i, i + d // 2)` (or `(2 i, 2 i + 1)`: `interleaved`) of `x`
    `[..., L, d]` by the angles of each position: the dot product of two rotated vectors
    depends on their relative position."""
    if interleaved:
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    else:
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
    return x * cos + rotated * sin


def signed_sin(sin: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """`sin` `[L, d]` with the sign of the first channel of each pair flipped, for `rotate`."""
    if interleaved:
        pairs = sin.unflatten(-1, (-1, 2))
        return torch.stack([-pairs[..., 0], pairs[..., 1]], dim=-1).flatten(-2)
    first, second = sin.chunk(2, dim=-1)
    return torch.cat([-first, second], dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
           interleaved: bool = False) -> torch.Tensor:
    """`apply_rotary` in three passes over `x` instead of five: `x * cos + swapped(x) *
    signed_sin(sin)`, `swapped` exchanging the two channels of each pair (the rotation's
    `-x2 sin, x1 sin` terms); `torch.addcmul` fuses the last multiply-add."""
    if interleaved:
        pairs = x.unflatten(-1, (-1, 2))
        swapped = torch.stack([pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    else:
        first, second = x.chunk(2, dim=-1)
        swapped = torch.cat([second, first], dim=-1)
    return torch.addcmul(x * cos, swapped, sin_signed)


# ----------------------------------------------------------------------------------------
# Transformer layers


class RotaryAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary embeddings, on `[N, L, dim]`.

    Options of lucidrains' attention (for imported checkpoints): `gates`, a sigmoid gate per
    head and position (`to_gates`, from the normalised input) on the attention output;
    `value_mix`, value residual learning (Zhou et al., "Value Residual Learning", 2024): the
    values are interpolated towards `first_values` (those of the first block) with a learnt
    sigmoid weight per head and position (`to_value_mix`).
    """
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, norm: str = 'rms',
                 gates: bool = False, value_mix: bool = False, rotary: str = 'half'):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.dropout = dropout
        self.interleaved = rotary == 'interleaved'
        self.norm = make_norm(norm, dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads) if gates else None
        self.to_value_mix = nn.Linear(dim, heads) if value_mix else None
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def per_head(self, linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A sigmoid weight per head and position, `[N, heads, L, 1]`."""
        return torch.sigmoid(linear(x)).transpose(1, 2).unsqueeze(-1)

    def forward(self, x: torch.Tensor, first_values: tp.Optional[torch.Tensor] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """`[N, L, dim]` -> the attention branch `[N, L, dim]` and its values (before any
        mixing) `[N, heads, L, dim_head]`, the `first_values` of the later blocks."""
        N, L, _ = x.shape
        normed = self.norm(x)
        # queries, keys and values each from its own rows of `to_qkv` (one Linear in the
        # checkpoints): each [N, L, heads * dim_head] is contiguous, so the gradients of the
        # attention (laid out [N, heads, L, dim_head]) reach it with one transposing copy,
        # where a fused projection would need two (stacking them, then reordering)
        inner = self.heads * self.dim_head
        q, k, v = (F.linear(normed, weight).view(N, L, self.heads, self.dim_head).transpose(1, 2)
                   for weight in self.to_qkv.weight.split(inner))   # [N, heads, L, dim_head]
        values = v
        if self.to_value_mix is not None and first_values is not None:
            v = torch.lerp(v, first_values, self.per_head(self.to_value_mix, normed))
        cos, sin = rotary_cos_sin(L, self.dim_head, x.device, q.dtype,
                                  interleaved=self.interleaved)
        sin = signed_sin(sin, self.interleaved)
        q = rotate(q, cos, sin, self.interleaved)
        k = rotate(k, cos, sin, self.interleaved)
        dropout = self.dropout if self.training else 0.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        if self.to_gates is not None:
            out = out * self.per_head(self.to_gates, normed)
        out = self.to_out(out.transpose(1, 2).reshape(N, L, self.heads * self.dim_head))
        return F.dropout(out, dropout, self.training), values


class LinearAttention(nn.Module):
    """Pre-norm cross-covariance attention (El-Nouby et al., "XCiT", 2021) on `[N, L, dim]`:
    per head, attention between its `dim_head` features rather than between positions
    (linear in L), queries and keys l2-normalised along the sequence, logits times `scale`
    and a learnt `exp(temperature)` per head. The `linear_transformer_depth` layers of MSST's
    and lucidrains' RoFormers, run over all the tokens of an example (frames x bands)."""
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, norm: str = 'rms',
                 scale: float = 8.):
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.dropout = dropout
        self.scale = scale
        self.norm = make_norm(norm, dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.temperature = nn.Parameter(torch.zeros(heads, 1, 1))
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: torch.Tensor, first_values: tp.Optional[torch.Tensor] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """`[N, L, dim]` -> the branch `[N, L, dim]` and the values `[N, heads, dim_head, L]`
        (`first_values` is not used: no value residual here)."""
        N, L, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).view(N, L, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 4, 1)                      # [N, heads, dim_head, L]
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        # `scale` on the logits, as lucidrains' `Attend(scale=...)` applies it (on q)
        q = q * self.temperature.exp() * (self.scale / L ** -0.5)
        dropout = self.dropout if self.training else 0.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = self.to_out(out.permute(0, 3, 1, 2).reshape(N, L, self.heads * self.dim_head))
        return out, v


class FeedForward(nn.Sequential):
    """Pre-norm feed-forward: RMSNorm -> Linear -> GELU -> Linear, with dropout."""
    def __init__(self, dim: int, mult: float, dropout: float, norm: str = 'rms'):
        hidden = int(mult * dim)
        super().__init__(make_norm(norm, dim), nn.Linear(dim, hidden), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))


class TransformerLayer(nn.Module):
    """Attention (`RotaryAttention`, or `LinearAttention` with `linear`) then feed-forward,
    each a residual branch, on `[N, L, dim]`."""
    checkpoint_unit = True     # optim.checkpointing recomputes it (separator/checkpointing.py)

    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: float, dropout: float,
                 ff_dropout: tp.Optional[float] = None, norm: str = 'rms', gates: bool = False,
                 value_mix: bool = False, rotary: str = 'half', linear: bool = False):
        super().__init__()
        if linear:
            self.attn: nn.Module = LinearAttention(dim, heads, dim_head, dropout, norm)
        else:
            self.attn = RotaryAttention(dim, heads, dim_head, dropout, norm, gates, value_mix,
                                        rotary)
        self.ff = FeedForward(dim, ff_mult, dropout if ff_dropout is None else ff_dropout, norm)

    def forward(self, x: torch.Tensor, first_values: tp.Optional[torch.Tensor] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """-> the output and the attention's values (see `RotaryAttention`)."""
        out, values = self.attn(x, first_values)
        x = x + out
        return x + self.ff(x), values


class TransformerStack(nn.Module):
    """`depth` `TransformerLayer`s, then an RMSNorm if `norm_output` (each Transformer of
    MSST's and lucidrains' Mel-RoFormer ends with one). Returns the output and the values of
    its first layer."""
    def __init__(self, depth: int, norm_output: bool, **layer_kwargs: tp.Any):
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(**layer_kwargs) for _ in range(depth))
        self.norm = (make_norm(layer_kwargs.get('norm', 'rms'), layer_kwargs['dim'])
                     if norm_output else None)

    def forward(self, x: torch.Tensor, first_values: tp.Optional[torch.Tensor] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        values: tp.Optional[torch.Tensor] = None
        for layer in self.layers:
            x, layer_values = layer(x, first_values)
            values = layer_values if values is None else values
        assert values is not None
        return (x if self.norm is None else self.norm(x)), values


def make_transformer(depth: int, norm_output: bool, **layer_kwargs: tp.Any) -> nn.Module:
    """A `TransformerLayer` (one layer, no norm: the layout of our own checkpoints) or a
    `TransformerStack`."""
    if depth == 1 and not norm_output and not layer_kwargs.get('linear'):
        return TransformerLayer(**layer_kwargs)
    return TransformerStack(depth, norm_output, **layer_kwargs)


Values = tp.Tuple[tp.Optional[torch.Tensor], ...]   # per Transformer of a block (KINDS)


class RoFormerBlock(nn.Module):
    """A Transformer along time (each band), then one along bands (each frame); first, with
    `linear_depth`, a `LinearAttention` Transformer over all tokens (frames x bands).

    Args:
        time_depth, band_depth, linear_depth: layers of each Transformer (0: no linear one).
        norm_output: each Transformer ends with an RMSNorm.
        layer_kwargs: of the `TransformerLayer`s.
    """
    def __init__(self, time_depth: int = 1, band_depth: int = 1, linear_depth: int = 0,
                 norm_output: bool = False, **layer_kwargs: tp.Any):
        super().__init__()
        self.linear_transformer = None
        if linear_depth:
            kwargs = {**layer_kwargs, 'gates': False, 'value_mix': False, 'linear': True}
            self.linear_transformer = make_transformer(linear_depth, norm_output, **kwargs)
        self.time_transformer = make_transformer(time_depth, norm_output, **layer_kwargs)
        self.band_transformer = make_transformer(band_depth, norm_output, **layer_kwargs)

    def forward(self, x: torch.Tensor, first_values: Values = (None, None, None),
                skips: tp.Sequence[torch.Tensor] = ()) -> tp.Tuple[torch.Tensor, Values]:
        """`[B, T, K, D]` -> `[B, T, K, D]` and the values of the Transformers' first layers.
        `skips`: added (in order) to the input of the time Transformer (MSST's
        `skip_connection`)."""
        B, T, K, D = x.shape
        first_linear, first_time, first_band = first_values
        linear_values = None
        if self.linear_transformer is not None:
            y, linear_values = self.linear_transformer(x.reshape(B, T * K, D), first_linear)
            x = y.view(B, T, K, D)
        for skip in skips:
            x = x + skip
        y, time_values = self.time_transformer(x.transpose(1, 2).reshape(B * K, T, D),
                                               first_time)
        x = y.view(B, K, T, D).transpose(1, 2)
        y, band_values = self.band_transformer(x.reshape(B * T, K, D), first_band)
        return y.view(B, T, K, D), (linear_values, time_values, band_values)


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


def check_options(rms_style: str, rotary_style: str, time_depth: int, band_depth: int,
                  linear_depth: int, ff_dropout: tp.Optional[float]) -> None:
    """Raise a ValueError naming the fix for bad values of the lucidrains / MSST options."""
    if rms_style not in RMS_STYLES:
        raise ValueError(f"rms_style={rms_style!r}: use one of {', '.join(RMS_STYLES)}.")
    if rotary_style not in ROTARY_STYLES:
        raise ValueError(f"rotary_style={rotary_style!r}: use one of "
                         f"{', '.join(ROTARY_STYLES)}.")
    if time_depth < 1 or band_depth < 1 or linear_depth < 0:
        raise ValueError(f"Need time_depth >= 1, band_depth >= 1 and linear_depth >= 0, got "
                         f"{time_depth}, {band_depth} and {linear_depth} (default: 1, 1, 0).")
    if ff_dropout is not None and not 0 <= ff_dropout < 1:
        raise ValueError(f"Need 0 <= ff_dropout < 1 (or None: dropout), got {ff_dropout}.")


class RoFormer(BandSplitModel):
    """What BS-RoFormer and Mel-RoFormer share: all but their bands (built by their own
    constructors, which record their arguments for model packages). The keyword arguments
    after `hop_length` are those of `BSRoFormer` (see there), with their defaults."""
    def __init__(self, sources: tp.Sequence[str], audio_channels: int, samplerate: int,
                 segment: float, bands: tp.Sequence[Band], bands_fix: str, dim: int, depth: int,
                 heads: int, dim_head: tp.Optional[int], ff_mult: float, dropout: float,
                 mask_mult: float, n_fft: int, hop_length: int, *, rms_style: str = 'eps',
                 rotary_style: str = 'half', attn_gates: bool = False,
                 value_residual: bool = False, time_depth: int = 1, band_depth: int = 1,
                 linear_depth: int = 0, transformer_norm: bool = False, final_norm: bool = True,
                 skip_connections: bool = False, ff_dropout: tp.Optional[float] = None,
                 mask_norm: bool = True, mask_layers: int = 1, zero_dc: bool = False):
        dim_head = resolve_dim_head(dim, heads, dim_head)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth} (the paper: 12, or 6).")
        if not 0 <= dropout < 1 or ff_mult <= 0:
            raise ValueError(f"Need 0 <= dropout < 1 and ff_mult > 0, got dropout={dropout}, "
                             f"ff_mult={ff_mult} (the paper: 0.1 and 4).")
        check_options(rms_style, rotary_style, time_depth, band_depth, linear_depth,
                      ff_dropout)
        norm = 'rms' if rms_style == 'eps' else 'rms_l2'
        super().__init__(sources, audio_channels, samplerate, segment, bands, bands_fix, dim,
                         n_fft, hop_length, mask_mult, norm=norm, mask_norm=mask_norm,
                         mask_layers=mask_layers, zero_dc=zero_dc)
        self.depth = depth
        self.heads = heads
        self.dim_head = dim_head
        self.skip_connections = skip_connections
        layer_kwargs = dict(dim=dim, heads=heads, dim_head=dim_head, ff_mult=ff_mult,
                            dropout=dropout, ff_dropout=ff_dropout, norm=norm,
                            gates=attn_gates, rotary=rotary_style)
        # value residual learning: the blocks after the first mix in the first one's values
        self.blocks = nn.ModuleList(
            RoFormerBlock(time_depth, band_depth, linear_depth, transformer_norm,
                          value_mix=value_residual and index > 0, **layer_kwargs)
            for index in range(depth))
        self.final_norm = make_norm(norm, dim) if final_norm else None

    def sequence_model(self, x: torch.Tensor) -> torch.Tensor:
        first_values: Values = (None, None, None)
        outputs: tp.List[torch.Tensor] = []
        for index, block in enumerate(self.blocks):
            x, values = block(x, first_values, outputs)
            if index == 0:
                first_values = values
            if self.skip_connections:
                outputs.append(x)
        return x if self.final_norm is None else self.final_norm(x)

    def layer_name(self, block: int, kind: str, layer: int) -> str:
        """The state dict prefix of a layer: `kind` in KINDS, `layer` in its Transformer."""
        transformer = getattr(self.blocks[block], f'{kind}_transformer')
        prefix = f'blocks.{block}.{kind}_transformer'
        if isinstance(transformer, TransformerLayer):
            return prefix
        return f'{prefix}.layers.{layer}'


# Arguments of `BSRoFormer` and `MelRoFormer` for checkpoints trained elsewhere
# (`separator.importers.roformer`); their defaults are our own architecture.
OPTIONS_DOC = """
    Options for imported checkpoints (lucidrains' BS-RoFormer / Mel-Band RoFormer and
    Music-Source-Separation-Training's): the defaults are our own architecture.
        rms_style: 'eps' (ours) or 'l2' (lucidrains' RMSNorm, see `bandsplit.RMSNorm`).
        rotary_style: 'half' (ours) or 'interleaved' (rotary_embedding_torch's channel pairs).
        attn_gates: a sigmoid gate per head on the attention output (`RotaryAttention`).
        value_residual: the blocks after the first mix the first block's attention values
            into theirs (lucidrains' value residual learning).
        time_depth, band_depth: layers per Transformer along time / bands (MSST's
            time_transformer_depth, freq_transformer_depth).
        linear_depth: layers of a `LinearAttention` Transformer over all tokens, first in
            each block (MSST's linear_transformer_depth); 0: none.
        transformer_norm: each Transformer ends with an RMSNorm (Mel-RoFormer's layout).
        final_norm: an RMSNorm after the last block (BS-RoFormer's layout).
        skip_connections: each block's time Transformer also gets the outputs of all the
            previous blocks added to its input (MSST's skip_connection).
        ff_dropout: dropout of the feed-forwards (None: `dropout`).
        mask_norm: the mask MLPs start with an RMSNorm (lucidrains' do not).
        mask_layers: hidden layers (Linear -> Tanh) of the mask MLPs.
        zero_dc: the sources get nothing of bin 0 (DC) (lucidrains' and MSST's zero_dc).
"""


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
    """ + OPTIONS_DOC

    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 8., dim: int = 384, depth: int = 12, heads: int = 8,
                 dim_head: tp.Optional[int] = 64, ff_mult: float = 4, dropout: float = 0.1,
                 mask_mult: float = 4, n_fft: int = 2048, hop_length: int = 441,
                 freqs_per_bands: tp.Optional[tp.Sequence[int]] = None, rms_style: str = 'eps',
                 rotary_style: str = 'half', attn_gates: bool = False,
                 value_residual: bool = False, time_depth: int = 1, band_depth: int = 1,
                 linear_depth: int = 0, transformer_norm: bool = False, final_norm: bool = True,
                 skip_connections: bool = False, ff_dropout: tp.Optional[float] = None,
                 mask_norm: bool = True, mask_layers: int = 1, zero_dc: bool = False):
        bands = roformer_bands(n_fft, freqs_per_bands)
        fix = "change freqs_per_bands (bins per band, summing to n_fft // 2 + 1)."
        super().__init__(
            sources, audio_channels, samplerate, segment, bands, fix, dim, depth, heads,
            dim_head, ff_mult, dropout, mask_mult, n_fft, hop_length, rms_style=rms_style,
            rotary_style=rotary_style, attn_gates=attn_gates, value_residual=value_residual,
            time_depth=time_depth, band_depth=band_depth, linear_depth=linear_depth,
            transformer_norm=transformer_norm, final_norm=final_norm,
            skip_connections=skip_connections, ff_dropout=ff_dropout, mask_norm=mask_norm,
            mask_layers=mask_layers, zero_dc=zero_dc)


class MelRoFormer(RoFormer):
    """Mel-Band RoFormer: BS-RoFormer with overlapping mel bands. See the module docstring.

    Args:
        num_bands: mel bands (the paper: 60), see `bandsplit.mel_bands`; `samplerate` places
            them. The other arguments are those of `BSRoFormer` (without `freqs_per_bands`).
    """ + OPTIONS_DOC

    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 8., dim: int = 384, depth: int = 12, heads: int = 8,
                 dim_head: tp.Optional[int] = 64, ff_mult: float = 4, dropout: float = 0.1,
                 mask_mult: float = 4, n_fft: int = 2048, hop_length: int = 441,
                 num_bands: int = 60, rms_style: str = 'eps', rotary_style: str = 'half',
                 attn_gates: bool = False, value_residual: bool = False, time_depth: int = 1,
                 band_depth: int = 1, linear_depth: int = 0, transformer_norm: bool = False,
                 final_norm: bool = True, skip_connections: bool = False,
                 ff_dropout: tp.Optional[float] = None, mask_norm: bool = True,
                 mask_layers: int = 1, zero_dc: bool = False):
        bands = mel_bands(n_fft, samplerate, num_bands)
        fix = "change num_bands or n_fft."
        super().__init__(
            sources, audio_channels, samplerate, segment, bands, fix, dim, depth, heads,
            dim_head, ff_mult, dropout, mask_mult, n_fft, hop_length, rms_style=rms_style,
            rotary_style=rotary_style, attn_gates=attn_gates, value_residual=value_residual,
            time_depth=time_depth, band_depth=band_depth, linear_depth=linear_depth,
            transformer_norm=transformer_norm, final_norm=final_norm,
            skip_connections=skip_connections, ff_dropout=ff_dropout, mask_norm=mask_norm,
            mask_layers=mask_layers, zero_dc=zero_dc)
