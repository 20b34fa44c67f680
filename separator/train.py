"""Dora/Hydra entry point: `dora run [overrides]` runs one XP.

Checks the config, sets up the processes and the data, then hands the XP to the runner of
its task (`RUNNERS`, chosen by `task_of(cfg)`): training (`train_model`: everything built
through `builders`, then the `Solver`), or a filter stage of a lineage
(`filter_stage.run_filter`). A new kind of XP is one runner and one line of `task_of`.
"""
import logging
import os
import shutil
import sys
import typing as tp
from pathlib import Path

import torch
from dora import get_xp, hydra_main
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from . import builders, distrib, lora
from .checkpointing import enable_checkpointing
from .config_checks import (ConfigError, check_config, check_data_choice,
                            explain_config_errors, recover_signatures, show_full_overrides)
from .filter_stage import run_filter
from .malloc import keep_freed_memory
from .slurm import explain_missing_slurm
from .solver import Solver
from .states import has_checkpoint, registry_name
from .threads import set_threads

logger = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parent.parent / 'conf'
# `dora run -d` imports this module before it starts its workers.
distrib.explain_worker_deaths()
distrib.allow_cpu_ddp()
explain_missing_slurm()


def train_model(cfg: tp.Any, xp: tp.Any, device: str) -> None:
    """The runner of a training XP: model, criterion, data, optimizer, quantizer, scheduler
    from `builders`, then `Solver.train` (or, with `misc.show`, print the model)."""
    torch.manual_seed(cfg.seed)
    model = builders.get_model(cfg, xps=xp.folder.parent, folder=xp.folder).to(device)
    adapters = lora.options(cfg)
    if adapters:
        layers = lora.add_lora(model, **adapters)
        logger.info("LoRA rank %d on %d layer(s); every other weight frozen", adapters['rank'],
                    len(layers))
    if cfg.optim.get('checkpointing'):
        layers = enable_checkpointing(model)
        if layers:
            logger.info("optim.checkpointing: %d layer(s) recomputed in the backward pass",
                        len(layers))
        else:
            logger.warning("optim.checkpointing: model=%s has no transformer or LSTM layer to "
                           "recompute; it trains as without", cfg.model)
    size = sum(p.numel() for p in model.parameters())
    logger.info("Model %s: %.2f M parameters", registry_name(model), size / 1e6)
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


def _local_processes() -> int:
    """The processes of this XP on this machine (DDP workers, or Slurm tasks per node)."""
    for name in ('LOCAL_WORLD_SIZE', 'SLURM_NTASKS_PER_NODE'):
        value = os.environ.get(name, '').split('(')[0]
        if value.isdigit():
            return int(value)
    return distrib.world_size


def _remove_if_empty(xp: tp.Any) -> None:
    """Remove the folder Dora made for an XP that never ran (no checkpoint, no history), so
    that a mistyped command leaves nothing behind. Under DDP the folder stays: it holds each
    rank's log (worker_N.log), the only place a rank's error is told whole."""
    if distrib.world_size == 1 and not has_checkpoint(xp.folder) and not xp.link.history:
        shutil.rmtree(xp.folder, ignore_errors=True)


def _interrupted(xp: tp.Any) -> str:
    done = len(xp.link.history)
    if not has_checkpoint(xp.folder):
        return (f"separator: interrupted in the first epoch of XP {xp.sig}, before its first "
                f"checkpoint: nothing was kept; run the same command to start it again.")
    return (f"separator: interrupted at epoch {done + 1} of XP {xp.sig}; `dora run -f "
            f"{xp.sig}` resumes it from its checkpoint (epoch {done}).")


RUNNERS: tp.Dict[str, tp.Callable[[tp.Any, tp.Any, str], tp.Any]] = {
    'train': train_model,
    'filter': run_filter,     # filter.model=SIG: judge the training stems, do not train
}


# Errors whose message says what is wrong and how to fix it (bad input, a missing or corrupt
# file, a full disk): shown as one line unless misc.verbose.
USER_ERRORS = (ValueError, OSError)


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
        recover_signatures(cfg, HydraConfig.get().overrides.task)
        check_config(cfg)
        for shadowed in check_data_choice(cfg, HydraConfig.get().overrides.task, CONF):
            logger.warning("The recipe replaces a key of the data set you chose: %s", shadowed)
    except ConfigError as error:    # before any work: one line, no traceback
        print(f"separator: error: {error}", file=sys.stderr, flush=True)
        _remove_if_empty(xp)
        sys.exit(2)
    distrib.init()
    if distrib.world_size > 1:
        logger.info("Distributed: rank %d of %d", distrib.rank, distrib.world_size)
        if not distrib.is_master():
            logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for all
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    threads = set_threads(cfg.misc.threads, _local_processes())
    logger.info("%d CPU thread(s) per process (misc.threads)", threads)
    if device == 'cpu' and cfg.misc.get('keep_freed_memory', True) and keep_freed_memory():
        logger.debug("malloc keeps freed memory for reuse (misc.keep_freed_memory)")
    try:
        if distrib.is_master():
            builders.ensure_synthetic(cfg.dset)
            builders.ensure_decoded(cfg.dset)
            builders.ensure_labelnoise(cfg.dset)
        distrib.barrier()
        RUNNERS[task_of(cfg)](cfg, xp, device)
    except KeyboardInterrupt:         # Ctrl-C: one line, status 130, nothing half written
        if distrib.is_master():
            print(_interrupted(xp), file=sys.stderr, flush=True)
        _remove_if_empty(xp)
        sys.exit(130)
    except Exception as error:
        if distrib.world_size > 1:  # say which process failed and why, in its own log
            logger.error("Rank %d of %d failed: %s: %s", distrib.rank, distrib.world_size,
                         type(error).__name__, error)
        if cfg.misc.verbose or not isinstance(error, USER_ERRORS):
            raise
        # Our own errors name the file or key and the fix: one line, no traceback.
        print(f"separator: error: {error} (misc.verbose=true shows where it happened)",
              file=sys.stderr, flush=True)
        _remove_if_empty(xp)
        sys.exit(1)


explain_config_errors(main)
show_full_overrides(main)

if __name__ == '__main__':
    sys.exit(main())
