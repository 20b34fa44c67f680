"""Optional logging of every epoch's metrics to TensorBoard and Weights & Biases.

Both are off by default (config section `logging`); each package is imported only when
enabled, and a missing one is a one-line error that says how to install it or turn it off.
Only rank 0 logs: on the other ranks the log does nothing.

Metrics are a history entry of the solver (`{'lr': ..., 'train': {...}, 'valid': {...},
'test': {...}, 'duration': ...}`), logged flat (`train/loss`, `test/nsdr_vocals`, `lr`) at
the step of the epoch number, from 1 as the training log counts. Strings (`valid/best_of`)
are not scalars and are left out.

A resumed XP continues the same records:
- TensorBoard writes into `<XP folder>/tensorboard`, always the same folder. On resume the
  new writer purges the epochs after the checkpoint (`purge_step`): an epoch logged by a
  run killed before its checkpoint was saved is replayed, and only the replay is shown.
- W&B's run id is kept in `<XP folder>/.wandb_run_id` and reused on resume
  (`resume='allow'`); the run's name is the XP signature, its config the XP's config.
  An XP that starts over from epoch 1 (its checkpoint removed) gets a new run id.
  W&B buffers records in a process of its own: a killed XP loses its last epochs there
  (an offline run file can be left empty), so each start first logs the epochs of the
  history that the run lacks (`run.step`, the last step it holds; 0 offline, where every
  start is a folder of its own: each one then holds the whole history so far).
A log that is new for an XP that already has epochs (logging turned on halfway: the
`logging` keys do not change the signature) first receives the epochs of its history.
"""
import logging
import typing as tp
import uuid
from pathlib import Path

from . import distrib
from .atomic import atomic_file

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = 'tensorboard'
WANDB_ID_FILE = '.wandb_run_id'
WANDB_MODES = ('offline', 'online', 'disabled')


def flatten(metrics: tp.Mapping[str, tp.Any], prefix: str = '') -> tp.Dict[str, float]:
    """`{'train': {'loss': 1.}, 'lr': 2.}` -> `{'train/loss': 1., 'lr': 2.}`: the numbers
    only (NaN and inf included: a diverging loss is worth seeing), no strings nor bools."""
    flat: tp.Dict[str, float] = {}
    for key, value in metrics.items():
        name = f'{prefix}{key}'
        if isinstance(value, tp.Mapping):
            flat.update(flatten(value, name + '/'))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _plain_config(config: tp.Any) -> tp.Dict[str, tp.Any]:
    """The XP's config as plain dicts and lists (OmegaConf resolved when it can be)."""
    if config is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:     # pragma: no cover - omegaconf comes with Hydra
        return dict(config)
    if isinstance(config, DictConfig):
        try:
            return OmegaConf.to_container(config, resolve=True)
        except Exception:   # an interpolation only Hydra resolves
            return OmegaConf.to_container(config, resolve=False)
    return dict(config)


def _missing(package: str, key: str) -> ValueError:
    return ValueError(f"logging.{key}=true needs the `{package}` package, which is not "
                      f"installed: `pip install {package}`, or set logging.{key}=false.")


def _has_events(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob('events.out.tfevents.*'))


