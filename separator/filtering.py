"""Automatic label-noise filter of the SDX23 label-noise winner: the "purity" test.

A training stem labelled `source` is *clean* when a separation model, given that stem alone,
puts (almost) all of it into `source`. So that the model cannot simply echo audio it saw in
training (it was trained on the very stems we filter), the stem is first pitch-shifted (+6
semitones by default) and time-stretched (stretch factor 2.0 by default) with Rubber Band
(`pedalboard.time_stretch`). In Rubber Band's / pedalboard's convention a stretch factor of
2.0 plays the audio twice as fast (half the length, which also halves the separation cost);
a factor of 0.5 plays it twice as slow. Both are configurable.

For every stem we separate the transformed stem and measure the energy (dB, relative to full
scale) of each output source. Statistics (all computed and saved, one decides):

- `purity` (default, the winner's test): own-source level minus the loudest other source's
  level, dB. Clean iff >= threshold (default 20 dB).
- `sdr`: SDR of the own-source estimate against the transformed stem itself,
  10 log10(|x|^2 / |x - own|^2), dB. It penalises both what leaks to other sources and
  what the model changes or drops. Clean iff >= threshold (default 10 dB). Measured on a
  synthetic band set (each source in its own frequency band, 12 tracks, rate 0.3) with an
  oracle band-routing model, it did not beat `purity` (F1 0.886 vs 0.909: at 10 dB it keeps
  -6 to -20 dB bleeds; ranking AUC 0.80 vs 0.79), so `purity` stays the default; `sdr` is
  kept in `scores.json` and selectable to compare with real models.

Tried and not added: a model-free `leak` statistic, the fraction of a stem's energy that the
other stems of its track explain (complex least squares per STFT bin, nfft 4096), meant to
catch bleeding. On the sdx23_small label-noise set its ranking AUC is 0.57 (purity with a
2.6 dB model: 0.61): clean stems are explained at -27 to -13 dB, since instruments share
notes, and bleeds at -19 to -0.2 dB; only duplicated stems (one-way swaps) stand out, which
purity catches anyway.

A stem whose level (of the original stem, RMS in dBFS) is below `silence_db` (default -60)
is *silent*: it is reported separately (`silent: true` in `scores.json` and
`OUT/silent_{source}.txt`) and never listed as clean, since a silent target teaches nothing
(and a wholly silent stem is a typical label error). Its statistics are not computed.

Output of `filter_folder` (every file written atomically):

    OUT/clean_{source}.txt      one track folder name per line: stems judged clean
    OUT/silent_{source}.txt     the silent stems
    OUT/scores.json             config, and every stem's statistics and decision

`evaluate` scores the decisions against a label-noise manifest
(`separator.data.labelnoise`): precision, recall and F1 of the "clean" decision (positive
class: clean), per source and overall, and the detection rate of every kind of corruption;
and overall with the *usable* stems as positives (`labelnoise.teaches_its_source`): a time
shift, a partial silence or another track's audio of the same source leave a stem pure, so
no test of the stem alone sees them, and they are right examples of their source for the
recipe's training, which remixes sources across tracks.
"""
import multiprocessing
import typing as tp
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import write_json, write_text
from .data.audio import convert_channels, read_audio
from .data.musdb import track_folders
from .pretrained import apply_bag

STATISTICS = {'purity': 20.0, 'sdr': 10.0}  # name -> default threshold (dB)
SCORES = 'scores.json'
EPS = 1e-20                                 # energy floor: levels are >= -200 dB

Loader = tp.Union[nn.Module, tp.Callable[[], nn.Module]]


@dataclass
class FilterConfig:
    """Parameters of the test. `threshold=None` takes the statistic's default (STATISTICS)."""
    semitones: float = 6.0
    stretch: float = 2.0
    threshold: tp.Optional[float] = None
    silence_db: float = -60.0
    statistic: str = 'purity'
    segment: tp.Optional[float] = None       # chunk length for apply_model (model's default)
    shifts: int = 0

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"Unknown statistic {self.statistic!r}: choose among "
                             f"{', '.join(STATISTICS)}.")
        if self.stretch <= 0:
            raise ValueError(f"stretch must be positive, got {self.stretch}.")
        if self.threshold is None:
            self.threshold = STATISTICS[self.statistic]


# --------------------------------------------------------------------------------------------
# The statistic of one stem
# --------------------------------------------------------------------------------------------

