"""Your own XPs, without a grid file: signature, overrides, progress, last metrics.

    python -m tools.xps [--xps outputs/xps] [SIG ...]

One row per XP folder (newest first): its signature, the overrides that made it (paste them
back into `dora run` as they are), epochs done out of its `epochs`, and its last train and
valid losses and test nSDR (the mean over sources, dB). Reads `.argv.json` and
`history.json`, which Dora writes in every XP folder; runs nothing.
"""
import argparse
import json
import shlex
import sys
import typing as tp
from pathlib import Path

from separator.pretrained import DEFAULT_XPS


def _last(history: tp.Sequence[dict], stage: str, key: str) -> tp.Optional[float]:
    for metrics in reversed(history):
        value = (metrics.get(stage) or {}).get(key)
        if value is not None:
            return value
    return None


def xp_row(folder: Path, epochs_of: tp.Callable[[tp.List[str]], tp.Optional[int]]
           ) -> tp.Dict[str, str]:
    """The columns of one XP folder."""
    try:
        argv = json.loads((folder / '.argv.json').read_text())
    except (OSError, ValueError):
        argv = []
    try:
        history = json.loads((folder / 'history.json').read_text())
    except (OSError, ValueError):
        history = []
    epochs = epochs_of(argv)
    done = f"{len(history)}/{epochs if epochs is not None else '?'}"
    if history and history[-1].get('filter'):
        done = 'filtered'

    def number(value: tp.Optional[float], digits: int) -> str:
        return '-' if value is None else f'{value:.{digits}f}'
    return {'sig': folder.name, 'epochs': done,
            'train': number(_last(history, 'train', 'loss'), 4),
            'valid': number(_last(history, 'valid', 'loss'), 4),
            'nsdr': number(_last(history, 'test', 'nsdr'), 2),
            'overrides': ' '.join(shlex.quote(arg) for arg in argv) or '(defaults)'}


def _epochs_reader() -> tp.Callable[[tp.List[str]], tp.Optional[int]]:
    """`epochs` of the config that overrides compose into (None if they do not compose)."""
    from separator.train import main

    def epochs_of(argv: tp.List[str]) -> tp.Optional[int]:
        try:
            return int(main._get_config(argv).epochs)
        except Exception:    # overrides of an older version of the config
            return None
    return epochs_of


def format_rows(rows: tp.Sequence[tp.Dict[str, str]]) -> str:
    columns = ['sig', 'epochs', 'train', 'valid', 'nsdr', 'overrides']
    titles = {'sig': 'signature', 'epochs': 'epochs', 'train': 'train loss',
              'valid': 'valid loss', 'nsdr': 'test nSDR', 'overrides': 'overrides'}
    widths = {c: max([len(titles[c])] + [len(row[c]) for row in rows]) for c in columns[:-1]}
    lines = ['  '.join(titles[c].ljust(widths.get(c, 0)) for c in columns).rstrip()]
    for row in rows:
        lines.append('  '.join(row[c].ljust(widths.get(c, 0)) for c in columns).rstrip())
    return '\n'.join(lines)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('sigs', nargs='*', help="only these XPs")
    parser.add_argument('--xps', type=Path, default=DEFAULT_XPS,
                        help="the folder of the XPs (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.xps.is_dir():
        print(f"tools.xps: error: no XP folder {args.xps}: run an XP first (`dora run "
              f"variant=quickstart`), or give --xps", file=sys.stderr)
        return 2
    folders = [folder for folder in args.xps.iterdir()
               if folder.is_dir() and not folder.name.startswith('.')
               and (not args.sigs or folder.name in args.sigs)]
    folders.sort(key=lambda folder: folder.stat().st_mtime, reverse=True)
    epochs_of = _epochs_reader()
    print(format_rows([xp_row(folder, epochs_of) for folder in folders]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
