"""CrossNet-Open-Unmix (X-UMX): "All for One and One for All: Improving Music Separation by
Bridging Networks" (Sawata, Uhlich, Takahashi, Mitsufuji, ICASSP 2021), an MDX21 baseline,
and its special case Open-Unmix (UMX): "Open-Unmix - A Reference Implementation for Music
Source Separation" (Stöter, Uhlich, Liutkus, Mitsufuji, JOSS 2019).

A magnitude spectrogram model. The mixture goes through the STFT (`nfft` 4096, hop 1024,
`separator.spec`), its magnitude |X| `[B, C, F, N]` (F = nfft // 2 + 1 bins, N frames) is cut
to the bins at or below `bandwidth` (16 kHz: 1487 of the 2049 bins at 44.1 kHz) and fed to
one network per source, each with its own weights:

* input normalisation: (|X| + mean) * scale, a learnt mean (minus the bins' mean, as in
  open-unmix) and scale per bin, init 0 and 1 (open-unmix initialises them from the
  training set's statistics: -mean and 1 / std),
* fc1 (C * bins -> `hidden_size`, no bias) + BatchNorm + tanh,
* a `lstm_layers`-layer BLSTM (hidden_size / 2 per direction, dropout 0.4 between layers),
* skip connection: the fc1 output concatenated with the LSTM output (2 * hidden_size),
* fc2 (-> hidden_size) + BatchNorm + ReLU, fc3 (-> C * F, all bins) + BatchNorm,
* a learnt output scale and mean per bin (init 1 and 1), ReLU: a non-negative mask, times
  the mixture magnitude: the magnitude estimate of the source.

The BatchNorms normalise over batch x frames (one vector per frame), as in open-unmix, so a
batch of 1 works in train mode too.

**Bridging** (X-UMX, `bridge=True`): the fc1 outputs of the S networks are averaged and the
average is the input of every LSTM; the LSTM outputs (with their own skip connection) are
averaged again and the average is the input of every fc2. Two averages, no parameter: X-UMX
and UMX have the same size. With `bridge=False` the networks are independent: Open-Unmix
(one UMX per target, trained together).

**Wiener filter**: the magnitude estimates with the mixture phase are the initial complex
estimates of the multichannel Wiener filter (`separator.wiener.multichannel_wiener`,
differentiable EM, in complex128), run on windows of `wiener_frames` frames (open-unmix's
`wiener_win_len`); its output goes through the iSTFT. The official X-UMX trains on the
mixture-phase estimate (`train_wiener_iterations=0`: the iSTFT of magnitude x mixture
phase, which its time-domain loss sees) and separates with one EM iteration
(`wiener_iterations=1`, norbert, as open-unmix). The model uses `train_wiener_iterations`
in train mode and `wiener_iterations` in eval mode; training through the filter
(`train_wiener_iterations>=1`) works, and makes the sources sum to the mixture.

X-UMX's own losses (a magnitude MSE and a weighted-SDR loss on the waveforms, each over all
combinations of sources) need the magnitude estimates: `forward_with_magnitudes` returns
them with the waveforms (also `forward(mix, with_magnitudes=True)`, for DDP), and
`magnitude(wav)` gives the targets' magnitudes with the same STFT.

The STFT is normalised (`separator.spec`, 1 / sqrt(nfft)), open-unmix's is not: a network
trained here does not care (fc1 has no bias and a BatchNorm follows it, the output is a
mask), but the magnitudes, hence a spectrogram loss, are nfft times smaller in power. Weights
trained on open-unmix's STFT (Open-Unmix, asteroid's X-UMX: `separator.importers.umx`) need
its scale, as their input mean and scale are fixed in it: `normalized_stft=False` gives the
unnormalised STFT (the normalised one times sqrt(nfft)), and its magnitudes.

Paper size (the defaults, 4 stereo sources at 44.1 kHz): 8.89 M parameters per source
(fc1 1.52 M, 3-layer BLSTM 4.73 M, fc2 0.52 M, fc3 2.10 M, BatchNorms and scales 17 k),
35.6 M in all, for X-UMX and UMX alike (the bridges add no parameter, as the X-UMX paper
says). One training step (forward + backward + Adam, batch 4 x 1 s stereo, 1 CPU thread)
takes about 0.5 s, 1.3 s through one Wiener iteration (complex128 EM).

Recommended small config (learns on CPU; 0.28 M parameters with 4 stereo sources; 0.17 s a
training step as above, 0.6 s with `train_wiener_iterations=1`)::

    XUMX(sources, hidden_size=32, lstm_layers=1, nfft=1024, hop_length=256)
"""
import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .base import SeparationModel, capture_init
from ..wiener import multichannel_wiener
from ..spec import check_stft, ispectro, spectro, with_phase_of


