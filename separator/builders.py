"""The one place that turns the Hydra config into objects: data sets, model, criterion,
optimizer, quantizer, scheduler.

The solver and the entry point ask these functions; nothing else reads the raw config
sections they cover.
"""
import fnmatch
import logging
import math
import typing as tp
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import distrib, states
from .criterion import CRITERIA, SourceLoss
from .data.clean_lists import clean_lists_folder, read_clean_lists
from .data.musdb import TrackInfo, index_tracks, split_valid
from .data.effects import Effects
from .data.repitch import Repitch
from .data.segments import RemixSegments, StridedSegments, TrainSegments, WholeTracks
from .locking import locked
from .losses import check_loss_options, kept_count, smallest_truncating_batch
from .models import get_model_class
from .paths import absolute_path
from .starting_weights import start_model

logger = logging.getLogger(__name__)


def ensure_synthetic(dset: tp.Any) -> None:
    """Write the synthetic data set at `dset.musdb` if `dset.synthetic` asks for it."""
    if not dset.generate:
        return
    from .data.synthetic import write_dataset
    params = OmegaConf.to_container(dset.synthetic)
    root = absolute_path(dset.musdb)
    if not root.exists() or not any(root.iterdir()):  # say where generated data goes
        logger.warning("dset.generate: writing the synthetic data set (%d + %d tracks of %s s) "
                       "into %s. To train on your own data in the MUSDB layout, use dset=musdb44 "
                       "dset.musdb=PATH.", params['tracks_train'], params['tracks_test'],
                       params['seconds'], root)
    write_dataset(root, samplerate=dset.samplerate, **params)


def ensure_decoded(dset: tp.Any) -> None:
    """Decode MUSDB18's stem files (`dset.stems`) into `dset.musdb` if missing there."""
    if not dset.get('stems'):
        return
    from .data.musdb_stems import decode_musdb18
    decode_musdb18(absolute_path(dset.stems), absolute_path(dset.musdb))


def ensure_labelnoise(dset: tp.Any) -> None:
    """Write `dset.train_folder` from the clean training tracks if `dset.inject` asks for it."""
    if not (dset.inject and dset.train_folder):
        return
    out = absolute_path(dset.train_folder)
    with locked(out):
        _ensure_labelnoise(dset, out)


def _ensure_labelnoise(dset: tp.Any, out: Path) -> None:
    from .data import labelnoise
    if (out / 'manifest.json').exists():
        manifest = labelnoise.load_manifest(out)
        if (manifest['rate'], manifest['seed']) != (dset.noise_rate, dset.noise_seed):
            raise ValueError(f"{out} was injected with rate={manifest['rate']}, "
                             f"seed={manifest['seed']}, not dset.noise_rate={dset.noise_rate}, "
                             f"dset.noise_seed={dset.noise_seed}: delete it or change "
                             f"dset.train_folder.")
        return
    labelnoise.inject(absolute_path(dset.musdb), out, rate=dset.noise_rate,
                      seed=dset.noise_seed)


def get_tracks(dset: tp.Any) -> tp.Tuple[tp.List[TrackInfo], tp.List[TrackInfo],
                                         tp.List[TrackInfo]]:
    """Index the data set: (train, valid, test) track lists."""
    root = absolute_path(dset.musdb)
    cache = absolute_path(dset.metadata)

    def index(folder: Path) -> tp.List[TrackInfo]:
        return index_tracks(folder, dset.sources, dset.samplerate, dset.channels, cache,
                            dset.mixture_name)

    train_folder = (absolute_path(dset.train_folder) if dset.train_folder
                    else root / dset.train_split)
    train = index(train_folder)
    if dset.get('valid_on_train'):   # aimless SDX23: no held-out set, the training tracks
        return train, list(train), index(root / dset.test_split)
    if dset.valid_split:   # a validation set of its own (DnR's cv)
        valid = index(root / dset.valid_split)
    else:
        valid_tracks = None if dset.valid_tracks is None else list(dset.valid_tracks)
        train, valid = split_valid(train, valid_tracks, dset.valid_count)
    return train, valid, index(root / dset.test_split)


def extra_tracks(dset: tp.Any, valid: tp.Sequence[TrackInfo]) -> tp.List[TrackInfo]:
    """`dset.extra_train`: the tracks of the folders under `dset.musdb` that match its glob
    patterns (KUIELab's offline copies, `tools.augment_dataset`), but the copies of
    validation tracks (same track name)."""
    patterns = list(dset.get('extra_train') or [])
    if not patterns:
        return []
    if dset.clean_lists:
        raise ValueError("dset.extra_train adds tracks that the clean lists of dset.clean_lists "
                         "do not judge: use one or the other.")
    root = absolute_path(dset.musdb)
    held_out = set() if dset.get('valid_on_train') else {track.name for track in valid}
    tracks: tp.List[TrackInfo] = []
    for pattern in patterns:
        folders = sorted(path for path in root.glob(pattern) if path.is_dir())
        if not folders:
            raise ValueError(f"dset.extra_train: {pattern!r} matches no folder of {root}: "
                             f"write them with `python -m tools.augment_dataset {root}`.")
        for folder in folders:
            found = index_tracks(folder, dset.sources, dset.samplerate, dset.channels,
                                 absolute_path(dset.metadata), dset.mixture_name)
            tracks += [track for track in found if track.name not in held_out]
    return tracks


