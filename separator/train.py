"""Dora/Hydra entry point: `dora run [overrides]` runs one XP.

Checks the config, sets up the processes and the data, then hands the XP to the runner of
its task (`RUNNERS`, chosen by `task_of(cfg)`): training (`train_model`: everything built
through `builders`, then the `Solver`), or a filter stage of a lineage
(`filter_stage.run_filter`). A new kind of XP is one runner and one line of `task_of`.
"""
import logging
import sys
import typing as tp

import torch
from dora import get_xp, hydra_main
from omegaconf import OmegaConf

from . import builders, distrib
from .config_checks import ConfigError, check_config
from .filter_stage import run_filter
from .solver import Solver

logger = logging.getLogger(__name__)
# `dora run -d` imports this module before it starts its workers.
distrib.explain_worker_deaths()
distrib.allow_cpu_ddp()


def train_model(cfg: tp.Any, xp: tp.Any, device: str) -> None:
    """The runner of a training XP: model, criterion, data, optimizer, quantizer, scheduler
    from `builders`, then `Solver.train` (or, with `misc.show`, print the model)."""
    torch.manual_seed(cfg.seed)
    model = builders.get_model(cfg, xps=xp.folder.parent).to(device)
    size = sum(p.numel() for p in model.parameters())
    logger.info("Model %s: %.2f M parameters", cfg.model, size / 1e6)
    if cfg.misc.show:
        print(model)
        print(f"Size: {size / 1e6:.2f} M parameters, {4 * size / 2 ** 20:.1f} MB")
        return
    criterion = builders.get_criterion(cfg, model)
    datasets = builders.get_datasets(cfg, xps=xp.folder.parent)
    optimizer = builders.get_optimizer(cfg, model)
    # DiffQ adds its bit widths to the model and to the optimizer: before the scheduler sees
    # the param groups, before the solver wraps the model for DDP and restores.
    quantizer = builders.get_quantizer(cfg, model, optimizer)
    scheduler = builders.get_scheduler(cfg, optimizer)
    solver = Solver(cfg, model, optimizer, scheduler, datasets, xp, device, quantizer,
                    criterion)
    solver.train()


RUNNERS: tp.Dict[str, tp.Callable[[tp.Any, tp.Any, str], tp.Any]] = {
    'train': train_model,
    'filter': run_filter,     # filter.model=SIG: judge the training stems, do not train
}


def task_of(cfg: tp.Any) -> str:
    """The kind of XP a config describes: a key of `RUNNERS`."""
    return 'filter' if cfg.filter.model else 'train'


@hydra_main(config_path='../conf', config_name='config', version_base='1.3')
def main(cfg):
    xp = get_xp()
    # Dora does not print the signature: it is how a user finds this XP again.
    print(f"XP signature: {xp.sig}  (folder {xp.folder})", flush=True)
    # Hydra's job logging writes to the console and to train.log in the XP folder.
    logging.getLogger().setLevel(logging.DEBUG if cfg.misc.verbose else logging.INFO)
    logger.info("XP %s in %s", xp.sig, xp.folder)
    logger.debug(OmegaConf.to_yaml(cfg))
    try:
        check_config(cfg)
    except ConfigError as error:    # before any work: one line, no traceback
        print(f"separator: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    distrib.init()
    if distrib.world_size > 1:
        logger.info("Distributed: rank %d of %d", distrib.rank, distrib.world_size)
        if not distrib.is_master():
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for all
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if distrib.is_master():
        builders.ensure_synthetic(cfg.dset)
        builders.ensure_labelnoise(cfg.dset)
    distrib.barrier()
    try:
        RUNNERS[task_of(cfg)](cfg, xp, device)
    except Exception as error:
        if distrib.world_size > 1:  # say which process failed and why, in its own log
            logger.error("Rank %d of %d failed: %s: %s", distrib.rank, distrib.world_size,
                         type(error).__name__, error)
        raise


if __name__ == '__main__':
    sys.exit(main())
