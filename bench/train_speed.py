"""Training throughput: our solver's training step vs Demucs's own training loop (the `demucs`
4.1.0 package), side by side, with the learning curve of both.

    python -m bench.train_speed [--model demucs|hdemucs|htdemucs] [--batch-size 4] [--segment 4]
                          [--steps 2] [--repeats 15] [--threads 1] [--workers 0]
                          [--ema 0.9995 0.9999] [--every 4] [--data DIR] [--own-init]
                          [--tune-malloc none|ours|both] [--profile ROWS]
                          [--overrides KEY=VALUE ...]

What one step is, on both sides: read the batch from the data set through a DataLoader,
augment it, forward, L1 loss per source, backward, Adam step, every batch EMA updated.
Each side runs its own training code, unchanged:

* ours: `separator.solver.Solver._train_epoch`, the solver's own loop (EpochSampler and
  DataLoader as the solver builds them, `augment.augment`, `_backward`, GradScaler (off in
  fp32), `_clip_gradients`, Adam, `ModelEMA.update`), on a Solver built from the composed
  Hydra config (conf/, plus OVERRIDES) with `builders.get_model`, `get_datasets`,
  `get_criterion` and `get_optimizer`, as `separator.train` does. The micro-batch search of
  `Solver.train` (`_fit_micro_batch`, once per XP) is skipped: the whole batch is computed
  at once.
* theirs: `demucs.solver.Solver._run_one_epoch` with the model, optimizer (param groups as
  `demucs.train.get_optimizer` makes them, reproduced here: importing `demucs.train` needs
  demucs' Hydra conf/, which the package does not ship), data set (`demucs.wav.Wavset`) and
  loader (shuffled, `drop_last`) as `demucs.train.get_solver` builds them, their
  augmentations (Shift, FlipChannels, FlipSign, Scale, Remix, which their Solver builds from
  the `augment` section of their conf/config.yaml, whose defaults are used), their L1 loss,
  their gradient norm, their `ModelEMA` (unbiased) kept on the model's device.

The model: ours from `builders.get_model(cfg)`; theirs `demucs.hdemucs.HDemucs` (or
`demucs.htdemucs.HTDemucs`, or the time-domain `demucs.demucs.Demucs` of MDX21 Track A) with
the same hyper-parameters, mapped by `separator.importers.demucs.demucs_kwargs` (demucs'
`dconv_lstm` / `dconv_attn` are start indices, ours counts; our Demucs takes theirs'
keywords). By default both are small (`SMALL`: 16 channels, and for HTDemucs 256 bottom
channels and 2 transformer layers; for Demucs the model of `variant=mdx21_small`: depth 4,
BLSTM and local attention in the DConv of the 2 deepest layers, input normalised), to fit
this CPU; `--overrides` replaces
those (e.g. `--overrides` alone: conf/'s full size). Our default `compat=separator` pads the
input once to the model's valid length (at 4 s: 1 % longer for HDemucs, 0.4 % for
HTDemucs) where demucs pads at every layer: `--overrides hdemucs.channels=16
hdemucs.compat=demucs` runs ours with demucs' padding. Both are built
after `torch.manual_seed(seed)`, then ours' initial weights are copied into theirs (the two
store the same tensors under other names), so that the learning curves start from the same
weights (`--own-init`: each keeps its own).

The data: a synthetic set in the MUSDB layout (`separator.data.synthetic`, 6 training tracks
of 20 s by default, the last 2 held out for validation by our config, so both train on the
same 4). Ours draws random segments of `--segment` seconds; theirs reads strided segments of
`segment + dset.shift` seconds that their Shift crops to `segment`, as demucs trains, so
both models see `--segment` seconds. Demucs' data set normalises each track by its mixture's
std by default (`dset.normalize`); here it is off so that the two losses are in the same
units (the cost of that division is negligible). Demucs' default repitch (0.2, soundstretch
in the loader) is off, as ours (`augment.repitch.proba` 0). torchaudio's `load` needs
torchcodec, which is not installed: `demucs.wav`'s torchaudio is replaced by a soundfile
reader (same partial reads as ours: `frame_offset`, `num_frames`); `demucs.audio` imports
`lameenc` (MP3 export) at import time: a placeholder module stands in when it is missing.

The timing: each side lives in a process of its own (its own allocator, RNG and threads;
`--threads` each), and the two take turns, never running at once: `--repeats` rounds of one
epoch of `--steps` steps each, in alternating order (ABBA), after one untimed warm-up epoch
each (the two build at once, untimed). Printed: steps/s and segments/s (the median over
rounds, and the spread), the user and system CPU seconds and minor page faults per step of
the process (medians), its peak resident memory (theirs' process also built our model once,
to copy its weights), the ratio ours / theirs of the median rates, the median of the
per-round ratios, and the ratio of CPU seconds, which other processes disturb less than the
wall clock. On a shared CPU the wall clock is noisy: read the spread; one thread per side
(the default) is the least disturbed.
Loader workers (`--workers`) default to 0: the data loading is then part of every step on
both sides (a new DataLoader per epoch would otherwise start workers every round).

`--tune-malloc ours` (the default) calls glibc's `mallopt` in our process only, as `dora run`
does for a CPU XP (`separator.malloc`: freed memory is kept for reuse instead of being
returned to the system, so each step's large activations stop page-faulting anew; the sys
seconds and faults columns show it). `none`: neither side, our training loop alone against
theirs. `both`: the gain is the allocator's, open to any PyTorch process: it shows what is
left to the training loops themselves.

The learning curve: every step of the warm-up and timed epochs trains (the same weights at
start, the same learning rate and batch): the training loss, averaged over every `--every`
steps, side by side, and the loss divided by that of silence on the same batch (the mean
absolute value of its augmented sources: 1 while the model outputs next to nothing, lower
as it separates). The batches differ (each side draws its own segments and augmentations),
and for the first tens of steps the loss is mostly the loudness of the batch: the relative
loss is the one to compare; the curves agree within the noise of the batches, not step for
step. Recording them costs one `.item()` and one mean of the batch per step, on both sides.

`--profile ROWS`: after all that, one more epoch per side under torch.profiler, and its top
ROWS operators by self CPU time (that epoch trains too, after the curves were taken).
"""
# Not bench/train.py: Dora takes any package with a `train.py` for a candidate, and a second
# one makes `dora run` without -P refuse to choose.
import argparse
import contextlib
import io
import random
import resource
import statistics
import sys
import tempfile
import time
import types
import typing as tp
import warnings
from pathlib import Path