def level_db(audio: tp.Union[np.ndarray, torch.Tensor]) -> float:
    """Mean energy per sample in dB (RMS dBFS), floored at 10 log10(EPS)."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float64)
    energy = float(np.mean(audio ** 2)) if audio.size else 0.
    return 10 * np.log10(energy + EPS)


def transform(audio: np.ndarray, samplerate: int, semitones: float, stretch: float
              ) -> np.ndarray:
    """Pitch-shift by `semitones` and time-stretch by `stretch` (Rubber Band): [C, T] float32."""
    if semitones == 0 and stretch == 1:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from pedalboard import time_stretch
    out = time_stretch(np.ascontiguousarray(audio, dtype=np.float32), float(samplerate),
                       stretch_factor=float(stretch), pitch_shift_in_semitones=float(semitones))
    return np.ascontiguousarray(out, dtype=np.float32)


def stem_statistics(estimates: torch.Tensor, stem: torch.Tensor, sources: tp.Sequence[str],
                    source: str) -> tp.Dict[str, tp.Any]:
    """Statistics of the separation `estimates` [S, C, T] of the (transformed) `stem` [C, T]
    labelled `source`."""
    levels = {name: level_db(estimates[index]) for index, name in enumerate(sources)}
    own = estimates[list(sources).index(source)].double()
    others = [level for name, level in levels.items() if name != source]
    purity = levels[source] - max(others) if others else float('inf')
    reference = float((stem.double() ** 2).sum())
    error = float(((stem.double() - own) ** 2).sum())
    sdr = 10 * np.log10((reference + EPS) / (error + EPS))
    return {'levels_db': {k: round(v, 3) for k, v in levels.items()},
            'purity': round(float(purity), 3), 'sdr': round(float(sdr), 3)}


def _resample(audio: torch.Tensor, rate: int, samplerate: int) -> torch.Tensor:
    if rate == samplerate:
        return audio
    import julius
    return julius.resample_frac(audio, rate, samplerate)


def score_stem(model: nn.Module, path: tp.Union[str, Path], source: str,
               config: FilterConfig) -> tp.Dict[str, tp.Any]:
    """Read the stem `path` labelled `source`, transform, separate it and return its
    statistics and decision: {'level_db', 'silent', 'clean', and (unless silent) 'levels_db',
    'purity', 'sdr'}."""
    import soundfile as sf
    path = Path(path)
    rate = sf.info(str(path)).samplerate
    audio = read_audio(path)
    result: tp.Dict[str, tp.Any] = {'level_db': round(level_db(audio), 3)}
    if result['level_db'] < config.silence_db:
        return {**result, 'silent': True, 'clean': False}
    audio = convert_channels(audio, model.audio_channels)
    audio = transform(audio, rate, config.semitones, config.stretch)
    stem = _resample(torch.from_numpy(audio), rate, model.samplerate)
    with torch.inference_mode():
        estimates = apply_bag(model, stem, segment=config.segment, shifts=config.shifts)
    result.update(stem_statistics(estimates, stem, model.sources, source))
    result['silent'] = False
    result['clean'] = bool(result[config.statistic] >= config.threshold)
    return result


# --------------------------------------------------------------------------------------------
# A whole folder, in parallel
# --------------------------------------------------------------------------------------------

def list_stems(folder: Path, sources: tp.Sequence[str]) -> tp.List[tp.Tuple[str, str]]:
    """(track, source) for every `folder/<track>/<source>.wav` (hidden folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {folder}: give the label-noise set "
                                f"(FOLDER/<track>/<source>.wav).")
    tracks = track_folders(folder)
    stems = [(track.name, source) for track in tracks for source in sources
             if (track / f'{source}.wav').exists()]
    if not stems:
        raise FileNotFoundError(f"{folder} holds no stem FOLDER/<track>/<source>.wav for the "
                                f"model's sources {list(sources)}.")
    return stems


_WORKER: tp.Dict[str, tp.Any] = {}


def _load(loader: Loader) -> nn.Module:
    model = loader if isinstance(loader, nn.Module) else loader()
    return model.eval()


