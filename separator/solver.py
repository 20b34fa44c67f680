"""The training loop: epochs of train / valid / test, checkpoints, exact resume, EMA, history.

Everything that changes during training is listed in `_state_dict` and saved atomically at
the end of every epoch. Randomness is not carried over from one epoch to the next: every
random generator is seeded from (seed, epoch) at the start of the epoch, so an XP killed at
any point and resumed replays the interrupted epoch exactly as if it had never stopped.

With DiffQ (`quant.diffq`), the quantizer's bit widths are parameters of the model (saved
with its state dict, the EMAs and the best state) with a param group of their own in the
optimizer; the size penalty joins the training loss, and validation and test, in eval
mode, run with the quantized weights (diffq's hooks swap them in for every forward).
"""
import concurrent.futures
import contextlib
import logging
import multiprocessing
import random
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from . import builders, distrib, lora
from .apply import apply_model
from .atomic import remove_temporaries
from .augment import augment
from .criterion import SourceLoss
from .curves import update_curves
from .data.segments import EpochSampler
from .ema import ModelEMA
from .experiment_log import ExperimentLog
from .memory import micro_batch_that_fits
from .metrics import bss_sdr, nsdr, trivial_estimates
from .progress import Progress
from .starting_weights import is_checkpoint_file, start_checkpoint
from .states import (DIFFQ_SUFFIX, architecture_difference, best_weights, checkpoint_path,
                     checkpoint_weights,
                     copy_state, has_checkpoint, load_checkpoint, promote_previous_checkpoint,
                     quantizer_kwargs, save_checkpoint, serialize_model, swap_state)
from .svd import svd_penalty

logger = logging.getLogger(__name__)


SVD_STREAM = 1_000_003   # the random stream of svd.proba (others: 0, 1, 2 + rank)