import soundfile as sf
import torch
import torch.multiprocessing as mp

from separator.malloc import keep_freed_memory

from .ddp import _config

SMALL = {'demucs': ['demucs.channels=16', 'demucs.depth=4', 'demucs.dconv_depth=1',
                    'demucs.dconv_lstm=2', 'demucs.dconv_attn=2', 'demucs.normalize=true'],
         'hdemucs': ['hdemucs.channels=16'],
         'htdemucs': ['htdemucs.channels=16', 'htdemucs.bottom_channels=256',
                      'htdemucs.t_layers=2']}


# ------------------------------------------------------------------------------ data

def synthetic_root(path: str, tracks: int, seconds: float) -> Path:
    """A synthetic MUSDB-layout set at `path` (written if missing)."""
    from separator.data.synthetic import write_dataset
    root = Path(path)
    write_dataset(root, tracks_train=tracks, tracks_test=1, seconds=seconds, verbose=False)
    return root


class _SoundfileAudio(types.SimpleNamespace):
    """What `demucs.wav` asks of torchaudio (`load`, `info`), read with soundfile."""

    @staticmethod
    def load(path: tp.Any, frame_offset: int = 0, num_frames: int = -1
             ) -> tp.Tuple[torch.Tensor, int]:
        with sf.SoundFile(str(path)) as handle:
            if frame_offset:
                handle.seek(frame_offset)
            data = handle.read(num_frames, dtype='float32', always_2d=True)
            return torch.from_numpy(data.T.copy()), handle.samplerate

    @staticmethod
    def info(path: tp.Any) -> types.SimpleNamespace:
        info = sf.info(str(path))
        return types.SimpleNamespace(num_frames=info.frames, sample_rate=info.samplerate,
                                     num_channels=info.channels)