class ExperimentLog:
    """TensorBoard and W&B logs of one XP, as `section` (the config's `logging`) asks.

    `xp`: the Dora XP (`sig`, `folder`, and `argv`, the overrides, if it has them);
    `config`: the XP's whole config, attached to the records; `history`: the epochs already
    done (those of a resumed XP), to continue after them."""

    def __init__(self, section: tp.Optional[tp.Mapping[str, tp.Any]], xp: tp.Any,
                 config: tp.Any = None, history: tp.Sequence[dict] = ()):
        self.writer: tp.Any = None
        self.run: tp.Any = None
        self.folder = Path(xp.folder)
        if not section or not distrib.is_master():
            return
        done = len(history)
        self.config = _plain_config(config)
        self.config['xp'] = {'sig': xp.sig, 'argv': list(getattr(xp, 'argv', None) or []),
                             'folder': str(self.folder)}
        try:
            if section.get('tensorboard', False):
                # A new folder gets the history; an old one has it (flushed every epoch).
                first = 1 if self._open_tensorboard(done) else done + 1
                self._replay(history, first, self._log_tensorboard, 'TensorBoard')
            if section.get('wandb', False):
                self._open_wandb(section, xp.sig, done)
                # The epochs the run lacks: all for a new run, or an offline one (each
                # start is a new offline folder), those lost by a kill for an online run
                # (W&B buffers them in its own process).
                self._replay(history, self.run.step + 1, self._log_wandb, 'W&B')
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- opening
    def _open_tensorboard(self, done: int) -> bool:
        """Open the writer; return whether its folder is new (nothing logged before)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing('tensorboard', 'tensorboard') from None
        log_dir = self.folder / TENSORBOARD_DIR
        fresh = not _has_events(log_dir)
        # The first epoch to log is done + 1: any later one already there is orphaned.
        self.writer = SummaryWriter(str(log_dir), purge_step=None if fresh else done + 1)
        if fresh:
            import yaml
            text = yaml.safe_dump(self.config, sort_keys=False)
            # Markdown: indented lines are shown as code.
            self.writer.add_text('config', '\n'.join('    ' + line
                                                     for line in text.splitlines()), 0)
        logger.info("TensorBoard log in %s (`tensorboard --logdir %s`)", log_dir, log_dir)
        return fresh

    def _run_id(self, sig: str, done: int) -> tp.Tuple[str, bool]:
        """The W&B run id of this XP, and whether it is new (kept in the XP folder)."""
        path = self.folder / WANDB_ID_FILE
        if done and path.is_file():
            run_id = path.read_text().strip()
            if run_id:
                return run_id, False
        run_id = f'{sig}-{uuid.uuid4().hex[:8]}'
        with atomic_file(path) as fout:
            fout.write(run_id + '\n')
        return run_id, True

    def _open_wandb(self, section: tp.Mapping[str, tp.Any], sig: str, done: int) -> None:
        """Start or resume the W&B run."""
        mode = section.get('wandb_mode', 'offline')
        if mode not in WANDB_MODES:
            raise ValueError(f"logging.wandb_mode={mode!r}: use one of "
                             f"{', '.join(WANDB_MODES)}.")
        try:
            import wandb
        except ImportError:
            raise _missing('wandb', 'wandb') from None
        run_id, fresh = self._run_id(sig, done)
        # console='off': W&B does not wrap stdout/stderr (the training log and the one-line
        # errors stay as they are); silent: no banner in the training log.
        settings = wandb.Settings(console='off', silent=True)
        try:
            self.run = wandb.init(
                project=section.get('wandb_project') or 'separator',
                entity=section.get('wandb_entity') or None, name=sig, id=run_id,
                resume='allow', mode=mode, dir=str(self.folder), config=self.config,
                settings=settings, reinit='create_new')
        except Exception as error:
            raise ValueError(f"logging.wandb=true: W&B could not start run {run_id} "
                             f"(logging.wandb_mode={mode}): {type(error).__name__}: {error}. "
                             f"Online mode needs `wandb login`; logging.wandb_mode=offline "
                             f"needs no network.") from error
        logger.info("W&B run %s (%s, %s) in %s%s", run_id, 'new' if fresh else 'resumed',
                    mode, Path(self.run.dir).parent, "; `wandb sync` uploads it"
                    if mode == 'offline' else '')

    def _replay(self, history: tp.Sequence[dict], first: int,
                log: tp.Callable[[int, tp.Dict[str, float]], None], name: str) -> None:
        """Log the epochs of the history from number `first` (from 1) on."""
        if len(history) >= first:
            logger.info("%s: logging epochs %d to %d of the history", name, first,
                        len(history))
        for epoch in range(first, len(history) + 1):
            log(epoch, flatten(history[epoch - 1]))

    # ---------------------------------------------------------------- logging
    @property
    def enabled(self) -> bool:
        return self.writer is not None or self.run is not None

    def _log_tensorboard(self, epoch: int, flat: tp.Dict[str, float]) -> None:
        for key, value in flat.items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()            # on disk now: a killed XP keeps its curves

    def _log_wandb(self, epoch: int, flat: tp.Dict[str, float]) -> None:
        self.run.log(dict(flat), step=epoch)

    def log_epoch(self, epoch: int, metrics: tp.Mapping[str, tp.Any]) -> None:
        """Log the history entry `metrics` of epoch number `epoch` (from 1)."""
        if not self.enabled:
            return
        flat = flatten(metrics)
        if self.writer is not None:
            self._log_tensorboard(epoch, flat)
        if self.run is not None:
            self._log_wandb(epoch, flat)

    def close(self) -> None:
        """Flush and close the logs (safe to call twice)."""
        writer, run = self.writer, self.run
        self.writer = self.run = None
        try:
            if writer is not None:
                writer.close()
        finally:
            if run is not None:
                run.finish()

    def __enter__(self) -> 'ExperimentLog':
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        self.close()