def _svd_settings(cfg: tp.Any) -> tp.Optional[dict]:
    """`svd`: the weight of the singular value penalty and its options, or None when off."""
    section = cfg.get('svd')
    if not section or not section.penalty:
        return None
    options = OmegaConf.to_container(section, resolve=True)
    return {'penalty': options.pop('penalty'), 'options': options}


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed for one epoch and one stream of randomness, well mixed by numpy."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class Solver:
    """Trains `model` on the data sets; `xp` is the Dora XP (folder, link, signature).

    `quantizer` (`builders.get_quantizer`) is a DiffQuantizer already set up on `model` and
    `optimizer`, or None. `criterion` (`builders.get_criterion`, by default) is the training
    and validation loss: the solver knows no loss by name.
    """

    def __init__(self, cfg: tp.Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: tp.Optional[tp.Any], datasets: tp.Sequence[tp.Any], xp: tp.Any,
                 device: str = 'cpu', quantizer: tp.Optional[tp.Any] = None,
                 criterion: tp.Optional[SourceLoss] = None):
        self.cfg = cfg
        self.model = model
        self.quantizer = quantizer
        self.dmodel = distrib.wrap(model)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_set, self.valid_set, self.test_set = datasets
        self.xp = xp
        self.link = xp.link
        self.history: tp.List[dict] = self.link.history
        self.device = device
        self.folder = Path(xp.folder)
        self.emas = [ModelEMA(model, decay, 'batch') for decay in cfg.ema.batch] + \
            [ModelEMA(model, decay, 'epoch') for decay in cfg.ema.get('epoch') or []]
        self.best_state: tp.Optional[dict] = None
        self.best_valid = float('inf')
        self.amp_dtype = _amp_dtype(cfg.optim.amp)
        self.scaler = torch.amp.GradScaler(torch.device(device).type,
                                           enabled=self.amp_dtype == torch.float16)
        if cfg.optim.accumulate < 1:
            raise ValueError(f"optim.accumulate={cfg.optim.accumulate} must be >= 1.")
        self._check_batch_size()
        self.micro_batch: tp.Optional[int] = cfg.optim.micro_batch
        self.svd = _svd_settings(cfg)
        self.svd_rng = random.Random(0)   # reseeded every epoch (`_seed`): exact resume
        self.criterion = criterion if criterion is not None else builders.get_criterion(
            cfg, model)

    # ---------------------------------------------------------------- state
    def _check_batch_size(self) -> None:
        if self.cfg.batch_size % distrib.world_size:
            raise ValueError(f"batch_size={self.cfg.batch_size} is global and must be divisible "
                             f"by the number of processes ({distrib.world_size}).")
        self.batch_size = self.cfg.batch_size // distrib.world_size

    def _train_loss(self, mix: torch.Tensor, sources: torch.Tensor
                    ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        """The training loss of a batch and its per-source losses `[B, S]`."""
        with self._autocast():
            # Through the DDP wrapper, whose forward synchronises the gradients.
            output = self.dmodel(mix, **self.criterion.model_kwargs)
        return self.criterion(output, mix, sources)

    def _state_dict(self) -> dict:
        return {
            'model': copy_state(self.model.state_dict()),
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict() if self.scheduler else None,
            'scaler': self.scaler.state_dict(),
            'emas': [ema.state_dict() for ema in self.emas],
            'best_state': self.best_state,
            'best_valid': self.best_valid,
            'history': list(self.history),
            'package': serialize_model(self.model, state={}),
            'quantizer': quantizer_kwargs(self.quantizer) if self.quantizer else None,
            'sig': self.xp.sig,
            'world_size': distrib.world_size,
            'micro_batch': self.micro_batch,
            'lora': lora.options(self.cfg),
        }

    def _load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state['scheduler'])
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        for ema, ema_state in zip(self.emas, state['emas']):
            ema.load_state_dict(ema_state)
        self.best_state = state['best_state']
        self.best_valid = state['best_valid']
        if self.cfg.optim.micro_batch is None and state.get('micro_batch'):
            self.micro_batch = state['micro_batch']      # as this XP was computed so far
        self.link.update_history(state['history'])

    def restore(self) -> None:
        """Resume from this XP's checkpoint (from the previous one, one epoch older, when the
        latest cannot be read), or start from `continue_from`'s weights."""
        path = checkpoint_path(self.folder)
        if distrib.is_master():
            # A kill in the middle of a save leaves a partial copy; each would stay forever.
            for tmp in remove_temporaries(path):
                logger.info("Removed %s, left by a save that was interrupted", tmp.name)
        if has_checkpoint(self.folder):
            state, source = load_checkpoint(self.folder)
            self._load_state_dict(state)   # the history too: that of the checkpoint read
            logger.info("Resumed from %s at epoch %d", source, len(self.history))
            before = state.get('world_size', distrib.world_size)
            if before != distrib.world_size:
                # Each rank draws its own augmentations: same global batches, other draws.
                logger.warning("This XP ran on %d process(es) and resumes on %d: training "
                               "goes on, but not bitwise as it would have on %d (each process "
                               "draws its own augmentations).", before, distrib.world_size,
                               before)
            distrib.barrier()              # every rank has read it before it is renamed
            if source != path and distrib.is_master():
                promote_previous_checkpoint(self.folder)
        elif self.cfg.continue_from:
            state = start_checkpoint(self.cfg, self.folder)
            weights = checkpoint_weights(state) if state.get('lora') else best_weights(state)
            if lora.options(self.cfg):
                weights = lora.to_adapted_names(weights, self.model)
            try:
                self.model.load_state_dict(
                    _with_own_bit_widths(weights, self.model.state_dict()))
            except RuntimeError:
                raise ValueError(f"continue_from={self.cfg.continue_from}: "
                                 f"{architecture_difference(state, self.model)}") from None
            for ema in self.emas:
                ema.state = copy_state(self.model.state_dict())
            logger.info("Starting from the weights of %s %s", 'file' if is_checkpoint_file(
                self.cfg.continue_from) else 'XP', self.cfg.continue_from)
        if not has_checkpoint(self.folder) and self.history and distrib.is_master():
            # A history without a checkpoint is stale (the checkpoint was removed): start over.
            self.link.update_history([])

    def _save_checkpoint(self) -> None:
        """The checkpoint it replaces becomes `checkpoint.prev.th`: the fallback if it breaks."""
        if distrib.is_master():
            save_checkpoint(self._state_dict(), self.folder)

    # ---------------------------------------------------------------- stages
    def _seed(self, epoch: int) -> torch.Generator:
        """Seed every RNG for this epoch; return the generator used for augmentation."""
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch, 0))
        np.random.seed(epoch_seed(self.cfg.seed, epoch, 1) % 2 ** 32)
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.cfg.seed, epoch, 2 + distrib.rank))
        # svd.proba's draws: one stream for every rank, so that all skip the same batches.
        self.svd_rng.seed(epoch_seed(self.cfg.seed, epoch, SVD_STREAM))
        return generator

    def _loader(self, dataset: tp.Any, sampler: tp.Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.cfg.misc.num_workers, drop_last=False)

    def _train_epoch(self, epoch: int) -> dict:
        generator = self._seed(epoch)
        # Padded: every rank runs the same number of steps (each one a DDP collective).
        sampler = EpochSampler(len(self.train_set), distrib.rank, distrib.world_size, pad=True)
        sampler.set_epoch(epoch)
        loader = self._loader(self.train_set, sampler)
        total = len(loader)
        if self.cfg.max_batches:
            total = min(total, self.cfg.max_batches)
        self.dmodel.train()
        sums: tp.Dict[str, float] = {}
        count = 0
        progress = Progress(logger, loader, f'Train {epoch + 1}', self.cfg.misc.num_prints,
                            total)
        accumulate = self.cfg.optim.accumulate
        grad_norm = 0.
        self.optimizer.zero_grad()
        for index, sources in enumerate(progress):
            if index >= total:
                break
            sources = augment(sources.to(self.device), generator, self.cfg.augment)
            mix = sources.sum(1)
            step = (index + 1) % accumulate == 0 or index + 1 == total
            loss, losses, size = self._backward(mix, sources, step, accumulate)
            if step:
                self.scaler.unscale_(self.optimizer)
                grad_norm = self._clip_gradients()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad()
                for ema in self.emas:
                    if ema.unit == 'batch':
                        ema.update()
            values = {'loss': loss, 'grad': grad_norm}
            if size is not None:
                values['ms'] = size
            for name, value in zip(self.cfg.dset.sources, losses.mean(0).tolist()):
                values[name] = value
            for key, value in values.items():
                sums[key] = sums.get(key, 0.) + value
            count += 1
            progress.update(**{key: sums[key] / count for key in ('loss', 'grad', 'ms')
                               if key in sums})
        if self.scheduler is not None:
            self.scheduler.step()
        for ema in self.emas:
            if ema.unit == 'epoch':
                ema.update()
        return distrib.average({key: value / max(count, 1) for key, value in sums.items()},
                               count)

    def _backward(self, mix: torch.Tensor, sources: torch.Tensor, step: bool, accumulate: int
                  ) -> tp.Tuple[float, torch.Tensor, tp.Optional[float]]:
        """Add the gradients of one batch, `self.micro_batch` examples at a time (the loss is
        a mean over examples: each part weighs its share of the batch, so the gradients are
        those of the whole batch; loss truncation ranks within each part). Returns the loss,
        the per-source losses `[B, S]` and DiffQ's size estimate (MB), or None."""
        size = None
        total, parts = 0., []
        starts = range(0, len(sources), self.micro_batch or len(sources))
        for start in starts:
            part = slice(start, start + (self.micro_batch or len(sources)))
            # Under DDP, gradients are all-reduced on the last backward of a step only.
            last = step and start == starts[-1]
            sync = contextlib.nullcontext() if last or self.dmodel is self.model \
                else self.dmodel.no_sync()
            with sync:
                loss, losses = self._train_loss(mix[part], sources[part])
                objective = loss * (len(losses) / len(sources))
                if self.quantizer is not None and start == 0:
                    size = self.quantizer.model_size()  # MB, differentiable
                    objective = objective + self.cfg.quant.diffq * size
                if self.svd and start == 0:     # once per batch, every rank alike
                    objective = objective + self.svd['penalty'] * svd_penalty(
                        self.model, rng=self.svd_rng, **self.svd['options'])
                self.scaler.scale(objective / accumulate).backward()
            total += loss.item() * (len(losses) / len(sources))
            parts.append(losses.detach())
        return total, torch.cat(parts), None if size is None else size.item()

    def _fit_micro_batch(self) -> None:
        """On a CPU, the examples of a batch that fit in memory at once (`memory.py`),
        measured once per XP and kept in its checkpoint, so that a resumed XP computes as
        before. On a GPU, and with `optim.micro_batch` set, nothing is measured."""
        if self.micro_batch or self.device != 'cpu' or not len(self.train_set):
            return
        def loss_of(sources: torch.Tensor) -> torch.Tensor:   # not through DDP: no collective
            mix = sources.sum(1)
            with self._autocast():
                output = self.model(mix, **self.criterion.model_kwargs)
            return self.criterion(output, mix, sources)[0]
        fits = micro_batch_that_fits(self.model, self.train_set[0].to(self.device),
                                     self.batch_size, loss_of, distrib.world_size)
        if fits < self.batch_size:
            logger.warning("A batch of %d per process does not fit in this machine's memory: "
                           "it is computed %d example(s) at a time (the same gradients, more "
                           "slowly; optim.micro_batch chooses). This XP is sized for a GPU: "
                           "Ctrl-C stops it, `dora run -f %s` resumes it.", self.batch_size,
                           fits, self.xp.sig)
        self.micro_batch = fits

    def _autocast(self) -> tp.ContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.amp_dtype)

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.optim.clip_grad if self.cfg.optim.clip_grad > 0 else float('inf')
        return torch.nn.utils.clip_grad_norm_(params, max_norm).item()

    @torch.no_grad()
    def _valid_loss(self, state: tp.Optional[dict]) -> dict:
        """Validation losses with `state` loaded (None: the current weights)."""
        with swap_state(self.model, state):
            return self._valid_loss_of_model()

    def _valid_loss_of_model(self) -> dict:
        sampler = EpochSampler(len(self.valid_set), distrib.rank, distrib.world_size)
        self.model.eval()
        sums: tp.Dict[str, float] = {}
        count = 0
        for sources in self._loader(self.valid_set, sampler):
            sources = sources.to(self.device)
            with self._autocast():
                estimate = self.model(sources.sum(1))
            loss, losses = self.criterion.validation(estimate, sources)
            batch = len(sources)
            per_source = losses.sum(0)
            values = {'loss': loss.item() * batch}
            for name, value in zip(self.cfg.dset.sources, per_source.tolist()):
                values[name] = value
            for key, value in values.items():
                sums[key] = sums.get(key, 0.) + value
            count += batch
        return distrib.average({key: value / max(count, 1) for key, value in sums.items()},
                               count)

    def _valid_epoch(self) -> dict:
        """Validate the weights and every EMA; keep the best of all as the best state."""
        if len(self.valid_set) == 0:
            self.best_state = copy_state(self.model.state_dict())
            return {}
        candidates = {'main': None}
        for ema in self.emas:
            candidates[ema.name] = ema.state
        results = {name: self._valid_loss(state) for name, state in candidates.items()}
        best_name = min(results, key=lambda name: results[name]['loss'])
        metrics = dict(results[best_name])
        metrics['best_of'] = best_name
        for name, result in results.items():
            if name != 'main' or len(results) > 1:
                metrics[f'loss_{name}'] = result['loss']
        if metrics['loss'] < self.best_valid:
            self.best_valid = metrics['loss']
            state = candidates[best_name]
            self.best_state = copy_state(state if state is not None
                                         else self.model.state_dict())
        metrics['best'] = self.best_valid
        return metrics

    def _should_test(self, epoch: int) -> bool:
        last = epoch + 1 == self.cfg.epochs
        return last or (self.cfg.test.every > 0 and (epoch + 1) % self.cfg.test.every == 0)

    @torch.no_grad()
    def evaluate(self, bss: bool = False) -> dict:
        """nSDR (and bss_eval's cSDR when `bss`) on the test set with the best state, plus
        trivial baselines."""
        if not distrib.is_master():
            return {}
        with swap_state(self.model, self.best_state):
            self.model.eval()
            scores, sdrs = self._test_scores(bss)
        sources = list(self.cfg.dset.sources)
        metrics = {}
        for key, values in scores.items():
            per_source = torch.stack(values).mean(0)
            metrics[key] = per_source.mean().item()
            for name, value in zip(sources, per_source.tolist()):
                metrics[f'{key}_{name}'] = value
        if sdrs is not None:
            with np.errstate(all='ignore'):
                per_source = np.nanmedian(sdrs, axis=0)
            metrics['sdr'] = float(np.nanmean(per_source))
            for name, value in zip(sources, per_source.tolist()):
                metrics[f'sdr_{name}'] = value
        return metrics

    def _test_scores(self, bss: bool
                     ) -> tp.Tuple[tp.Dict[str, tp.List[torch.Tensor]], tp.Optional[np.ndarray]]:
        """Per test track: the nSDR of the model and of the trivial estimates (name -> one
        [S] tensor per track), and bss_eval's SDR [tracks, S] when `bss` (test.sdr_impl: torch
        in this process, museval in test.workers processes)."""
        test = self.cfg.test
        count = len(self.test_set)
        if test.max_tracks:
            count = min(count, test.max_tracks)
        scores: tp.Dict[str, tp.List[torch.Tensor]] = {}
        pool = None
        futures = []
        impl = test.get('sdr_impl', 'torch')
        if bss and impl == 'museval' and test.workers > 0:
            # Forked children of a process that ran torch's OpenMP threads can deadlock.
            context = multiprocessing.get_context('spawn')
            pool = concurrent.futures.ProcessPoolExecutor(test.workers, mp_context=context)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        try:
            for index in Progress(logger, range(count), 'Test', self.cfg.misc.num_prints):
                _name, mix, references = self.test_set[index]
                estimates = apply_model(self.model, mix.to(self.device), overlap=test.overlap,
                                        shifts=test.shifts, split=test.split,
                                        generator=generator).cpu()
                scores.setdefault('nsdr', []).append(nsdr(references, estimates))
                for baseline, guess in trivial_estimates(mix, len(references)).items():
                    scores.setdefault(f'nsdr_{baseline}', []).append(nsdr(references, guess))
                if bss:
                    args = (references, estimates, self.cfg.dset.samplerate, impl)
                    futures.append(pool.submit(bss_sdr, *args) if pool
                                   else _Done(bss_sdr(*args)))
            sdrs = np.stack([future.result() for future in futures]) if futures else None
        finally:
            if pool is not None:
                pool.shutdown()
        return scores, sdrs

    # ---------------------------------------------------------------- main loop
    def train(self) -> None:
        self.restore()
        self._fit_micro_batch()
        for epoch, metrics in enumerate(self.history):
            logger.info("Epoch %d (replayed from history): %s", epoch + 1, _format(metrics))
        # TensorBoard / W&B (config `logging`), rank 0 only; continues the XP's records.
        experiment_log = ExperimentLog(self.cfg.get('logging'), self.xp, self.cfg,
                                       self.history)
        try:
            for epoch in range(len(self.history), self.cfg.epochs):
                self._run_epoch(epoch, experiment_log)
        finally:
            experiment_log.close()
        self.summary()

    def _run_epoch(self, epoch: int, experiment_log: ExperimentLog) -> None:
        """Train, validate (and test) one epoch; record it in the history, the checkpoint,
        curves.png and the experiment log."""
        begin = time.time()
        # The rate this epoch trains with (the scheduler steps at its end).
        metrics = {'lr': self.optimizer.param_groups[0]['lr']}
        metrics['train'] = self._train_epoch(epoch)
        metrics['valid'] = self._valid_epoch()
        if self._should_test(epoch):
            last = epoch + 1 == self.cfg.epochs
            metrics['test'] = self.evaluate(bss=last and self.cfg.test.sdr)
        metrics['duration'] = time.time() - begin
        self.history.append(metrics)
        # Before the checkpoint: an epoch logged, then killed before its checkpoint, is
        # replayed and logged again over it (TensorBoard purges).
        experiment_log.log_epoch(epoch + 1, metrics)
        self._save_checkpoint()
        if distrib.is_master():
            self.link.update_history(self.history)
            # curves.png: a failure is a warning, never the end of the XP.
            update_curves(self.folder, self.history, self.xp.sig, list(self.cfg.dset.sources))
        logger.info("Epoch %d: %s", epoch + 1, _format(metrics))

    def summary(self) -> None:
        """Print the last test metrics next to the trivial baselines."""
        tests = [metrics['test'] for metrics in self.history if metrics.get('test')]
        if not tests or not distrib.is_master():
            return
        test = tests[-1]
        sources = list(self.cfg.dset.sources)
        rows = [('model nSDR', 'nsdr'), ('mixture', 'nsdr_mixture'),
                ('mixture / S', 'nsdr_mixture_split'), ('silence', 'nsdr_silence')]
        if 'sdr' in test:
            rows.insert(1, ('model cSDR (bss_eval)', 'sdr'))
        header = f"{'':22}" + ''.join(f'{name:>9}' for name in sources + ['mean'])
        lines = [header]
        for label, key in rows:
            values = [test[f'{key}_{name}'] for name in sources] + [test[key]]
            lines.append(f'{label:22}' + ''.join(f'{value:9.2f}' for value in values))
        logger.info("Test results of XP %s (dB):\n%s\nOutputs in %s", self.xp.sig,
                    '\n'.join(lines), self.folder)


