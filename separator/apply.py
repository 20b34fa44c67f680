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


def overlap_add(function: tp.Callable[..., torch.Tensor], inputs: tp.Sequence[torch.Tensor],
                segment: int, overlap: float, batch_size: int = 1) -> torch.Tensor:
    """`function` on `segment`-long chunks of `inputs`, blended with the fade window.

    The inputs ([B, ..., T], same B and T) are cut along their last dimension;
    `batch_size` chunks go through `function` at once, concatenated along the first
    dimension. Its outputs are [B, ..., segment]; the result is [B, ..., T]. A song no
    longer than `segment` goes through `function` whole.
    """
    batch, length = inputs[0].shape[0], inputs[0].shape[-1]
    if length <= segment:
        return function(*inputs)
    offsets = chunk_offsets(length, segment, overlap)
    window = fade_window(segment, segment - _stride(segment, overlap), inputs[0].device)
    out = weight = None
    for start in range(0, len(offsets), batch_size):
        group = offsets[start:start + batch_size]
        chunks = [torch.cat([x[..., o:o + segment] for o in group]) for x in inputs]
        outputs = function(*chunks)
        outputs = outputs.reshape(len(group), batch, *outputs.shape[1:])
        if out is None:
            out = outputs.new_zeros(batch, *outputs.shape[2:-1], length)
            # at least float32: half-precision outputs still sum their weights exactly
            weight = out.new_zeros(length, dtype=torch.promote_types(out.dtype, torch.float32))
            window = window.to(weight.dtype)
        for offset, output in zip(group, outputs):
            out[..., offset:offset + segment] += output * window  # autograd follows slices
            weight[offset:offset + segment] += window
    out /= weight  # in place: no second song-sized copy
    return out


def _separate_chunks(model: torch.nn.Module, mix: torch.Tensor, segment: int, overlap: float,
                     batch_size: int) -> torch.Tensor:
    """[B, C, T] -> [B, S, C, T] by overlap-add of `segment`-long chunks."""
    return overlap_add(model, [mix], segment, overlap, batch_size)


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
