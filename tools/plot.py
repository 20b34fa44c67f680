"""Overlay the training curves of several XPs in one PNG.

    python -m tools.plot SIG [SIG ...] [-o FILE] [--xps DIR]

Each XP is one color: train and valid loss, test nSDR (mean, and per source), learning
rate, over epochs. Its label is its signature and the overrides in which the XPs differ
(`key=default` where an XP leaves a key that another sets; not the keys that `dora.exclude`
leaves out of signatures, such as misc.* or logging.*), read from `.argv.json` in its Dora
folder, next to the `history.json` the curves come from; e.g. every stage of a
lineage (`python -m tools.lineage NAME --dry_run` lists their signatures). Every XP also
has its own `curves.png` in its folder, redrawn at each epoch.
Exit status: 1 when an XP is missing or unreadable (named, with the folder looked in).
"""
import argparse
import fnmatch
import json
import sys
import typing as tp
from pathlib import Path

from separator.curves import epochs, figure, save_figure
from separator.pretrained import DEFAULT_XPS

CONFIG = Path(__file__).resolve().parent.parent / 'conf' / 'config.yaml'


class PlotError(ValueError):
    """A one-line error for the user."""


def _key(override: str) -> str:
    """The key an override sets: `optim.lr=1e-3` -> `optim.lr` (`+key=...` -> `+key`)."""
    return override.split('=', 1)[0]


def signature_exclusions(config: Path = CONFIG) -> tp.List[str]:
    """The patterns of `dora.exclude` in the config: keys that do not make an XP."""
    import yaml
    try:
        dora = (yaml.safe_load(config.read_text()) or {}).get('dora') or {}
    except (OSError, yaml.YAMLError):
        return []
    return [str(pattern) for pattern in dora.get('exclude') or []]


def read_xp(xps: Path, sig: str) -> tp.Tuple[tp.List[dict], tp.List[str]]:
    """The history and the overrides (argv) of XP `sig` in the Dora XP folder `xps`."""
    folder = xps / sig
    path = folder / 'history.json'
    if not folder.is_dir():
        raise PlotError(f"no XP {sig} in {xps} (no folder {folder}): check the signature "
                        f"(`python -m tools.xps --xps {xps}` lists them), or give --xps.")
    if not path.is_file():
        raise PlotError(f"XP {sig} has no {path}: it has not finished an epoch yet.")
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PlotError(f"cannot read {path}: {error}.") from None
    if not isinstance(history, list):
        raise PlotError(f"{path} is not a Dora history (a list of epochs).")
    try:
        argv = json.loads((folder / '.argv.json').read_text())
    except (OSError, ValueError):
        argv = []       # not made by `dora run`: no overrides known
    return history, [str(arg) for arg in argv] if isinstance(argv, list) else []


def labels(sigs: tp.Sequence[str], argvs: tp.Sequence[tp.Sequence[str]],
           exclude: tp.Sequence[str] = ()) -> tp.List[str]:
    """Each signature with the overrides in which the XPs differ, in its own argv order.

    A key that some XPs override and others do not shows as `key=default` in the others;
    with a single XP, all its overrides. Keys matching a pattern of `exclude` (Dora's
    `dora.exclude`: they do not change the XP) are left out."""
    def kept(key: str) -> bool:
        return not any(fnmatch.fnmatch(key.lstrip('+~'), pattern) for pattern in exclude)
    parsed = [{_key(arg): arg for arg in argv if kept(_key(arg))} for argv in argvs]
    keys: tp.List[str] = []
    for overrides in parsed:
        keys += [key for key in overrides if key not in keys]
    differ = [key for key in keys
              if len(sigs) == 1 or len({overrides.get(key) for overrides in parsed}) > 1]
    result = []
    for sig, overrides in zip(sigs, parsed):
        shown = [overrides.get(key, f'{key.lstrip("+~")}=default') for key in differ]
        result.append(' '.join([sig] + shown))
    return result


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.plot', description=__doc__.split(
        '\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('sigs', nargs='+', metavar='SIG', help="signatures of the XPs")
    parser.add_argument('-o', '--out', type=Path, default=Path('curves.png'),
                        help="the PNG to write (default: %(default)s)")
    parser.add_argument('--xps', type=Path, default=DEFAULT_XPS,
                        help="Dora's XP folder (default: %(default)s)")
    args = parser.parse_args(argv)
    sigs = list(dict.fromkeys(args.sigs))
    try:
        read = [read_xp(args.xps, sig) for sig in sigs]
    except PlotError as error:
        print(f"tools.plot: error: {error}", file=sys.stderr)
        return 1
    names = labels(sigs, [argv for _history, argv in read], signature_exclusions())
    runs = []
    for sig, label, (history, _argv) in zip(sigs, names, read):
        if epochs(history):
            runs.append((label, history))
        else:
            print(f"tools.plot: XP {sig} has no training epoch (a filter XP?): not plotted.",
                  file=sys.stderr)
    if not runs:
        print("tools.plot: error: nothing to plot.", file=sys.stderr)
        return 1
    try:
        save_figure(figure(runs, title=f"{len(runs)} XPs" if len(runs) > 1 else None),
                    args.out)
    except OSError as error:
        print(f"tools.plot: error: cannot write {args.out}: {error}", file=sys.stderr)
        return 1
    print(f"Curves of {', '.join(sigs)} in {args.out}")
    return 0

if __name__ == '__main__':
    sys.exit(main())
