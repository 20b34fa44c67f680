"""How many examples of a training batch fit in this machine's memory at once, on a CPU.

On a GPU a batch too large fails with an out-of-memory error that names the fix; on a CPU the
kernel kills the process without a word. The default XP (83.6 M parameters, 64 examples of
11 s) needs hundreds of GB at once: on a CPU the solver then computes each batch in
micro-batches that fit, adding up their gradients, which gives the gradients of the whole
batch (the loss is a mean over examples), only slower.

`micro_batch_that_fits` measures the memory one training example takes (the growth of the
process's peak resident memory over one forward and backward of one example) and divides
the memory available (MemAvailable, shared by the processes of this machine) by it, with
a margin. Linux only; elsewhere it answers the whole batch.
"""
import logging
import typing as tp
from pathlib import Path

import torch

from .malloc import release_freed_memory

logger = logging.getLogger(__name__)
MARGIN = 0.7      # of the available memory, for the allocator's slack and the loader


def _status_kb(field: str, path: str = '/proc/self/status') -> tp.Optional[int]:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes() -> tp.Optional[int]:
    """MemAvailable of /proc/meminfo, in bytes (None where it cannot be read)."""
    value = _status_kb('MemAvailable', '/proc/meminfo')
    return None if value is None else value * 1024


def peak_growth_bytes(run: tp.Callable[[], tp.Any]) -> tp.Optional[int]:
    """How much the process's peak resident memory grows while `run()` runs (None where the
    peak cannot be reset and read: not Linux)."""
    release_freed_memory()   # memory malloc kept (separator/malloc.py) would not count
    try:
        Path('/proc/self/clear_refs').write_text('5')   # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _status_kb('VmRSS')
    run()
    peak = _status_kb('VmHWM')
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def micro_batch_that_fits(model: torch.nn.Module, example: torch.Tensor, batch: int,
                          train_step: tp.Callable[[torch.Tensor], torch.Tensor],
                          processes: int = 1) -> int:
    """The largest number of examples like `example` ([S, C, T]) that fit in memory at once,
    at most `batch`: one forward and backward (`train_step(sources)` returns the loss)
    measured on one example, in eval mode (no BatchNorm statistics or dropout drawn),
    gradients cleared after."""
    available = available_bytes()
    if available is None:
        return batch
    mode = model.training
    model.eval()
    try:
        growth = peak_growth_bytes(lambda: train_step(example[None]).backward())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(mode)
    if not growth:
        return batch
    fits = int(MARGIN * available / processes // growth)
    return max(1, min(batch, fits))
