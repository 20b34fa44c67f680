"""Hybrid Transformer Demucs: "Hybrid Transformers for Music Source Separation"
(Rouard, Massa, Défossez, 2023).

Like Hybrid Demucs (`hdemucs.py`, whose layers it reuses), a U-Net with a **time branch**
on the waveform and a **frequency branch** on the STFT (`nfft`, hop `nfft // 4`,
`nfft // 2` bins, complex as channels or magnitude). But the two branches are never merged
into shared layers: each has `depth` layers (kernel `kernel_size`, stride `stride`; the
frequency layers stride along frequency only), and at the bottom a **cross-domain
Transformer** (`transformer.py`) connects them:

* frequency branch output `[B, C, F', T / hop]` (F' = `nfft // 2 / stride ** depth` bins)
  and time branch output `[B, C, T / stride ** depth]` go through 1x1 convs to
  `bottom_channels` channels (if > 0),
* the transformer alternates self-attention within each branch and cross-attention
  between them (`t_layers` layers per branch), with 2D / 1D sinusoidal positional
  embeddings,
* 1x1 convs back to C channels, then each branch's decoder, whose deepest layer gets the
  transformer output plus the skip connection of the deepest encoder layer.

With `per_source_decoders`, each source has its own pair of decoders (time and frequency)
on the shared encoders and transformer, each writing that source only: more capacity where
the sources differ (60.2 M parameters at full size), as the single-source fine-tunes of the
SDX23 recipe do at four times the cost.

The output is the iSTFT of the frequency branch plus the time branch output. Each branch
is normalised (mixture mean/std, per example) at the input and de-normalised at the
output. Since the branches never merge, their strides need not line up: the frequency axis
just has to stay longer than `kernel_size` and divisible by `stride` down to the last
layer (with `kernel_size=8, stride=4`: `depth=4` needs `nfft >= 2048`, `depth=3` needs
`nfft >= 512`). The input is padded to a multiple of `hop` and of `stride ** depth`, so
any length works (demucs' HTDemucs pads to its training segment instead; the attention
sees all of the padded input, so inputs much longer than `segment` are better cut into
segments, as `separator.apply.apply_model` does).

`compat='demucs'` computes exactly what demucs' own `HTDemucs` (demucs 4.1.0) computes with
the same weights, for models imported from Demucs packages (`separator.importers.demucs`):
demucs' padding (see `hdemucs.py`) and demucs' 2D positional embedding (`transformer.py`);
with `use_train_segment` too (demucs' default), an input shorter than the training segment
is zero-padded to it in eval mode, so that the attention sees as many tokens as in training
(a longer one, which demucs refuses, is taken as it is).

Recommended small config (trains on CPU; 0.33 M parameters with 4 stereo sources)::

    HTDemucs(sources, channels=8, depth=4, nfft=2048, dconv_comp=4, bottom_channels=32,
             t_layers=2, t_heads=4)

One training step (forward + backward + Adam, batch 4 x 2 s stereo at 44.1 kHz) takes about
0.9 s on an idle 2-core CPU (1.2 to 1.4 times the small HDemucs). The full size defaults
(channels=48, depth=4, nfft=4096, bottom_channels=512, t_layers=5) have 41.5 M parameters
with 4 stereo sources, 31.6 M of them in the transformer (the paper: about 41 M); 26.9 M
with `bottom_channels=0` (transformer on the 384 channels of the deepest layer).
"""
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from .hdemucs import (DecLayer, EncLayer, FreqEmbedding, check_compat, check_kernel_stride,
                      hybrid_input, hybrid_output, hybrid_setup, pad_to_stride, rescale_module)
from .transformer import CrossDomainTransformer


def max_freq_depth(nfft: int, kernel_size: int, stride: int) -> int:
    """How many strided frequency layers `nfft // 2` bins allow.

    Each layer needs more than `kernel_size` bins, divisible by `stride`.
    """
    freqs, layers = nfft // 2, 0
    while freqs > kernel_size and freqs % stride == 0:
        freqs //= stride
        layers += 1
    return layers


