"""The aimless MDX-A lineage of grids/sdx23_aimless.py at a scale meant to learn on a CPU.

    python -m tools.lineage sdx23_aimless_small
    python -m tools.test_pretrained -n sdx23_aimless_small --musdb data/synthetic_sdx23_small
                                   # the bag on its clean test set (nSDR and museval SDR)

The clean lists are those of `filter1` of grids/sdx23_small.py (judged by its baseline
`noisy`, threshold chosen from the scores without the ground truth): the same two XPs as in
that lineage, run once for both. `variant=aimless_small` trains an HDemucs of 0.87 M
parameters (variant=demo's sizes) on 1 s chunks of that label-noise set, with the recipe's
switches: negative SDR, the effects chain (x1.666 in the last stage), gradient accumulation
(4, then 64), learning rate 3e-3 then 1e-4 (LAST of grids/sdx23_aimless.py).

Epochs: 30 then 10 (the full scale's 600 / 200, divided by 20).

Time: an ESTIMATE from single epochs, not a run of the lineage. On this 2-core CPU, shared
with other work, one epoch of the `hdemucs` stage (160 examples of 1 s, batch 8, effects in
1 loader worker, validation on the 3 all-clean training songs as proposed for
`dset.valid_on_train`) took 61-85 s (`dora run variant=aimless_small dset.clean_lists=LISTS
epochs=4`, LISTS written from the manifest for the timing only): 40 epochs, about 47 min.
One epoch of `noisy` (variant=sdx23_small) took 80 s: its 12, about 16 min; filter1 a few
minutes more. About 70 min in all, 50 when grids/sdx23_small.py has run (its `noisy` and
`filter1` are the same XPs).

Figures: none yet. After those 4 epochs the training loss (negative SDR, dB) fell from 14.3
to 10.5 and the validation loss from 11.6 to 10.0, the test nSDR was still 0.00 dB (the
trivial mixture / 4: 1.04): whether the 40 epochs learn, and what the effects chain and the
negative SDR change against the same XP without them, is to be measured. On 1 s chunks many
references are silent, and the negative SDR of a silent reference is large whatever the
estimate (SDR_DELTA of separator/losses.py): a longer `dset.segment` may be needed here.

The loader (effects in the workers, `RemixSegments`, 1 s stereo examples, one process):
159 examples/s without the chain, 26 with it (x6.2 slower), 15 at x1.666 (x10.5); training
consumes 2.8 examples/s here (0.35 batches/s of 8), a margin of 5x at x1.666.
"""
from ._explorers import lineage_explorer
from .sdx23_aimless import sdx23_aimless
from .sdx23_small import LINEAGE as SDX23_SMALL

EPOCHS = {'hdemucs': 30, 'hdemucs_last': 10}
LINEAGE = sdx23_aimless('sdx23_aimless_small', 'aimless_small', EPOCHS,
                        judge=(SDX23_SMALL, 'filter1'),
                        slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 2,
                               'mem_per_gpu': 4, 'time': 120})

explorer = lineage_explorer(LINEAGE)