def import_demucs() -> types.ModuleType:
    """`demucs` with its torchaudio reads through soundfile (module docstring)."""
    sys.modules.setdefault('lameenc', types.ModuleType('lameenc'))
    import demucs.augment  # noqa: F401
    import demucs.demucs  # noqa: F401
    import demucs.ema  # noqa: F401
    import demucs.hdemucs  # noqa: F401
    import demucs.htdemucs  # noqa: F401
    import demucs.solver  # noqa: F401
    import demucs.utils  # noqa: F401
    import demucs.wav
    demucs.wav.ta = _SoundfileAudio()
    return sys.modules['demucs']


# ------------------------------------------------------------------------------ the sides

class Side:
    """One training loop: `epoch(index)` runs one epoch of `steps` steps; `losses` holds the
    training loss of every step run so far, `silences` the loss silence would have (the mean
    absolute value of the batch's augmented sources), which the curves divide by: the batches
    of the two sides differ, and at first the loss is mostly the loudness of the batch."""
    name = ''

    def __init__(self) -> None:
        self.losses: tp.List[float] = []
        self.silences: tp.List[float] = []
        self.model: torch.nn.Module

    def epoch(self, index: int) -> None:
        raise NotImplementedError


class _RecordingCriterion:
    """Our criterion, recording the training loss of every call and the loss of silence."""

    def __init__(self, criterion: tp.Any, side: 'Side'):
        self.criterion = criterion
        self.side = side
        self.model_kwargs = criterion.model_kwargs

    def __call__(self, output: tp.Any, mix: torch.Tensor, sources: torch.Tensor
                 ) -> tp.Tuple[torch.Tensor, torch.Tensor]:
        loss, losses = self.criterion(output, mix, sources)
        self.side.losses.append(loss.item())
        self.side.silences.append(sources.abs().mean().item())
        return loss, losses

    def __getattr__(self, name: str) -> tp.Any:
        return getattr(self.criterion, name)


class Ours(Side):
    name = 'separator'

    def __init__(self, cfg: tp.Any, folder: Path):
        super().__init__()
        from separator import builders
        from separator.solver import Solver
        torch.manual_seed(cfg.seed)
        self.model = builders.get_model(cfg)
        optimizer = builders.get_optimizer(cfg, self.model)
        datasets = builders.get_datasets(cfg)
        criterion = _RecordingCriterion(builders.get_criterion(cfg, self.model), self)
        link = types.SimpleNamespace(history=[], update_history=lambda history: None)
        xp = types.SimpleNamespace(link=link, folder=folder, sig='bench')
        self.solver = Solver(cfg, self.model, optimizer, None, datasets, xp,
                             criterion=criterion)
        self.tracks = [track.name for track in datasets[0].tracks]

    def epoch(self, index: int) -> None:
        self.solver._train_epoch(index)


def demucs_args(cfg: tp.Any, steps: int, ema: tp.Sequence[float]) -> tp.Any:
    """The parts of demucs' training config (its conf/config.yaml defaults) that its Solver
    reads in training, with this bench's values."""
    from omegaconf import OmegaConf
    return OmegaConf.create({
        'dset': {'samplerate': cfg.dset.samplerate, 'channels': cfg.dset.channels,
                 'shift': cfg.dset.shift, 'sources': list(cfg.dset.sources)},
        'augment': {'shift_same': False, 'flip': True,
                    'scale': {'proba': 1, 'min': 0.25, 'max': 1.25},
                    'remix': {'proba': 1, 'group_size': 4}},
        'ema': {'batch': list(ema), 'epoch': []},
        'quant': {'diffq': None, 'qat': None, 'min_size': 0.2, 'group_size': 8},
        'optim': {'lr': cfg.optim.lr, 'momentum': 0.9, 'beta2': 0.999, 'loss': 'l1',
                  'optim': 'adam', 'weight_decay': 0, 'clip_grad': 0},
        'svd': {'penalty': 0}, 'weights': [1.] * len(cfg.dset.sources),
        'max_batches': steps, 'flag': None, 'debug': False, 'valid_apply': True,
        'misc': {'num_prints': cfg.misc.num_prints}, 'test': {'metric': 'loss'},
        'continue_from': None, 'continue_pretrained': None})


