"""Automatic label-noise filter (the SDX23 label-noise winner's purity test).

    python -m tools.filter SIG_OR_NAME NOISY_FOLDER -o OUT
        [--repo release_models | --xps outputs/xps]
        [--semitones 6 --stretch 2 --statistic ccom --threshold 20|auto --silence -80]
        [--workers 2 --threads 1] [--manifest PATH]

`--statistic ccom` (the default) is the winner's test exactly: 20 log10 of the sum of |x| of
each output, clean iff the own source beats every other by strictly more than the threshold
(20 dB), silent when every output is at or below -80 dB or the input's mean |x| is below
`--silence` (-80 dBFS). `purity` (RMS levels, >=, silence -60 dBFS RMS) and `sdr` are ours
(`separator.filtering`). `--threshold auto` chooses the threshold from the scores of the set
itself (the valley of their two modes), without the ground truth; when the scores are not
bimodal, the statistic's default decides, with a warning.

The model is an XP signature (its `checkpoint.th` in `--xps`, best state or else last
weights) or a released model/bag name of `--repo` (`separator.pretrained.get_model`). With
neither option, the XP folder `outputs/xps` is tried first, then `release_models`.

Writes `OUT/clean_{source}.txt` (one track folder per line), `OUT/silent_{source}.txt` and
`OUT/scores.json` (see `separator.filtering`). With `--manifest` (a label-noise set's
`manifest.json` or its folder), prints precision, recall and F1 of the "clean" decision against
the ground truth per source and overall, and the detection rate of every kind of corruption.
Exit status 2 for an unknown model, a missing folder or manifest, bad options.
"""
import argparse
import functools
import sys
import typing as tp
from pathlib import Path

from torch import nn

from separator.filtering import (AUTO, STATISTICS, FilterConfig, FilterResult, evaluate,
                                 filter_folder, format_metrics, parse_threshold, ranking_auc)
from separator.pretrained import DEFAULT_REPO, DEFAULT_XPS, get_model, load_xp


class FilterError(ValueError):
    """A bad argument: the message names the fix."""


def resolve(name: str, repo: tp.Optional[Path], xps: tp.Optional[Path]
            ) -> tp.Tuple[tp.Callable[[], nn.Module], str]:
    """A picklable loader of the model `name`, and a description of where it comes from."""
    if repo is None and (xps is not None or (DEFAULT_XPS / name).is_dir()):
        xps = xps or DEFAULT_XPS
        return functools.partial(load_xp, name, xps), f'XP {name} ({xps / name})'
    repo = repo or DEFAULT_REPO
    if repo == DEFAULT_REPO and not repo.is_dir():
        raise FilterError(f"unknown model {name}: no XP {DEFAULT_XPS / name} and no model "
                          f"repository {repo}. Pass --xps or --repo.")
    return functools.partial(get_model, name, repo), f'model {name} of {repo}'


