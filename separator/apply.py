"""Inference on whole songs: chunked overlap-add with a smooth window, and random shifts.

Everything here is a *stream*: the output comes block by block, in order, each block as soon
as no later chunk reaches it, and the input is read range by range through a `Reader`
(`read(start, end)`: the frames [start, end), zeros outside the song). So memory is bounded
by a few chunks, not by the song: `separator` writes the stems of an hour-long track as they
come (`stream_model`). `apply_model` collects the stream of a tensor into a tensor.

Two chunkings (`chunking=...`):

- `fade` (default): chunks every `(1 - overlap) * segment` frames, the last one aligned on
  the song's end, so every chunk is full-length real audio; neighbours blend with
  raised-cosine fades over their overlap.
- `demucs`: the chunking of `demucs.apply.apply_model` (demucs 4), reproduced so that a
  model gives the same output as there (to float error: `bench/separate.py` checks it), e.g.
  to reproduce published scores: chunks at 0, stride, 2 stride... while they start inside
  the song, a triangle window, and each chunk padded to the model's `valid_length` with the
  audio around it (zeros past the ends), centred. Its last chunk is mostly padding, so it
  usually makes one model call more than `fade`.
"""
import typing as tp
from dataclasses import dataclass

import torch

CHUNKINGS = ('fade', 'demucs')
Reader = tp.Callable[[int, int], torch.Tensor]   # (start, end) -> [B, ..., end - start]
Block = tp.Tuple[int, torch.Tensor]              # (first frame, output [B, ..., frames])


# ---------------------------------------------------------------- chunk plans
def fade_window(length: int, overlap_frames: int, device: tp.Optional[torch.device] = None
                ) -> torch.Tensor:
    """Flat window with raised-cosine fades over the overlap, never exactly zero."""
    window = torch.ones(length, device=device)
    if overlap_frames > 0:
        ramp = torch.arange(1, overlap_frames + 1, device=device) / (overlap_frames + 1)
        fade = torch.sin(0.5 * torch.pi * ramp) ** 2
        window[:overlap_frames] = fade
        window[-overlap_frames:] = fade.flip(0)
    return window


def triangle_window(length: int, device: tp.Optional[torch.device] = None) -> torch.Tensor:
    """demucs' chunk weight: a triangle peaking at 1 in the middle, never zero."""
    half = length // 2
    ramp = torch.cat([torch.arange(1, half + 1, device=device),
                      torch.arange(length - half, 0, -1, device=device)]).float()
    return ramp / ramp.max()


def _stride(segment: int, overlap: float) -> int:
    return max(1, int((1 - overlap) * segment))


def chunk_offsets(length: int, segment: int, overlap: float) -> tp.List[int]:
    """Start frames of the `fade` chunks covering `length` frames (`length > segment`)."""
    offsets = list(range(0, length - segment + 1, _stride(segment, overlap)))
    if offsets[-1] + segment < length:
        # The last chunk ends with the song: it sees real audio, never zero padding.
        offsets.append(length - segment)
    return offsets


@dataclass(frozen=True)
class Chunk:
    """One model call: it reads the input frames [start, start + size) and gives the output
    frames [offset, offset + length) (its output trimmed in the middle, as demucs does)."""
    offset: int
    length: int
    start: int
    size: int


def fade_chunks(length: int, segment: int, overlap: float
                ) -> tp.Tuple[tp.List[Chunk], torch.Tensor]:
    """The `fade` chunks of a `length`-frame input and their window (a short input: whole)."""
    if length <= segment:
        return [Chunk(0, length, 0, length)], torch.ones(length)
    chunks = [Chunk(o, segment, o, segment) for o in chunk_offsets(length, segment, overlap)]
    return chunks, fade_window(segment, segment - _stride(segment, overlap))


def _demucs_padded_length(model: torch.nn.Module, length: int, segment: int,
                          explicit_segment: bool) -> int:
    """The length demucs pads a chunk of `length` frames to before the model sees it."""
    # demucs' own HTDemucs, given an explicit segment, gets chunks padded to that segment
    # (it pads them to its training length itself); other models to their valid_length.
    if explicit_segment and type(model).__module__ == 'demucs.htdemucs':
        return segment
    valid_length = getattr(model, 'valid_length', None)
    return valid_length(length) if valid_length is not None else length


