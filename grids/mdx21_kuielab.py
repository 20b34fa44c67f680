"""KUIELab-MDX-Net, the MDX 2021 leaderboard A entry (2nd place: mean SDR 7.24 on MDXDB21;
bass 7.23, drums 7.17, other 5.64, vocals 8.90), as one lineage of XPs.

    python -m tools.augment_dataset MUSDB18HQ    # once: the 24 pitch / tempo copies of train/
    dora grid mdx21_kuielab --dry_run --init     # the stages, their parents, signatures, states
    dora grid mdx21_kuielab                      # submit the ready stages; run it again to advance
    python -m tools.lineage mdx21_kuielab        # without Slurm: every stage in turn, then the bag

Facts from kuielab/mdx-net (branch Leaderboard_A: `configs/`, `src/models/mdxnet.py`,
`src/datamodules/datasets/musdb.py`, README_SUBMISSION.md) and kuielab/mdx-net-submission
(branch leaderboard_A: `predict_blend.py`, `models.py`, `download_demucs.py`).

Stages (`dset=musdb44` for all):
- `tfc_tdf_<source>` (phase 1; theirs: `ConvTDFNet_<source>`, kept at epoch 2360 for vocals,
  1720 bass, 600 drums, 1720 other): a TFC-TDF v1 U-Net trained on its source only,
  `variant=kuielab_<source>` (its n_fft, lr and batch; RMSprop, MSE, fp16, 3000 epochs).
- `demucs`: time-domain Demucs v2 by Demucs's v2 defaults (theirs: Demucs's published
  `demucs`, e07c671f, "trained on MusDB", on 8 GPUs): 64 channels, BLSTM, decoder context 3,
  ReLU, no DConv, no GroupNorm; 180 epochs, Adam 3e-4, L1, batch 64, 10 s, repitch 0.2.
- `mixer` (phase 2; theirs: `Mixer`, configs/experiment/mixer.yaml): `model=mixer` over the
  four frozen TFC-TDFs and the mixture, a 1x1 conv trained 10 epochs, RMSprop lr 3e-3, MSE,
  batch 16, on one GPU.

The bag (`release_models/mdx21_kuielab.yaml`): per source, the Mixer's estimate and
Demucs's blended TFC-TDF:Demucs = bass 5:5, drums 5:5, other 7:3, vocals 9:1
(`predict_blend.py`: `b = [0.5, 0.5, 0.7, 0.9]` in the order bass, drums, other, vocals).
Demucs runs with overlap 0.5 and no shifts, the Mixer without shifts and with the command's
overlap (the bag's per-model `settings`; their TFC-TDFs ran on chunks trimmed by n_fft / 2
at each end, without shifts). Their Mixer mixed the four TFC-TDF estimates only, Demucs
joining at the blend, as here (`kuielab(mixer=None)`: the bag blends each source's TFC-TDF
with Demucs instead).

Data: MUSDB18-HQ, its 86 training tracks (the 14 validation tracks held out: theirs are
MUSDB's); the 24 offline copies `train_p=P_t=T` (pitch -2..2 semitones x tempo -20..20 % by
10, KUIELab's `aug_params: [2, 20]`) join the training tracks of the TFC-TDFs and the Mixer
(`dset.extra_train`, online repitch off), as in their loader; every example takes each
source from a random track (here: remixed across the batch, groups of the whole batch).

Where we differ, and why:
- Batch norms see 4 examples per GPU (2 GPUs for batch 8, 4 for batch 16; they used
  DataParallel on 3 GPUs for bass: 8 does not split over 3 processes).
- No early stopping (patience 50 validations in theirs): each XP trains 3000 epochs and keeps
  its best weights (lowest validation loss), which is what their kept checkpoints are.
- Each of our TFC-TDF XPs outputs all four sources, of which only its own is trained; the
  Mixer sees all 16 estimates, theirs the 4 trained ones. It starts from each source's own
  TFC-TDF (`mixer.targets`; theirs: PyTorch's random init) and its 1x1 conv learns what
  else to take. Their Mixer's loss leaves out 8192 samples at each end of a chunk; ours counts them all.
- Their Demucs is the published v2 model; we train it here (MUSDB18-HQ instead of the
  compressed MUSDB18), its input normalised by the model (`demucs.normalize`) as their blend
  normalised the song by its mean and std. They ran it on 40 s chunks, we on its training
  segment (a bag has one `segment` for all its models, not one per model).
"""
import typing as tp

from separator.lineage import From, Lineage, Stage
from ._explorers import lineage_explorer