def demucs_optimizer(model: torch.nn.Module, args: tp.Any) -> torch.optim.Optimizer:
    """Adam over the param groups of `demucs.train.get_optimizer`: one group per module with
    `make_optim_group` (HTDemucs' transformer), the rest first."""
    groups, seen = [], set()
    for module in model.modules():
        if hasattr(module, 'make_optim_group'):
            group = module.make_optim_group()
            seen |= set(group['params'])
            groups.append(group)
    groups.insert(0, {'params': [p for p in model.parameters() if p not in seen]})
    return torch.optim.Adam(groups, lr=args.optim.lr, betas=(args.optim.momentum,
                                                             args.optim.beta2),
                            weight_decay=args.optim.weight_decay)


def copy_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Load our model's weights into demucs' (the importer's name mapping, reversed)."""
    from separator.importers.demucs import name_pairs, to_demucs_layout
    state = theirs.state_dict()
    mine = ours.state_dict()
    for their_name, our_name in name_pairs(ours):
        if our_name is None:
            continue
        value = to_demucs_layout(our_name, mine[our_name])
        if state[their_name].shape != value.shape:
            raise ValueError(f"{our_name} {tuple(value.shape)} vs demucs' {their_name} "
                             f"{tuple(state[their_name].shape)}")
        state[their_name] = value.clone()
    theirs.load_state_dict(state)


class Theirs(Side):
    name = 'demucs 4.1.0'

    def __init__(self, cfg: tp.Any, ours: Ours, root: Path, folder: Path, steps: int,
                 ema: tp.Sequence[float], workers: int, own_init: bool):
        super().__init__()
        demucs = import_demucs()
        from separator.importers.demucs import demucs_kwargs
        _, kwargs = demucs_kwargs(ours.model)
        klass = {'demucs': demucs.demucs.Demucs, 'hdemucs': demucs.hdemucs.HDemucs,
                 'htdemucs': demucs.htdemucs.HTDemucs}
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = klass[cfg.model](**kwargs)
        if not own_init:
            copy_weights(ours.model, self.model)
        args = demucs_args(cfg, steps, ema)
        optimizer = demucs_optimizer(self.model, args)
        with contextlib.redirect_stderr(io.StringIO()):   # its tqdm bar
            metadata = demucs.wav.build_metadata(root / 'train', list(cfg.dset.sources),
                                                 normalize=False)
        train = {name: metadata[name] for name in ours.tracks}
        train_set = demucs.wav.Wavset(root / 'train', train, list(cfg.dset.sources),
                                      segment=cfg.dset.segment + cfg.dset.shift,
                                      shift=cfg.dset.shift, samplerate=cfg.dset.samplerate,
                                      channels=cfg.dset.channels, normalize=False)
        loader = demucs.distrib.loader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True)
        if len(loader) < steps:
            raise ValueError(f"demucs' data set has {len(loader)} batches, fewer than --steps "
                             f"{steps}: use more --tracks or --seconds.")
        xp = types.SimpleNamespace(folder=folder, link=types.SimpleNamespace(history=[]))
        demucs.solver.get_xp = lambda: xp
        demucs.solver.EMA = self._recording_averager
        self.solver = demucs.solver.Solver({'train': loader, 'valid': None}, self.model,
                                           optimizer, args)
        self.solver.augment.register_forward_hook(self._record_silence)

    def _record_silence(self, module: torch.nn.Module, inputs: tp.Any,
                        sources: torch.Tensor) -> None:
        """The loss of silence on the augmented batch (a hook on their augmentations)."""
        self.silences.append(sources.abs().mean().item())

    def _recording_averager(self, beta: float = 1) -> tp.Callable[[dict], dict]:
        """demucs' metrics averager (`utils.EMA`), recording each step's training loss."""
        average = sys.modules['demucs.utils'].EMA(beta)

        def update(metrics: dict, weight: float = 1) -> dict:
            self.losses.append(float(metrics['loss']))
            return average(metrics, weight)
        return update

    def epoch(self, index: int) -> None:
        self.model.train()   # as their Solver.train does before each epoch
        self.solver._run_one_epoch(index)


