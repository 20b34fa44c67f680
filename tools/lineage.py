"""Run a lineage of XPs without Slurm: every stage that is not done, in order, then the bag.

    python -m tools.lineage sdx23_tiny            # the SDX23 recipe at CPU scale
    python -m tools.lineage sdx23 -d              # full scale, DDP on the GPUs of this machine
    python -m tools.lineage sdx23 --dry_run       # the stages, signatures and states only
    python -m tools.lineage sdx23 --until joint   # stop after the stage `joint`

NAME is a grid of `grids/` that declares `LINEAGE` (see `separator.lineage`). Each stage is
`dora run [-d] ARGV` in its own process, in the same XP folders as `dora grid NAME` uses:
the two can take turns, and a stage killed halfway resumes from its checkpoint when the
command runs again. When all stages are done, the models of the lineage's bag are exported
(`tools.export`) to `--out` with the bag `OUT/NAME.yaml`:
`separator -n NAME --repo OUT song.wav` separates with it.
Exit status: 1 when a stage fails (its log is named), 2 for a bad lineage name or stage.
"""
import argparse
import importlib
import subprocess
import sys
import typing as tp
from pathlib import Path

from separator.lineage import (DONE, Lineage, bag_config, format_table, refresh, resolve,
                               write_bag)
from separator.pretrained import DEFAULT_XPS


def load_lineage(name: str) -> Lineage:
    try:
        module = importlib.import_module(f'grids.{name}')
    except ModuleNotFoundError as error:
        if error.name not in (f'grids.{name}', 'grids'):
            raise
        folder = Path(importlib.import_module('grids').__path__[0])
        known = sorted(path.stem for path in folder.glob('[!_]*.py'))
        raise ValueError(f"no grid grids/{name}.py (grids: {', '.join(known)}).") from None
    lineage = getattr(module, 'LINEAGE', None)
    if not isinstance(lineage, Lineage):
        raise ValueError(f"grids/{name}.py declares no LINEAGE: it is not a lineage.")
    return lineage


def run_stage(argv: tp.List[str], distributed: bool) -> int:
    command = [sys.executable, '-m', 'dora', '-P', 'separator', 'run']
    command += ['-d'] if distributed else []
    return subprocess.run(command + argv).returncode


def slurm_job_running(xp: tp.Any) -> tp.Optional[str]:
    """The id of a Slurm job of this XP still queued or running (`dora grid`), else None."""
    from dora.shep import Sheep
    sheep = Sheep(xp)
    if sheep.job is None:
        return None
    try:
        return None if sheep.is_done() else str(sheep.job.job_id)
    except Exception:       # no sacct here: the job cannot be running on this machine
        return None


def export_bag(lineage: Lineage, stages: list, out: Path) -> Path:
    from tools.export import export_xp
    sources = list(stages[-1].xp.cfg.dset.sources)
    config = bag_config(lineage, stages, sources)
    for sig in config['models']:
        export_xp(sig, DEFAULT_XPS, out)
    path = out / f'{lineage.name}.yaml'
    names = {item.sig: item.stage.name for item in stages}
    comment = (f"Bag of lineage {lineage.name} (python -m tools.lineage {lineage.name}): "
               + ', '.join(f"{names[sig]} {sig}" for sig in config['models']))
    write_bag(path, config, comment)
    return path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m tools.lineage', description=__doc__.split(
        '\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('name', help="grid of grids/ declaring LINEAGE, e.g. sdx23_tiny")
    parser.add_argument('-d', '--distributed', action='store_true',
                        help="train each stage with `dora run -d` (all GPUs of this machine)")
    parser.add_argument('--dry_run', action='store_true', help="print the stages and stop")
    parser.add_argument('--until', metavar='STAGE', help="stop once this stage is done")
    parser.add_argument('-o', '--out', type=Path, default=Path('release_models'),
                        help="where the bag and its models go (default: %(default)s)")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    from separator.train import main as dora_main
    try:
        lineage = load_lineage(args.name)
        names = [stage.name for stage in lineage.stages]
        if args.until is not None and args.until not in names:
            raise ValueError(f"--until {args.until}: no such stage ({', '.join(names)}).")
    except ValueError as error:
        print(f"lineage: error: {error}", file=sys.stderr)
        return 2
    stages = resolve(lineage, dora_main)
    print(format_table(lineage, stages), flush=True)
    if args.dry_run:
        return 0
    for index, item in enumerate(stages):
        if item.state != DONE:
            job = slurm_job_running(item.xp)
            if job is not None:
                print(f"lineage: stage {item.stage.name} (XP {item.sig}) has Slurm job {job} "
                      f"queued or running: wait for it, or cancel it "
                      f"(`dora grid {args.name} --cancel`).", file=sys.stderr)
                return 1
            print(f"\n=== Stage {item.stage.name} ({index + 1}/{len(stages)}): XP {item.sig}",
                  flush=True)
            if run_stage(item.argv, args.distributed) != 0:
                print(f"lineage: stage {item.stage.name} (XP {item.sig}) failed; see "
                      f"{DEFAULT_XPS / item.sig / 'train.log'}. Run the command again to "
                      f"resume.",
                      file=sys.stderr)
                return 1
            refresh(stages, dora_main)          # its children see the new state
            if stages[index].state != DONE:
                print(f"lineage: stage {item.stage.name} (XP {item.sig}) ended without "
                      f"finishing; see {DEFAULT_XPS / item.sig / 'train.log'}.",
                      file=sys.stderr)
                return 1
        if item.stage.name == args.until:
            print(format_table(lineage, stages))
            return 0
    print('\n' + format_table(lineage, stages))
    if lineage.bag:
        path = export_bag(lineage, stages, args.out)
        print(f"\nBag written to {path}: separate with "
              f"`separator -n {lineage.name} --repo {args.out} SONG`")
    return 0


if __name__ == '__main__':
    sys.exit(main())
