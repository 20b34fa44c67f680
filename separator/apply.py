"""Inference on whole songs: chunked overlap-add with a smooth window, and random shifts.

Memory is bounded by the chunk size and `batch_size` chunks at a time, not by the song
length (the output accumulator aside, which is the size of the result itself).
"""
import typing as tp

import torch


def _window(length: int, overlap_frames: int, device: torch.device) -> torch.Tensor:
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
    window = _window(segment, segment - _stride(segment, overlap), mix.device)
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


def apply_model(model: torch.nn.Module, mix: torch.Tensor, segment: tp.Optional[float] = None,
                overlap: float = 0.25, shifts: int = 0, split: bool = True, batch_size: int = 1,
                generator: tp.Optional[torch.Generator] = None) -> torch.Tensor:
    """Separate `mix` [B, C, T] (or [C, T]) into [B, S, C, T] (or [S, C, T]).

    Args:
        segment: chunk length in seconds; defaults to the model's training segment.
        overlap: fraction of a chunk shared with the next one.
        shifts: if > 0, average over that many random time shifts of up to 0.5 s
            (the shift trick of Demucs), drawn from `generator`.
        split: if False, run the model on the whole input at once.
        batch_size: chunks per forward call; 1 is as fast on CPU with half the memory, raise
            it on a GPU.
    """
    squeeze = mix.dim() == 2
    if squeeze:
        mix = mix[None]
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
