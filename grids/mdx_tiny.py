"""The MDX21 Track A lineage of grids/mdx.py at tiny scale: its 8 stages run on a CPU in
minutes (the plumbing: the models learn little).

    python -m tools.lineage mdx_tiny             # locally, stage by stage, then the bag
    dora grid mdx_tiny --dry_run --init          # the stages and their signatures

`variant=mdx21_tiny`; the fine-tunes run one epoch on the same synthetic set (too few tracks
for the automix set's tempo-matched partners).
"""
from ._explorers import lineage_explorer
from .mdx import mdx

TINY = {'demucs.channels': 8, 'demucs.depth': 4, 'demucs.dconv_depth': 1,
        'svd.min_size': 0, 'svd.dim': 2, 'svd.niters': 1}
MODELS = {'demucs': TINY, 'demucs_db': TINY, 'hdemucs_mask': {'svd.min_size': 0, 'svd.dim': 2,
                                                              'svd.niters': 1}}
LINEAGE = mdx('mdx_tiny', 'mdx21_tiny', finetune={'epochs': 1}, models=MODELS,
              slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 1, 'mem_per_gpu': 2,
                     'time': 30}, bag_segment=None)

explorer = lineage_explorer(LINEAGE)
