"""A filter XP: the SDX23 recipe's automatic filter as a stage of a lineage.

With `filter.model=SIG`, `dora run` does not train: it judges every stem of the training set
(`dset.train_folder`, else `dset.musdb`/train) with the trained XP SIG (the purity test of
`separator.filtering`, decided by `filter.statistic`: the lineages of grids/sdx23*.py pass
`ccom`, the winner's, and may pass `filter.threshold=auto`) and writes `clean_<source>.txt`,
`silent_<source>.txt` and `scores.json` into the folder `filter/` of its own XP. Training
XPs use them with `dset.clean_lists=<this XP's signature>`.

Its history is one entry, `{'filter': {...}}`: the stems kept, the threshold that decided
(`threshold`; with 'auto', `threshold_bimodal`: false when it fell back to the statistic's
default), and precision / recall / F1 against the ground truth when the set has a
label-noise manifest. Dora's table shows it and a lineage (`separator.lineage`) knows the
stage is done. Running it again redoes the judgement.
"""
import functools
import logging
import sys
import typing as tp
from pathlib import Path

from . import distrib
from .data.clean_lists import filter_output
from .data.labelnoise import MANIFEST, load_manifest
from .filtering import AUTO, FilterConfig, evaluate, filter_folder, format_metrics
from .paths import absolute_path
from .pretrained import load_xp

logger = logging.getLogger(__name__)


def noisy_folder(dset: tp.Any) -> Path:
    """The training stems that a filter XP judges."""
    return absolute_path(dset.train_folder) if dset.train_folder else \
        absolute_path(dset.musdb) / 'train'


def run_filter(cfg: tp.Any, xp: tp.Any, device: str = 'cpu') -> dict:
    """The runner of a filter XP (`train.RUNNERS`): judge the training stems with XP
    `cfg.filter.model`; return (and record) the summary. It runs on the CPU, in
    `filter.workers` processes."""
    if distrib.world_size > 1:
        raise ValueError("A filter XP (filter.model set) runs as one process: run it without "
                         "-d, or with gpus=1 on Slurm; it spreads over `filter.workers` "
                         "processes itself.")
    params = cfg.filter
    config = FilterConfig(semitones=params.semitones, stretch=params.stretch,
                          threshold=params.threshold, silence_db=params.silence,
                          statistic=params.statistic)
    noisy = noisy_folder(cfg.dset)
    if not noisy.is_dir():
        raise FileNotFoundError(f"filter: no training set {noisy} to judge (dset.train_folder).")
    out = filter_output(xp.folder)
    logger.info("Filter: judging %s with XP %s (clean iff %s, %+g semitones, stretch %g)",
                noisy, params.model, config.describe(), config.semitones, config.stretch)
    loader = functools.partial(load_xp, params.model, Path(xp.folder).parent)
    result = filter_folder(loader, noisy, out, config, workers=params.workers,
                           progress=sys.stderr.isatty(), info={'model': params.model})
    kept = {source: len(result.clean_tracks(source)) for source in result.sources}
    summary: tp.Dict[str, tp.Any] = {'stems': sum(len(s) for s in result.scores.values()),
                                     'kept': sum(kept.values()),
                                     'threshold': result.threshold}
    if config.threshold == AUTO:
        summary['threshold_bimodal'] = bool(result.threshold_choice['bimodal'])
    logger.info("Filter: clean iff %s (%s)", config.describe(result.threshold),
                result.threshold_choice['method'])
    for source, count in kept.items():
        summary[f'kept_{source}'] = count
        logger.info("Filter: %s: %d clean, %d silent", source, count,
                    len(result.silent_tracks(source)))
    if (noisy / MANIFEST).exists():
        metrics = evaluate(result.decisions(), load_manifest(noisy))
        logger.info("Filter against the injected ground truth:\n%s", format_metrics(metrics))
        summary.update({key: metrics['overall'][key] for key in ('precision', 'recall', 'f1')})
        summary['f1_usable'] = metrics['usable']['f1']
        for source, prf in metrics['sources'].items():
            summary[f'f1_{source}'] = prf['f1']
    xp.link.update_history([{'filter': summary}])
    logger.info("Filter: clean lists in %s; train on them with dset.clean_lists=%s", out, xp.sig)
    return summary
