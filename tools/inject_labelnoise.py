"""Make an SDX23-style label-noise set (with ground truth) from a clean MUSDB18-HQ layout.

    python -m tools.inject_labelnoise CLEAN_MUSDB_LAYOUT OUT [--rate 0.3] [--seed 0]
        [--split train] [--kinds swap,other_track,bleed,silence,shift] [--quiet]

Reads CLEAN_MUSDB_LAYOUT/<split>/<track>/{bass,drums,other,vocals}.wav and writes
OUT/<uuid>/{bass,drums,other,vocals}.wav (no mixture) plus OUT/manifest.json, which records for
every stem whether it is clean and, if not, how it was corrupted
(see separator/data/labelnoise.py). The same arguments give identical files.
"""
import argparse
import sys
import typing as tp
from pathlib import Path

from separator.data import labelnoise


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m tools.inject_labelnoise',
        description="Write a label-noise copy of a clean MUSDB18-HQ-layout set: UUID track "
                    "folders with 4 stems (no mixture), some corrupted, and a manifest of the "
                    "corruptions.")
    parser.add_argument('clean', help="root of the clean set (holds <split>/<track>/...)")
    parser.add_argument('out', help="output folder (new, empty, or a previous label-noise set)")
    parser.add_argument('--rate', type=float, default=labelnoise.DEFAULT_RATE,
                        help="probability that a stem is corrupted (default: %(default)s)")
    parser.add_argument('--seed', type=int, default=0,
                        help="non-negative random seed (default: %(default)s)")
    parser.add_argument('--split', default='train',
                        help="subfolder of CLEAN to read (default: %(default)s)")
    parser.add_argument('--kinds', default=','.join(labelnoise.KINDS),
                        help="comma-separated corruption kinds among "
                             f"{', '.join(labelnoise.KINDS)} (default: all)")
    parser.add_argument('--quiet', action='store_true', help="no per-track progress")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    split_dir = Path(args.clean) / args.split
    if not split_dir.is_dir():
        parser.error(f"clean folder {split_dir} does not exist: give the root of a MUSDB18-HQ "
                     f"layout holding {args.split}/<track>/<source>.wav")
    try:
        kinds = labelnoise.check_kinds(args.kinds)
    except ValueError as error:
        parser.error(str(error))
    if not 0 <= args.rate <= 1:
        parser.error(f"--rate must be in [0, 1], got {args.rate}")
    if args.seed < 0:
        parser.error("--seed must be non-negative")
    try:
        out = labelnoise.inject(args.clean, args.out, rate=args.rate, seed=args.seed,
                                split=args.split, kinds=kinds, verbose=not args.quiet)
    except ValueError as error:         # AudioError is a ValueError
        parser.error(str(error))
    manifest = labelnoise.load_manifest(out)
    counts = labelnoise.count_kinds(manifest)
    total = sum(counts.values())
    print(f"[labelnoise] {len(manifest['tracks'])} tracks, {total} stems in {out}:")
    for kind, count in counts.items():
        print(f"  {kind:12s} {count:6d}  ({100 * count / max(total, 1):.1f}%)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