def demucs_chunks(model: torch.nn.Module, length: int, segment: int, overlap: float,
                  explicit_segment: bool) -> tp.Tuple[tp.List[Chunk], torch.Tensor]:
    """The chunks of `demucs.apply.apply_model` (module docstring) and its window."""
    chunks = []
    for offset in range(0, length, _stride(segment, overlap)):
        real = min(length - offset, segment)
        size = _demucs_padded_length(model, real, segment, explicit_segment)
        chunks.append(Chunk(offset, real, offset - (size - real) // 2, size))
    return chunks, triangle_window(segment)


# ---------------------------------------------------------------- streams
def padded_slice(tensor: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """tensor[..., start:end], zero-padded where the range reaches past either end."""
    begin, stop = max(0, start), min(tensor.shape[-1], end)
    if stop <= begin:
        return tensor.new_zeros(*tensor.shape[:-1], end - start)
    return torch.nn.functional.pad(tensor[..., begin:stop], (begin - start, end - stop))


def slice_reader(tensor: torch.Tensor) -> Reader:
    """The reader of a tensor held in memory (zeros outside it)."""
    return lambda start, end: padded_slice(tensor, start, end)


def tensor_reader(*tensors: torch.Tensor) -> tp.Callable[[int, int], tp.List[torch.Tensor]]:
    """A reader of several same-length tensors at once (zeros outside them)."""
    return lambda start, end: [padded_slice(x, start, end) for x in tensors]


def batch_groups(chunks: tp.Sequence[Chunk], batch_size: int) -> tp.List[tp.List[Chunk]]:
    """The chunks of each forward call: up to `batch_size` consecutive chunks of one size."""
    groups: tp.List[tp.List[Chunk]] = []
    for chunk in chunks:
        if groups and len(groups[-1]) < batch_size and groups[-1][0].size == chunk.size:
            groups[-1].append(chunk)
        else:
            groups.append([chunk])
    return groups


def stream_chunks(function: tp.Callable[..., torch.Tensor],
                  read: tp.Callable[[int, int], tp.List[torch.Tensor]], length: int,
                  chunks: tp.Sequence[Chunk], window: torch.Tensor, batch_size: int = 1
                  ) -> tp.Iterator[Block]:
    """`function` on the `chunks` of the inputs that `read` gives, blended with `window` (its
    first `chunk.length` values): yields the [B, ..., T] output block by block, in order,
    each once no later chunk reaches it.

    `read(start, end)` returns the inputs ([B, ..., end - start] each); chunks of the same
    size go through `function` `batch_size` at a time, concatenated along the first
    dimension; its outputs are [B, ..., size]. Chunks are sorted by offset and cover
    [0, length). Autograd follows (the accumulation is in place on slices).
    """
    acc = weight = None
    base = 0                                  # output frame of acc[..., 0]
    index = 0
    for group in batch_groups(chunks, batch_size):
        index += len(group)
        parts = [read(chunk.start, chunk.start + chunk.size) for chunk in group]
        batch = parts[0][0].shape[0]
        outputs = function(*[torch.cat([part[i] for part in parts])
                             for i in range(len(parts[0]))])
        outputs = outputs.reshape(len(group), batch, *outputs.shape[1:])
        end = max(chunk.offset + chunk.length for chunk in group) - base
        if acc is None:
            acc = outputs.new_zeros(batch, *outputs.shape[2:-1], end)
            # at least float32: half-precision outputs still sum their weights exactly
            weight = acc.new_zeros(end, dtype=torch.promote_types(acc.dtype, torch.float32))
            window = window.to(weight.device, weight.dtype)
        elif end > acc.shape[-1]:
            grow = end - acc.shape[-1]
            acc = torch.cat([acc, acc.new_zeros(*acc.shape[:-1], grow)], -1)
            weight = torch.cat([weight, weight.new_zeros(grow)])
        for chunk, output in zip(group, outputs):
            trim = (output.shape[-1] - chunk.length) // 2     # 0 unless padded (demucs)
            at, frames = chunk.offset - base, chunk.length
            acc[..., at:at + frames] += output[..., trim:trim + frames] * window[:frames]
            weight[at:at + frames] += window[:frames]
        done = (chunks[index].offset if index < len(chunks) else length) - base
        yield base, acc[..., :done] / weight[:done]
        acc, weight, base = acc[..., done:], weight[done:], base + done


def collect(blocks: tp.Iterable[Block], length: int) -> torch.Tensor:
    """The whole [B, ..., length] output of a stream."""
    out = None
    for start, block in blocks:
        if out is None:
            if start == 0 and block.shape[-1] == length:
                return block
            out = block.new_zeros(*block.shape[:-1], length)
        out[..., start:start + block.shape[-1]] = block
    assert out is not None, "empty stream"
    return out


def merge(streams: tp.Sequence[tp.Iterable[Block]], delays: tp.Sequence[int], length: int,
          combine: tp.Callable[[tp.List[torch.Tensor]], torch.Tensor]) -> tp.Iterator[Block]:
    """Align several streams on the output frames and combine them range by range.

    Frame u of stream k is output frame u - delays[k]; frames outside [0, length) are
    dropped. Yields (start, combine([block of each stream])) over consecutive ranges.
    """
    iterators = [iter(stream) for stream in streams]
    pending: tp.List[tp.List[torch.Tensor]] = [[] for _ in streams]
    available = [0] * len(streams)
    position = 0
    while position < length:
        for k, iterator in enumerate(iterators):
            while available[k] == 0:
                start, block = next(iterator)
                start -= delays[k]
                first, stop = max(start, position), min(start + block.shape[-1], length)
                if stop > first:
                    pending[k].append(block[..., first - start:stop - start])
                    available[k] += stop - first
        frames = min(available)
        parts = []
        for k in range(len(streams)):
            whole = pending[k][0] if len(pending[k]) == 1 else torch.cat(pending[k], -1)
            parts.append(whole[..., :frames])
            pending[k] = [whole[..., frames:]] if whole.shape[-1] > frames else []
            available[k] -= frames
        yield position, combine(parts)
        position += frames


def overlap_add(function: tp.Callable[..., torch.Tensor], inputs: tp.Sequence[torch.Tensor],
                segment: int, overlap: float, batch_size: int = 1) -> torch.Tensor:
    """`function` on `segment`-long chunks of `inputs` ([B, ..., T], same B and T), blended
    with the fade window: [B, ..., T] (see `stream_chunks`). A song no longer than
    `segment` goes through `function` whole."""
    length = inputs[0].shape[-1]
    chunks, window = fade_chunks(length, segment, overlap)
    return collect(stream_chunks(function, tensor_reader(*inputs), length, chunks, window,
                                 batch_size), length)


# ---------------------------------------------------------------- models
def _stream_midside(model: torch.nn.Module, read: Reader, length: int, **kwargs: tp.Any
                    ) -> tp.Iterator[Block]:
    """`stream_model(..., midside=True)` on a stereo [B, 2, T] input: see `apply_model`."""
    batch, channels = read(0, 0).shape[:2]
    if channels != 2:
        raise ValueError(f"Mid/side inference needs a stereo mixture, got {channels} "
                         f"channel(s).")
    model_channels = model.audio_channels
    if model_channels not in (1, 2):
        raise ValueError(f"Mid/side inference needs a mono or stereo model, this one has "
                         f"{model_channels} channels.")

    def read_views(start: int, end: int) -> torch.Tensor:
        left, right = read(start, end).unbind(1)
        views = torch.stack([left, right, (left + right) / 2, (left - right) / 2], 1)
        # One call, the views in the batch: (L, R) and (M, S) pairs, or L, R, M, S alone.
        return views.reshape(-1, model_channels, end - start)

    def recombine(views: tp.Iterator[Block]) -> tp.Iterator[Block]:
        for start, out in views:
            frames, sources = out.shape[-1], out.shape[1]
            out = out.reshape(batch, 4 // model_channels, sources, model_channels, frames)
            est_left, est_right, est_mid, est_side = out.transpose(1, 2).reshape(
                batch, sources, 4, frames).unbind(2)
            # Two estimates of each channel, L and M + S, R and M - S, averaged.
            yield start, torch.stack([est_left + est_mid + est_side,
                                      est_right + est_mid - est_side], 2) / 2

    return recombine(stream_model(model, read_views, length, **kwargs))


def _sum(blocks: tp.List[torch.Tensor]) -> torch.Tensor:
    total = blocks[0]
    for block in blocks[1:]:
        total = total + block
    return total


def plan_chunks(model: torch.nn.Module, length: int, segment: tp.Optional[float],
                overlap: float, chunking: str) -> tp.Tuple[tp.List[Chunk], torch.Tensor]:
    """The chunks and window `stream_model` cuts a `length`-frame input into."""
    frames = int((segment if segment is not None else model.segment) * model.samplerate)
    if chunking == 'demucs':
        return demucs_chunks(model, length, frames, overlap, explicit_segment=segment is not None)
    return fade_chunks(length, frames, overlap)


def count_calls(model: torch.nn.Module, length: int, segment: tp.Optional[float] = None,
                overlap: float = 0.25, shifts: int = 0, split: bool = True,
                batch_size: int = 1, chunking: str = 'fade') -> int:
    """The forward calls `stream_model` makes on a `length`-frame input (a progress bar's
    total). With shifts and the demucs chunking, an upper bound: each shifted signal is cut
    where the song ends, so its length depends on the shift drawn."""
    if shifts > 0:
        longest = length + int(0.5 * model.samplerate)
        return shifts * count_calls(model, longest, segment, overlap, 0, split, batch_size,
                                    chunking)
    if not split:
        return 1
    chunks, _ = plan_chunks(model, length, segment, overlap, chunking)
    return len(batch_groups(chunks, batch_size))


def stream_model(model: torch.nn.Module, read: Reader, length: int,
                 segment: tp.Optional[float] = None, overlap: float = 0.25, shifts: int = 0,
                 split: bool = True, batch_size: int = 1,
                 generator: tp.Optional[torch.Generator] = None, midside: bool = False,
                 chunking: str = 'fade') -> tp.Iterator[Block]:
    """The separation of the [B, C, length] mixture that `read` gives, as a stream of
    [B, S, C, frames] blocks (arguments: `apply_model`).

    The random shifts are drawn here, before the first block, so that several streams
    drawing from one generator (a bag) draw in the order they are made.
    """
    if chunking not in CHUNKINGS:
        raise ValueError(f"Unknown chunking {chunking!r}: choose among {', '.join(CHUNKINGS)}.")
    options = dict(segment=segment, overlap=overlap, split=split, batch_size=batch_size,
                   chunking=chunking)
    if midside:
        return _stream_midside(model, read, length, shifts=shifts, generator=generator,
                               **options)
    samplerate = model.samplerate
    if shifts > 0:
        max_shift = int(0.5 * samplerate)
        streams, delays = [], []
        for _ in range(shifts):
            shift = int(torch.randint(0, max_shift, (), generator=generator))
            # The song delayed by max_shift - shift (zeros in front), cut at length + the
            # delay (fade) or where the song ends (demucs, whose shifted signal stops there).
            delay = max_shift - shift
            shifted_length = length + max_shift if chunking == 'fade' else length + delay

            def shifted_read(start: int, end: int, delay: int = delay) -> torch.Tensor:
                return read(start - delay, end - delay)
            streams.append(stream_model(model, shifted_read, shifted_length, **options))
            delays.append(delay)
        return merge(streams, delays, length, lambda blocks: _sum(blocks) / shifts)
    if not split:
        return iter([(0, model(read(0, length)))])
    chunks, window = plan_chunks(model, length, segment, overlap, chunking)
    return stream_chunks(model, lambda start, end: [read(start, end)], length, chunks, window,
                         batch_size)


def apply_model(model: torch.nn.Module, mix: torch.Tensor, segment: tp.Optional[float] = None,
                overlap: float = 0.25, shifts: int = 0, split: bool = True, batch_size: int = 1,
                generator: tp.Optional[torch.Generator] = None, midside: bool = False,
                chunking: str = 'fade') -> torch.Tensor:
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
        chunking: 'fade' or 'demucs', see the module docstring. With 'demucs' and shifts,
            the shifted signals are also cut as demucs cuts them.
    """
    squeeze = mix.dim() == 2
    if squeeze:
        mix = mix[None]
    stream = stream_model(model, slice_reader(mix), mix.shape[-1], segment=segment,
                          overlap=overlap, shifts=shifts, split=split, batch_size=batch_size,
                          generator=generator, midside=midside, chunking=chunking)
    out = collect(stream, mix.shape[-1])
    return out[0] if squeeze else out