def bandwidth_bins(samplerate: float, nfft: int, bandwidth: float) -> int:
    """Number of STFT bins at or below `bandwidth` Hz (open-unmix's `max_bin`)."""
    highest = math.floor(bandwidth * nfft / samplerate + 1e-9)  # bin k is at k sr / nfft Hz
    return min(highest + 1, nfft // 2 + 1)


def check_hyperparams(sources: tp.Sequence[str], audio_channels: int, samplerate: float,
                      nfft: int, hop_length: int, bandwidth: float, hidden_size: int,
                      lstm_layers: int, lstm_dropout: float, bidirectional: bool,
                      wiener_iterations: int, train_wiener_iterations: int,
                      wiener_frames: tp.Optional[int]) -> None:
    """Raise a ValueError naming the fix for any invalid hyper-parameter of `XUMX`."""
    if not sources:
        raise ValueError("XUMX needs at least one source.")
    if audio_channels < 1:
        raise ValueError(f"audio_channels must be >= 1, got {audio_channels}.")
    check_stft(nfft, hop_length, 'nfft')
    nyquist = samplerate / 2
    if not 0 < bandwidth <= nyquist:
        raise ValueError(f"bandwidth={bandwidth} Hz must be in (0, samplerate / 2 = {nyquist:g}"
                         f"] Hz (the Nyquist frequency): use bandwidth<={nyquist:g}.")
    if hidden_size < 2 or (bidirectional and hidden_size % 2):
        raise ValueError(f"hidden_size={hidden_size} must be even and >= 2 (each direction "
                         f"of the BLSTM has hidden_size / 2 units): use hidden_size="
                         f"{max(2, hidden_size + hidden_size % 2)}, or bidirectional=False.")
    if lstm_layers < 1:
        raise ValueError(f"lstm_layers={lstm_layers} must be >= 1.")
    if not 0 <= lstm_dropout < 1:
        raise ValueError(f"lstm_dropout={lstm_dropout} must be in [0, 1).")
    if wiener_iterations < 0 or train_wiener_iterations < 0:
        raise ValueError(f"wiener_iterations={wiener_iterations} and train_wiener_iterations="
                         f"{train_wiener_iterations} must be >= 0 (0: the mixture phase).")
    if wiener_frames is not None and wiener_frames < 1:
        raise ValueError(f"wiener_frames={wiener_frames} must be >= 1, or None to filter "
                         f"all frames at once.")


def batch_norm_frames(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over batch x frames: `[N, B, D]` -> `[N, B, D]`, one vector per frame."""
    return norm(x.reshape(-1, x.shape[-1])).view(x.shape)


class SourceNetwork(nn.Module):
    """The Open-Unmix network of one source, in three stages so that `XUMX` can bridge the
    sources between them. Tensors are frames first, `[N, B, ...]`, as the LSTM takes them.

    Args:
        in_bins: bins fed to the network (those below the bandwidth).
        out_bins: bins of the output mask (all of them).
        channels: audio channels.
        hidden_size, lstm_layers, lstm_dropout, bidirectional: see `XUMX`.
    """
    def __init__(self, in_bins: int, out_bins: int, channels: int, hidden_size: int,
                 lstm_layers: int, lstm_dropout: float, bidirectional: bool):
        super().__init__()
        self.in_bins, self.out_bins, self.channels = in_bins, out_bins, channels
        self.input_mean = nn.Parameter(torch.zeros(in_bins))
        self.input_scale = nn.Parameter(torch.ones(in_bins))
        self.fc1 = nn.Linear(channels * in_bins, hidden_size, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size // 2 if bidirectional else hidden_size,
                            num_layers=lstm_layers, bidirectional=bidirectional,
                            dropout=lstm_dropout if lstm_layers > 1 else 0.)
        self.fc2 = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden_size)
        self.fc3 = nn.Linear(hidden_size, channels * out_bins, bias=False)
        self.bn3 = nn.BatchNorm1d(channels * out_bins)
        self.output_scale = nn.Parameter(torch.ones(out_bins))
        self.output_mean = nn.Parameter(torch.ones(out_bins))

    def encode(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Normalised input, fc1, BN, tanh: `[N, B, C, in_bins]` -> `[N, B, hidden]`."""
        x = (magnitude + self.input_mean) * self.input_scale
        x = self.fc1(x.flatten(2))
        return torch.tanh(batch_norm_frames(self.bn1, x))

    def recur(self, lstm_input: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        """BLSTM on `lstm_input` and the skip connection of `encoded`: `[N, B, hidden]` x2
        -> `[N, B, 2 * hidden]`."""
        output, _ = self.lstm(lstm_input)
        return torch.cat([encoded, output.to(encoded.dtype)], -1)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """fc2, BN, ReLU, fc3, BN, output scale and mean, ReLU: `[N, B, 2 * hidden]` ->
        the non-negative mask `[N, B, C, out_bins]`."""
        x = F.relu(batch_norm_frames(self.bn2, self.fc2(features)))
        x = batch_norm_frames(self.bn3, self.fc3(x))
        x = x.float().unflatten(-1, (self.channels, self.out_bins))
        return F.relu(x * self.output_scale + self.output_mean)


class XUMX(SeparationModel):
    """CrossNet-Open-Unmix, and Open-Unmix with `bridge=False`. See the module docstring.

    Args:
        sources: names of the sources, the model outputs one waveform per source.
        audio_channels: 1 (mono) or 2 (stereo).
        samplerate, segment: metadata; `segment` is the training segment in seconds (6 s,
            the official recipe's `seq-dur`).
        nfft, hop_length: STFT size (Hann window of that length) and hop.
        bandwidth: highest frequency (Hz) of the bins fed to the networks; the masks cover
            all bins.
        hidden_size: width of fc1, fc2 and of the BLSTM (hidden_size / 2 per direction).
        lstm_layers: stacked (B)LSTM layers.
        lstm_dropout: dropout between the LSTM layers (train mode).
        bidirectional: BLSTM, else a causal LSTM of hidden_size units (open-unmix's
            `unidirectional`).
        bridge: average the sources' features before the LSTMs and before fc2 (X-UMX), else
            independent networks (Open-Unmix).
        wiener_iterations: EM iterations of the multichannel Wiener filter in eval mode
            (0: magnitude estimates with the mixture phase).
        train_wiener_iterations: the same in train mode.
        wiener_frames: frames per independently filtered window (None: all at once).
        normalized_stft: the STFT of `separator.spec` (scaled by 1 / sqrt(nfft)), else
            open-unmix's unnormalised one, which imported weights expect.
    """
    @capture_init
    def __init__(self, sources: tp.List[str], audio_channels: int = 2, samplerate: int = 44100,
                 segment: float = 6.0, nfft: int = 4096, hop_length: int = 1024,
                 bandwidth: float = 16000, hidden_size: int = 512, lstm_layers: int = 3,
                 lstm_dropout: float = 0.4, bidirectional: bool = True, bridge: bool = True,
                 wiener_iterations: int = 1, train_wiener_iterations: int = 0,
                 wiener_frames: tp.Optional[int] = 300, normalized_stft: bool = True):
        check_hyperparams(sources, audio_channels, samplerate, nfft, hop_length, bandwidth,
                          hidden_size, lstm_layers, lstm_dropout, bidirectional,
                          wiener_iterations, train_wiener_iterations, wiener_frames)
        super().__init__(sources, audio_channels, samplerate, segment)
        self.n_fft = nfft
        self.hop_length = hop_length
        self.bridge = bridge
        self.wiener_iterations = wiener_iterations
        self.train_wiener_iterations = train_wiener_iterations
        self.wiener_frames = wiener_frames
        self.normalized_stft = normalized_stft
        self.in_bins = bandwidth_bins(samplerate, nfft, bandwidth)
        self.out_bins = nfft // 2 + 1
        self.networks = nn.ModuleList([
            SourceNetwork(self.in_bins, self.out_bins, audio_channels, hidden_size,
                          lstm_layers, lstm_dropout, bidirectional)
            for _ in self.sources])

    # -- spectrograms -----------------------------------------------------------------

    def stft_length(self, length: int) -> int:
        """Length the waveforms are zero-padded to: the reflect padding of the STFT needs
        more than nfft // 2 samples."""
        return max(length, self.n_fft // 2 + 1)

    @property
    def stft_gain(self) -> float:
        """Scale of `stft` relative to `separator.spec`'s normalised STFT: 1, or sqrt(nfft)
        for open-unmix's unnormalised one (`normalized_stft=False`)."""
        return 1. if self.normalized_stft else math.sqrt(self.n_fft)

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """Complex STFT `[*, T]` -> `[*, F, N]` of `wav` zero-padded to `stft_length`."""
        wav = F.pad(wav, (0, self.stft_length(wav.shape[-1]) - wav.shape[-1]))
        spec = spectro(wav, self.n_fft, self.hop_length)
        return spec if self.normalized_stft else spec * self.stft_gain

    def istft(self, specs: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of `stft`: `[*, F, N]` -> `[*, length]`."""
        if not self.normalized_stft:
            specs = specs / self.stft_gain
        return ispectro(specs, self.hop_length, self.stft_length(length))[..., :length]

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Magnitude STFT, as the model sees it: `[*, T]` -> `[*, F, N]` (for the targets of
        spectrogram losses, e.g. `[B, S, C, T]` sources)."""
        return self.stft(wav).abs()

    # -- forward ----------------------------------------------------------------------

    def _bridged(self, features: tp.List[torch.Tensor]) -> tp.List[torch.Tensor]:
        """The average over the sources for each of them (X-UMX), or `features` as is."""
        if not self.bridge:
            return features
        average = sum(features) / len(features)
        return [average] * len(features)

    def estimate_magnitudes(self, mix_magnitude: torch.Tensor) -> torch.Tensor:
        """Magnitude estimates: mixture magnitude `[B, C, F, N]` -> `[B, S, C, F, N]`."""
        x = mix_magnitude[:, :, :self.in_bins].permute(3, 0, 1, 2)  # [N, B, C, in_bins]
        encoded = [net.encode(x) for net in self.networks]
        lstm_inputs = self._bridged(encoded)
        features = [net.recur(lstm_input, own)
                    for net, lstm_input, own in zip(self.networks, lstm_inputs, encoded)]
        masks = [net.decode(feature)
                 for net, feature in zip(self.networks, self._bridged(features))]
        masks = torch.stack(masks, 1).permute(2, 1, 3, 4, 0)  # [B, S, C, F, N]
        return masks * mix_magnitude[:, None].float()

    @property
    def active_wiener_iterations(self) -> int:
        """EM iterations of the current mode: `train_wiener_iterations` in train mode."""
        return self.train_wiener_iterations if self.training else self.wiener_iterations

    def wiener(self, mix_spec: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """Complex source STFTs `[B, S, C, F, N]` from the magnitude estimates: the mixture
        phase, refined by the multichannel Wiener filter on windows of `wiener_frames`."""
        specs = with_phase_of(mix_spec, magnitudes)
        iterations = self.active_wiener_iterations
        if iterations == 0:
            return specs
        frames = mix_spec.shape[-1]
        window = self.wiener_frames or frames
        parts = [multichannel_wiener(mix_spec[..., start:start + window],
                                     specs[..., start:start + window], iterations)
                 for start in range(0, frames, window)]
        return torch.cat(parts, -1).to(specs.dtype)

    def _separate(self, mix: torch.Tensor
                  ) -> tp.Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`[B, C, T]` mixture -> the waveforms `[B, S, C, T]`, the magnitude estimates
        `[B, S, C, F, N]` (mixture magnitude x mask, before the Wiener filter) and the complex
        source STFTs `[B, S, C, F, N]` that the waveforms are the iSTFT of (after the filter
        of the current mode)."""
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"Expected a mixture [batch, {self.audio_channels}, time], "
                             f"got {tuple(mix.shape)}.")
        length = mix.shape[-1]
        mix_spec = self.stft(mix)
        magnitudes = self.estimate_magnitudes(mix_spec.abs())
        specs = self.wiener(mix_spec, magnitudes)
        return self.istft(specs, length).to(mix.dtype), magnitudes, specs

    def forward_with_magnitudes(self, mix: torch.Tensor
                                ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """`[B, C, T]` mixture -> the waveforms `[B, S, C, T]` and the magnitude estimates
        `[B, S, C, F, N]` (mixture magnitude x mask, before the Wiener filter)."""
        waveforms, magnitudes, _specs = self._separate(mix)
        return waveforms, magnitudes

    def forward(self, mix: torch.Tensor, with_magnitudes: bool = False,
                with_spectrograms: bool = False) -> tp.Any:
        """`[B, C, T]` mixture -> `[B, S, C, T]` estimated sources, any T >= 1; with
        `with_magnitudes`, also the magnitude estimates (`forward_with_magnitudes`); with
        `with_spectrograms`, also the complex source STFTs after the Wiener filter (danna's
        loss, `optim.loss=xumx_mwf`). A spectrogram loss under DDP must get them through
        `forward`, which DDP's gradient synchronisation wraps."""
        waveforms, magnitudes, specs = self._separate(mix)
        if with_spectrograms:
            return waveforms, specs
        return (waveforms, magnitudes) if with_magnitudes else waveforms
