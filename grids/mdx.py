"""Demucs's MDX 2021 Track A entry (1st place) as one lineage of XPs.

    dora grid mdx --dry_run --init       # the stages, their parents, signatures and states
    dora grid mdx                        # submit the ready stages; run it again to advance
    python -m tools.lineage mdx          # without Slurm: every stage in turn, then the bag

Four models trained on MUSDB18-HQ (`variant=mdx21`: 360 epochs, batch 64, SVD penalty 1e-5,
EMAs per epoch [0.9, 0.95] and per batch [0.9995, 0.9999], repitch 0.2), each fine-tuned on
the automix set for 4 epochs (28 s segments, no remix or scale), then blended per source:

| stage | Demucs XP | model |
|---|---|---|
| demucs | 9357e12e | time-domain Demucs v3 (`model=demucs`), SVD `base2` (dim 100, conv transposes) |
| demucs_db | e312f349 | the same, `weights=[1, 1, 0.1, 0.1]` (drums and bass first) |
| hdemucs_mask | 81de367c | HDemucs, amplitude spectrogram masked (`cac=false`), `hybrid_old` padding (`compat=demucs_old`), SVD on conv transposes with dim 100 |
| hdemucs_cac | 80a68df8 | HDemucs, complex as channels |
| *_ft | 0d19c1c6, 7ecf8ec1, c511e2ab, 7d865c68 | each of the above, fine-tuned on automix |

The bag (`mdx`): drums from demucs_ft, hdemucs_mask_ft and hdemucs_cac_ft; bass from the two
time-domain models; other and vocals from the two hybrids; segment 44 s.

Where we differ, and why: 80a68df8 used `multi_freqs=[0.1, 0.3]` (other weights per frequency
band in its two outermost layers); our HDemucs has no such option and the imported Demucs
packages that use it are refused with a message: hdemucs_cac is trained without it. The
fine-tunes' learning rates (1e-4 for the time-domain models, 6e-4 for the hybrids) follow
Demucs's `mdx_refine.py` as the issue reports them. The automix set is written once by
`python -m tools.automix MUSDB18HQ AUTOMIX` (`dset=automix`; set its paths). `grids/mdx_tiny.py`
is the same lineage at a scale that runs end to end on a CPU (fine-tuned on the same synthetic
set: it has too few tracks for tempo-matched partners).
"""
import typing as tp

from separator.lineage import From, Lineage, Stage
from ._explorers import lineage_explorer

# Demucs's svd=base2: the penalty on conv transposes too, rank-100 low-rank SVD.
SVD = {'svd.penalty': 1e-5, 'svd.min_size': 1, 'svd.dim': 100, 'svd.niters': 4,
       'svd.convtr': True}
MODELS = {
    'demucs': {'model': 'demucs', **SVD},
    'demucs_db': {'model': 'demucs', **SVD, 'weights': [1, 1, 0.1, 0.1]},
    'hdemucs_mask': {'model': 'hdemucs', 'hdemucs.cac': False, 'hdemucs.compat': 'demucs_old',
                     **SVD},
    'hdemucs_cac': {'model': 'hdemucs', 'hdemucs.cac': True},
}
FINETUNE_LR = {'demucs': 1e-4, 'demucs_db': 1e-4, 'hdemucs_mask': 6e-4, 'hdemucs_cac': 6e-4}
BAG = {'drums': {'demucs_ft': 1, 'hdemucs_mask_ft': 1, 'hdemucs_cac_ft': 1},
       'bass': {'demucs_ft': 1, 'demucs_db_ft': 1},
       'other': {'hdemucs_mask_ft': 1, 'hdemucs_cac_ft': 1},
       'vocals': {'hdemucs_mask_ft': 1, 'hdemucs_cac_ft': 1}}


def mdx(name: str = 'mdx', variant: str = 'mdx21', finetune: tp.Optional[dict] = None,
        models: tp.Optional[tp.Mapping[str, dict]] = None, slurm: tp.Optional[dict] = None,
        bag_segment: tp.Optional[float] = 44) -> Lineage:
    """The lineage: `variant` holds what the four trainings share; `finetune` the overrides of
    every fine-tune (default: automix, 4 epochs of 28 s, no remix or scale); `models` more
    overrides per model (the tiny scale's sizes)."""
    if finetune is None:
        finetune = {'dset': 'automix', 'epochs': 4, 'dset.segment': 28,
                    'augment.remix.proba': 0, 'augment.scale.proba': 0}
    stages = []
    for model, overrides in MODELS.items():
        stages.append(Stage(model, {**overrides, **(models or {}).get(model, {})}))
    for model in MODELS:
        stages.append(Stage(f'{model}_ft', {**MODELS[model], **(models or {}).get(model, {}),
                                            'continue_from': From(model), **finetune,
                                            'optim.lr': FINETUNE_LR[model]}))
    return Lineage(name, stages, base={'variant': variant}, slurm=slurm or {}, bag=BAG,
                   bag_segment=bag_segment)


LINEAGE = mdx(slurm={'gpus': 8, 'time': 4320})
explorer = lineage_explorer(LINEAGE)
