"""Three tiny XPs (one of them on 2 DDP tasks) on a CPU-only Slurm (the local test cluster of tests/slurm/start.sh).

    dora grid cpu_smoke                # submit, then monitor until done
    dora grid cpu_smoke --dry_run --init

A template for real grids: set the partition, GPUs and memory of your cluster with
`launcher.slurm_`, bind the shared overrides with `launcher.bind_`, call `launcher(...)`
once per XP.
"""
from ._explorers import SeparatorExplorer


@SeparatorExplorer
def explorer(launcher):
    # No GPU: one task per job, 1 CPU, 2 GB (Dora computes mem = mem_per_gpu x max(gpus, 1)).
    launcher.slurm_(partition='local', gpus=0, cpus_per_task=1, mem_per_gpu=2, time=30)
    launcher.bind_({'variant': 'tiny'})
    for lr in [1e-3, 3e-3]:
        launcher({'optim.lr': lr})
    # DDP on Slurm: one task per (fake) GPU, rendezvous through Dora's distributed env.
    launcher.slurm(gpus=2, cpus_per_gpu=1, mem_per_gpu=1)({'seed': 1})
