"""Kazane Ryo no Danna's MDX 2021 entry (4th on leaderboard A) as one lineage of XPs.

    dora grid mdx21_danna --dry_run --init   # the stages, their parents, signatures and states
    dora grid mdx21_danna                    # submit the ready stages
    python -m tools.lineage mdx21_danna      # without Slurm: every stage in turn, then the bag

Three models trained on MUSDB18-HQ (yoyololicon/music-demixing-challenge-ismir-2021-entry,
its `configs/`), blended per source:

| stage | model | recipe |
|---|---|---|
| xumx | X-UMX fine-tuned through the multichannel Wiener filter, complex-STFT + weighted-SDR loss over the 14 combinations (`optim.loss=xumx_mwf`) | `variant=danna_xumx` |
| unet | D3Net U-Net with 2-D local attention at the bottleneck (`model=d3unet`), the same loss without the filter | `variant=danna_unet` |
| demucs | Demucs with one decoder per source (`model=demucs_split`), L1, fp16, 21 accumulated batches | `variant=danna_demucs` |

The bag (`mdx21_danna`): per source, their weights of models 1/2/3: drums .2/.2/.6,
bass .1/.17/.73, other 0/.5/.5, vocals .2/.4/.4; one Wiener iteration on the spectrogram
models' estimates before the blend. Our X-UMX separates through its own Wiener filter in eval
mode (`xumx.wiener_iterations=1`), so the bag's `settings` add the filter to the U-Net only
(`{'wiener': 1}`); the Demucs runs as the command does.

Where we differ, and why: they started X-UMX from the official weights
(`pretrained_xumx_musdb18HQ.pth`): pass them with `XUMX_WEIGHTS` below (or `continue_from=`
on the command line; `tools.import_weights` reads asteroid's X-UMX); without them it trains
from scratch. They trained on all 100 MUSDB tracks and validated on the 14 of MUSDB's
validation list among them; we hold those 14 out (musdb44's split). The D3Net U-Net's local
windows and its mask above 16 kHz are design choices of `models/d3unet.py` (its docstring).
`grids/mdx21_danna_tiny.py` is the same lineage at a scale that runs end to end on a CPU.
"""
import typing as tp

from separator.lineage import Lineage, Stage
from ._explorers import lineage_explorer

XUMX_WEIGHTS: tp.Optional[str] = None   # path of the official X-UMX checkpoint, if you have it
RECIPES = {'xumx': 'danna_xumx', 'unet': 'danna_unet', 'demucs': 'danna_demucs'}
BAG = {'drums': {'xumx': .2, 'unet': .2, 'demucs': .6},
       'bass': {'xumx': .1, 'unet': .17, 'demucs': .73},
       'other': {'xumx': 0, 'unet': .5, 'demucs': .5},
       'vocals': {'xumx': .2, 'unet': .4, 'demucs': .4}}
BAG_SETTINGS = {'unet': {'wiener': 1}}


def danna(name: str = 'mdx21_danna', recipes: tp.Mapping[str, str] = RECIPES,
          models: tp.Optional[tp.Mapping[str, dict]] = None, slurm: tp.Optional[dict] = None,
          xumx_weights: tp.Optional[str] = XUMX_WEIGHTS) -> Lineage:
    """The lineage: one stage per model with its recipe (`variant=`), `models` more overrides
    per stage (the tiny scale's sizes), then the bag."""
    stages = []
    for stage, variant in recipes.items():
        overrides = {'variant': variant, **(models or {}).get(stage, {})}
        if stage == 'xumx' and xumx_weights:
            overrides['continue_from'] = xumx_weights
        stages.append(Stage(stage, overrides))
    return Lineage(name, stages, slurm=slurm or {}, bag=BAG, bag_settings=BAG_SETTINGS)


LINEAGE = danna(slurm={'gpus': 1, 'time': 4320})
explorer = lineage_explorer(LINEAGE)
