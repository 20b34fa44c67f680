"""Training curves of XPs, drawn from their Dora history: `curves.png` in every XP folder.

A history is Dora's list of dicts, one per epoch, as `Solver.train` pushes them:
`{'lr': ..., 'train': {'loss', 'grad', ['ms'], <source>...}, 'valid': {'loss', <source>...,
'best', ...}, ['test': {'nsdr', 'nsdr_<source>', baselines...}], 'duration'}`. The learning
rate is read from `lr` (or `train.lr`); histories written before it was recorded have no
learning rate panel content, only a note. Entries without a `train` section (a filter XP's
single `{'filter': ...}`) are not epochs and are skipped.

One XP: three panels (train and valid loss; test nSDR of every source and their mean, at
the epochs that tested; learning rate). Several XPs (`tools.plot`): one color per XP, its
label in a legend under the panels; loss (train dashed, valid solid), mean test nSDR, one
nSDR panel per source, learning rate.

The figures are built with matplotlib's object API on an Agg canvas, never pyplot: no
display, no global backend state, nothing shared between threads.
"""
import logging
import math
import textwrap
import typing as tp
from pathlib import Path

from .atomic import atomic_file

logger = logging.getLogger(__name__)

CURVES = 'curves.png'
# Keys of a history's `train` section that are not per-source losses.
TRAIN_KEYS = ('loss', 'grad', 'ms', 'lr')
Run = tp.Tuple[str, tp.Sequence[dict]]     # (label, history)
Series = tp.Tuple[tp.List[int], tp.List[float]]


def _number(value: tp.Any) -> tp.Optional[float]:
    """`value` as a finite float, or None (missing, a string, a bool, NaN or inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def epochs(history: tp.Sequence[dict]) -> tp.List[tp.Tuple[int, dict]]:
    """(epoch number from 1, entry) of the training epochs of `history`."""
    return [(index + 1, entry) for index, entry in enumerate(history)
            if isinstance(entry, dict) and isinstance(entry.get('train'), dict)]


def series(history: tp.Sequence[dict], stage: str, key: str) -> Series:
    """Epoch numbers and values of `history[epoch][stage][key]`, where it is a number."""
    xs, ys = [], []
    for epoch, entry in epochs(history):
        value = _number((entry.get(stage) or {}).get(key))
        if value is not None:
            xs.append(epoch)
            ys.append(value)
    return xs, ys


def learning_rates(history: tp.Sequence[dict]) -> Series:
    """Epoch numbers and learning rates (`lr`, or `train.lr`) where they were recorded."""
    xs, ys = [], []
    for epoch, entry in epochs(history):
        value = _number(entry.get('lr', entry['train'].get('lr')))
        if value is not None:
            xs.append(epoch)
            ys.append(value)
    return xs, ys


def sources_of(history: tp.Sequence[dict]) -> tp.List[str]:
    """The sources of an XP: the per-source losses of its `train` sections, in order."""
    names: tp.List[str] = []
    for _epoch, entry in epochs(history):
        for key, value in entry['train'].items():
            if key not in TRAIN_KEYS and key not in names and _number(value) is not None:
                names.append(key)
    return names


def _note(ax: tp.Any, text: str) -> None:
    """A gray note in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha='center', va='center', color='gray')


def _finish(ax: tp.Any, title: str, ylabel: str, legend: bool) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.set_title(title)
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_lines():
        ax.legend(fontsize='small')


def _log_scale_if_wide(ax: tp.Any, values: tp.Sequence[float]) -> None:
    """A log y axis for positive values that span more than a decade (warmup and decay of
    the learning rate, the first epochs of a loss), where a linear one flattens the rest."""
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale('log')


def _loss_panel(ax: tp.Any, runs: tp.Sequence[Run], colors: tp.Sequence[str],
                single: bool) -> None:
    values: tp.List[float] = []
    for (_label, history), color in zip(runs, colors):
        for stage, style in (('train', '--'), ('valid', '-')):
            xs, ys = series(history, stage, 'loss')
            if xs:
                ax.plot(xs, ys, style, color=color, label=stage if single else None)
                values += ys
    if not values:
        _note(ax, 'no epoch yet')
    _log_scale_if_wide(ax, values)
    title = 'Train and valid loss' if single else 'Loss (train dashed, valid solid)'
    _finish(ax, title, 'loss', legend=single)


def _nsdr_panel(ax: tp.Any, runs: tp.Sequence[Run], colors: tp.Sequence[str],
                key: str, title: str) -> None:
    """Test nSDR `key` ('nsdr': the mean over sources, 'nsdr_<source>') of every run."""
    for (_label, history), color in zip(runs, colors):
        xs, ys = series(history, 'test', key)
        if xs:
            ax.plot(xs, ys, 'o-', color=color, markersize=3)
    if not ax.get_lines():
        _note(ax, 'not tested yet (test.every)')
    _finish(ax, title, 'nSDR (dB)', legend=False)


