"""Inference on whole songs: chunked overlap-add with a smooth window, and random shifts.

Memory is bounded by the chunk size and `batch_size` chunks at a time, not by the song
length (the output accumulator aside, which is the size of the result itself).
"""
import typing as tp

import torch


def fade_window(length: int, overlap_frames: int, device: torch.device) -> torch.Tensor:
    """Flat window with raised-cosine fades over the overlap, never exactly zero."""
    window = torch.ones(length, device=device)
    if overlap_frames > 0:
        ramp = torch.arange(1, overlap_frames + 1, device=device) / (overlap_frames + 1)
        fade = torch.sin(0.5 * torch.pi * ramp) ** 2
        window[:overlap_frames] = fade
        window[-overlap_frames:] = fade.flip(0)
    return window


def _stride(segment: int, overlap: float) -> int:
    return max(1, int((1 - overlap) * segment))


def chunk_offsets(length: int, segment: int, overlap: float) -> tp.List[int]:
    """Start frames of the chunks covering `length` frames (`length > segment`)."""
    offsets = list(range(0, length - segment + 1, _stride(segment, overlap)))
    if offsets[-1] + segment < length:
        # The last chunk ends with the song: it sees real audio, never zero padding.
        offsets.append(length - segment)
    return offsets


def _separate_chunks(model: torch.nn.Module, mix: torch.Tensor, segment: int, overlap: float,
                     batch_size: int) -> torch.Tensor:
    """[B, C, T] -> [B, S, C, T] by overlap-add of `segment`-long chunks."""
    batch, channels, length = mix.shape
    if length <= segment:
        return model(mix)
    offsets = chunk_offsets(length, segment, overlap)
    window = fade_window(segment, segment - _stride(segment, overlap), mix.device)
    out = None
    weight = torch.zeros(length, device=mix.device)
    for start in range(0, len(offsets), batch_size):
        group = offsets[start:start + batch_size]
        chunks = torch.cat([mix[..., o:o + segment] for o in group])
        estimates = model(chunks).view(len(group), batch, -1, channels, segment)
        if out is None:
            out = torch.zeros(batch, estimates.shape[2], channels, length, device=mix.device,
                              dtype=estimates.dtype)
        for offset, estimate in zip(group, estimates):
            out[..., offset:offset + segment] += estimate * window
            weight[offset:offset + segment] += window
    out /= weight  # in place: no second song-sized copy
    return out


def _apply_midside(model: torch.nn.Module, mix: torch.Tensor, **kwargs: tp.Any
                   ) -> torch.Tensor:
    """`apply_model(..., midside=True)` on a stereo [B, 2, T] `mix`: see its docstring."""
    batch, channels, length = mix.shape
    if channels != 2:
        raise ValueError(f"Mid/side inference needs a stereo mixture, got {channels} "
                         f"channel(s).")
    model_channels = model.audio_channels
    if model_channels not in (1, 2):
        raise ValueError(f"Mid/side inference needs a mono or stereo model, this one has "
                         f"{model_channels} channels.")
    left, right = mix.unbind(1)
    views = torch.stack([left, right, (left + right) / 2, (left - right) / 2], 1)
    # One call, the views in the batch: (L, R) and (M, S) pairs, or L, R, M, S alone.
    out = apply_model(model, views.reshape(-1, model_channels, length), **kwargs)
    sources = out.shape[1]
    out = out.reshape(batch, 4 // model_channels, sources, model_channels, length)
    est_left, est_right, est_mid, est_side = out.transpose(1, 2).reshape(
        batch, sources, 4, length).unbind(2)
    # Two estimates of each channel, L and M + S, R and M - S, averaged.
    return torch.stack([est_left + est_mid + est_side, est_right + est_mid - est_side], 2) / 2


def apply_model(model: torch.nn.Module, mix: torch.Tensor, segment: tp.Optional[float] = None,
                overlap: float = 0.25, shifts: int = 0, split: bool = True, batch_size: int = 1,
                generator: tp.Optional[torch.Generator] = None, midside: bool = False
                ) -> torch.Tensor:
    """Separate `mix` [B, C, T] (or [C, T]) into [B, S, C, T] (or [S, C, T]).

    Args:
        segment: chunk length in seconds; defaults to the model's training segment.
        overlap: fraction of a chunk shared with the next one.
        shifts: if > 0, average over that many random time shifts of up to 0.5 s
            (the shift trick of Demucs), drawn from `generator`.
        split: if False, run the model on the whole input at once.
        batch_size: chunks per forward call; 1 is as fast on CPU with half the memory, raise
            it on a GPU.
        midside: mid/side inference, a trick of the team aimless (SDX23, cinematic track;
            a stereo `mix` only, else ValueError). Besides L and R, the model also
            separates the mid M = (L + R) / 2 and the side S = (L - R) / 2; since L = M + S
            and R = M - S, each output channel has two estimates, which are averaged:
            L' = (est(L) + est(M) + est(S)) / 2, R' = (est(R) + est(M) - est(S)) / 2.
            aimless ran a mono HDemucs on L, R, M and S alone and combined the four
            linearly (their weights are in their submission repository, not public: the
            average above is ours). Here a mono model does just that, and its output is
            then stereo; a stereo model separates [L, R] and [M, S] as two stereo inputs.
            The views go through the model as one batch: as many forward calls, each on 2x
            (stereo model) or 4x (mono) the items. A linear channel-wise model gives the same
            output with and without it.
    """
    squeeze = mix.dim() == 2
    if squeeze:
        mix = mix[None]
    if midside:
        out = _apply_midside(model, mix, segment=segment, overlap=overlap, shifts=shifts,
                             split=split, batch_size=batch_size, generator=generator)
        return out[0] if squeeze else out
    samplerate = model.samplerate
    if shifts > 0:
        max_shift = int(0.5 * samplerate)
        padded = torch.nn.functional.pad(mix, (max_shift, max_shift))
        out = 0
        for _ in range(shifts):
            shift = int(torch.randint(0, max_shift, (), generator=generator))
            shifted = padded[..., shift:shift + mix.shape[-1] + max_shift]
            estimate = apply_model(model, shifted, segment, overlap, 0, split, batch_size)
            out = out + estimate[..., max_shift - shift:max_shift - shift + mix.shape[-1]]
        out = out / shifts
    elif split:
        seconds = segment if segment is not None else model.segment
        out = _separate_chunks(model, mix, int(seconds * samplerate), overlap, batch_size)
    else:
        out = model(mix)
    return out[0] if squeeze else out
