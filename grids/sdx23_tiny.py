"""The SDX23 lineage of grids/sdx23.py at tiny scale: all 11 stages run on a CPU in minutes.

    python -m tools.lineage sdx23_tiny           # locally, stage by stage, then the bag
    dora grid sdx23_tiny --dry_run --init        # the stages and their signatures
    dora grid sdx23_tiny                         # on the local test Slurm (tests/slurm)

`variant=sdx23_tiny`: a small HTDemucs on a small synthetic set with injected label noise.
"""
from ._explorers import lineage_explorer
from .sdx23 import sdx23

EPOCHS = {'pretrain_q0.7': 2, 'pretrain_q0.5': 1, 'pretrain_q0.3': 1, 'joint': 2,
          'finetune': 1}
LINEAGE = sdx23('sdx23_tiny', 'sdx23_tiny', EPOCHS, q09_batch=10,
                slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 1, 'mem_per_gpu': 2,
                       'time': 30})

explorer = lineage_explorer(LINEAGE)
