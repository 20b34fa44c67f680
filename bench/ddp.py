"""DDP throughput on CPU: samples/s of training steps with 1 vs 2 gloo workers.

    python -m bench.ddp [--batch-size 4] [--segment 1] [--steps 3] [OVERRIDES...]

OVERRIDES are Hydra overrides of conf/ (default: the default, full-size HDemucs), e.g.
`variant=demo`. Each worker gets `cores / workers` threads; batches are random audio, so
the figure is the model's and DDP's, not the loader's. Prints both rates and their ratio.
"""
import argparse
import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _config(overrides):
    from hydra import compose, initialize_config_dir
    conf = Path(__file__).resolve().parent.parent / 'conf'
    with initialize_config_dir(str(conf), version_base='1.3'):
        return compose('config', overrides=list(overrides))


def _worker(rank: int, world: int, port: int, args, queue) -> None:
    from separator.builders import get_model
    from separator.losses import source_losses
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    cfg = _config(args.overrides)
    torch.manual_seed(0)
    model = get_model(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    length = int(args.segment * cfg.dset.samplerate)
    sources = torch.randn(args.batch_size // world, len(cfg.dset.sources), cfg.dset.channels,
                          length)

    def step():
        loss = source_losses(ddp(sources.sum(1)), sources).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    dist.barrier()
    begin = time.time()
    for _ in range(args.steps):
        step()
    dist.barrier()
    if rank == 0:
        queue.put(args.steps * args.batch_size / (time.time() - begin))
    dist.destroy_process_group()


def throughput(world: int, args) -> float:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    queue = mp.get_context('spawn').SimpleQueue()
    mp.spawn(_worker, args=(world, port, args, queue), nprocs=world, join=True)
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch-size', type=int, default=4, help="global batch size")
    parser.add_argument('--segment', type=float, default=1., help="seconds per example")
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('overrides', nargs='*')
    args = parser.parse_args()
    one = throughput(1, args)
    two = throughput(2, args)
    cfg = _config(args.overrides)
    print(f"model {cfg.model} {' '.join(args.overrides)}, global batch {args.batch_size} x "
          f"{args.segment} s, {args.steps} steps, {os.cpu_count()} cores")
    print(f"{'workers':10}{'samples/s':>12}")
    print(f"{'1':10}{one:12.2f}")
    print(f"{'2 (gloo)':10}{two:12.2f}")
    print(f"ratio 2/1: {two / one:.2f}x")


if __name__ == '__main__':
    main()
