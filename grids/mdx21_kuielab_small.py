"""The KUIELab MDX21 lineage of grids/mdx21_kuielab.py at a scale that learns on a CPU: the
four TFC-TDF v1 (`variant=kuielab_<source>_small`: their source's recipe with n_fft / 8, on
`variant=kuielab_small`: variant=demo's 10 epochs of 160 one-second examples), Demucs v2 with
16 channels on the same budget, the Mixer over the four for 3 epochs, then the blend.

    python -m tools.lineage mdx21_kuielab_small
    python -m tools.test_pretrained -n mdx21_kuielab_small   # the bag on the synthetic test set

No offline pitch / tempo copies (the synthetic set is written by the first stage; at full
scale `python -m tools.augment_dataset` makes them); Demucs repitches 20 % of its examples.

Test nSDR (dB) on the 4 synthetic test songs: see the note at the end of this docstring.
"""
from ._explorers import lineage_explorer
from .mdx21_kuielab import DEMUCS_V2, MIXER, kuielab

# What variant=kuielab_small says, restated where the full scale's stage overrides differ.
SMALL = {'variant': 'kuielab_small', 'epochs': 10, 'dset.segment': 1}
DEMUCS = {**DEMUCS_V2, **SMALL}
MIXER_SMALL = {**MIXER, **SMALL, 'epochs': 3, 'batch_size': 8, 'optim.amp': None,
               'augment.remix.group_size': 8}


def tfc_tdf(source: str) -> dict:
    return {'variant': f'kuielab_{source}_small'}


LINEAGE = kuielab('mdx21_kuielab_small', separator=tfc_tdf, demucs=DEMUCS, mixer=MIXER_SMALL,
                  slurm={'partition': 'local', 'cpus_per_task': 2, 'mem_per_gpu': 4,
                         'time': 120},
                  gpus={'drums': 0, 'bass': 0, 'other': 0, 'vocals': 0, 'demucs': 0,
                        'mixer': 0})
explorer = lineage_explorer(LINEAGE)
