"""Write a synthetic multitrack data set in the MUSDB18-HQ layout.

    python -m tools.make_synthetic OUT [--tracks-train N] [--tracks-test M] [--seconds S]
        [--seed K] [--samplerate SR]

Writes OUT/{train,test}/synth_<split>_<i>/{mixture,drums,bass,other,vocals}.wav (stereo float32
WAV). Tracks already complete are kept, so an interrupted run can simply be started again.
"""
import argparse
import sys
import time
import typing as tp

from separator.data import synthetic


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m tools.make_synthetic',
        description="Write a synthetic multitrack data set in the MUSDB18-HQ layout.")
    parser.add_argument('out', help="root folder of the data set")
    parser.add_argument('--tracks-train', type=int, default=synthetic.DEFAULT_TRACKS_TRAIN,
                        help="number of training tracks (default: %(default)s)")
    parser.add_argument('--tracks-test', type=int, default=synthetic.DEFAULT_TRACKS_TEST,
                        help="number of test tracks (default: %(default)s)")
    parser.add_argument('--seconds', type=float, default=synthetic.DEFAULT_SECONDS,
                        help="duration of each track (default: %(default)s)")
    parser.add_argument('--seed', type=int, default=synthetic.DEFAULT_SEED,
                        help="non-negative random seed (default: %(default)s)")
    parser.add_argument('--samplerate', type=int, default=synthetic.DEFAULT_SAMPLERATE,
                        help="sample rate in Hz (default: %(default)s)")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.tracks_train < 0 or args.tracks_test < 0:
        parser.error("track counts must be non-negative")
    if args.seconds <= 0 or args.samplerate <= 0:
        parser.error("--seconds and --samplerate must be positive")
    if args.seed < 0:
        parser.error("--seed must be non-negative")
    begin = time.time()
    try:
        root = synthetic.write_dataset(args.out, tracks_train=args.tracks_train,
                                       tracks_test=args.tracks_test, seconds=args.seconds,
                                       seed=args.seed, samplerate=args.samplerate)
    except ValueError as error:
        parser.error(str(error))
    print(f"[synthetic] {args.tracks_train} train + {args.tracks_test} test tracks in {root} "
          f"({time.time() - begin:.1f}s)", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