def _sources_panel(ax: tp.Any, history: tp.Sequence[dict], sources: tp.Sequence[str]) -> None:
    """Test nSDR of every source of one XP, and their mean (thick, black)."""
    for source in sources:
        xs, ys = series(history, 'test', f'nsdr_{source}')
        if xs:
            ax.plot(xs, ys, 'o-', markersize=3, label=source)
    xs, ys = series(history, 'test', 'nsdr')
    if xs:
        ax.plot(xs, ys, 'o-', color='black', linewidth=2, markersize=4, label='mean')
    if not ax.get_lines():
        _note(ax, 'not tested yet (test.every)')
    _finish(ax, 'Test nSDR per source', 'nSDR (dB)', legend=True)


def _lr_panel(ax: tp.Any, runs: tp.Sequence[Run], colors: tp.Sequence[str]) -> None:
    values: tp.List[float] = []
    for (_label, history), color in zip(runs, colors):
        xs, ys = learning_rates(history)
        if xs:
            ax.plot(xs, ys, '-', color=color)
            values += ys
    if not values:
        _note(ax, 'learning rate not recorded')
    _log_scale_if_wide(ax, values)
    _finish(ax, 'Learning rate', 'learning rate', legend=False)


def _wrap(label: str) -> str:
    return '\n'.join(textwrap.wrap(label, 110, subsequent_indent='    ')) or label


def figure(runs: tp.Sequence[Run], title: tp.Optional[str] = None,
           sources: tp.Optional[tp.Sequence[str]] = None) -> tp.Any:
    """A matplotlib Figure (Agg canvas) of the curves of `runs`, (label, history) pairs.

    `sources`: the names of the per-source nSDR curves; None: read from the histories."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    if not runs:
        raise ValueError("No XP to plot: give at least one (label, history).")
    if sources is None:
        sources = []
        for _label, history in runs:
            sources += [name for name in sources_of(history) if name not in sources]
    single = len(runs) == 1
    colors = [f'C{index % 10}' for index in range(len(runs))]
    if single:
        # Fixed margins: redrawn every epoch, and a constrained layout would triple the time.
        fig = Figure(figsize=(8, 10))
        fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.06, hspace=0.25)
        loss_ax, nsdr_ax, lr_ax = fig.subplots(3, 1, sharex=True)
        _sources_panel(nsdr_ax, runs[0][1], sources)
    else:
        panels = 3 + len(sources)
        rows = (panels + 1) // 2
        fig = Figure(figsize=(14, 3.5 * rows + 0.3 * len(runs)), layout='constrained')
        axes = list(fig.subplots(rows, 2, squeeze=False).flat)
        loss_ax, nsdr_ax, lr_ax = axes[0], axes[2], axes[1]
        _nsdr_panel(nsdr_ax, runs, colors, 'nsdr', 'Test nSDR (mean over sources)')
        for ax, source in zip(axes[3:], sources):
            _nsdr_panel(ax, runs, colors, f'nsdr_{source}', f'Test nSDR: {source}')
        for ax in axes[panels:]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=color) for color in colors]
        fig.legend(handles, [_wrap(label) for label, _history in runs],
                   loc='outside lower center', fontsize='small')
    _loss_panel(loss_ax, runs, colors, single)
    _lr_panel(lr_ax, runs, colors)
    if single:
        for ax in (loss_ax, nsdr_ax):      # the epochs of the panel below, shared
            ax.set_xlabel('')
    if title is None and single:
        title = runs[0][0]
    if title:
        fig.suptitle(title)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: tp.Any, path: tp.Union[str, Path], dpi: int = 100) -> Path:
    """Write `fig` as a PNG at `path`, atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_file(path, 'wb') as fout:
        fig.savefig(fout, format='png', dpi=dpi)
    return path


def write_curves(folder: tp.Union[str, Path], history: tp.Sequence[dict], sig: str,
                 sources: tp.Optional[tp.Sequence[str]] = None) -> Path:
    """Draw `folder`/curves.png from the history of the XP `sig`; return its path."""
    fig = figure([(f'XP {sig}', history)], sources=sources)
    return save_figure(fig, Path(folder) / CURVES)


def update_curves(folder: tp.Union[str, Path], history: tp.Sequence[dict], sig: str,
                  sources: tp.Optional[tp.Sequence[str]] = None) -> tp.Optional[Path]:
    """`write_curves` for the training loop: a failure is a warning, never the end of an XP
    (the curves are a view of history.json, which stays whole)."""
    try:
        return write_curves(folder, history, sig, sources)
    except Exception as error:      # a plot must not stop days of training
        logger.warning("Could not draw %s: %s: %s", Path(folder) / CURVES,
                       type(error).__name__, error)
        return None
