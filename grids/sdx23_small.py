"""The SDX23 lineage of grids/sdx23.py at a scale that learns on a CPU (about an hour on 2
cores), with the baseline `noisy` (no loss truncation): the run behind the figures of the
recipe on our synthetic label-noise set.

    python -m tools.lineage sdx23_small
    python -m tools.test_pretrained -n sdx23_small      # the bag on the clean test set

Measured on 2 CPU cores (stop 8): the pretrained models reach ~1-2.6 dB nSDR, too little for
the purity test (ranking AUC 0.49-0.61), so filter1 keeps almost no stem at 10 dB and the
joint stage stops with an "empty pool" error. It needs more epochs (a GPU) to go further.
"""
from ._explorers import lineage_explorer
from .sdx23 import sdx23

EPOCHS = {'pretrain_q0.7': 6, 'pretrain_q0.5': 3, 'pretrain_q0.3': 3, 'joint': 6,
          'finetune': 3}
LINEAGE = sdx23('sdx23_small', 'sdx23_small', EPOCHS, q09_batch=10, baseline=True,
                slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 2, 'mem_per_gpu': 4,
                       'time': 120})

explorer = lineage_explorer(LINEAGE)