def _init_worker(loader: Loader, config: FilterConfig, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER['model'] = _load(loader)
    _WORKER['config'] = config


def _work(task: tp.Tuple[str, str, str]) -> tp.Tuple[str, str, tp.Dict[str, tp.Any]]:
    path, track, source = task
    return track, source, score_stem(_WORKER['model'], path, source, _WORKER['config'])


@dataclass
class FilterResult:
    """scores: track -> source -> statistics and decision (see `score_stem`)."""
    scores: tp.Dict[str, tp.Dict[str, tp.Dict[str, tp.Any]]]
    sources: tp.List[str]
    config: FilterConfig = field(default_factory=FilterConfig)

    def decisions(self) -> tp.Dict[str, tp.Dict[str, bool]]:
        """track -> source -> kept as clean."""
        return {track: {source: bool(stem['clean']) for source, stem in stems.items()}
                for track, stems in self.scores.items()}

    def clean_tracks(self, source: str) -> tp.List[str]:
        return sorted(track for track, stems in self.scores.items()
                      if source in stems and stems[source]['clean'])

    def silent_tracks(self, source: str) -> tp.List[str]:
        return sorted(track for track, stems in self.scores.items()
                      if source in stems and stems[source]['silent'])


def filter_folder(loader: Loader, noisy: tp.Union[str, Path], out: tp.Union[str, Path],
                  config: tp.Optional[FilterConfig] = None, workers: int = 0,
                  threads: int = 1, progress: bool = True,
                  info: tp.Optional[tp.Dict[str, tp.Any]] = None) -> FilterResult:
    """Judge every stem of `noisy` and write the clean lists and `scores.json` into `out`.

    Args:
        loader: the model (or bag), or a picklable callable returning it (with workers > 0,
            each worker calls it once; a model is pickled to every worker).
        workers: processes (spawn context), 0 to run in this process.
        threads: torch threads of every worker.
        info: extra entries for scores.json (e.g. the model's name).
    """
    config = config or FilterConfig()
    noisy, out = Path(noisy), Path(out)
    model = _load(loader)          # here too: fail early, and the model's sources
    sources = list(model.sources)
    stems = list_stems(noisy, sources)
    tasks = [(str(noisy / track / f'{source}.wav'), track, source) for track, source in stems]
    from tqdm import tqdm
    bar = tqdm(total=len(tasks), desc='filter', unit='stem', disable=not progress)
    scores: tp.Dict[str, tp.Dict[str, tp.Dict[str, tp.Any]]] = {}
    pool = None
    try:
        if workers == 0:
            _init_worker(model, config, torch.get_num_threads())
            results: tp.Iterable = map(_work, tasks)
        else:
            model = None               # each worker loads its own
            pool = multiprocessing.get_context('spawn').Pool(
                workers, initializer=_init_worker, initargs=(loader, config, threads))
            results = pool.imap_unordered(_work, tasks)
        for track, source, result in results:
            scores.setdefault(track, {})[source] = result
            bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        bar.close()
        _WORKER.clear()
        if pool is not None:
            pool.terminate()
    scores = {track: {s: scores[track][s] for s in sources if s in scores[track]}
              for track in sorted(scores)}
    result = FilterResult(scores, sources, config)
    write_result(result, out, info)
    return result


def write_result(result: FilterResult, out: Path, info: tp.Optional[dict] = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for source in result.sources:
        for kind, tracks in (('clean', result.clean_tracks(source)),
                             ('silent', result.silent_tracks(source))):
            write_text(out / f'{kind}_{source}.txt', ''.join(f'{t}\n' for t in tracks))
    data = {'config': asdict(result.config), **(info or {}), 'sources': result.sources,
            'tracks': result.scores}
    write_json(out / SCORES, data)


# --------------------------------------------------------------------------------------------
# Scoring against the ground truth of a label-noise set
# --------------------------------------------------------------------------------------------

def _prf(tp_: int, fp: int, fn: int) -> tp.Dict[str, float]:
    precision = tp_ / (tp_ + fp) if tp_ + fp else float('nan')
    recall = tp_ / (tp_ + fn) if tp_ + fn else float('nan')
    f1 = 2 * tp_ / (2 * tp_ + fp + fn) if tp_ + fp + fn else float('nan')
    return {'precision': precision, 'recall': recall, 'f1': f1,
            'kept': tp_ + fp, 'clean': tp_ + fn}


def stem_kind(entry: tp.Mapping[str, tp.Any], source: tp.Optional[str] = None) -> str:
    """'clean' or the corruption kind of a manifest stem entry; silence is split into
    'silence_whole' and 'silence_partial'; given the stem's `source`, `other_track` audio of
    that same source is 'other_track_same'."""
    if entry['clean']:
        return 'clean'
    if entry['kind'] == 'silence':
        return 'silence_whole' if entry.get('whole') else 'silence_partial'
    if entry['kind'] == 'other_track' and source is not None and entry.get('source') == source:
        return 'other_track_same'
    return str(entry['kind'])


KIND_ORDER = ['clean', 'swap', 'other_track', 'bleed', 'silence_whole', 'other_track_same',
              'silence_partial', 'shift']


def evaluate(decisions: tp.Mapping[str, tp.Mapping[str, bool]],
             manifest: tp.Mapping[str, tp.Any]) -> tp.Dict[str, tp.Any]:
    """Precision/recall/F1 of "clean" decisions (track -> source -> kept) against a
    label-noise manifest, on the stems present in both.

    Returns {'overall': prf, 'sources': {source: prf}, 'usable': prf, 'kinds': {kind:
    {'count', 'detected', 'recall', 'usable'}}, 'missing': stems of the manifest without a
    decision}; a prf is {'precision', 'recall', 'f1', 'kept', 'clean'}. 'overall' and
    'sources' count only clean stems as positives; 'usable' counts the stems that still
    teach their source to remix training (`labelnoise.teaches_its_source`: also shifted,
    partly silent and same-source stems of other tracks, which no test of a stem alone can
    tell from clean ones). For a corruption kind `recall` is the fraction of its stems
    judged not clean; for 'clean', the fraction kept.
    """
    from .data.labelnoise import teaches_its_source
    counts: tp.Dict[str, tp.List[int]] = {}     # source -> [tp, fp, fn]
    usable = [0, 0, 0]
    kinds: tp.Dict[str, tp.List[int]] = {}      # kind -> [count, detected, all usable]
    missing = 0
    for track, entry in manifest['tracks'].items():
        for source, stem in entry['stems'].items():
            if source not in decisions.get(track, {}):
                missing += 1
                continue
            kept = bool(decisions[track][source])
            teaches = teaches_its_source(stem, source)
            for row, positive in ((counts.setdefault(source, [0, 0, 0]), stem['clean']),
                                  (usable, teaches)):
                row[0] += kept and positive
                row[1] += kept and not positive
                row[2] += positive and not kept
            kind = stem_kind(stem, source)
            tally = kinds.setdefault(kind, [0, 0, 1])
            tally[0] += 1
            tally[1] += kept if kind == 'clean' else not kept
            tally[2] &= teaches
    total = [sum(row[i] for row in counts.values()) for i in range(3)]
    kind_names = [k for k in KIND_ORDER if k in kinds] + sorted(set(kinds) - set(KIND_ORDER))
    return {
        'overall': _prf(*total),
        'sources': {source: _prf(*counts[source]) for source in sorted(counts)},
        'usable': _prf(*usable),
        'kinds': {kind: {'count': kinds[kind][0], 'detected': kinds[kind][1],
                         'recall': kinds[kind][1] / kinds[kind][0],
                         'usable': bool(kinds[kind][2])} for kind in kind_names},
        'missing': missing,
    }


def ranking_auc(scores: tp.Mapping[str, tp.Mapping[str, tp.Mapping[str, tp.Any]]],
                manifest: tp.Mapping[str, tp.Any], statistic: str, usable: bool = False
                ) -> float:
    """Threshold-free quality of a statistic: the probability that a clean stem scores higher
    than a corrupted one (ROC AUC, ties count half; silent stems score -inf). NaN when the
    set lacks clean or corrupted stems. `usable`: usable stems against the others (see
    `evaluate`)."""
    from .data.labelnoise import clean_flags, usable_flags
    truth = (usable_flags if usable else clean_flags)(manifest)
    values: tp.Dict[bool, tp.List[float]] = {True: [], False: []}
    for track, flags in truth.items():
        for source, clean in flags.items():
            stem = scores.get(track, {}).get(source)
            if stem is not None:
                values[clean].append(-np.inf if stem['silent'] else float(stem[statistic]))
    good, bad = np.array(values[True]), np.array(values[False])
    if not len(good) or not len(bad):
        return float('nan')
    wins = (good[:, None] > bad[None, :]).sum() + 0.5 * (good[:, None] == bad[None, :]).sum()
    return float(wins / (len(good) * len(bad)))


def format_metrics(metrics: tp.Mapping[str, tp.Any]) -> str:
    """A plain-text table of `evaluate`'s result."""
    lines = [f"{'':<16}{'precision':>10}{'recall':>8}{'f1':>8}{'kept':>6}{'positives':>10}"]
    rows = [*metrics['sources'].items(), ('overall', metrics['overall']),
            ('usable (remix)', metrics['usable'])]
    for name, m in rows:
        lines.append(f"{name:<16}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}"
                     f"{m['kept']:>6d}{m['clean']:>10d}")
    usable = ', '.join(kind for kind, m in metrics['kinds'].items() if m['usable'])
    lines.append(f"(usable: positives are the stems that still teach their source when "
                 f"sources are remixed: {usable})")
    lines.append('')
    lines.append(f"{'kind':<16}{'stems':>6}{'recall':>8}   (clean: fraction kept; "
                 f"corruptions: fraction detected)")
    for kind, m in metrics['kinds'].items():
        note = '   usable: kept is right' if m['usable'] and kind != 'clean' else ''
        lines.append(f"{kind:<16}{m['count']:>6d}{m['recall']:>8.3f}{note}")
    if metrics['missing']:
        lines.append(f"({metrics['missing']} stems of the manifest were not filtered)")
    return '\n'.join(lines)
