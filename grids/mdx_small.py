"""The MDX21 Track A lineage of grids/mdx.py at a scale that learns on a CPU: the four models
at `variant=demo`'s budget (10 epochs of 160 one-second examples, `variant=mdx21_small`),
each fine-tuned for 3 epochs on 2.5 s segments without remix or scale (Demucs fine-tunes on
28 s segments, 2.5 x its 11 s), then the per-source bag.

Time: 4.8 hours of epochs (the sum of the XPs' epoch durations) on 2 CPU cores that other jobs
shared part of the time: 9-43 min per model, 4-5 min per hybrid fine-tune, and 50 and 143 min
for the two time-domain Demucs fine-tunes (the local attention of their deepest layers is
quadratic in the segment's length: 2.5 s there against 1 s in training).

    python -m tools.lineage mdx_small
    python -m tools.test_pretrained -n mdx_small     # the bag on the synthetic test set

The fine-tunes read the same synthetic set, not an automix set: its songs are too few for
partners within 15 % of tempo and 3 semitones (`python -m tools.automix` on a real MUSDB18-HQ
makes the full recipe's).

Test nSDR (dB) on the 4 synthetic test songs, drums / bass / other / vocals, mean (trivial
estimates: mixture -5.54, mixture / 4 0.68, silence 0), `python -m tools.lineage mdx_small`
on 2 shared CPU cores (2026-12-03; the bag by `python -m tools.test_pretrained -n mdx_small
--repo release_models`):

    demucs           0.44 M  2.92 / 2.76 / 1.91 / 2.11  2.42
    demucs_db                2.54 / 2.68 / 0.35 / 0.94  1.63  (weights 1, 1, 0.1, 0.1)
    hdemucs_mask             2.82 / 2.75 / 1.09 / 2.33  2.25
    hdemucs_cac              3.51 / 3.23 / 2.41 / 2.32  2.87
    demucs_ft                2.73 / 2.64 / 2.06 / 2.37  2.45
    demucs_db_ft             2.96 / 3.02 / 0.74 / 1.29  2.00
    hdemucs_mask_ft          3.05 / 3.00 / 1.37 / 2.38  2.45
    hdemucs_cac_ft           3.62 / 3.59 / 2.54 / 2.70  3.11  (the best single model)
    bag mdx_small            3.41 / 2.93 / 2.30 / 2.81  2.86

Every fine-tune gains (+0.03 to +0.37 dB mean), longer segments without remix or scale.
As in Demucs's entry, the drums-and-bass-first model gives up other and vocals (-1.6 and
-1.2 dB) without gaining on drums and bass at this scale. The bag beats the average of its
members on every source and both of its members on vocals (2.81 against 2.38 and 2.70), but
not the best single model (-0.25 dB mean): the per-source choices are Demucs's, made for its
full-scale models; here the complex-as-channels hybrid is the best on every source, and the
weaker members it is averaged with pull it down. The recipe does not pay at this scale.
"""
from ._explorers import lineage_explorer
from .mdx import mdx

SVD = {'svd.min_size': 0.01, 'svd.dim': 16, 'svd.niters': 2}
MODELS = {'demucs': SVD, 'demucs_db': SVD, 'hdemucs_mask': SVD}
FINETUNE = {'epochs': 3, 'dset.segment': 2.5, 'augment.remix.proba': 0,
            'augment.scale.proba': 0}
LINEAGE = mdx('mdx_small', 'mdx21_small', finetune=FINETUNE, models=MODELS,
              slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 2, 'mem_per_gpu': 4,
                     'time': 120}, bag_segment=None)

explorer = lineage_explorer(LINEAGE)
