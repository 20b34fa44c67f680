"""STFT helpers shared by the spectrogram models (HDemucs, TFC-TDF, BSRNN, RoFormer).

All transforms use a Hann window of length `n_fft`, `center=True` with reflect padding and
`normalized=True` (the transform is scaled by 1/sqrt(n_fft), so spectrogram values have
roughly the same scale whatever `n_fft`), and return / take complex tensors.
Leading dimensions are arbitrary: `[*, T] -> [*, n_fft // 2 + 1, frames]` and back.
"""
import typing as tp

import torch


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
        x = torch.istft(z, n_fft, hop_length, window=window, win_length=n_fft,
                        normalized=True, center=True, length=length)
    return x.view(*other, x.shape[-1])


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
