"""Distributed helpers: process group start, DDP wrap, metric averaging across ranks.

A thin layer over `dora.distrib`, which reads the rank and world size that `dora run -d`
or Slurm set. Without a GPU the backend is gloo (nccl asserts without CUDA).
"""
import signal
import typing as tp

import torch
from dora import distrib as dora_distrib
from dora import executor as dora_executor
from dora import run as dora_run

rank = 0
world_size = 1


def init() -> None:
    """Start the process group when the XP runs on several processes."""
    global rank, world_size
    backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    dora_distrib.init(backend=backend)
    rank = dora_distrib.rank()
    world_size = dora_distrib.world_size()


def is_master() -> bool:
    return rank == 0


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel when there are several ranks, the model itself otherwise."""
    if world_size == 1:
        return model
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if world_size > 1:
        torch.distributed.barrier()


def average(metrics: tp.Dict[str, float], count: float = 1.) -> tp.Dict[str, float]:
    """Average a dict of metrics over ranks, each rank weighing by its `count`."""
    if world_size == 1:
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([metrics[key] * count for key in keys] + [count], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    return {key: (values[i] / values[-1]).item() for i, key in enumerate(keys)}


def broadcast_object(obj: tp.Any, src: int = 0) -> tp.Any:
    if world_size == 1:
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def describe_exit(code: int) -> str:
    """How a process ended, from its exit status (negative: the signal that killed it)."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = {'SIGKILL': "killed from outside: the kernel's out-of-memory killer sends it when "
                      "memory runs out (see `dmesg`), as do `kill -9` and schedulers",
           'SIGSEGV': "a crash in native code (segmentation fault)",
           'SIGBUS': "a crash in native code (bus error: often shared memory, /dev/shm, full)",
           'SIGABRT': "aborted by native code (its message is in the log above)",
           'SIGTERM': "asked to stop (`kill`, or a scheduler)"}.get(name, "")
    return f"was killed by {name} (signal {-code})" + (f": {why}" if why else "")


def explain_worker_deaths() -> None:
    """Make `dora run -d` say how a worker died, not only that it did.

    Dora's local DDP executor logs "Worker N died, killing all workers" and nothing more.
    This wraps each worker process it starts so that, when one exits with an error, the
    executor also logs the rank, the signal or exit status and where that rank's log is
    (rank 0 writes to the console, rank N > 0 to `worker_N.log` in the XP folder).
    Called when `separator.train` is imported, which the `dora` command does before it
    starts the workers. Idempotent.
    """
    manager = dora_executor.ChildrenManager
    if getattr(manager.add, 'explains_deaths', False):
        return
    add = manager.add

    def add_explained(self, child) -> None:
        add(self, child)
        wait = child.wait

        def wait_explained(timeout: tp.Optional[float] = None) -> int:
            code = wait(timeout)
            if code:
                where = ("the output above" if child.rank == 0
                         else f"worker_{child.rank}.log in the XP folder")
                dora_executor.log(f"Worker {child.rank} (pid {child.pid}) "
                                  f"{describe_exit(code)}. Its log: {where}.")
            return code
        child.wait = wait_explained

    add_explained.explains_deaths = True  # type: ignore[attr-defined]
    manager.add = add_explained


CPU_WORKERS = 1


def _checkpoint_world_size(main: tp.Any, argv: tp.Sequence[str]) -> tp.Optional[int]:
    """The number of processes that wrote the XP's checkpoint (the latest that reads, else the
    previous one, as the XP will resume from it), if it has one that says."""
    from .states import checkpoint_world_size
    try:
        folder = main.get_xp(argv).folder
    except Exception:  # a bad config: the XP itself will say why
        return None
    return checkpoint_world_size(folder)


def allow_cpu_ddp() -> None:
    """Make `dora run -d` work on a machine without a GPU, with gloo workers.

    Dora starts one worker per GPU and, with none, refuses ("DDP is only available on GPU")
    unless `--ddp_workers N` is given, so the command that resumes an XP on a cluster
    (`dora run -d -f SIG`) would fail on a laptop or a CPU node. With no GPU and no
    `--ddp_workers`, this starts as many workers as wrote the XP's checkpoint, so that the
    resumed XP goes on exactly as it would have (each process draws its own augmentations),
    or CPU_WORKERS for a new one (1: the CPU is one device, as a GPU is; its threads already
    use every core), and says so. So on a CPU machine `dora run -d -f SIG` does what `dora
    run -f SIG` does. `--ddp_workers N` still chooses. Called when `separator.train` is
    imported, before the `dora` command dispatches. Idempotent.
    """
    start = dora_run.start_ddp_workers
    if getattr(start, 'allows_cpu', False):
        return

    def start_ddp_workers(main, argv, num_workers: tp.Optional[int] = None):
        if num_workers is None and not torch.cuda.is_available():
            resumed = _checkpoint_world_size(main, argv)
            num_workers = resumed or CPU_WORKERS
            why = "as wrote its checkpoint" if resumed else "for a new XP"
            dora_executor.log(f"No GPU: DDP with {num_workers} CPU worker(s) (gloo), {why}; "
                              f"`--ddp_workers N` chooses another count.")
        return start(main, argv, num_workers)

    start_ddp_workers.allows_cpu = True  # type: ignore[attr-defined]
    dora_run.start_ddp_workers = start_ddp_workers