# ------------------------------------------------------------------------------ running

def build_side(kind: str, options: argparse.Namespace, root: Path, folder: Path) -> Side:
    """Our side, or theirs (which starts from our initial weights), with its XP `folder`."""
    cfg = compose(options, root, folder)
    ours = Ours(cfg, folder)
    if kind == 'ours':
        return ours
    return Theirs(cfg, ours, root, folder, options.steps, options.ema, options.workers,
                  options.own_init)


def serve(kind: str, options: argparse.Namespace, root: Path, conn: tp.Any) -> None:
    """One side in a process of its own: build it, then run what the parent asks."""
    torch.set_num_threads(options.threads)
    # demucs' metrics averager calls float() on its loss, which requires grad.
    warnings.filterwarnings('ignore', message='Converting a tensor with requires_grad')
    warnings.filterwarnings('ignore', message='Warning: Profiler clears events')
    if options.tune_malloc in (kind, 'both'):
        if not keep_freed_memory():
            raise RuntimeError("mallopt is not available here (glibc on Linux only)")
    with tempfile.TemporaryDirectory(prefix='bench_train_xp_') as folder:
        side = build_side(kind, options, root, Path(folder))
        conn.send(sum(p.numel() for p in side.model.parameters()))
        _serve_requests(side, options, conn)


def _serve_requests(side: Side, options: argparse.Namespace, conn: tp.Any) -> None:
    """Run the parent's requests until it says stop: an epoch (timed), a profiled epoch, the
    losses recorded so far."""
    while True:
        request, index = conn.recv()
        if request == 'epoch':
            usage = resource.getrusage(resource.RUSAGE_SELF)
            wall = time.perf_counter()
            side.epoch(index)
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_SELF)
            conn.send((wall, after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime,
                       after.ru_minflt - usage.ru_minflt, after.ru_maxrss / 1024))
        elif request == 'profile':
            profile(side, index, options.profile)
            conn.send(None)
        elif request == 'losses':
            conn.send((side.losses, side.silences))
        else:
            return


class Remote:
    """A side served by its own process (`serve`), started here; `ready` waits until it is
    built (the two sides build at once: that is not timed)."""

    def __init__(self, kind: str, name: str, options: argparse.Namespace, root: Path):
        context = mp.get_context('spawn')
        self.name = name
        self.params = 0.
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(kind, options, root, child),
                                       daemon=True)
        self.process.start()

    def ready(self) -> None:
        """Wait for the side to be built; keep its number of parameters (millions)."""
        self.params = self._receive() / 1e6

    def _receive(self) -> tp.Any:
        while not self.conn.poll(1.):
            if not self.process.is_alive():
                raise RuntimeError(f"the {self.name} process died (exit code "
                                   f"{self.process.exitcode}): see its error above.")
        return self.conn.recv()

    def ask(self, request: str, index: int = 0) -> tp.Any:
        self.conn.send((request, index))
        return self._receive()

    def close(self) -> None:
        """Stop the process: it finishes what it runs, then returns."""
        if self.process.is_alive():
            self.conn.send(('stop', 0))
        self.process.join()