def get_datasets(cfg: tp.Any, xps: tp.Optional[Path] = None
                 ) -> tp.Tuple[TrainSegments, StridedSegments, WholeTracks]:
    """Train, valid and test sets; `xps` (Dora's XP folder) resolves `dset.clean_lists=SIG`."""
    dset = cfg.dset
    train, valid, test = get_tracks(dset)
    segment = int(dset.segment * dset.samplerate)
    epoch_size = dset.epoch_size
    if epoch_size is None:
        epoch_size = max(1, math.ceil(sum(t.length for t in train) / segment))
    extra = extra_tracks(dset, valid)
    if extra:   # more tracks to draw from, the same epoch size (as KUIELab's loader)
        logger.info("dset.extra_train: %d more training tracks", len(extra))
        train = train + extra
    clean = None
    if dset.clean_lists:
        clean = read_clean_lists(clean_lists_folder(dset.clean_lists, xps), dset.sources)
        if dset.get('valid_on_train'):   # the tracks whose stems are all clean (aimless's)
            valid = [track for track in valid
                     if all(track.name in clean[source] for source in dset.sources)]
    logger.info("Data: %d train, %d valid, %d test tracks; %d examples of %.1f s per epoch",
                len(train), len(valid), len(test), epoch_size, dset.segment)
    repitch = get_repitch(cfg)
    effects = get_effects(cfg)
    if clean is not None:
        train_set = RemixSegments(train, dset.sources, segment, epoch_size, cfg.seed, clean,
                                  repitch=repitch, effects=effects)
        logger.info("Clean stems per source: %s",
                    {source: len(pool) for source, pool in train_set.pools.items()})
    else:
        train_set = TrainSegments(train, dset.sources, segment, epoch_size, cfg.seed,
                                  repitch=repitch, effects=effects)
    valid_set = StridedSegments(valid, dset.sources, segment, int(dset.shift * dset.samplerate))
    return train_set, valid_set, WholeTracks(test, dset.sources)


def get_repitch(cfg: tp.Any) -> tp.Optional[Repitch]:
    """`augment.repitch`: Demucs's pitch/tempo change of training examples, or None (off)."""
    options = cfg.augment.get('repitch')
    if not options or not options.proba:
        return None
    return Repitch(**OmegaConf.to_container(options, resolve=True))


def get_effects(cfg: tp.Any) -> tp.Optional[Effects]:
    """`augment.effects`: aimless's random effects per stem of training examples, or None
    (off: `proba_scale` 0)."""
    options = cfg.augment.get('effects')
    if not options:
        return None
    return Effects.from_options(OmegaConf.to_container(options, resolve=True),
                                cfg.dset.samplerate)


def get_model(cfg: tp.Any, xps: tp.Optional[Path] = None,
              folder: tp.Optional[Path] = None) -> torch.nn.Module:
    """The model of `cfg.model`, built from its section; `xps` (Dora's XP folder) holds the
    trained XPs that `model=mixer` blends. With `continue_from=FILE`, the model that file
    describes (`starting_weights`; `folder`: the XP's, once it has a checkpoint)."""
    imported = start_model(cfg, folder)
    if imported is not None:
        return imported
    klass = get_model_class(cfg.model)
    kwargs = OmegaConf.to_container(cfg[cfg.model], resolve=True)
    weights = None
    if cfg.model == 'mixer':
        kwargs['separators'], weights = separators_of(kwargs.pop('models'), xps)
    model = klass(sources=list(cfg.dset.sources), audio_channels=cfg.dset.channels,
                  samplerate=cfg.dset.samplerate, segment=cfg.dset.segment, **kwargs)
    if weights is not None:
        model.load_separators(weights)
    return model


def separators_of(sigs: tp.Sequence[str], xps: tp.Optional[Path]
                  ) -> tp.Tuple[tp.List[dict], tp.List[dict]]:
    """`mixer.models`: the packages (without weights) and the best weights of XPs `sigs`."""
    if not sigs:
        raise ValueError("model=mixer needs mixer.models=[SIG, ...]: the signatures of the "
                         "trained XPs to blend.")
    if xps is None:
        raise ValueError("model=mixer reads its separators from Dora's XP folder: run it "
                         "with `dora run`.")
    packages, weights = [], []
    for sig in sigs:
        checkpoint = states.read_xp_checkpoint(str(sig), xps, f"mixer.models: {sig}")
        packages.append(states.checkpoint_architecture(checkpoint))
        weights.append(states.checkpoint_weights(checkpoint))
    return packages, weights


