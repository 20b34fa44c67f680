"""Mixed precision: training samples/s and peak memory in fp32, bf16 and fp16, side by side.

    python -m bench.amp [OVERRIDES...] [--batch-size 8] [--segment 7.8] [--steps 5]
                        [--device cuda] [--precisions fp32 bf16 fp16]

The figures of the distributed issue for a lent GPU: the default, full-size HDemucs at batch
8 x 7.8 s. Each step is the solver's: forward under `torch.autocast` (none for fp32), the loss
in fp32, backward and an Adam step through a GradScaler (enabled for fp16 only), with the model
wrapped in DistributedDataParallel in a one-process group (nccl on CUDA, gloo on CPU), so a
run also shows that nccl DDP works on this machine. Each precision runs in its own process,
from the same seeded weights and batch, so peak memory is its own: CUDA's peak allocated
memory, or the process's peak resident memory on CPU. Batches are random audio, so the figure
is the model's, not the loader's. On CPU use a small batch and segment (bf16 is emulated by
many CPUs and may be slower than fp32 there).
"""
import argparse
import os
import resource
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .ddp import _config

AMP = {'fp32': None, 'bf16': 'bf16', 'fp16': 'fp16'}


def _worker(rank: int, precision: str, port: int, args, queue) -> None:
    from separator.builders import get_model
    from separator.losses import source_losses
    from separator.solver import _amp_dtype
    device = torch.device(args.device)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', rank=0, world_size=1)
    cfg = _config(args.overrides)
    torch.manual_seed(0)
    model = get_model(cfg).to(device)
    if cfg.optim.get('checkpointing'):
        from separator.checkpointing import enable_checkpointing
        enable_checkpointing(model)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index or 0] if device.type == 'cuda' else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = _amp_dtype(AMP[precision])
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    length = int(args.segment * cfg.dset.samplerate)
    sources = torch.randn(args.batch_size, len(cfg.dset.sources), cfg.dset.channels, length,
                          device=device)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            estimate = ddp(sources.sum(1))
        loss = source_losses(estimate.float(), sources).mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item()  # waits for the device

    first = step()  # warm-up: kernels chosen, optimizer state allocated
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    begin = time.time()
    for _ in range(args.steps):
        step()
    rate = args.steps * args.batch_size / (time.time() - begin)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10  # KiB on Linux
    queue.put((rate, peak, first))
    dist.destroy_process_group()


def measure(precision: str, args) -> tuple:
    """(samples/s, peak MiB, first loss) of `precision`, in a process of its own."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    queue = mp.get_context('spawn').SimpleQueue()
    mp.spawn(_worker, args=(precision, port, args, queue), nprocs=1, join=True)
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--segment', type=float, default=7.8, help="seconds per example")
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], choices=list(AMP))
    parser.add_argument('overrides', nargs='*')
    args = parser.parse_args()
    results = {precision: measure(precision, args) for precision in args.precisions}
    cfg = _config(args.overrides)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith('cuda') \
        else f'CPU, {torch.get_num_threads()} threads'
    backend = 'nccl' if args.device.startswith('cuda') else 'gloo'
    model = ' '.join([cfg.model, *args.overrides])
    print(f"model {model}, batch {args.batch_size} x "
          f"{args.segment} s, {args.steps} steps, {name}, DDP ({backend}, 1 process)")
    print(f"{'precision':10}{'samples/s':>12}{'vs fp32':>10}{'peak MiB':>11}{'first loss':>12}")
    base = results.get('fp32', next(iter(results.values())))[0]
    for precision, (rate, peak, first) in results.items():
        print(f"{precision:10}{rate:12.2f}{rate / base:9.2f}x{peak:11.0f}{first:12.4f}")


if __name__ == '__main__':
    main()
