"""The aimless MDX-A lineage of grids/sdx23_aimless.py at tiny scale: its 4 stages run end to
end on a CPU in a minute or two (the plumbing: the models learn little).

    python -m tools.lineage sdx23_aimless_tiny     # locally, stage by stage, then the bag
    dora grid sdx23_aimless_tiny --dry_run --init  # the stages and their signatures

`variant=aimless_tiny`: a 0.06 M HDemucs on 4 synthetic tracks of 3 s with injected label
noise. The clean lists come from a filter XP (the winner's statistic, FILTER of
grids/sdx23.py) judged by `noisy`, one epoch of plain training on the noisy set (L1, no
effects); then the two aimless stages, one epoch each, with the full scale's switches:
negative SDR, the effects chain (x1.666 in the last stage), gradient accumulation (64 in the
last stage), learning rate 1e-4 in the last stage.
"""
from separator.lineage import From, Lineage, Stage
from ._explorers import lineage_explorer
from .sdx23 import FILTER
from .sdx23_aimless import sdx23_aimless

VARIANT = 'aimless_tiny'
LOCAL = {'partition': 'local', 'gpus': 0, 'cpus_per_task': 1, 'mem_per_gpu': 2, 'time': 30}
# The judge: a plain model of the noisy set, and the filter XP it judges with.
JUDGE = Lineage('sdx23_aimless_tiny_judge', [
    Stage('noisy', {'epochs': 1, 'optim.loss': 'l1', 'augment.effects.proba_scale': 0}),
    Stage('filter1', {'filter.model': From('noisy'), **FILTER}),
], base={'variant': VARIANT}, slurm=LOCAL)
LINEAGE = sdx23_aimless('sdx23_aimless_tiny', VARIANT, {'hdemucs': 1, 'hdemucs_last': 1},
                        judge=(JUDGE, 'filter1'), slurm=LOCAL)

explorer = lineage_explorer(LINEAGE)
