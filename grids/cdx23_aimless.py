"""The aimless team's SDX23 entry on CDX leaderboard A (cinematic demixing) as one lineage.

    dora grid cdx23_aimless --dry_run --init     # the two models, their signatures and states
    dora grid cdx23_aimless                      # submit them
    python -m tools.lineage cdx23_aimless        # without Slurm: both in turn, then the bag
    separator -n cdx23_aimless FILM.wav          # speech / music / sfx of a (stereo) film

aimless (C4DM, QMUL; github.com/aim-qmul/sdx23-aimless, README and cfg/cdx_a/) trained two
mono models on Divide and Remaster (`dset=dnr`, `variant=aimless_cdx`: tr + cv, no
validation, random remixes, gain and sign flips):

- `hdemucs`: HDemucs of 64 channels, the 3 sources (148.6 M parameters); negative SDR,
  6 s chunks, batch 3, gradients of 4 batches; speed 50-150 %, pitch -7..7 semitones (0.3
  each); 30000 optimizer steps.
- `bsrnn`: BandSplitRNN (128 features, 12 layers, n_fft 4096; 28.6 M), music only; 3 s
  chunks, batch 16; speed 90-110 %, pitch (0.2 each); 99000 steps.

At inference (README; their submission code is not public): HDemucs separates the left,
right, mid and side channels of the stereo mixture, combined linearly; BandSplitRNN's music
is Wiener-filtered; the final music is the average of the two models' music, speech and
sfx are HDemucs's alone. The bag (BAG below): speech and sfx from hdemucs, music from
both, weight 1 each; each model runs as theirs did (AIMLESS_SETTINGS, the bag's per-model
`settings`, `separator.pretrained`): hdemucs with `midside` (the mono model separates L, R,
mid and side each alone; the bag then reads and writes stereo), bsrnn on each channel alone,
its music Wiener-filtered (one EM iteration) against the residual, mixture - music
(`wiener_sources: [music]`), its untrained speech and sfx left out of the filter. On a mono
mixture (DnR's own test set, `tools.test_pretrained`) there is no side: hdemucs runs plainly.

Where we differ, and why:
- "music only": our mixture is the sum of the sources an XP trains on, so BandSplitRNN
  separates the three sources with the loss on music only (`weights=[0, 1, 0]`) and the bag
  takes only its music.
- its loss: theirs is MDLoss (the MSE of the complex masked spectrogram + 10 x a weighted
  SDR in the time domain); ours has no such loss for a waveform model: the negative SDR,
  their HDemucs's.
- their BandSplitRNN's LSTMs have 128 units projected to 64 per direction and group norms of
  4 groups; ours (model=bsrnn) 128 units without projection and one group.
- mid/side: theirs combined the four estimates with weights of their submission code (not
  public); ours averages the two estimates of each channel, L' = (L + M + S) / 2 and
  R' = (R + M - S) / 2 (`apply.apply_model`). `--midside` on the command line would also
  give mid/side to bsrnn.
- an epoch here is 1000 optimizer steps: 30 epochs of HDemucs, 99 of BandSplitRNN.
"""
import typing as tp

from separator.lineage import Lineage, Stage
from ._explorers import lineage_explorer

SOURCES = ['speech', 'music', 'sfx']
WIDE_SPEEDS = [50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150]
WIDE_SEMITONES = [-7, -6, -5, -4, -3, -2, -1, 1, 0, 1, 2, 3, 4, 5, 6, 7]   # theirs, 1 twice
# Each model's own recipe (cfg/cdx_a/*.yaml), on top of variant=aimless_cdx.
MODELS = {
    'hdemucs': {'model': 'hdemucs', 'optim.loss': 'neg_sdr', 'optim.accumulate': 4,
                'augment.effects.speed_proba': 0.3, 'augment.effects.speeds': WIDE_SPEEDS,
                'augment.effects.pitch_proba': 0.3,
                'augment.effects.semitones': WIDE_SEMITONES},
    'bsrnn': {'model': 'bsrnn', 'optim.loss': 'neg_sdr', 'weights': [0, 1, 0],
              'augment.effects.speed_proba': 0.2, 'augment.effects.pitch_proba': 0.2},
}
# Chunk, batch, epochs (of 1000 steps) at full scale.
FULL = {
    'hdemucs': {'dset.segment': 6, 'batch_size': 3, 'dset.epoch_size': 12000, 'epochs': 30},
    'bsrnn': {'dset.segment': 3, 'batch_size': 16, 'dset.epoch_size': 16000, 'epochs': 99},
}
BAG = {'speech': 'hdemucs', 'music': {'hdemucs': 1, 'bsrnn': 1}, 'sfx': 'hdemucs'}
# How aimless ran each model (the bag's settings): HDemucs on L, R, mid and side;
# BandSplitRNN's music filtered against the residual.
AIMLESS_SETTINGS = {'hdemucs': {'midside': True},
                    'bsrnn': {'wiener': 1, 'wiener_sources': ['music']}}


def cdx23_aimless(name: str = 'cdx23_aimless', variant: str = 'aimless_cdx',
                  scale: tp.Mapping[str, dict] = FULL, slurm: tp.Optional[dict] = None,
                  bag_settings: tp.Mapping[str, dict] = AIMLESS_SETTINGS) -> Lineage:
    """The lineage: `variant` holds what both models share, `scale` each model's chunk,
    batch and epochs (and sizes), `bag_settings` how each runs in the bag (theirs by
    default; `{}`: both plainly)."""
    stages = [Stage(model, {**overrides, **scale.get(model, {})})
              for model, overrides in MODELS.items()]
    return Lineage(name, stages, base={'variant': variant}, slurm=slurm or {}, bag=BAG,
                   bag_settings={stage: dict(settings)
                                 for stage, settings in bag_settings.items()})


# One GPU per model (their configs leave `devices` to the default).
LINEAGE = cdx23_aimless(slurm={'gpus': 1, 'mem_per_gpu': 40, 'time': 4320})

explorer = lineage_explorer(LINEAGE)