def check_hyperparams(nfft: int, depth: int, kernel_size: int, stride: int) -> None:
    """Raise a ValueError naming the fix if the branches can't have `depth` layers each."""
    check_kernel_stride(kernel_size, stride)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    if nfft < 16 or nfft % 4:
        raise ValueError(f"nfft={nfft} must be a multiple of 4 and >= 16 (hop = nfft // 4).")
    allowed = max_freq_depth(nfft, kernel_size, stride)
    if depth > allowed:
        nffts = [2 ** log for log in range(4, 17)
                 if max_freq_depth(2 ** log, kernel_size, stride) >= depth]
        hint = f"nfft>={nffts[0]}" if nffts else "a smaller stride"
        raise ValueError(
            f"nfft={nfft} gives {nfft // 2} frequency bins, which allow only {allowed} "
            f"frequency layers with kernel_size={kernel_size}, stride={stride} (each layer "
            f"needs more than kernel_size bins, divisible by stride; HTDemucs never collapses "
            f"the frequency axis). Use depth<={allowed}, or {hint} for depth={depth}.")


class HTDemucs(SeparationModel):
    """Hybrid Transformer Demucs. See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate, segment: metadata; `segment` is the training segment in seconds.
        channels: hidden channels of the first layer (both branches), times `growth` at
            each layer.
        nfft: STFT size, hop is nfft // 4.
        depth: number of encoder (and decoder) layers of each branch.
        kernel_size, stride: of the time layers and of the frequency layers (along freq).
        cac: complex as channels, else magnitude in and magnitude (with mixture phase) out.
        context: decoder "rewrite" convs have kernel 1 + 2 * context.
        norm_starts, norm_groups: GroupNorm(norm_groups) in layers of index >= norm_starts.
        dconv_depth, dconv_comp, dconv_init: DConv residual branch (encoder only) depth,
            channel compression and LayerScale init.
        freq_emb: weight of the frequency embedding (0 disables it).
        emb_scale: learning-rate multiplier of the frequency embedding.
        bottom_channels: if > 0, 1x1 convs map the deepest features to this many channels
            for the transformer, and back.
        t_layers: transformer layers per branch, alternating self / cross-attention
            (0: no transformer).
        t_heads, t_hidden_scale, t_dropout: attention heads, feed-forward expansion,
            dropout.
        t_cross_first: start with a cross-attention layer.
        t_layer_scale: LayerScale (init 1e-4) on the transformer's residual branches.
        t_norm_first: pre-norm transformer layers, else post-norm.
        t_norm_in: LayerNorm of the tokens before adding the positional embeddings.
        t_norm_out: GroupNorm(1) at the end of each (pre-norm) transformer layer.
        t_gelu: GELU in the feed-forward, else ReLU.
        t_max_period, t_weight_pos_embed: longest period and weight of the sinusoidal
            positional embeddings.
        rescale: reference std for the weight rescaling of the convolutions at init (0
            disables it; the transformer and the 1x1 bottom convs are not rescaled).
        per_source_decoders: one pair of decoders (time and frequency) per source, each
            writing its source only, on the shared encoders and transformer; else one pair
            writes all sources (the paper).
        compat: 'separator', or 'demucs' to compute what demucs' HTDemucs computes (module
            docstring).
        use_train_segment: with compat 'demucs', pad inputs shorter than `segment` to it in
            eval mode, as demucs' HTDemucs does by default.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 7.8, channels: int = 48, growth: float = 2,
                 nfft: int = 4096, depth: int = 4, kernel_size: int = 8, stride: int = 4,
                 cac: bool = True, context: int = 1, norm_starts: int = 4,
                 norm_groups: int = 4, dconv_depth: int = 2, dconv_comp: int = 8,
                 dconv_init: float = 1e-3, freq_emb: float = 0.2, emb_scale: float = 10.,
                 bottom_channels: int = 512, t_layers: int = 5, t_heads: int = 8,
                 t_hidden_scale: float = 4.0, t_dropout: float = 0.0,
                 t_cross_first: bool = False, t_layer_scale: bool = True,
                 t_norm_first: bool = True, t_norm_in: bool = True, t_norm_out: bool = True,
                 t_gelu: bool = True, t_max_period: float = 10000.,
                 t_weight_pos_embed: float = 1.0, rescale: float = 0.1,
                 per_source_decoders: bool = False, compat: str = 'separator',
                 use_train_segment: bool = False):
        super().__init__(sources, audio_channels, samplerate, segment)
        check_compat(compat, ('separator', 'demucs'))
        if use_train_segment and compat != 'demucs':
            raise ValueError("use_train_segment=True is demucs' padding of the input to the "
                             "training segment: it needs compat='demucs'.")
        self.use_train_segment = use_train_segment
        if audio_channels < 1:
            raise ValueError(f"audio_channels must be >= 1, got {audio_channels}.")
        if channels < 1 or growth <= 0:
            raise ValueError(f"Need channels >= 1 and growth > 0, got channels={channels}, "
                             f"growth={growth}.")
        if dconv_comp < 1 or dconv_depth < 0:
            raise ValueError(f"Need dconv_comp >= 1 and dconv_depth >= 0, got "
                             f"dconv_comp={dconv_comp}, dconv_depth={dconv_depth}.")
        check_hyperparams(nfft, depth, kernel_size, stride)
        hybrid_setup(self, nfft, depth, cac,
                     ['time_encoder', 'freq_encoder', 'time_decoder', 'freq_decoder'], compat)
        self.stride = stride
        self.per_source_decoders = per_source_decoders
        # Per-source decoders: time_decoder[s] and freq_decoder[s] are the layers of source s.
        decoders = len(self.sources) if per_source_decoders else 1
        if per_source_decoders:
            self.time_decoder.extend(nn.ModuleList() for _ in range(decoders))
            self.freq_decoder.extend(nn.ModuleList() for _ in range(decoders))

        pad = (kernel_size - stride) // 2
        out_channels = len(self.sources) * audio_channels // decoders
        spec_mult = 2 if cac else 1
        chin_t, chin_f = audio_channels, audio_channels * spec_mult
        chout = channels
        freqs = nfft // 2
        emb_freqs = emb_channels = 0
        for index in range(depth):
            first = index == 0
            groups = norm_groups if index >= norm_starts else 0
            if groups and chout % groups:
                raise ValueError(f"Layer {index} has {chout} channels, not divisible by "
                                 f"norm_groups={norm_groups}: change norm_groups or channels.")
            dconv_kw = {'compress': dconv_comp, 'depth': dconv_depth, 'init': dconv_init}
            for freq, chin, encoder, decoder in [
                    (False, chin_t, self.time_encoder, self.time_decoder),
                    (True, chin_f, self.freq_encoder, self.freq_decoder)]:
                dec_out = out_channels * (spec_mult if freq else 1) if first else chin
                encoder.append(EncLayer(chin, chout, kernel_size, stride, pad, freq=freq,
                                        norm_groups=groups, dconv_kw=dconv_kw))
                for layers in (decoder if per_source_decoders else [decoder]):
                    layers.append(DecLayer(chout, dec_out, kernel_size, stride, pad,
                                           freq=freq, last=first, norm_groups=groups,
                                           context=context))
            freqs //= stride
            if first:
                emb_freqs, emb_channels = freqs, chout
            chin_t = chin_f = chout
            chout = int(growth * chout)

        self.freq_emb_weight = freq_emb
        self.freq_emb = FreqEmbedding(emb_freqs, emb_channels, emb_scale) if freq_emb else None
        if rescale:  # like demucs, before creating the transformer: only the U-Net convs
            rescale_module(self, reference=rescale)

        self.transformer: tp.Optional[CrossDomainTransformer] = None
        self.bottom_channels = bottom_channels if t_layers > 0 else 0
        if t_layers < 0 or bottom_channels < 0:
            raise ValueError(f"Need t_layers >= 0 and bottom_channels >= 0, got "
                             f"t_layers={t_layers}, bottom_channels={bottom_channels}.")
        if t_layers == 0:
            return
        deep_channels = chin_t
        dim = bottom_channels or deep_channels
        where = 'bottom_channels' if bottom_channels else 'channels * growth ** (depth - 1)'
        if t_heads < 1 or dim % t_heads or dim % 4:
            raise ValueError(f"The transformer dimension ({where} = {dim}) must be a multiple "
                             f"of 4 and of t_heads={t_heads}: change {where.split(' ')[0]} or "
                             f"t_heads.")
        if not 0 <= t_dropout < 1 or t_hidden_scale <= 0:
            raise ValueError(f"Need 0 <= t_dropout < 1 and t_hidden_scale > 0, got "
                             f"t_dropout={t_dropout}, t_hidden_scale={t_hidden_scale}.")
        if bottom_channels:
            self.freq_to_bottom = nn.Conv2d(deep_channels, bottom_channels, 1)
            self.time_to_bottom = nn.Conv1d(deep_channels, bottom_channels, 1)
            self.freq_from_bottom = nn.Conv2d(bottom_channels, deep_channels, 1)
            self.time_from_bottom = nn.Conv1d(bottom_channels, deep_channels, 1)
        self.transformer = CrossDomainTransformer(
            dim, layers=t_layers, heads=t_heads, hidden_scale=t_hidden_scale,
            dropout=t_dropout, cross_first=t_cross_first, norm_in=t_norm_in,
            norm_first=t_norm_first, norm_out=t_norm_out, layer_scale=t_layer_scale,
            gelu=t_gelu, max_period=t_max_period, weight_pos_embed=t_weight_pos_embed,
            pos_embed='demucs' if compat == 'demucs' else 'separator')

    # -- lengths ----------------------------------------------------------------------

    @property
    def total_stride(self) -> int:
        """Input lengths are padded to a multiple of this (hop and time branch stride)."""
        hop, time_stride = self.hop_length, self.stride ** self.depth
        return hop * time_stride // math.gcd(hop, time_stride)

    @property
    def training_length(self) -> int:
        """The training segment in samples (as demucs computes it from `segment`)."""
        return int(self.segment * self.samplerate)

    def valid_length(self, length: int) -> int:
        """Smallest length >= `length` the network handles exactly (padded internally).
        With compat 'demucs', any length, but at least the training segment with
        `use_train_segment` (demucs' HTDemucs pads to it)."""
        if self.compat == 'demucs':
            return max(length, self.training_length) if self.use_train_segment else length
        total = self.total_stride
        # At least 2 hops so the reflect padding of the spectrogram is possible.
        return max(math.ceil(length / total), math.ceil(2 * self.hop_length / total)) * total

    # -- forward ----------------------------------------------------------------------

    def _bottleneck(self, xf: torch.Tensor, xt: torch.Tensor
                    ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Cross-domain transformer on the deepest features, with the 1x1 bottom convs."""
        assert self.transformer is not None
        if self.bottom_channels:
            xf, xt = self._freq_conv(self.freq_to_bottom, xf), self.time_to_bottom(xt)
        xf, xt = self.transformer(xf, xt)
        if self.bottom_channels:
            xf, xt = self._freq_conv(self.freq_from_bottom, xf), self.time_from_bottom(xt)
        return xf, xt

    def _freq_conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """A 1x1 conv on `[B, C, F, T]`; with compat 'demucs' computed as demucs does, a 1d
        conv on the flattened bins and frames (the same sums, maybe in another order)."""
        if self.compat == 'separator':
            return conv(x)
        B, _, Fr, T = x.shape
        out = F.conv1d(x.reshape(B, -1, Fr * T), conv.weight[..., 0], conv.bias)
        return out.view(B, -1, Fr, T)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T."""
        length = mix.shape[-1]
        if self.use_train_segment and not self.training and length < self.training_length:
            mix = F.pad(mix, (0, self.training_length - length))
        inputs = hybrid_input(self, mix)
        xt, xf = inputs.xt, inputs.xf
        demucs = self.compat != 'separator'
        lengths_t: tp.List[int] = []   # compat 'demucs': time lengths before each layer

        skips_t, skips_f = [], []
        for index, (tenc, fenc) in enumerate(zip(self.time_encoder, self.freq_encoder)):
            if demucs:
                lengths_t.append(xt.shape[-1])
                xt = pad_to_stride(xt, self.stride)
            xt, xf = tenc(xt), fenc(xf)
            if index == 0 and self.freq_emb is not None:
                xf = xf + self.freq_emb_weight * self.freq_emb()[None, :, :, None]
            skips_t.append(xt)
            skips_f.append(xf)

        if self.transformer is not None:
            xf, xt = self._bottleneck(xf, xt)

        lengths = lengths_t if demucs else None
        if self.per_source_decoders:  # each source's output channels, in source order
            outputs = [self._decode(tdec, fdec, xt, xf, skips_t, skips_f, lengths)
                       for tdec, fdec in zip(self.time_decoder, self.freq_decoder)]
            xt = torch.cat([out_t for out_t, _ in outputs], 1)
            xf = torch.cat([out_f for _, out_f in outputs], 1)
        else:
            xt, xf = self._decode(self.time_decoder, self.freq_decoder, xt, xf, skips_t,
                                  skips_f, lengths)
        return hybrid_output(self, inputs, xt, xf)[..., :length]

    @staticmethod
    def _decode(time_decoder: nn.ModuleList, freq_decoder: nn.ModuleList, xt: torch.Tensor,
                xf: torch.Tensor, skips_t: tp.List[torch.Tensor],
                skips_f: tp.List[torch.Tensor], lengths: tp.Optional[tp.List[int]] = None
                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """Both decoders, deepest layer first (it gets the bottom features plus the deepest
        skips; decoders are stored outermost layer first). `lengths`: of the time layers'
        inputs in the encoder (compat 'demucs'), to trim the decoder's outputs to."""
        for index in reversed(range(len(time_decoder))):
            xf, _ = freq_decoder[index](xf, skips_f[index])
            length = None if lengths is None else lengths[index]
            xt, _ = time_decoder[index](xt, skips_t[index], length)
        return xt, xf