def profile(side: Side, epoch: int, rows: int) -> None:
    """torch.profiler's top operators (self CPU time) of one epoch of `side`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        side.epoch(epoch)
    print(f"\n--- {side.name}: one epoch, top {rows} operators by self CPU time", flush=True)
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=rows),
          flush=True)


# wall, user, system seconds, minor page faults, peak resident memory of the process (MiB)
Timing = tp.Tuple[float, float, float, int, float]


def timed_rounds(sides: tp.Sequence[Remote], repeats: int) -> tp.Dict[str, tp.List[Timing]]:
    """Each side's timings per epoch, `repeats` rounds in ABBA order after a warm-up epoch
    each. One process runs at a time: the other waits for its turn."""
    for side in sides:
        side.ask('epoch', 0)
    timings: tp.Dict[str, tp.List[Timing]] = {side.name: [] for side in sides}
    for round_ in range(repeats):
        order = sides if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            timings[side.name].append(side.ask('epoch', round_ + 1))
    return timings


def print_rates(sides: tp.Sequence[Remote], timings: tp.Dict[str, tp.List[Timing]],
                steps: int, batch: int) -> None:
    """Wall-clock rates (median over rounds, and spread), the process's user and system
    seconds and minor page faults per step (medians; CPU time is less sensitive to other
    processes than the wall clock), and the ratios ours / theirs."""
    print(f"{'':14}{'steps/s':>8}{'segments/s':>11}{'spread (segments/s)':>21}"
          f"{'user s':>8}{'sys s':>7}{'faults':>8} per step{'peak MiB':>10}")
    rates, cpus = {}, {}
    for side in sides:
        rows = timings[side.name]
        rates[side.name] = [steps * batch / wall for wall, *_ in rows]
        cpus[side.name] = [(user + system) / steps for _, user, system, *_ in rows]
        median = statistics.median(rates[side.name])
        user, system, faults = (statistics.median(row[k] for row in rows) / steps
                                for k in (1, 2, 3))
        print(f"{side.name:14}{median / batch:8.3f}{median:11.3f}"
              f"{min(rates[side.name]):11.3f} - {max(rates[side.name]):<7.3f}"
              f"{user:8.2f}{system:7.2f}{faults / 1e3:7.0f}k{'':9}{rows[-1][4]:10.0f}")
    ours, theirs = (rates[side.name] for side in sides)
    paired = [a / b for a, b in zip(ours, theirs)]
    cpu_ours, cpu_theirs = (cpus[side.name] for side in sides)
    ratio = statistics.median(ours) / statistics.median(theirs)
    by_cpu = statistics.median(cpu_theirs) / statistics.median(cpu_ours)
    print(f"ratio ours/theirs (segments/s): {ratio:.2f}x of the medians; per round: median "
          f"{statistics.median(paired):.2f}x, {min(paired):.2f}x - {max(paired):.2f}x; "
          f"by CPU time (user + sys): {by_cpu:.2f}x")


def print_curve(names: tp.Sequence[str], curves: tp.Sequence[tp.Tuple[list, list]],
                every: int) -> None:
    """The training loss, and relative to silence (1: the model outputs silence), per
    `every` steps."""
    count = min(len(losses) for losses, _ in curves)
    print(f"training loss (L1) and loss / loss of silence, mean over every {every} steps")
    print(f"{'':9}{'loss':>20}{'':8}{'loss / silence':>22}")
    print(f"{'steps':>9}{names[0]:>13}{names[1]:>14}{names[0]:>13}{names[1]:>14}"
          f"{'ours-theirs':>13}")
    for start in range(0, count, every):
        end = min(start + every, count)
        means = [statistics.fmean(losses[start:end]) for losses, _ in curves]
        relative = [statistics.fmean(loss / silence for loss, silence in
                                     zip(losses[start:end], silences[start:end]))
                    for losses, silences in curves]
        print(f"{start + 1:4}-{end:<4}{means[0]:13.5f}{means[1]:14.5f}{relative[0]:13.4f}"
              f"{relative[1]:14.4f}{relative[0] - relative[1]:13.4f}")


def compose(options: argparse.Namespace, root: Path, folder: Path) -> tp.Any:
    """Our Hydra config for this bench: the model's overrides, the data, batch and EMA."""
    return _config([f'model={options.model}', *options.overrides, 'dset=synthetic',
                    f'dset.musdb={root}', 'dset.generate=false',
                    f'dset.metadata={folder / "metadata"}', f'dset.segment={options.segment}',
                    f'dset.epoch_size={options.steps * options.batch_size}',
                    f'batch_size={options.batch_size}',
                    f'misc.num_workers={options.workers}',
                    f'ema.batch=[{",".join(map(str, options.ema))}]'])


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m bench.train_speed',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', choices=sorted(SMALL), default='hdemucs')
    parser.add_argument('--overrides', nargs='*', default=None,
                        help="Hydra overrides of the model (default: a small model, "
                             "%s)" % SMALL)
    parser.add_argument('--batch-size', type=int, default=4, help="a multiple of 4 (Remix)")
    parser.add_argument('--segment', type=float, default=4., help="seconds per example")
    parser.add_argument('--steps', type=int, default=2, help="steps per timed epoch")
    parser.add_argument('--repeats', type=int, default=15, help="timed rounds")
    parser.add_argument('--threads', type=int, default=1, help="torch threads per side")
    parser.add_argument('--workers', type=int, default=0, help="loader workers, both sides")
    parser.add_argument('--ema', type=float, nargs='*', default=[0.9995, 0.9999],
                        help="batch EMA decays, both sides (demucs' recipes: 0.9995 0.9999)")
    parser.add_argument('--every', type=int, default=4, help="steps per learning-curve row")
    parser.add_argument('--tracks', type=int, default=6, help="synthetic training tracks")
    parser.add_argument('--seconds', type=float, default=20., help="of each track")
    parser.add_argument('--data', help="folder of the synthetic set (default: a temp folder)")
    parser.add_argument('--own-init', action='store_true',
                        help="demucs keeps its own initial weights (from the same seed)")
    parser.add_argument('--tune-malloc', choices=['none', 'ours', 'both'], default='ours',
                        help="glibc mallopt keeping freed memory (separator.malloc) in the "
                             "process of ours (as `dora run` does on the CPU), of both, or none")
    parser.add_argument('--profile', type=int, default=0, metavar='ROWS',
                        help="also print torch.profiler's top ROWS ops of one epoch each")
    args = parser.parse_args(argv)
    if args.batch_size % 4:
        parser.error("--batch-size must be a multiple of 4: demucs' Remix shuffles groups of 4")
    if args.overrides is None:
        args.overrides = SMALL[args.model]
    with contextlib.ExitStack() as stack:
        data = args.data or stack.enter_context(tempfile.TemporaryDirectory(prefix='bench_train_'))
        root = synthetic_root(data, args.tracks, args.seconds)
        run(args, root)
    return 0


