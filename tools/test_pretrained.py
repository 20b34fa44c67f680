"""Evaluate a released model (or bag) on a MUSDB18-HQ-layout test set.

    python -m tools.test_pretrained --repo release_models -n NAME [--musdb data/synthetic]
        [--shifts 0] [--overlap 0.25] [--sdr-impl torch] [--max-tracks N] [-o results.json]

Per source: cSDR (bss_eval v4's SDR, median over 1 s frames, then median over tracks, as in
MUSDB; `--sdr-impl torch` is separator/bss_eval.py, museval's values ~100x faster; `museval`
the reference, in --workers processes) and
nSDR (mean over tracks, as in the solver), plus the nSDR of the trivial baselines (mixture,
mixture / S, silence). Tracks are `MUSDB/test/<track>/`, sorted by name; the random shifts
use a generator seeded with `--seed` (42, the XPs' default seed), so that with the same
settings the nSDR equals the one the solver logged at the end of training. `-o` writes every
track's per-source nSDR and SDR as JSON (atomically).
"""
import argparse
import concurrent.futures
import multiprocessing
import sys
import typing as tp
from pathlib import Path

import numpy as np
import torch

from separator.atomic import write_json
from separator.data.audio import AudioError
from separator.data.musdb import index_tracks
from separator.data.segments import WholeTracks
from separator.metrics import SDR_IMPLS, bss_sdr, nsdr, trivial_estimates
from separator.pretrained import DEFAULT_REPO, ModelLoadingError, apply_bag, get_model


class EvaluationError(ValueError):
    """The evaluation cannot run; the message names the fix."""


def _plain(value: tp.Any) -> tp.Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _median(values: tp.Sequence[float]) -> float:
    values = np.array(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return float('nan')
    return float(np.nanmedian(values))


def evaluate(model: torch.nn.Module, musdb: tp.Union[str, Path], shifts: int = 0,
             overlap: float = 0.25, workers: int = 2, max_tracks: tp.Optional[int] = None,
             seed: int = 42, split: bool = True, sdr: bool = True, test_split: str = 'test',
             mixture_name: str = 'mixture', sdr_impl: str = 'torch') -> dict:
    """Scores of `model` on `musdb/test_split`: {'tracks': {name: {...}}, 'summary': {...}}.

    summary has `nsdr_SOURCE` (mean over tracks), `sdr_SOURCE` (median over tracks of
    the per-track frame medians), the baselines' `nsdr_BASELINE_SOURCE`, and each one's
    mean over sources without the source suffix, as in the solver's history.
    """
    folder = Path(musdb) / test_split
    if not folder.is_dir():
        raise EvaluationError(f"No test set {folder}: point --musdb at a MUSDB18-HQ layout "
                              f"(ROOT/{test_split}/<track>/<source>.wav), e.g. one written by "
                              f"`python -m tools.make_synthetic`.")
    sources = list(model.sources)
    try:
        tracks = index_tracks(folder, sources, model.samplerate,
                              getattr(model, 'mix_channels', model.audio_channels),
                              mixture_name=mixture_name)
    except AudioError as error:
        raise EvaluationError(str(error)) from error
    if max_tracks:
        tracks = tracks[:max_tracks]
    dataset = WholeTracks(tracks, sources)
    pool = None
    if sdr and sdr_impl == 'museval' and workers > 0:
        # Forked children of a process that ran torch's OpenMP threads can deadlock.
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context('spawn'))
    generator = torch.Generator().manual_seed(seed)
    results: tp.Dict[str, dict] = {}
    futures = {}
    try:
        for index in range(len(dataset)):
            name, mix, references = dataset[index]
            with torch.inference_mode():
                estimates = apply_bag(model, mix, overlap=overlap, shifts=shifts, split=split,
                                      generator=generator).cpu()
            entry = {'nsdr': dict(zip(sources, nsdr(references, estimates).tolist()))}
            for baseline, guess in trivial_estimates(mix, len(sources)).items():
                entry[f'nsdr_{baseline}'] = dict(zip(sources, nsdr(references, guess).tolist()))
            results[name] = entry
            print(f"{name}: nSDR " + ' '.join(f"{s} {v:.2f}" for s, v in entry['nsdr'].items()),
                  file=sys.stderr, flush=True)
            if sdr:
                args = (references, estimates, model.samplerate, sdr_impl)
                futures[name] = pool.submit(bss_sdr, *args) if pool else bss_sdr(*args)
        for name, future in futures.items():
            values = future.result() if pool else future
            results[name]['sdr'] = {s: (None if not np.isfinite(v) else float(v))
                                    for s, v in zip(sources, values)}
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    summary: tp.Dict[str, float] = {}
    keys = ['nsdr'] + [f'nsdr_{b}' for b in ('mixture', 'mixture_split', 'silence')]
    for key in keys:
        per_source = [float(np.mean([results[n][key][s] for n in results])) for s in sources]
        summary[key] = float(np.mean(per_source))
        summary.update({f'{key}_{s}': v for s, v in zip(sources, per_source)})
    if sdr:
        per_source = [_median([np.nan if results[n]['sdr'][s] is None else results[n]['sdr'][s]
                               for n in results]) for s in sources]
        with np.errstate(all='ignore'):
            summary['sdr'] = float(np.nanmean(per_source)) if np.isfinite(per_source).any() \
                else float('nan')
        summary.update({f'sdr_{s}': v for s, v in zip(sources, per_source)})
    return {'sources': sources, 'tracks': results, 'summary': summary}


