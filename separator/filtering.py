"""Automatic label-noise filter of the SDX23 label-noise winner (team CCOM): the purity test.

A training stem labelled `source` is *clean* when a separation model, given that stem alone,
puts (almost) all of it into `source`. So that the model cannot simply echo audio it saw in
training (it was trained on the very stems we filter), the stem is first pitch-shifted (+6
semitones by default) and time-stretched (stretch factor 2.0 by default) with Rubber Band
(`pedalboard.time_stretch`). In Rubber Band's / pedalboard's convention a stretch factor of
2.0 plays the audio twice as fast (half the length, which also halves the separation cost);
a factor of 0.5 plays it twice as slow. Both are configurable.

For every stem we separate the transformed stem and measure the level of each output source.
Statistics (all computed and saved in scores.json; `statistic` decides):

- `ccom` (default): the winner's test, exactly. An output's level is 20 log10 of the SUM of
  the absolute values of all its samples (every channel, every time step); the stem is
  clean iff its own source's level beats the loudest other source's by STRICTLY more than
  the threshold (default 20 dB). It is silent (never clean) when every output's level is at
  or below -80 dB (`EMPTY_DB`), or when the input stem's mean |x| is below `silence_db`
  (default -80 dBFS), in which case it is not separated.
- `purity` (ours, the default before `ccom`): the same comparison on RMS levels (10 log10 of
  the mean square), clean iff >= threshold (default 20 dB); an input below -60 dBFS RMS is
  silent, and a stem is never dropped for quiet outputs.
- `sdr`: SDR of the own-source estimate against the transformed stem itself,
  10 log10(|x|^2 / |x - own|^2), dB. It penalises both what leaks to other sources and
  what the model changes or drops. Clean iff >= threshold (default 10 dB); silence as
  `purity`. Measured on a synthetic band set (each source in its own frequency band, 12
  tracks, rate 0.3) with an oracle band-routing model, it did not beat `purity` (F1 0.886
  vs 0.909: at 10 dB it keeps -6 to -20 dB bleeds; ranking AUC 0.80 vs 0.79).

A level difference of two sums of |x| and of two RMS levels are both amplitude ratios in dB
and agree for steady signals; they differ in weighting: the sum of |x| weighs quiet passages
more than the RMS, which is dominated by the loud ones.

The winner's code (github.com/davidliujiafeng/ccom_mdx2023, branch `labelnoise_train`,
commit 28430b8, folder `labelnoise_filter/`), read for `ccom`:
- auto_filter.py l.9-12 (`cal_volumn`): `20 * torch.log10(torch.sum(torch.abs(audio)))`
  over the whole tensor of an output file as `torchaudio.load` returns it ([channels, time]:
  both channels of the stereo output and every sample, a sum and not a mean, so a level
  grows with the length; the four outputs of a stem have the same length, so their
  differences do not), with no epsilon: an all-zero output is -inf.
- l.58-72: the four outputs are measured; when none is above -80 dB (`volumn > -80` clears
  `empty`, l.65-66) the stem is skipped, i.e. not clean, before any comparison.
- l.74-77: clean iff own level minus the loudest other's `> volumn_threshold` (strict), an
  int from the command line: 20 in the README's `python auto_filter.py pretrain3 6 200 20`.
- aicrowd_wrapper.py l.100-111: a stem whose `20 log10 mean|x|` (over all channels and
  samples, as `soundfile.read` returns them) is below -80 dB is not separated: it is written
  as every output, so its outputs tie (0 dB: not clean at 20) or, all zero, are empty.
  Other stems are transformed (l.12-58) by `rubberband-r3 --pitch 6 --tempo 2.0 --fast` on
  the whole file (filter.sh: KEY=6, SPEED=200; tempo = SPEED / 100): +6 semitones, twice
  as fast, with Rubber Band's R2 engine (the tool's usage: "-2, --fast  Use the R2 (faster)
  engine", chosen here although the R3 build defaults to R3) and without formant
  preservation (no `-F`). `transform` does the same (`high_quality=False,
  preserve_formants=False`).
- first_loss_trunc_filter.py l.47-53: `apply_model(..., shifts=1, overlap=0.25)`; the
  estimates are converted back to the stem's rate and channels. Ours: `apply_bag` with
  `shifts` (default 0) and our chunking.
- aicrowd_wrapper.py l.89-93: the outputs go through WAV files that `soundfile.write`
  writes with its default subtype, 16-bit PCM, before auto_filter.py reads them back.

Where `ccom` departs from that code, and why no decision at the default threshold changes:
- levels are those of the float estimates, not of their 16-bit rounding (samples under
  half a 16-bit step, about -96 dBFS, are zero there): the same levels to that rounding;
- a level is floored at -200 dB (sum |x| >= 1e-10) instead of -inf, so that scores.json
  holds numbers. For any threshold in [-120, 120) dB the decisions are the winner's: when
  every output is zero the stem is empty in both; when only its own output is zero its
  score is below -200 + 80 (another output is above -80 dB), not clean in both; when only
  the others are zero its score is above -80 + 200, clean in both;
- a silent input is reported as silent and never kept, whatever the threshold (the
  winner's copies tie at 0 dB, so they are dropped at any threshold >= 0 there too);
- every saved value is rounded to 0.001 dB and decisions are taken on the saved values, so
  that scores.json re-derives them and a score exactly at the threshold is not kept.

Tried and not added: a model-free `leak` statistic, the fraction of a stem's energy that the
other stems of its track explain (complex least squares per STFT bin, nfft 4096), meant to
catch bleeding. On the sdx23_small label-noise set its ranking AUC is 0.57 (purity with a
2.6 dB model: 0.61): clean stems are explained at -27 to -13 dB, since instruments share
notes, and bleeds at -19 to -0.2 dB; only duplicated stems (one-way swaps) stand out, which
purity catches anyway.

The threshold can be chosen without the ground truth: `threshold='auto'` (`auto_threshold`)
puts it in the valley between the two modes of the statistic's distribution over the
non-silent stems of the set itself (clean stems score high; another source's audio or a loud
bleed, low). The density is a Gaussian kernel estimate whose bandwidth is the normal
reference rule, 1.06 sigma n^(-1/5), with sigma the spread WITHIN the modes: the pooled
standard deviation of the two classes of Otsu's cut (the cut that maximises the variance
between them). The rule on the spread of the whole set (Silverman's) counts the distance
between the modes as spread and smooths away the very valley we look for: on simulated
scores it found two equal unit-variance modes 5 sigma apart 32 % of the time with 40 stems
(now 93 %), a 30/70 mixture of modes 6 sigma apart with variances 1 and 4 about 1 % of the
time (now 57 %). The threshold is the lowest density between the two highest peaks; the
scores count as bimodal only when each side of that valley holds at least 10 % of the stems
and the valley is at most half as dense as the lower peak. Unimodal samples then pass as
bimodal, with 40 / 80 / 200 stems: Gaussian 1 / 0.2 / 0 %, Laplace 1.6 / 0 / 0 %,
Student-t (3) 0.6 / 0.4 / 0 %, half-normal 6 / 1.4 / 0 %, exponential 10 / 2 / 0 %,
lognormal 10 / 2 / 0.4 %, uniform (no mode at all) 20 / 7 / 0.8 % of the time; two equal
modes 4 sigma apart are found 72 / 80 / 91 % of the time, 5 sigma apart 93 / 97 / 98 %,
a 20/80 mixture 5 sigma apart 80 / 86 / 95 %. When the scores are not bimodal (or fewer
than 8), the statistic's default threshold decides, with a warning, and scores.json says
so. Otsu's cut alone was not chosen: it always returns a cut, and its criterion (the share
of variance between the two classes) does not tell bimodal from unimodal scores (a uniform
sample gets 0.75, a 70/30 mixture of modes 4 sigma apart 0.79, a spike beside a flat tail
0.84). The manifest of an injected set only scores the result (`evaluate`).

A silent stem is reported separately (`silent: true` in `scores.json` and
`OUT/silent_{source}.txt`) and never listed as clean, since a silent target teaches nothing
(and a wholly silent stem is a typical label error); a silent input is not separated.

Output of `filter_folder` (every file written atomically):

    OUT/clean_{source}.txt      one track folder name per line: stems judged clean
    OUT/silent_{source}.txt     the silent stems
    OUT/scores.json             config, the threshold used (and how it was chosen), and every
                                stem's statistics and decision

`evaluate` scores the decisions against a label-noise manifest
(`separator.data.labelnoise`): precision, recall and F1 of the "clean" decision (positive
class: clean), per source and overall, and the detection rate of every kind of corruption;
and overall with the *usable* stems as positives (`labelnoise.teaches_its_source`): a time
shift, a partial silence or another track's audio of the same source leave a stem pure, so
no test of the stem alone sees them, and they are right examples of their source for the
recipe's training, which remixes sources across tracks.
"""
import logging
import multiprocessing
import typing as tp
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import write_json
from .data.audio import convert_channels, read_audio
from .data.clean_lists import write_lists
from .data.musdb import track_folders
from .pretrained import apply_bag

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Statistic:
    """How a statistic decides. Clean iff its value > `threshold` (`strict`) or >= it; the
    input is silent below `silence_db` dBFS, measured as the mean |x| (`mean_abs`) or the
    RMS; `drops_empty`: also silent when every output's sum-|x| level is <= EMPTY_DB."""
    threshold: float
    strict: bool
    silence_db: float
    mean_abs: bool
    drops_empty: bool


