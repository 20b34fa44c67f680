"""Distributed helpers: process group start, DDP wrap, metric averaging across ranks.

A thin layer over `dora.distrib`, which reads the rank and world size that `dora run -d`
or Slurm set. Without a GPU the backend is gloo (nccl asserts without CUDA).
"""
import typing as tp

import torch
from dora import distrib as dora_distrib

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
