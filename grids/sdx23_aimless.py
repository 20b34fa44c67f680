"""The aimless team's SDX23 entry on MDX leaderboard A (label noise) as one lineage of XPs.

    dora grid sdx23_aimless --dry_run --init     # the stages, their parents and signatures
    dora grid sdx23_aimless                      # submit the ready stages; run it again to advance
    python -m tools.lineage sdx23_aimless        # without Slurm: every stage in turn, then the bag

aimless (C4DM, QMUL; github.com/aim-qmul/sdx23-aimless, README and cfg/mdx_a/hdemucs.yaml)
labelled by hand the songs of the label-noise set whose stems are all clean (44 of 203), and
trained one HDemucs on those only (`variant=aimless`):

- random 10 s chunks, each source from its own random clean song (their random_track_mix;
  ours: the clean-list loader, `dset.clean_lists`);
- every stem through a chain of random effects (`augment.effects`, their probabilities:
  `proba_scale` 1), speed 90/100/110 % and pitch shift included (0.3 each, in the chain);
- the negative SDR as the loss (`optim.loss=neg_sdr`);
- no held-out song: validation on the training set (`dset.valid_on_train`, see the variant);
- two stages: `hdemucs`, then `hdemucs_last` from its weights (`continue_from`) with the
  learning rate at 1e-4, gradients accumulated over 64 batches and every effect's
  probability x1.666 (LAST below);
- the bag: every source from `hdemucs_last`.

Stages: the clean lists come from a filter XP of ours, or from a folder a user gives
(`clean_lists=`, the format of `tools.filter`: clean_<source>.txt, one song per line; for
aimless's own list, their data/lightning/label_noise.csv, the songs marked Y in all four
files). With a filter XP, the lineage starts with the stages of the SDX23 lineage that the
filter needs (`judging_stages`): the same overrides and variant, hence the same XPs and
signatures as in grids/sdx23.py, run once for both lineages. Full scale: `filter2` of
grids/sdx23.py (judged by its joint model, the lists its fine-tunes train on).

Where the public facts disagree, and what we took:
- epochs: the README says "~800 epochs" in all, "the last ~200" with the new settings: 600
  then 200 here. (Their config resumed the last stage from epoch=750, and the submitted
  checkpoint is named e1213.)
- the last stage's learning rate: the README says "reduced to 0.001", from 3e-4, which is
  no reduction; the same commit adds `# lr: 0.0001` next to `# accumulate_grad_batches: 64`
  in the config, and the submitted checkpoint is named `acc64_4devices_lr0001`: 1e-4 here
  (LAST_LR).
- the probabilities: those of cfg/mdx_a/hdemucs.yaml, the config the README names for this
  entry (EQ 0.3, ..., speed and pitch 0.3), not those of the older cfg/hdemucs.yaml (EQ 0.7,
  compressor 0.5, ..., speed and pitch 0.2), see separator/data/effects.py. x1.666 applies
  to speed and pitch too (their README does not say whether their GPU transforms were
  scaled).
- their validation ran every 10 epochs on random remixes of the clean stems; ours every
  epoch on the training songs (`dset.shift` = the segment bounds its cost).
"""
import typing as tp

from separator.lineage import From, Lineage, Stage
from ._explorers import lineage_explorer

SOURCES = ['drums', 'bass', 'other', 'vocals']
FULL = {'hdemucs': 600, 'hdemucs_last': 200}
LAST_LR = 1e-4
# What changes for the last stage (their README, "Other details").
LAST = {'optim.lr': LAST_LR, 'optim.accumulate': 64, 'augment.effects.proba_scale': 1.666}


def ancestors(lineage: Lineage, name: str) -> tp.List[Stage]:
    """The stage `name` of `lineage` and every stage it needs, in the lineage's order."""
    by_name = {stage.name: stage for stage in lineage.stages}
    if name not in by_name:
        raise ValueError(f"Lineage {lineage.name} has no stage {name} "
                         f"({', '.join(by_name)}).")
    needed = {name}
    for stage in reversed(lineage.stages):
        if stage.name in needed:
            needed.update(stage.parents)
    return [stage for stage in lineage.stages if stage.name in needed]


def judging_stages(lineage: Lineage, filter_stage: str) -> tp.List[Stage]:
    """The stages of `lineage` (an SDX23 lineage) that its filter stage `filter_stage` needs,
    with that lineage's base overrides and Slurm settings folded into each: the same
    overrides in the same order, hence the same XPs (signatures) in both lineages."""
    return [Stage(stage.name, {**lineage.base, **stage.overrides},
                  {**lineage.slurm, **stage.slurm})
            for stage in ancestors(lineage, filter_stage)]


def sdx23_aimless(name: str = 'sdx23_aimless', variant: str = 'aimless',
                  epochs: tp.Mapping[str, int] = FULL,
                  judge: tp.Optional[tp.Tuple[Lineage, str]] = None,
                  clean_lists: tp.Optional[str] = None, last: tp.Mapping[str, tp.Any] = LAST,
                  slurm: tp.Optional[dict] = None) -> Lineage:
    """The lineage. The clean lists come from `judge` = (an SDX23 lineage, its filter stage),
    whose stages this lineage runs first, or from `clean_lists`, a folder of
    clean_<source>.txt (one of the two). `last`: the overrides of the last stage."""
    if (judge is None) == (clean_lists is None):
        raise ValueError(f"Lineage {name}: give either judge=(lineage, filter stage) or "
                         f"clean_lists=FOLDER.")
    stages: tp.List[Stage] = []
    clean: tp.Any = clean_lists
    if judge is not None:
        source, filter_stage = judge
        stages = judging_stages(source, filter_stage)
        clean = From(filter_stage)
    common = {'variant': variant, 'dset.clean_lists': clean}
    stages += [
        Stage('hdemucs', {**common, 'epochs': epochs['hdemucs']}, slurm or {}),
        Stage('hdemucs_last', {**common, 'continue_from': From('hdemucs'),
                               'epochs': epochs['hdemucs_last'], **last}, slurm or {}),
    ]
    return Lineage(name, stages, bag={source: 'hdemucs_last' for source in SOURCES})


def sdx23_judge() -> tp.Tuple[Lineage, str]:
    """The full-scale judge: filter2 of grids/sdx23.py."""
    from .sdx23 import LINEAGE
    return LINEAGE, 'filter2'


# 4 GPUs per training XP (3 chunks of 10 s per GPU, as theirs), two weeks at their scale.
LINEAGE = sdx23_aimless(judge=sdx23_judge(),
                        slurm={'gpus': 4, 'mem_per_gpu': 40, 'time': 4320})

explorer = lineage_explorer(LINEAGE)