def threshold_arg(text: str) -> tp.Union[float, str]:
    """--threshold: dB or 'auto'."""
    try:
        return parse_threshold(text, 0.)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither dB (a number) nor "
                                         f"'{AUTO}'") from None


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m tools.filter',
        description="Find the clean stems of a label-noise set: every stem alone, pitch-shifted "
                    "and time-stretched, must be separated into its own source.")
    parser.add_argument('model', metavar='SIG_OR_NAME',
                        help="XP signature, or name of a released model or bag")
    parser.add_argument('noisy', type=Path, metavar='NOISY_FOLDER',
                        help="label-noise set: NOISY_FOLDER/<track>/<source>.wav")
    parser.add_argument('-o', '--out', type=Path, required=True, help="output folder")
    where = parser.add_mutually_exclusive_group()
    where.add_argument('--repo', type=Path, help="folder of released models")
    where.add_argument('--xps', type=Path, help=f"folder of the XPs (default: {DEFAULT_XPS})")
    parser.add_argument('--semitones', type=float, default=6.0,
                        help="pitch shift, semitones (default: %(default)s)")
    parser.add_argument('--stretch', type=float, default=2.0,
                        help="Rubber Band stretch factor: 2 plays twice as fast, 0.5 twice as "
                             "slow (default: %(default)s)")
    parser.add_argument('--statistic', choices=list(STATISTICS), default='ccom',
                        help="statistic that decides: ccom (the winner's), purity or sdr "
                             "(ours) (default: %(default)s)")
    parser.add_argument('--threshold', type=threshold_arg, default=None,
                        help="dB, or 'auto': chosen from the scores of the set (the valley "
                             "of their two modes; not bimodal: the default). A stem is "
                             "clean iff its statistic > threshold (ccom) or >= (default: "
                             + ', '.join(f'{k} {v.threshold:g}' for k, v in STATISTICS.items())
                             + ")")
    parser.add_argument('--silence', type=float, default=None,
                        help="stems below this input level (dBFS: mean |x| for ccom, RMS "
                             "otherwise) are silent (default: "
                             + ', '.join(f'{k} {v.silence_db:g}' for k, v in STATISTICS.items())
                             + ")")
    parser.add_argument('--segment', type=float, default=None,
                        help="chunk length in seconds (default: the model's)")
    parser.add_argument('--workers', type=int, default=2,
                        help="processes, 0 to run in this one (default: %(default)s)")
    parser.add_argument('--threads', type=int, default=1,
                        help="torch threads per worker (default: %(default)s)")
    parser.add_argument('--manifest', type=Path,
                        help="label-noise manifest (or its folder): print precision/recall")
    parser.add_argument('--quiet', action='store_true', help="no progress bar")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        if args.workers < 0 or args.threads < 1:
            raise FilterError("--workers must be >= 0 and --threads >= 1.")
        if not args.noisy.is_dir():
            raise FilterError(f"no folder {args.noisy}: give the label-noise set "
                              f"(NOISY_FOLDER/<track>/<source>.wav).")
        manifest = None
        if args.manifest is not None:
            from separator.data.labelnoise import load_manifest
            try:
                manifest = load_manifest(args.manifest)
            except (FileNotFoundError, ValueError) as error:
                raise FilterError(str(error)) from error
        config = FilterConfig(semitones=args.semitones, stretch=args.stretch,
                              threshold=args.threshold, silence_db=args.silence,
                              statistic=args.statistic, segment=args.segment)
        loader, where = resolve(args.model, args.repo, args.xps)
        print(f"Filtering {args.noisy} with {where}: clean iff {config.describe()}, "
              f"{config.semitones:+g} semitones, stretch {config.stretch:g}, silence below "
              f"{config.silence_db:g} dBFS", flush=True)
        result = filter_folder(loader, args.noisy, args.out, config, workers=args.workers,
                               threads=args.threads, progress=not args.quiet,
                               info={'model': args.model, 'from': where})
    except (ValueError, FileNotFoundError) as error:   # FilterError, ModelLoadingError...
        print(f"filter: error: {error}", file=sys.stderr)
        return 2
    print(describe_threshold(result))
    for source in result.sources:
        kept, silent = len(result.clean_tracks(source)), len(result.silent_tracks(source))
        total = sum(source in stems for stems in result.scores.values())
        print(f"{source}: {kept}/{total} clean, {silent} silent -> "
              f"{args.out / f'clean_{source}.txt'}")
    if manifest is not None:
        print()
        print(format_metrics(evaluate(result.decisions(), manifest)))
        print()
        for usable, what in ((False, 'clean above corrupted'), (True, 'usable above the rest')):
            aucs = ', '.join(f'{name} {ranking_auc(result.scores, manifest, name, usable):.3f}'
                             for name in STATISTICS)
            print(f"ranking AUC ({what}, any threshold): {aucs}")
    return 0


def describe_threshold(result: FilterResult) -> str:
    """The threshold that decided, and how it was chosen."""
    choice = result.threshold_choice
    line = f"Threshold: {result.config.describe(result.threshold)}"
    if result.config.threshold != AUTO:
        return line + " (given)"
    if choice.get('bimodal'):
        return (line + f" (auto: the valley between the modes at {choice['peaks'][0]:g} and "
                f"{choice['peaks'][1]:g} dB of {choice['stems']} non-silent stems)")
    return (line + f" (auto: the {choice['stems']} non-silent scores are not bimodal, "
            f"{choice['reason']}: the statistic's default)")


if __name__ == '__main__':
    sys.exit(main())