STATISTICS = {                      # name -> rule; the first is the default
    'ccom': Statistic(20.0, strict=True, silence_db=-80.0, mean_abs=True, drops_empty=True),
    'purity': Statistic(20.0, strict=False, silence_db=-60.0, mean_abs=False,
                        drops_empty=False),
    'sdr': Statistic(10.0, strict=False, silence_db=-60.0, mean_abs=False, drops_empty=False),
}
AUTO = 'auto'                       # threshold chosen from the set's scores
EMPTY_DB = -80.0                    # ccom: every output at or below this -> silent
SCORES = 'scores.json'
EPS = 1e-20                         # energy floor: RMS levels are >= -200 dB
ABS_FLOOR = 1e-10                   # floor of mean / sum of |x|: those levels are >= -200 dB
DECIMALS = 3                        # saved values (dB), on which decisions are taken

Loader = tp.Union[nn.Module, tp.Callable[[], nn.Module]]


def parse_threshold(value: tp.Any, default: float) -> tp.Union[float, str]:
    """dB as a float, 'auto', or `default` for None."""
    if value is None:
        return float(default)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"Filter threshold {value!r} is neither dB nor '{AUTO}': set "
                     f"filter.threshold (tools.filter: --threshold) to a number, to {AUTO} "
                     f"(chosen from the scores) or to null (the statistic's default).")