def format_table(summary: dict, sources: tp.Sequence[str]) -> str:
    rows = [('model nSDR', 'nsdr'), ('model cSDR (bss_eval)', 'sdr'), ('mixture', 'nsdr_mixture'),
            ('mixture / S', 'nsdr_mixture_split'), ('silence', 'nsdr_silence')]
    lines = [f"{'(dB)':22}" + ''.join(f'{name:>9}' for name in list(sources) + ['mean'])]
    for label, key in rows:
        if key not in summary:
            continue
        values = [summary[f'{key}_{name}'] for name in sources] + [summary[key]]
        lines.append(f'{label:22}' + ''.join(f'{value:9.2f}' for value in values))
    return '\n'.join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m tools.test_pretrained',
                                     description="Evaluate a released model or bag on a "
                                                 "MUSDB18-HQ-layout test set.")
    parser.add_argument('-n', '--name', required=True, help="model or bag name in the repo")
    parser.add_argument('--repo', type=Path, default=DEFAULT_REPO)
    parser.add_argument('--musdb', type=Path, default=Path('data/synthetic'),
                        help="root of the data set; its --split folder is evaluated")
    parser.add_argument('--split', default='test',
                        help="folder of the test tracks under --musdb (DnR: tt)")
    parser.add_argument('--mixture-name', default='mixture',
                        help="file name of a track's mixture, without extension (DnR: mix); "
                             "a track without it is tested on the sum of its stems")
    parser.add_argument('--shifts', type=int, default=0)
    parser.add_argument('--overlap', type=float, default=0.25)
    parser.add_argument('--workers', type=int, default=2,
                        help="processes for --sdr-impl museval (0: in this process)")
    parser.add_argument('--sdr-impl', choices=SDR_IMPLS, default='torch',
                        help="bss_eval implementation: torch (fast, museval's values) or "
                             "museval (the reference)")
    parser.add_argument('--max-tracks', type=int, default=None)
    parser.add_argument('--no-sdr', action='store_true', help="skip bss_eval (nSDR only)")
    parser.add_argument('--seed', type=int, default=42, help="seed of the random shifts")
    parser.add_argument('-o', '--output', type=Path, default=None, help="per-track JSON")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.workers < 0 or args.shifts < 0 or not 0 <= args.overlap < 1:
        print("error: --workers and --shifts must be >= 0 and --overlap in [0, 1).",
              file=sys.stderr)
        return 2
    try:
        model = get_model(args.name, args.repo)
        result = evaluate(model, args.musdb, shifts=args.shifts, overlap=args.overlap,
                          workers=args.workers, max_tracks=args.max_tracks, seed=args.seed,
                          sdr=not args.no_sdr, test_split=args.split,
                          mixture_name=args.mixture_name, sdr_impl=args.sdr_impl)
    except (ModelLoadingError, EvaluationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result.update(model=args.name, repo=str(args.repo), musdb=str(args.musdb), sdr_impl=args.sdr_impl,
                  shifts=args.shifts, overlap=args.overlap, seed=args.seed)
    print(f"Model {args.name} on {len(result['tracks'])} track(s) of "
          f"{args.musdb / args.split}:")
    print(format_table(result['summary'], result['sources']))
    if args.output is not None:
        write_json(args.output, _plain(result))
        print(f"Per-track scores written to {args.output}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