SOURCES = ['drums', 'bass', 'other', 'vocals']
# TFC-TDF : Demucs per source, out of 10 (KUIELab's leaderboard A blend).
BLEND = {'drums': 5, 'bass': 5, 'other': 7, 'vocals': 9}
# Demucs applied as KUIELab did: overlap 0.5, no shift trick; none for the TFC-TDFs either.
DEMUCS_SETTINGS = {'overlap': 0.5, 'shifts': 0}
TFC_TDF_SETTINGS = {'shifts': 0}
# The offline pitch / tempo copies of tools.augment_dataset instead of online repitch.
COPIES = {'dset.extra_train': ['train_p=*'], 'augment.repitch.proba': 0}
# Demucs v2 (demucs' v2 branch, `parser.py` defaults) in our time-domain `demucs`.
DEMUCS_V2 = {'model': 'demucs', 'demucs.lstm_layers': 2, 'demucs.context': 3,
             'demucs.gelu': False, 'demucs.dconv_mode': 0, 'demucs.norm_starts': 6,
             'demucs.normalize': True, 'epochs': 180, 'dset.segment': 10,
             'augment.repitch.proba': 0.2}
# Phase 2 (configs/experiment/mixer.yaml, model/Mixer.yaml, trainer/minimal.yaml): the
# separators' chunks, RMSprop lr 3e-3, MSE, fp16, 10 epochs of batch 16 on one GPU.
MIXER = {'model': 'mixer', 'epochs': 10, 'batch_size': 16, 'dset.segment': 5.9210885,
         'optim.optim': 'rmsprop', 'optim.lr': 3e-3, 'optim.loss': 'mse', 'optim.amp': 'fp16',
         'augment.flip': False, 'augment.scale.proba': 0, 'augment.remix.proba': 1,
         'augment.remix.group_size': 16}
GPUS = {'drums': 2, 'bass': 2, 'other': 2, 'vocals': 4, 'demucs': 8, 'mixer': 1}
NO_GPUS = dict.fromkeys(GPUS, 0)   # the CPU scales (small, tiny)


def tfc_tdf(source: str) -> dict:
    """The phase 1 XP of `source` at full scale: its variant, on the offline copies."""
    return {'variant': f'kuielab_{source}', **COPIES}


def scaled_tfc_tdf(scale: str) -> tp.Callable[[str], dict]:
    """The TFC-TDF stages of a smaller scale: `variant=kuielab_<source>_<scale>`."""
    return lambda source: {'variant': f'kuielab_{source}_{scale}'}


def kuielab(name: str = 'mdx21_kuielab', base: tp.Optional[dict] = None,
            separator: tp.Callable[[str], dict] = tfc_tdf,
            demucs: tp.Mapping[str, tp.Any] = DEMUCS_V2,
            mixer: tp.Optional[tp.Mapping[str, tp.Any]] = None,
            slurm: tp.Optional[dict] = None, gpus: tp.Mapping[str, int] = GPUS) -> Lineage:
    """The lineage: `separator(source)` gives the overrides of the TFC-TDF of `source`;
    `demucs` those of the Demucs stage; `mixer` those of the Mixer (its `mixer.models` are
    added), None for no Mixer (the bag then blends each TFC-TDF with Demucs); `base` the
    overrides of every stage (the dataset); `gpus` the GPUs of each stage on Slurm."""
    stages = [Stage(f'tfc_tdf_{source}', separator(source), {'gpus': gpus[source]})
              for source in SOURCES]
    stages.append(Stage('demucs', dict(demucs), {'gpus': gpus['demucs']}))
    if mixer is not None:
        stages.append(Stage('mixer', {**mixer, 'mixer.models': [
            From(f'tfc_tdf_{source}') for source in SOURCES], 'mixer.targets': SOURCES},
            {'gpus': gpus['mixer']}))
    spectral = {source: 'mixer' if mixer is not None else f'tfc_tdf_{source}'
                for source in SOURCES}
    bag = {source: {spectral[source]: weight, 'demucs': 10 - weight}
           for source, weight in BLEND.items()}
    settings = {stage: dict(TFC_TDF_SETTINGS) for stage in spectral.values()}
    return Lineage(name, stages, base=dict(base or {}), slurm=slurm or {}, bag=bag,
                   bag_settings={**settings, 'demucs': dict(DEMUCS_SETTINGS)})


LINEAGE = kuielab(base={'dset': 'musdb44'}, mixer={**MIXER, **COPIES},
                  slurm={'time': 4320})
explorer = lineage_explorer(LINEAGE)