def get_criterion(cfg: tp.Any, model: torch.nn.Module) -> SourceLoss:
    """The training and validation loss of `optim.loss` (`criterion.CRITERIA`), its options
    checked against the loss and the model: per-source weights, loss truncation (a warning,
    once, when the per-process batch is too small for it to drop anything) and its ranking."""
    optim = cfg.optim
    weights = None if cfg.weights is None else list(cfg.weights)
    check_loss_options(optim.loss, weights, optim.loss_truncation)
    if optim.truncation_rank not in ('loss', 'relative'):
        raise ValueError(f"optim.truncation_rank={optim.truncation_rank!r}: use loss or "
                         f"relative.")
    if optim.loss_truncation:
        _warn_small_truncation_batch(optim.loss_truncation, cfg.batch_size)
    return CRITERIA[optim.loss](cfg, model)


def _warn_small_truncation_batch(quantile: float, batch_size: int) -> None:
    """Said once, at start: every batch then trains whole (`kept_count`), as without q."""
    world = distrib.world_size
    batch = batch_size // world
    smallest = smallest_truncating_batch(quantile)   # raises unless 0 < quantile < 1
    if batch < smallest and distrib.is_master():
        logger.warning(
            "optim.loss_truncation=%s drops nothing in a batch of %d per process (it keeps "
            "ceil(%s x %d) = %d): training goes on without truncation. Use a per-process batch "
            "of at least %d (batch_size=%d on %d process(es)), or a lower quantile.", quantile,
            batch, quantile, batch, kept_count(batch, quantile), smallest, smallest * world,
            world)


OPTIMIZERS = ('adam', 'adamw', 'rmsprop')


def freeze(model: torch.nn.Module, patterns: tp.Sequence[str]) -> tp.List[str]:
    """`optim.freeze`: the parameters whose names match one of the shell-style `patterns`
    (e.g. `encoder.*`, `*.norm.*`) stop learning. Returns their names; a pattern that matches
    nothing is an error naming it (a typo would otherwise train everything silently)."""
    names = [name for name, _ in model.named_parameters()]
    frozen = []
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            sample = ', '.join(names[:4])
            raise ValueError(f"optim.freeze: {pattern!r} matches no parameter of the model "
                             f"(names look like {sample}, ...; `dora run ... misc.show=true` "
                             f"prints the model).")
        frozen += [name for name in matched if name not in frozen]
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def get_optimizer(cfg: tp.Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """`optim.optim` over the parameters that learn (all but `optim.freeze`'s)."""
    optim = cfg.optim
    frozen = freeze(model, list(optim.get('freeze') or []))
    if frozen:
        logger.info("optim.freeze: %d parameter tensor(s) frozen", len(frozen))
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise ValueError("optim.freeze froze every parameter: nothing would learn.")
    if optim.optim == 'adam':
        return torch.optim.Adam(params, lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                weight_decay=optim.weight_decay)
    if optim.optim == 'adamw':
        return torch.optim.AdamW(params, lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                 weight_decay=optim.weight_decay)
    if optim.optim == 'rmsprop':
        return torch.optim.RMSprop(params, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ValueError(f"Unknown optim.optim={optim.optim!r}: use {', '.join(OPTIMIZERS)}.")


def get_quantizer(cfg: tp.Any, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> tp.Optional[tp.Any]:
    """DiffQ quantization-aware training when `quant.diffq` is set, else None.

    The quantizer goes on the model itself (before any DDP wrap) and adds its bit widths to
    `optimizer` as a param group of their own: call this before the scheduler is built and
    before the optimizer state is restored.
    """
    quant = cfg.quant
    if quant.diffq is None:
        return None
    if quant.diffq < 0:
        raise ValueError(f"quant.diffq={quant.diffq} is the weight of the model size penalty: "
                         f"use null (off) or a number >= 0.")
    quantizer = states.get_quantizer(model, min_size=quant.min_size,
                                     group_size=quant.group_size)
    quantizer.setup_optimizer(optimizer)
    return quantizer


def get_scheduler(cfg: tp.Any, optimizer: torch.optim.Optimizer
                  ) -> tp.Optional[torch.optim.lr_scheduler.LRScheduler]:
    """Per-epoch schedule: linear warmup then, for `cosine`, a cosine decay to zero; for
    `step`, the rate times `optim.step_gamma` every `optim.step_size` epochs (SCNet: x0.98
    every 10)."""
    name = cfg.optim.lr_scheduler
    warmup = cfg.optim.warmup_epochs
    epochs = cfg.epochs
    if name is None and not warmup:
        return None
    if name not in (None, 'cosine', 'step'):
        raise ValueError(f"Unknown optim.lr_scheduler={name!r}: use null, cosine or step.")
    step_size, gamma = cfg.optim.get('step_size', 10), cfg.optim.get('step_gamma', 1.)
    if name == 'step' and (not isinstance(step_size, int) or step_size < 1):
        raise ValueError(f"optim.step_size={step_size!r}: epochs between decays, a whole "
                         f"number above 0.")

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / warmup
        if name == 'cosine':
            progress = (epoch - warmup) / max(1, epochs - warmup)
            return 0.5 * (1 + math.cos(math.pi * progress))
        if name == 'step':
            return gamma ** ((epoch - warmup) // step_size)
        return 1.

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
