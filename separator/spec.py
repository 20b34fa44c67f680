"""STFT helpers shared by the spectrogram models (HDemucs, TFC-TDF, BSRNN, RoFormer) and the
Wiener filter (`wiener.py`): at the package top, below both, so that neither imports the other.

All transforms use a Hann window of length `n_fft`, `center=True` with reflect padding and
`normalized=True` (the transform is scaled by 1/sqrt(n_fft), so spectrogram values have
roughly the same scale whatever `n_fft`), and return / take complex tensors.
Leading dimensions are arbitrary: `[*, T] -> [*, n_fft // 2 + 1, frames]` and back.
"""
import typing as tp

import torch
from torch.nn import functional as F


def check_stft(n_fft: int, hop_length: int, name: str = 'n_fft') -> None:
    """Raise a ValueError naming the fix for an STFT size or hop that `ispectro` cannot
    invert: an even `n_fft`, windows that overlap. `name`: the model's name for n_fft."""
    if n_fft < 4 or n_fft % 2:
        raise ValueError(f"{name}={n_fft} must be even and >= 4 (e.g. 2048).")
    if not 1 <= hop_length <= n_fft // 2:
        raise ValueError(f"hop_length={hop_length} must be between 1 and {name} // 2 = "
                         f"{n_fft // 2} (the iSTFT needs overlapping windows): e.g. "
                         f"hop_length={n_fft // 4} ({name} // 4).")


def spectro(x: torch.Tensor, n_fft: int = 4096,
            hop_length: tp.Optional[int] = None) -> torch.Tensor:
    """Complex STFT of `x` of shape `[*, T]`, returns `[*, n_fft // 2 + 1, frames]`.

    With `center=True` there are `T // hop_length + 1` frames, frame `k` centred on sample
    `k * hop_length`. `T` must be larger than `n_fft // 2` (reflect padding).
    """
    hop_length = hop_length or n_fft // 4
    *other, length = x.shape
    x = x.reshape(-1, length).float()  # FFTs run in float32, also under mixed precision
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        z = torch.stft(x, n_fft, hop_length, window=window, win_length=n_fft,
                       normalized=True, center=True, pad_mode='reflect', return_complex=True)
    return z.view(*other, *z.shape[-2:])


def ispectro(z: torch.Tensor, hop_length: tp.Optional[int] = None,
             length: tp.Optional[int] = None) -> torch.Tensor:
    """Inverse of `spectro`: `[*, freqs, frames]` complex -> `[*, length]` real.

    `n_fft` is deduced from the number of frequency bins (`2 * (freqs - 1)`).
    """
    *other, freqs, frames = z.shape
    n_fft = 2 * (freqs - 1)
    hop_length = hop_length or n_fft // 4
    z = z.reshape(-1, freqs, frames)
    window = torch.hann_window(n_fft, device=z.device, dtype=z.real.dtype)
    with torch.autocast(z.device.type, enabled=False):
        if torch.compiler.is_exporting():   # torch.onnx.export: torch.istft does not export
            x = _istft_overlap_add(z, window, hop_length, length)
        else:
            x = torch.istft(z, n_fft, hop_length, window=window, win_length=n_fft,
                            normalized=True, center=True, length=length)
    return x.view(*other, x.shape[-1])


def _overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """`[N, n_fft, T]` frames, frame k starting at sample k * hop -> `[N, (T - 1) * hop +
    n_fft]` summed signal; `n_fft` a multiple of `hop_length`. Shifted pads and sums only."""
    N, n_fft, T = frames.shape
    ratio = n_fft // hop_length
    parts = frames.reshape(N, ratio, hop_length, T)
    out = sum(F.pad(parts[:, k], (k, ratio - 1 - k)) for k in range(ratio))
    return out.transpose(1, 2).reshape(N, -1)


def _istft_overlap_add(z: torch.Tensor, window: torch.Tensor, hop_length: int,
                       length: tp.Optional[int]) -> torch.Tensor:
    """`torch.istft(z, ..., normalized=True, center=True)` written with an inverse real FFT
    and `_overlap_add`, ops that `torch.onnx.export` translates (its own decomposition of
    `istft` gives an ONNX graph onnxruntime rejects). Same output to ~1e-6."""
    n_fft = window.shape[0]
    if n_fft % hop_length:
        raise ValueError(f"n_fft {n_fft} must be a multiple of hop_length {hop_length}.")
    frames = torch.fft.irfft(z, n=n_fft, dim=-2) * (n_fft ** 0.5 * window[:, None])
    signal = _overlap_add(frames, hop_length)
    envelope = _overlap_add(window.pow(2)[None, :, None].expand(1, n_fft, z.shape[-1]),
                            hop_length)
    start = n_fft // 2
    stop = start + length if length is not None else signal.shape[-1] - start
    return signal[:, start:stop] / envelope[:, start:stop].clamp_min(1e-11)


def complex_to_channels(z: torch.Tensor) -> torch.Tensor:
    """Complex-as-channels: `[B, C, F, T]` complex -> `[B, 2 * C, F, T]` real.

    Channel `2 * c` is the real part of channel `c`, `2 * c + 1` its imaginary part.
    """
    B, C, Fr, T = z.shape
    return torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, Fr, T)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `complex_to_channels`: `[*, 2 * C, F, T]` real -> `[*, C, F, T]` complex."""
    *other, C2, Fr, T = x.shape
    if C2 % 2:
        raise ValueError(f"Expected an even number of channels (real, imag pairs), got {C2}.")
    x = x.float().reshape(*other, C2 // 2, 2, Fr, T)  # no complex bfloat16 or float16
    x = x.movedim(-3, -1).contiguous()
    return torch.view_as_complex(x)


def with_phase_of(z: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Complex spectrograms of magnitude `magnitude` `[B, S, C, F, T]` and the phase of `z`
    `[B, C, F, T]` (the mixture's, for models that estimate magnitudes). Computed on real
    (re, im) pairs so that `torch.onnx.export` translates it."""
    unit = torch.view_as_real(z) / (1e-8 + z.abs())[..., None]
    return torch.view_as_complex((unit[:, None] * magnitude[..., None]).contiguous())