def run(args: argparse.Namespace, root: Path) -> None:
    """Both sides, timed in turns, then their rates, learning curves and profiles printed."""
    sides: tp.List[Remote] = []
    try:
        for kind, name in (('ours', Ours.name), ('theirs', Theirs.name)):
            sides.append(Remote(kind, name, args, root))
        for side in sides:
            side.ready()
        timings = timed_rounds(sides, args.repeats)
        curves = [side.ask('losses') for side in sides]
        print(f"{args.model} {' '.join(args.overrides)} ({sides[0].params:.2f} M parameters "
              f"ours, {sides[1].params:.2f} M demucs'), batch {args.batch_size} x "
              f"{args.segment:g} s, {args.steps} steps x {args.repeats} rounds (ABBA, after a "
              f"warm-up epoch each; one process per side, one at a time), {args.threads} "
              f"thread(s), {args.workers} loader workers, EMA {args.ema or 'none'}, "
              f"malloc tuned: {args.tune_malloc}")
        print_rates(sides, timings, args.steps, args.batch_size)
        print_curve([side.name for side in sides], curves, args.every)
        if args.profile:
            for side in sides:
                side.ask('profile', args.repeats + 1)
    finally:
        for side in sides:
            side.close()


if __name__ == '__main__':
    raise SystemExit(main())