@dataclass
class FilterConfig:
    """Parameters of the test. `threshold`: dB, 'auto' (chosen from the set's scores, see
    `auto_threshold`) or None (the statistic's default); `silence_db=None`: the
    statistic's (STATISTICS)."""
    semitones: float = 6.0
    stretch: float = 2.0
    threshold: tp.Union[float, str, None] = None
    silence_db: tp.Optional[float] = None
    statistic: str = 'ccom'
    segment: tp.Optional[float] = None       # chunk length for apply_model (model's default)
    shifts: int = 0

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"Unknown statistic {self.statistic!r}: choose among "
                             f"{', '.join(STATISTICS)}.")
        if self.stretch <= 0:
            raise ValueError(f"stretch must be positive, got {self.stretch}.")
        self.threshold = parse_threshold(self.threshold, self.rule.threshold)
        if self.silence_db is None:
            self.silence_db = self.rule.silence_db

    @property
    def rule(self) -> Statistic:
        return STATISTICS[self.statistic]

    def describe(self, threshold: tp.Union[float, str, None] = None) -> str:
        """E.g. 'ccom > 20 dB': the decision rule (at `threshold`, default the config's)."""
        threshold = self.threshold if threshold is None else threshold
        value = threshold if isinstance(threshold, str) else f'{threshold:g} dB'
        return f"{self.statistic} {'>' if self.rule.strict else '>='} {value}"


# --------------------------------------------------------------------------------------------
# The statistics of one stem
# --------------------------------------------------------------------------------------------

