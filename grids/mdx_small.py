"""The MDX21 Track A lineage of grids/mdx.py at a scale that learns on a CPU (about an hour on 2
cores): the four models at `variant=demo`'s budget (10 epochs of 160 one-second examples,
`variant=mdx21_small`), each fine-tuned for 3 epochs on 2.5 s segments without remix or scale
(Demucs fine-tunes on 28 s segments, 2.5 x its 11 s), then the per-source bag.

    python -m tools.lineage mdx_small
    python -m tools.test_pretrained -n mdx_small     # the bag on the synthetic test set

The fine-tunes read the same synthetic set, not an automix set: its songs are too few for
partners within 15 % of tempo and 3 semitones (`python -m tools.automix` on a real MUSDB18-HQ
makes the full recipe's).

Test nSDR (dB) on the 4 synthetic test songs, drums / bass / other / vocals, mean (trivial
estimates: mixture -5.54, mixture / 4 0.68, silence 0), `python -m tools.lineage mdx_small`
on 2 shared CPU cores (2026-12-03, the first four stages only; the fine-tunes and the bag
were stopped for want of time and are still to be measured):

    demucs        0.44 M  2.92 / 2.76 / 1.91 / 2.11  2.42
    demucs_db             2.54 / 2.68 / 0.35 / 0.94  1.63  (weights 1, 1, 0.1, 0.1)
    hdemucs_mask          2.82 / 2.75 / 1.09 / 2.33  2.25
    hdemucs_cac           3.51 / 3.23 / 2.41 / 2.32  2.87

As in Demucs's entry, the drums-and-bass-first model gives up other and vocals (-1.6 and
-1.2 dB) without gaining on drums and bass at this scale.
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
