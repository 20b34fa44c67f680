"""The KUIELab MDX21 lineage of grids/mdx21_kuielab.py at tiny scale: its 6 stages (four
TFC-TDF v1, Demucs v2, the Mixer) and the bag run on a CPU in a minute or two (the plumbing:
the models learn little).

    python -m tools.lineage mdx21_kuielab_tiny         # locally, stage by stage, then the bag
    dora grid mdx21_kuielab_tiny --dry_run --init      # the stages and their signatures

Each TFC-TDF is `variant=kuielab_<source>_tiny` (its source's recipe, then
`variant=kuielab_tiny`'s data and sizes); Demucs and the Mixer are the full scale's stages on
`variant=kuielab_tiny`, one epoch of two batches of 1 s examples. No offline copies: the
synthetic set is written by the first stage, and `tools.augment_dataset` is tested on its
own; Demucs repitches a few examples. The bag blends and runs its models as the full scale's.
"""
from ._explorers import lineage_explorer
from .mdx21_kuielab import DEMUCS_V2, MIXER, NO_GPUS, kuielab, scaled_tfc_tdf

# What variant=kuielab_tiny says, restated where the full scale's stage overrides differ.
TINY = {'variant': 'kuielab_tiny', 'epochs': 1, 'dset.segment': 1}
DEMUCS = {**DEMUCS_V2, **TINY, 'demucs.lstm_layers': 1, 'augment.repitch.proba': 0.05}
MIXER_TINY = {**MIXER, **TINY, 'batch_size': 4, 'optim.amp': None,
              'augment.remix.group_size': 4}


LINEAGE = kuielab('mdx21_kuielab_tiny', separator=scaled_tfc_tdf('tiny'), demucs=DEMUCS,
                  mixer=MIXER_TINY, gpus=NO_GPUS,
                  slurm={'partition': 'local', 'cpus_per_task': 1, 'mem_per_gpu': 2,
                         'time': 30})
explorer = lineage_explorer(LINEAGE)