def _with_own_bit_widths(weights: dict, own: dict) -> dict:
    """`weights` of another XP for a model whose state dict is `own`: DiffQ bit widths
    (`*_diffq`) that the model lacks are dropped, those that `weights` lack keep their own
    value, so that a DiffQ XP can start from a float one and the other way round."""
    kept = {key: value for key, value in weights.items()
            if not key.endswith(DIFFQ_SUFFIX) or key in own}
    kept.update({key: value for key, value in own.items()
                 if key.endswith(DIFFQ_SUFFIX) and key not in weights})
    return kept


def _amp_dtype(amp: tp.Optional[str]) -> tp.Optional[torch.dtype]:
    dtypes = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
    if amp not in dtypes:
        raise ValueError(f"optim.amp={amp!r}: use null, bf16 or fp16.")
    return dtypes[amp]


class _Done:
    """A finished future, for evaluation without worker processes."""

    def __init__(self, value: tp.Any):
        self.value = value

    def result(self) -> tp.Any:
        return self.value


def _format(metrics: dict) -> str:
    parts = []
    for stage in ('train', 'valid', 'test'):
        values = metrics.get(stage) or {}
        shown = {k: v for k, v in values.items()
                 if k in ('loss', 'ms', 'best', 'nsdr', 'sdr', 'nsdr_mixture')}
        if shown:
            parts.append(stage + ' ' + ' '.join(f'{k}={v:.4f}' for k, v in shown.items()))
    return ' | '.join(parts)
