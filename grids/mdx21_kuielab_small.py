"""The KUIELab MDX21 lineage of grids/mdx21_kuielab.py at a scale that learns on a CPU: the
four TFC-TDF v1 (`variant=kuielab_<source>_small`: their source's recipe with n_fft / 8, on
`variant=kuielab_small`: variant=demo's 10 epochs of 160 one-second examples), Demucs v2 with
16 channels on the same budget, the Mixer over the four for 3 epochs, then the blend.

    python -m tools.lineage mdx21_kuielab_small
    python -m tools.test_pretrained -n mdx21_kuielab_small   # the bag on the synthetic test set

No offline pitch / tempo copies (the synthetic set is written by the first stage; at full
scale `python -m tools.augment_dataset` makes them); Demucs repitches 20 % of its examples.

Test nSDR (dB) on the 4 synthetic test songs, drums / bass / other / vocals, mean (trivial
estimates: mixture -5.54, mixture / 4 0.68, silence 0), `python -m tools.lineage
mdx21_kuielab_small`: 22 min on 2 CPU cores (2026-12-03; about 4 min per TFC-TDF, 5 for
Demucs, 1 for the Mixer); the bag by `python -m tools.test_pretrained -n
mdx21_kuielab_small --repo release_models`:

    tfc_tdf_drums    4.20 / -1.35 / -3.06 / -3.53   (trained on drums only)
    tfc_tdf_bass     0.03 /  4.93 / -0.55 / -0.68   (bass only)
    tfc_tdf_other   -0.53 / -0.45 /  2.05 / -2.60   (other only)
    tfc_tdf_vocals  -0.21 / -0.12 / -1.16 /  3.81   (vocals only)
    each its own     4.20 /  4.93 /  2.05 /  3.81  3.75  (the four separators together)
    demucs (v2)      1.65 /  2.56 /  0.90 /  2.34  1.86
    mixer            5.28 /  5.01 /  2.95 /  3.78  4.25  (the best single model)
    bag              4.01 /  4.30 /  3.15 /  3.88  3.83  (mixer : demucs 5:5 5:5 7:3 9:1)

(`tools.lineage`'s table gives each TFC-TDF's mean over all four sources, of which it trains
one.) The Mixer gains 0.50 dB over its four separators (drums +1.08, other +0.90; vocals
-0.03). The blend with Demucs gains on other and vocals (+0.20, +0.10) but loses on drums
and bass, where Demucs weighs half and is 3.6 and 2.5 dB weaker here: -0.42 dB mean against
the Mixer alone. KUIELab's weights were set for a Demucs as strong as their TFC-TDFs; at this
scale the small Demucs is not, and the blend does not pay.
"""
from ._explorers import lineage_explorer
from .mdx21_kuielab import DEMUCS_V2, MIXER, NO_GPUS, kuielab, scaled_tfc_tdf

# What variant=kuielab_small says, restated where the full scale's stage overrides differ.
SMALL = {'variant': 'kuielab_small', 'epochs': 10, 'dset.segment': 1}
DEMUCS = {**DEMUCS_V2, **SMALL}
MIXER_SMALL = {**MIXER, **SMALL, 'epochs': 3, 'batch_size': 8, 'optim.amp': None,
               'augment.remix.group_size': 8}


LINEAGE = kuielab('mdx21_kuielab_small', separator=scaled_tfc_tdf('small'), demucs=DEMUCS,
                  mixer=MIXER_SMALL, gpus=NO_GPUS,
                  slurm={'partition': 'local', 'cpus_per_task': 2, 'mem_per_gpu': 4,
                         'time': 120})
explorer = lineage_explorer(LINEAGE)
