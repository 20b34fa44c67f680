"""Keep freed memory in the process for reuse (glibc malloc on Linux).

By default glibc serves every allocation above 128 KiB-32 MiB (its adaptive mmap threshold)
with a fresh `mmap` and gives it back on `free`. A training step on the CPU allocates and
frees the same large activation tensors every step, so each step page-faults all of them in
again: a quarter of the CPU time of a small HDemucs step went to page faults, in the kernel.
Raising the mmap threshold to 1 GiB and the trim threshold to 2 GiB - 1 (the largest an int
holds: `mallopt` takes an int) keeps the freed blocks in the heap, and the next step reuses
them. Same numbers, same peak; the resident memory stays near the peak between steps, so a
measure of a peak's growth (`memory.peak_growth_bytes`) first gives the kept memory back
(`release_freed_memory`).
`python -m bench.train_speed --tune-malloc ours` measured it: HDemucs 1.06x -> 1.51x,
HTDemucs 0.94x -> 1.26x the speed of Demucs's own training loop, on one thread.
"""
import ctypes
import ctypes.util
import logging
import sys
import typing as tp

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1    # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 2 ** 30
TRIM_THRESHOLD = 2 ** 31 - 1


def _libc() -> tp.Optional[ctypes.CDLL]:
    """glibc, or None off Linux or where the C library cannot be loaded."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Give the memory malloc keeps free back to the system (glibc's `malloc_trim(0)`, every
    arena), so that what runs next counts in the resident memory as it grows: a measure of
    the peak (`memory.peak_growth_bytes`) would otherwise see an allocation served from kept
    pages as free. Returns whether it could be asked (False off glibc)."""
    libc = _libc()
    trim = getattr(libc, 'malloc_trim', None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def keep_freed_memory() -> bool:
    """Tune glibc malloc as above. Returns whether it was done: False (and nothing changed)
    off Linux, or where the C library is not glibc or refuses."""
    mallopt = getattr(_libc(), 'mallopt', None)
    if mallopt is None:    # not Linux, or a C library without it
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]   # an int each: 2 ** 40 would wrap
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        logger.debug("mallopt refused the thresholds: malloc left as it was")
    return done
