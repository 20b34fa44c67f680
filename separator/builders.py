"""The one place that turns the Hydra config into objects: data sets, model, optimizer.

The solver and the entry point ask these functions; nothing else reads the raw config
sections they cover.
"""
import logging
import math
import typing as tp
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .data.musdb import TrackInfo, index_tracks, split_valid
from .data.segments import StridedSegments, TrainSegments, WholeTracks
from .models import get_model_class

logger = logging.getLogger(__name__)


def absolute_path(path: tp.Union[str, Path]) -> Path:
    """Resolve a config path against the folder the command was started from."""
    try:
        from hydra.utils import to_absolute_path
        return Path(to_absolute_path(str(path)))
    except ValueError:  # outside a Hydra run
        return Path(path).resolve()


def ensure_synthetic(dset: tp.Any) -> None:
    """Write the synthetic data set at `dset.musdb` if `dset.synthetic` asks for it."""
    if not dset.generate:
        return
    from .data.synthetic import write_dataset
    params = OmegaConf.to_container(dset.synthetic)
    write_dataset(absolute_path(dset.musdb), samplerate=dset.samplerate, **params)


def get_tracks(dset: tp.Any) -> tp.Tuple[tp.List[TrackInfo], tp.List[TrackInfo],
                                         tp.List[TrackInfo]]:
    """Index the data set: (train, valid, test) track lists."""
    root = absolute_path(dset.musdb)
    cache = absolute_path(dset.metadata)
    tracks = {}
    for split in ['train', 'test']:
        tracks[split] = index_tracks(root / split, dset.sources, dset.samplerate, dset.channels,
                                     cache)
    valid_tracks = None if dset.valid_tracks is None else list(dset.valid_tracks)
    train, valid = split_valid(tracks['train'], valid_tracks, dset.valid_count)
    return train, valid, tracks['test']


def get_datasets(cfg: tp.Any) -> tp.Tuple[TrainSegments, StridedSegments, WholeTracks]:
    dset = cfg.dset
    train, valid, test = get_tracks(dset)
    segment = int(dset.segment * dset.samplerate)
    epoch_size = dset.epoch_size
    if epoch_size is None:
        epoch_size = max(1, math.ceil(sum(t.length for t in train) / segment))
    logger.info("Data: %d train, %d valid, %d test tracks; %d examples of %.1f s per epoch",
                len(train), len(valid), len(test), epoch_size, dset.segment)
    train_set = TrainSegments(train, dset.sources, segment, epoch_size, cfg.seed)
    valid_set = StridedSegments(valid, dset.sources, segment, int(dset.shift * dset.samplerate))
    return train_set, valid_set, WholeTracks(test, dset.sources)


def get_model(cfg: tp.Any) -> torch.nn.Module:
    klass = get_model_class(cfg.model)
    kwargs = OmegaConf.to_container(cfg[cfg.model], resolve=True)
    return klass(sources=list(cfg.dset.sources), audio_channels=cfg.dset.channels,
                 samplerate=cfg.dset.samplerate, segment=cfg.dset.segment, **kwargs)


def get_optimizer(cfg: tp.Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    optim = cfg.optim
    if optim.optim == 'adam':
        return torch.optim.Adam(model.parameters(), lr=optim.lr,
                                betas=(optim.beta1, optim.beta2),
                                weight_decay=optim.weight_decay)
    if optim.optim == 'adamw':
        return torch.optim.AdamW(model.parameters(), lr=optim.lr,
                                 betas=(optim.beta1, optim.beta2),
                                 weight_decay=optim.weight_decay)
    raise ValueError(f"Unknown optim.optim={optim.optim!r}: use adam or adamw.")


def get_scheduler(cfg: tp.Any, optimizer: torch.optim.Optimizer
                  ) -> tp.Optional[torch.optim.lr_scheduler.LRScheduler]:
    """Per-epoch schedule: linear warmup then, for `cosine`, a cosine decay to zero."""
    name = cfg.optim.lr_scheduler
    warmup = cfg.optim.warmup_epochs
    epochs = cfg.epochs
    if name is None and not warmup:
        return None
    if name not in (None, 'cosine'):
        raise ValueError(f"Unknown optim.lr_scheduler={name!r}: use null or cosine.")

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / warmup
        if name == 'cosine':
            progress = (epoch - warmup) / max(1, epochs - warmup)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