def _float64(audio: tp.Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return np.asarray(audio, dtype=np.float64)


def level_db(audio: tp.Union[np.ndarray, torch.Tensor]) -> float:
    """Mean energy per sample in dB (RMS dBFS), floored at 10 log10(EPS)."""
    audio = _float64(audio)
    energy = float(np.mean(audio ** 2)) if audio.size else 0.
    return 10 * np.log10(energy + EPS)


def mean_abs_db(audio: tp.Union[np.ndarray, torch.Tensor]) -> float:
    """20 log10 of the mean |x| over every channel and sample (the winner's input silence
    check, aicrowd_wrapper.py l.101-104), floored at -200 dB."""
    audio = _float64(audio)
    mean = float(np.mean(np.abs(audio))) if audio.size else 0.
    return 20 * np.log10(max(mean, ABS_FLOOR))


def sum_abs_db(audio: tp.Union[np.ndarray, torch.Tensor]) -> float:
    """20 log10 of the SUM of |x| over every channel and sample (the winner's output level,
    `cal_volumn` of auto_filter.py l.9-12), floored at -200 dB instead of -inf."""
    return 20 * np.log10(max(float(np.sum(np.abs(_float64(audio)))), ABS_FLOOR))


def input_level_db(audio: tp.Union[np.ndarray, torch.Tensor], statistic: str) -> float:
    """The input stem's level as `statistic`'s silence check measures it (dBFS)."""
    return mean_abs_db(audio) if STATISTICS[statistic].mean_abs else level_db(audio)


def transform(audio: np.ndarray, samplerate: int, semitones: float, stretch: float
              ) -> np.ndarray:
    """Pitch-shift by `semitones` and time-stretch by `stretch` with Rubber Band set as the
    winner's command line (R2 engine, formants not preserved): [C, T] float32."""
    if semitones == 0 and stretch == 1:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from pedalboard import time_stretch
    out = time_stretch(np.ascontiguousarray(audio, dtype=np.float32), float(samplerate),
                       stretch_factor=float(stretch), pitch_shift_in_semitones=float(semitones),
                       high_quality=False, preserve_formants=False)
    return np.ascontiguousarray(out, dtype=np.float32)


def _margin(levels: tp.Mapping[str, float], source: str) -> float:
    """Own level minus the loudest other's (inf without other sources)."""
    others = [level for name, level in levels.items() if name != source]
    return levels[source] - max(others) if others else float('inf')


def _rounded(levels: tp.Mapping[str, float]) -> tp.Dict[str, float]:
    return {name: round(float(level), DECIMALS) for name, level in levels.items()}


def stem_statistics(estimates: torch.Tensor, stem: torch.Tensor, sources: tp.Sequence[str],
                    source: str) -> tp.Dict[str, tp.Any]:
    """Statistics of the separation `estimates` [S, C, T] of the (transformed) `stem` [C, T]
    labelled `source`: RMS levels (`levels_db`) and sum-|x| levels (`sum_abs_db`) of every
    output, `purity`, `ccom`, `sdr`, and `empty` (every sum-|x| level <= EMPTY_DB). Every
    value is rounded to 0.001 dB, and `ccom` and `empty` come from the rounded levels."""
    names = list(sources)
    levels = _rounded({name: level_db(estimates[i]) for i, name in enumerate(names)})
    sums = _rounded({name: sum_abs_db(estimates[i]) for i, name in enumerate(names)})
    own = estimates[names.index(source)].double()
    reference = float((stem.double() ** 2).sum())
    error = float(((stem.double() - own) ** 2).sum())
    sdr = 10 * np.log10((reference + EPS) / (error + EPS))
    return {'levels_db': levels, 'sum_abs_db': sums,
            'purity': round(float(_margin(levels, source)), DECIMALS),
            'ccom': round(float(_margin(sums, source)), DECIMALS),
            'sdr': round(float(sdr), DECIMALS),
            'empty': all(level <= EMPTY_DB for level in sums.values())}


def _resample(audio: torch.Tensor, rate: int, samplerate: int) -> torch.Tensor:
    if rate == samplerate:
        return audio
    import julius
    return julius.resample_frac(audio, rate, samplerate)


def measure_stem(model: nn.Module, path: tp.Union[str, Path], source: str,
                 config: FilterConfig) -> tp.Dict[str, tp.Any]:
    """Read the stem `path` labelled `source`, transform and separate it: its statistics
    without the decision (which may need the whole set's scores: `resolve_threshold`).

    Returns {'level_db': the input's level as the statistic's silence check measures it
    (mean |x| for ccom, RMS for the others, dBFS), 'silent', and unless the input is silent
    the entries of `stem_statistics`}."""
    import soundfile as sf
    path = Path(path)
    rate = sf.info(str(path)).samplerate
    audio = read_audio(path)
    result: tp.Dict[str, tp.Any] = {
        'level_db': round(input_level_db(audio, config.statistic), DECIMALS)}
    if result['level_db'] < config.silence_db:
        return {**result, 'silent': True}
    audio = convert_channels(audio, model.audio_channels)
    audio = transform(audio, rate, config.semitones, config.stretch)
    stem = _resample(torch.from_numpy(audio), rate, model.samplerate)
    with torch.inference_mode():
        estimates = apply_bag(model, stem, segment=config.segment, shifts=config.shifts)
    result.update(stem_statistics(estimates, stem, model.sources, source))
    result['silent'] = bool(config.rule.drops_empty and result['empty'])
    return result


def is_clean(stem: tp.Mapping[str, tp.Any], config: FilterConfig, threshold: float) -> bool:
    """The decision on a measured stem: not silent, and its statistic above `threshold`
    (strictly for ccom)."""
    if stem['silent']:
        return False
    value = stem[config.statistic]
    return bool(value > threshold if config.rule.strict else value >= threshold)


def score_stem(model: nn.Module, path: tp.Union[str, Path], source: str,
               config: FilterConfig) -> tp.Dict[str, tp.Any]:
    """`measure_stem` and the decision `clean` at the config's threshold (a number: 'auto'
    needs the scores of a whole set, see `filter_folder`)."""
    if config.threshold == AUTO:
        raise ValueError("score_stem: threshold 'auto' is chosen from the scores of a whole "
                         "set: use filter_folder, or give a threshold in dB.")
    result = measure_stem(model, path, source, config)
    result['clean'] = is_clean(result, config, float(config.threshold))
    return result


# --------------------------------------------------------------------------------------------
# A threshold chosen from the scores themselves
# --------------------------------------------------------------------------------------------

MIN_AUTO_STEMS = 8       # fewer scores: no density to speak of
MODE_FRACTION = 0.1      # each side of the valley holds at least this fraction of the stems
VALLEY_DEPTH = 0.5       # the valley is at most this fraction of the lower peak's density
GRID = 512               # points of the density estimate


def otsu_split(sorted_values: np.ndarray) -> int:
    """Otsu's cut of sorted values: the count of the lower class that maximises the variance
    between the two classes."""
    x, n = sorted_values, len(sorted_values)
    sums = np.cumsum(x)[:-1]
    below = np.arange(1, n)
    between = below * (n - below) * (sums / below - (x.sum() - sums) / (n - below)) ** 2
    return int(np.argmax(between)) + 1


def kde_valley(values: tp.Sequence[float]) -> tp.Tuple[tp.Optional[float], tp.Dict[str, tp.Any]]:
    """The valley between the two highest modes of a Gaussian kernel density estimate of
    `values`, or None when they are not bimodal (see the module docstring); and what was
    measured: bandwidth, peaks, valley, fraction below it, depth."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    info: tp.Dict[str, tp.Any] = {'stems': len(x)}
    if len(x) < MIN_AUTO_STEMS or not x.std() > 0:
        info['reason'] = f'{len(x)} scores' if len(x) < MIN_AUTO_STEMS else 'all scores equal'
        return None, info
    cut = otsu_split(x)
    within = np.sqrt((x[:cut].var() * cut + x[cut:].var() * (len(x) - cut)) / len(x))
    bandwidth = 1.06 * max(within, 1e-3 * x.std()) * len(x) ** -0.2
    grid = np.linspace(x[0] - 3 * bandwidth, x[-1] + 3 * bandwidth, GRID)
    density = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bandwidth) ** 2).sum(1)
    peaks = [i for i in range(1, GRID - 1)
             if density[i] > density[i - 1] and density[i] >= density[i + 1]]
    info['bandwidth'] = round(float(bandwidth), DECIMALS)
    if len(peaks) < 2:
        info['reason'] = 'one mode'
        return None, info
    low, high = sorted(sorted(peaks, key=lambda i: -density[i])[:2])
    valley = low + int(np.argmin(density[low:high + 1]))
    threshold = float(grid[valley])
    below = float(np.mean(x < threshold))
    depth = float(density[valley] / min(density[low], density[high]))
    info.update(peaks=[round(float(grid[low]), DECIMALS), round(float(grid[high]), DECIMALS)],
                valley=round(threshold, DECIMALS), below=round(below, DECIMALS),
                depth=round(depth, DECIMALS))
    if min(below, 1 - below) < MODE_FRACTION:
        info['reason'] = f'a mode with {min(below, 1 - below):.0%} of the stems'
        return None, info
    if depth > VALLEY_DEPTH:
        info['reason'] = f'a shallow valley ({depth:.2f} of the lower peak)'
        return None, info
    return threshold, info


def auto_threshold(values: tp.Sequence[float], default: float, statistic: str = ''
                   ) -> tp.Tuple[float, tp.Dict[str, tp.Any]]:
    """The threshold of the valley of bimodal `values` (`kde_valley`), else `default` with a
    warning; and how it was chosen ({'method', 'bimodal', ...})."""
    values = [float(v) for v in values if np.isfinite(v)]
    valley, info = kde_valley(values)
    if valley is None:
        logger.warning("Filter threshold auto: the %s scores of the %d non-silent stems are "
                       "not bimodal (%s): using the statistic's default threshold, %g dB.",
                       statistic, len(values), info['reason'], default)
        return float(default), {'method': 'default (not bimodal)', 'bimodal': False, **info}
    return round(valley, DECIMALS), {'method': 'kde valley', 'bimodal': True, **info}


def resolve_threshold(scores: tp.Mapping[str, tp.Mapping[str, tp.Mapping[str, tp.Any]]],
                      config: FilterConfig) -> tp.Tuple[float, tp.Dict[str, tp.Any]]:
    """The threshold that decides (the config's, or chosen from the statistic over the
    non-silent stems of `scores` for 'auto') and how it was chosen."""
    if config.threshold != AUTO:
        return float(config.threshold), {'method': 'given'}
    values = [stem[config.statistic] for stems in scores.values() for stem in stems.values()
              if not stem['silent']]
    return auto_threshold(values, config.rule.threshold, config.statistic)


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
    return track, source, measure_stem(_WORKER['model'], path, source, _WORKER['config'])


@dataclass
class FilterResult:
    """scores: track -> source -> statistics and decision (see `measure_stem`, `is_clean`);
    threshold: the one that decided; threshold_choice: how it was chosen."""
    scores: tp.Dict[str, tp.Dict[str, tp.Dict[str, tp.Any]]]
    sources: tp.List[str]
    config: FilterConfig = field(default_factory=FilterConfig)
    threshold: float = float('nan')
    threshold_choice: tp.Dict[str, tp.Any] = field(default_factory=dict)

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


def _measure_all(loader: Loader, model: tp.Optional[nn.Module],
                 tasks: tp.Sequence[tp.Tuple[str, str, str]], config: FilterConfig,
                 workers: int, threads: int, progress: bool
                 ) -> tp.Dict[str, tp.Dict[str, tp.Dict[str, tp.Any]]]:
    """track -> source -> `measure_stem` for every task (path, track, source)."""
    from tqdm import tqdm
    bar = tqdm(total=len(tasks), desc='filter', unit='stem', disable=not progress)
    scores: tp.Dict[str, tp.Dict[str, tp.Dict[str, tp.Any]]] = {}
    pool = None
    try:
        if workers == 0:
            _init_worker(model, config, torch.get_num_threads())
            results: tp.Iterable = map(_work, tasks)
        else:
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
    return scores


def filter_folder(loader: Loader, noisy: tp.Union[str, Path], out: tp.Union[str, Path],
                  config: tp.Optional[FilterConfig] = None, workers: int = 0,
                  threads: int = 1, progress: bool = True,
                  info: tp.Optional[tp.Dict[str, tp.Any]] = None) -> FilterResult:
    """Judge every stem of `noisy` and write the clean lists and `scores.json` into `out`.
    Every stem is measured first, then the threshold is resolved (`resolve_threshold`: with
    'auto', from the scores) and every stem decided.

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
    if workers:
        model = None               # each worker loads its own
    stems = list_stems(noisy, sources)
    tasks = [(str(noisy / track / f'{source}.wav'), track, source) for track, source in stems]
    scores = _measure_all(loader, model, tasks, config, workers, threads, progress)
    scores = {track: {s: scores[track][s] for s in sources if s in scores[track]}
              for track in sorted(scores)}
    threshold, choice = resolve_threshold(scores, config)
    for track_scores in scores.values():
        for stem in track_scores.values():
            stem['clean'] = is_clean(stem, config, threshold)
    result = FilterResult(scores, sources, config, threshold, choice)
    write_result(result, out, info)
    return result


def write_result(result: FilterResult, out: Path, info: tp.Optional[dict] = None) -> None:
    out = Path(out)
    for kind, tracks in (('clean', result.clean_tracks), ('silent', result.silent_tracks)):
        write_lists(out, kind, {source: tracks(source) for source in result.sources})
    data = {'config': asdict(result.config), **(info or {}), 'threshold': result.threshold,
            'threshold_choice': result.threshold_choice, 'sources': result.sources,
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
