"""Write an automix training set: remixes of stems of different tracks matched in tempo and
key (Demucs's automix, MDX21 Track A; see separator/data/automix.py).

    python -m tools.automix MUSDB OUT [--remixes N] [--seed S] [--valid-count K]
        [--no-originals] [--workers W]

Reads MUSDB/train/<track>/{drums,bass,other,vocals}.wav and writes
OUT/train/automix_<copy>_<track>/{mixture,drums,bass,other,vocals}.wav (float32 WAV, mixture =
sum of the stems, with a recipe.json), links OUT/train/<track>/ to the training tracks
themselves (unless --no-originals), and OUT/automix.json. The analysis (tempo, beats, key of
every track) is cached in OUT.analysis.json, next to OUT. The same arguments give identical
files; remixes already written are kept, so an interrupted run can be started again.
Train on it with `dset.train_folder=OUT/train` (the test set stays MUSDB/test).
"""
import argparse
import logging
import sys
import time
import typing as tp

from separator.data import automix


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m tools.automix',
        description="Write remixes of a MUSDB-layout training set whose stems come from "
                    "different tracks, matched in tempo and key, beats aligned.")
    parser.add_argument('musdb', help="root of a MUSDB layout (holds train/<track>/...)")
    parser.add_argument('out', help="output folder (new, empty, or a previous automix set)")
    parser.add_argument('--remixes', type=int, default=6,
                        help="remixes per training track (default: %(default)s, as Demucs)")
    parser.add_argument('--seed', type=int, default=0,
                        help="non-negative random seed (default: %(default)s)")
    parser.add_argument('--valid-count', type=int, default=2,
                        help="validation tracks kept out of the remixes when the names are "
                             "not MUSDB's (dset.valid_count, default: %(default)s)")
    parser.add_argument('--no-originals', action='store_true',
                        help="do not link the training tracks themselves into OUT/train")
    parser.add_argument('--workers', type=int, default=1,
                        help="processes for the analysis and the remixes (default: "
                             "%(default)s)")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.remixes < 0 or args.seed < 0 or args.valid_count < 0 or args.workers < 1:
        parser.error("--remixes, --seed and --valid-count must be >= 0, --workers >= 1")
    logging.basicConfig(level=logging.INFO, format='[automix] %(message)s')
    begin = time.time()
    try:
        manifest = automix.write_automix(args.musdb, args.out, remixes=args.remixes,
                                         seed=args.seed, valid_count=args.valid_count,
                                         originals=not args.no_originals,
                                         workers=args.workers)
    except ValueError as error:         # AudioError is a ValueError
        parser.error(str(error))
    print(f"[automix] {len(manifest['remixes'])} remixes in {args.out}/train "
          f"({len(manifest['rejected'])} tracks left out, {time.time() - begin:.1f}s)",
          flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
