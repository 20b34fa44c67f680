"""How many threads torch uses on the CPU: the cores this process may use, shared.

torch uses every core for intra-op parallelism by default. Beside other processes on the
same cores that oversubscribes them, and a step slows down several times (a tiny training
step on 2 cores: 0.3-0.5 s with 1 thread, 5-6 s with 2 while another job ran). torchrun sets
one thread per process for the same reason. Here: the cores split between the processes of
this XP on this machine, and no more than the cores that other work leaves idle (the load
average of the last minute), at least 1. Loader workers are not counted: they run one
thread each and mostly wait on the disk. An explicit count (`misc.threads`, `separator -j`)
or OMP_NUM_THREADS wins.
"""
import os
import typing as tp

import torch


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def busy_cores() -> float:
    """The load average of the last minute: the cores other work keeps busy (0 if unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.


def default_threads(processes: int = 1) -> int:
    """The cores split between `processes`, at most those left idle, at least 1."""
    cores = available_cores()
    idle = cores - round(busy_cores())
    return max(1, min(cores // max(1, processes), idle))


def set_threads(threads: tp.Optional[int], processes: int = 1) -> int:
    """Set torch's intra-op threads: `threads` if given, else OMP_NUM_THREADS if set, else
    `default_threads`. Returns the count."""
    if threads is None and os.environ.get('OMP_NUM_THREADS'):
        return torch.get_num_threads()
    count = threads if threads is not None else default_threads(processes)
    torch.set_num_threads(count)
    return count
