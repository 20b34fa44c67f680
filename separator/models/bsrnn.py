"""Band-split RNN: "Music Source Separation with Band-split RNN" (Luo & Yu, 2022).

A band-split spectrogram model (`bandsplit.py` has what it shares with the RoFormers):

* the complex STFT (`n_fft`, `hop_length`) is cut into bands of fixed widths in Hz
  (`band_splits`, `(upper edge, bandwidth)` pairs; by default the paper's vocals scheme:
  100 Hz bands up to 1 kHz, 250 Hz up to 4 kHz, 500 Hz up to 8 kHz, 1 kHz up to 16 kHz, 2 kHz
  up to 20 kHz, and the rest: 41 bands at 44.1 kHz with n_fft=2048); each band -> LayerNorm
  -> Linear to `dim` features (`BandSplit`);
* the **band and sequence modelling** module: `num_layers` pairs of residual BLSTM blocks,
  the first along time (each band a sequence of frames), the second along bands (each frame
  a sequence of bands). A block is norm -> BLSTM (`rnn_hidden` units per direction) ->
  Linear back to `dim`, added to its input. The norm is the paper's group normalization
  (`norm='group'`: one group, over the features and the whole sequence, as in Luo's
  DPRNN/TasNet code) or a LayerNorm per token (`norm='layer'`);
* per source, per band, LayerNorm -> MLP (`mask_mult * dim` hidden units, Tanh) -> GLU gives
  the band's complex mask (`MaskEstimator`), which multiplies the mixture STFT.

"12 layers" in the paper is read as 12 (time, band) pairs, 24 BLSTMs, as both public
reimplementations do (amanteur/BandSplitRNN-Pytorch `num_layers=12` pairs, the `bandit`
BSRNN `n_sqm_modules=12` pairs). The paper trains one model per source, each with its own
band scheme (vocals, bass, drums, other); here one model has one scheme and one mask
estimator per source.

Recommended tiny CPU config (learns the overfit test of the tests; 0.23 M parameters with
2 mono sources, 0.70 M with 4 stereo ones; 41 bands at n_fft=1024)::

    BSRNN(sources, dim=16, num_layers=1, rnn_hidden=32, mask_mult=2, n_fft=1024,
          hop_length=256)

One training step (forward + backward + Adam, batch 4 x 1 s stereo at 44.1 kHz, 4 sources)
of that config takes about 0.5 s on one CPU thread. The paper size (the defaults: dim=128,
12 pairs of BLSTMs of 256 units per direction, mask MLPs of 512 units, n_fft=2048, hop 512)
has 28.0 M parameters for one stereo source (20.6 M in the 24 BLSTM blocks, 0.5 M in the
band split, 6.9 M per source in the mask estimators) and 48.8 M for 4 stereo sources. The
paper does not give its parameter count.
"""
import typing as tp

import torch
from torch import nn

from .base import capture_init
from .bandsplit import (BSRNN_VOCALS_SPLITS, BandSplitModel, along_bands, along_time,
                        hz_bands)

RNN_NORMS = ('group', 'layer')


class SequenceNorm(nn.Module):
    """Norm of `[N, L, D]` sequences: GroupNorm with one group (each sequence over all its
    steps and features, `'group'`) or LayerNorm of each step (`'layer'`)."""
    def __init__(self, kind: str, dim: int):
        super().__init__()
        if kind not in RNN_NORMS:
            raise ValueError(f"Unknown norm {kind!r}: use one of {', '.join(RNN_NORMS)}.")
        self.kind = kind
        self.norm = nn.GroupNorm(1, dim) if kind == 'group' else nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == 'group':
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class ResidualBLSTM(nn.Module):
    """norm -> BLSTM -> Linear, plus the input, on `[N, L, dim]` sequences."""
    def __init__(self, dim: int, hidden: int, norm: str):
        super().__init__()
        self.norm = SequenceNorm(norm, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.norm(x))
        return x + self.proj(y)


class BandSequenceLayer(nn.Module):
    """A residual BLSTM along time (each band), then one along bands (each frame)."""
    def __init__(self, dim: int, hidden: int, norm: str):
        super().__init__()
        self.time_rnn = ResidualBLSTM(dim, hidden, norm)
        self.band_rnn = ResidualBLSTM(dim, hidden, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return along_bands(self.band_rnn, along_time(self.time_rnn, x))


class BSRNN(BandSplitModel):
    """Band-split RNN. See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate: sample rate in Hz (it places the bands).
        segment: training segment in seconds (metadata for chunked inference).
        dim: features per band token (the paper's N = 128).
        num_layers: pairs of residual BLSTMs (one along time, one along bands).
        rnn_hidden: BLSTM units per direction (the paper: 2 N = 256).
        mask_mult: hidden units of the mask MLPs, times `dim` (the paper: 4, 512 units).
        n_fft, hop_length: STFT size and hop.
        band_splits: `[upper edge Hz, bandwidth Hz]` pairs, see `bandsplit.hz_bands`.
        norm: `'group'` (the paper's GroupNorm, one group) or `'layer'` (LayerNorm) in the
            BLSTM blocks; the band split and mask MLPs use LayerNorm.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 3., dim: int = 128, num_layers: int = 12,
                 rnn_hidden: int = 256, mask_mult: float = 4, n_fft: int = 2048,
                 hop_length: int = 512,
                 band_splits: tp.Sequence[tp.Sequence[float]] = BSRNN_VOCALS_SPLITS,
                 norm: str = 'group'):
        if num_layers < 1 or rnn_hidden < 1:
            raise ValueError(f"Need num_layers >= 1 and rnn_hidden >= 1, got num_layers="
                             f"{num_layers}, rnn_hidden={rnn_hidden} (the paper: 12 and 256).")
        if norm not in RNN_NORMS:
            raise ValueError(f"Unknown norm {norm!r}: use one of {', '.join(RNN_NORMS)}.")
        bands = hz_bands(n_fft, samplerate, band_splits)
        fix = "change band_splits ([upper edge Hz, bandwidth Hz] pairs) or n_fft."
        super().__init__(sources, audio_channels, samplerate, segment, bands, fix, dim, n_fft,
                         hop_length, mask_mult, norm='layer')
        self.layers = nn.ModuleList(BandSequenceLayer(dim, rnn_hidden, norm)
                                    for _ in range(num_layers))

    def sequence_model(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
