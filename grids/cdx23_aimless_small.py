"""The aimless CDX-A lineage of grids/cdx23_aimless.py at a scale meant to learn on a CPU.

    python -m tools.lineage cdx23_aimless_small
    python -m tools.test_pretrained -n cdx23_aimless_small --musdb data/dnr_small \\
        --split tt --mixture-name mix      # the bag on the test tracks

`variant=aimless_cdx_small`: an HDemucs of 0.86 M parameters and a BandSplitRNN of 1.46 M
(grids/architectures.py's sizes) on 1 s chunks of a DnR subset at data/dnr_small (the DnR
layout; e.g. 40 tr, 10 cv and 10 tt tracks of DnR v2). 20 epochs of 160 examples each,
batch 8.

NOT RUN: this machine has no DnR data and there is no generator of a synthetic cinematic set
yet; its time and figures are to be measured (expect each model's epoch to cost what
variant=demo's and architectures.py's bsrnn row cost on mono audio: well under the hour for
both).
"""
from ._explorers import lineage_explorer
from .cdx23_aimless import cdx23_aimless

SCALE = {'hdemucs': {'batch_size': 8, 'epochs': 20},
         'bsrnn': {'batch_size': 8, 'epochs': 20, 'optim.lr': 1e-3}}
LINEAGE = cdx23_aimless('cdx23_aimless_small', 'aimless_cdx_small', SCALE,
                        slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 2,
                               'mem_per_gpu': 4, 'time': 120})

explorer = lineage_explorer(LINEAGE)
