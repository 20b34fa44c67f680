"""Automix: new training tracks made of stems of different tracks that fit together in tempo
and key (Demucs's `tools/automix.py`, used for its MDX21 Track A models).

Analysis of every training track (cached in a JSON file, see `analyse_tracks`):
- the track is trimmed before its first frame whose mixture reaches 1 % of the mixture's std;
- the tempo (BPM) and beat times come from librosa's beat tracker on the drums;
- the key is a histogram over the 12 pitch classes of the strongest chroma (CQT) of each frame
  of the bass, kept where the bass's RMS (10000-frame window) reaches 5 % of its peak.
A track whose drums or bass are silent (std below 1 % of the mixture's) is left out.

A remix (`build_remix`) keeps one stem, drawn at random, of a reference track and takes each
other stem from a partner drawn at random among the tracks whose tempo is within 15 % of the
reference's (or of its half, double, quarter or quadruple: the scales Demucs tries) and whose
key is within 3 semitones; the partner's stem is repitched (Rubber Band, see repitch.py) to the
reference's tempo and key, then all stems are shifted so that their beats align (a cross-
correlation of beat grids, 5 ms cells, shifts up to 4 s) and cut to the shortest. When the kept
stem is the drums, which have no key, the first partner sets the key (Demucs's intent:
its `pitch_match = order != 0` compares a list to 0 and is always true). The remix is scaled so
that its mixture peaks below 1, and the mixture is the float32 sum of the stems.

Everything is a function of the seed: the remix `copy` of reference track `i` draws from an
RNG seeded with (seed, copy, i).
"""
import dataclasses
import json
import logging
import typing as tp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder, remove_stale_folders, write_json
from .audio import audio_info, read_audio
from .musdb import MIXTURE, TrackInfo, index_tracks, split_valid, track_folders
from .numba_lock import first_call
from .repitch import repitch
from .synthetic import SOURCES, write_wav

logger = logging.getLogger(__name__)

MAX_PITCH = 3                 # semitones: largest key change of a partner
MAX_TEMPO = 0.15              # relative: largest tempo change of a partner
TEMPO_SCALES = (1 / 4, 1 / 2, 1, 2, 4)   # a partner's tempo may match at these multiples
SILENCE = 1e-2                # of the mixture's std: below it, a stem (or the intro) is silent
RMS_WINDOW = 10000            # frames of the bass RMS that masks its quiet parts ...
RMS_FLOOR = 0.05              # ... below this fraction of its peak
GRID = 5e-3                   # seconds per cell of the beat grids
BUMP_CELLS = 5                # a beat is a Gaussian over +-5 cells ...
BUMP_STD = 2.                 # ... of this std (cells)
MAX_SHIFT = 4.                # seconds: largest shift that aligns the beats
EDGE = 1.                     # seconds: beats this close to either end are ignored
HEADROOM = 1.01               # the mixture's peak is scaled to at most 1 / HEADROOM
ANALYSIS_VERSION = 1          # bump when the analysis changes: the cache is then recomputed
MANIFEST = 'automix.json'
RECIPE = 'recipe.json'        # in each remix folder: where its stems come from


@dataclasses.dataclass
class Analysis:
    """Tempo, beats and key of a training track, or why it cannot be remixed."""
    name: str
    start: int = 0                        # frames trimmed at the beginning
    tempo: float = 0.                     # BPM of the drums
    beats: tp.List[float] = dataclasses.field(default_factory=list)  # seconds from `start`
    key: tp.List[float] = dataclasses.field(default_factory=list)    # 12 pitch classes
    rejected: tp.Optional[str] = None     # the reason, when the track is left out


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------

def estimate_tempo(drums: np.ndarray, samplerate: int) -> tp.Tuple[float, np.ndarray]:
    """(BPM, beat times in seconds) of a mono signal, by librosa's beat tracker."""
    import librosa
    with first_call('librosa.beat.beat_track'):
        tempo, beats = librosa.beat.beat_track(y=np.asarray(drums, dtype=np.float32),
                                               sr=samplerate, units='time')
    return float(np.atleast_1d(tempo)[0]), np.asarray(beats, dtype=np.float64)


def windowed_rms(audio: np.ndarray, window: int = RMS_WINDOW) -> np.ndarray:
    """RMS of a mono signal over a centred window of `window` frames (rounded up to odd),
    zero-padded at the ends: one value per frame."""
    half = window // 2
    window = 2 * half + 1
    power = np.concatenate([[0.], np.cumsum(np.pad(audio.astype(np.float64) ** 2, half))])
    return np.sqrt(np.maximum(power[window:] - power[:-window], 0) / window)


def key_histogram(bass: np.ndarray, samplerate: int) -> np.ndarray:
    """Fraction of the frames where each pitch class has the strongest chroma (CQT) [12]."""
    import librosa
    with first_call('librosa.feature.chroma_cqt'):
        chroma = librosa.feature.chroma_cqt(y=np.asarray(bass, dtype=np.float32),
                                            sr=samplerate)
    return (chroma == chroma.max(0, keepdims=True)).mean(1)


def analyse_stems(name: str, stems: np.ndarray, samplerate: int,
                  sources: tp.Sequence[str] = SOURCES) -> Analysis:
    """Analyse the stems [S, C, T] of track `name` (see the module's docstring)."""
    mix = stems.sum(0).mean(0)
    reference = float(mix.std())
    loud = np.flatnonzero(np.abs(mix) >= SILENCE * reference)
    if reference == 0 or not len(loud):
        return Analysis(name, rejected='silent track')
    start = int(loud[0])
    drums = stems[list(sources).index('drums'), :, start:].mean(0)
    if drums.std() <= SILENCE * reference:
        return Analysis(name, start=start, rejected='silent drums')
    tempo, beats = estimate_tempo(drums, samplerate)
    if tempo <= 0:
        return Analysis(name, start=start, rejected='no beat found in the drums')
    bass = stems[list(sources).index('bass'), :, start:].mean(0)
    rms = windowed_rms(bass)
    bass = bass[rms >= RMS_FLOOR * rms.max()]
    if not len(bass) or bass.std() <= SILENCE * reference:
        return Analysis(name, start=start, tempo=tempo, rejected='silent bass')
    return Analysis(name, start=start, tempo=tempo, beats=[float(b) for b in beats],
                    key=[float(k) for k in key_histogram(bass, samplerate)])


def load_stems(track: TrackInfo, sources: tp.Sequence[str] = SOURCES, start: int = 0
               ) -> np.ndarray:
    """The stems of `track` from frame `start`, float32 [S, C, T]."""
    return np.stack([read_audio(Path(track.files[source]), start) for source in sources])


def _stamps(track: TrackInfo) -> tp.Dict[str, tp.List[int]]:
    stats = {source: Path(path).stat() for source, path in sorted(track.files.items())}
    return {source: [stat.st_size, stat.st_mtime_ns] for source, stat in stats.items()}


def _analyse_track(track: TrackInfo) -> Analysis:
    return analyse_stems(track.name, load_stems(track), track.samplerate)


def analyse_tracks(tracks: tp.Sequence[TrackInfo], cache_path: Path, workers: int = 1
                   ) -> tp.List[Analysis]:
    """Analyse `tracks`, reusing the entries of the JSON cache `cache_path` whose files have
    not changed (size, modification time) since, and rewriting it."""
    cache: dict = {}
    if cache_path.exists():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            logger.warning("Ignoring the unreadable analysis cache %s", cache_path)
    entries = cache.get('tracks', {}) if cache.get('version') == ANALYSIS_VERSION else {}
    keys = [str(Path(track.files[SOURCES[0]]).resolve().parent) for track in tracks]
    stamps = [_stamps(track) for track in tracks]
    todo = [i for i, (key, stamp) in enumerate(zip(keys, stamps))
            if entries.get(key, {}).get('stamps') != stamp
            or entries[key].get('samplerate') != tracks[i].samplerate]
    logger.info("Analysing %d tracks (%d cached)", len(todo), len(tracks) - len(todo))
    for i, analysis in zip(todo, _map(_analyse_track, [tracks[i] for i in todo], workers)):
        entries[keys[i]] = {'stamps': stamps[i], 'samplerate': tracks[i].samplerate,
                            'analysis': dataclasses.asdict(analysis)}
    fresh = {'version': ANALYSIS_VERSION, 'tracks': {key: entries[key] for key in keys}}
    if fresh != cache:
        write_json(cache_path, fresh, indent=None)
    # Always from the JSON form: a cached analysis gives the same remixes as a fresh one.
    return [Analysis(**json.loads(json.dumps(entries[key]['analysis']))) for key in keys]


def _map(function: tp.Callable, items: tp.Sequence, workers: int) -> tp.List:
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ProcessPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(function, items))


# --------------------------------------------------------------------------------------------
# Matching and alignment
# --------------------------------------------------------------------------------------------

def best_pitch_shift(key: tp.Sequence[float], other: tp.Sequence[float]) -> int:
    """Semitones (in [-5, 6]) to shift `other` by so that its key histogram best matches
    `key` (smallest mean absolute difference)."""
    key, other = np.asarray(key), np.asarray(other)
    deltas = [np.abs(key - np.roll(other, shift)).mean() for shift in range(12)]
    shift = int(np.argmin(deltas))
    return shift - 12 if shift > 6 else shift


def tempo_change(tempo: float, other: float) -> tp.Optional[float]:
    """Relative tempo change that brings `other` (or a multiple, TEMPO_SCALES) to `tempo`,
    None when none is within MAX_TEMPO."""
    for scale in TEMPO_SCALES:
        delta = tempo / (other * scale) - 1
        if abs(delta) < MAX_TEMPO:
            return delta
    return None


def find_partner(tempo: float, key: tp.Optional[tp.Sequence[float]],
                 catalog: tp.Sequence[Analysis], rng: np.random.Generator
                 ) -> tp.Tuple[int, float, int]:
    """(catalog index, tempo change, pitch shift) of a random track matching `tempo` and (when
    given) `key`. The reference track itself always matches."""
    for index in rng.permutation(len(catalog)):
        candidate = catalog[index]
        delta = tempo_change(tempo, candidate.tempo)
        if delta is None:
            continue
        pitch = 0 if key is None else best_pitch_shift(key, candidate.key)
        if abs(pitch) > MAX_PITCH:
            continue
        return int(index), delta, pitch
    raise ValueError(f"No track matches tempo {tempo:.1f} BPM: the reference track should.")


def _beat_grid(frames: int, beats: tp.Sequence[float], samplerate: int) -> np.ndarray:
    """A Gaussian bump per beat on a grid of GRID-second cells (beats near the ends out)."""
    duration = frames / samplerate
    grid = np.zeros(int(frames / samplerate / GRID))
    offsets = np.arange(-BUMP_CELLS, BUMP_CELLS + 1)
    bump = np.exp(-offsets ** 2 / (2 * BUMP_STD ** 2))
    for beat in beats:
        if EDGE <= beat < duration - EDGE:
            cells = int(beat / GRID) + offsets
            keep = (cells >= 0) & (cells < len(grid))
            grid[cells[keep]] += bump[keep]
    return grid


def _best_lag(reference: np.ndarray, other: np.ndarray) -> int:
    """Lag (cells, |lag| < MAX_SHIFT) maximising sum_t reference[t] * other[t + lag]; among
    equal scores the smallest |lag| (0 when there are no beats)."""
    most = int(MAX_SHIFT / GRID)
    lags = np.arange(-most, most)
    scores = []
    for lag in lags:
        ref = reference[max(-lag, 0):]
        oth = other[max(lag, 0):]
        size = min(len(ref), len(oth))
        scores.append(float(ref[:size] @ oth[:size]))
    scores = np.array(scores)
    best = np.flatnonzero(scores == scores.max())
    return int(lags[best[np.argmin(np.abs(lags[best]))]])


def align(parts: tp.Sequence[tp.Tuple[np.ndarray, tp.Sequence[float]]], samplerate: int
          ) -> tp.Tuple[np.ndarray, tp.List[int]]:
    """Delay the stems (wav [C, T], beat times in seconds) so that their beats line up with
    those of the first: (stems [S, C, T] cut to the shortest, delays in frames)."""
    grids = [_beat_grid(wav.shape[-1], beats, samplerate) for wav, beats in parts]
    shifts = [0] + [-int(round(_best_lag(grids[0], grid) * GRID * samplerate))
                    for grid in grids[1:]]
    delays = [shift - min(shifts) for shift in shifts]
    length = min(wav.shape[-1] + delay for (wav, _), delay in zip(parts, delays))
    out = np.zeros((len(parts), parts[0][0].shape[0], length), dtype=np.float32)
    for index, ((wav, _), delay) in enumerate(zip(parts, delays)):
        out[index, :, delay:] = wav[:, :max(length - delay, 0)]
    return out, delays


# --------------------------------------------------------------------------------------------
# Remixes
# --------------------------------------------------------------------------------------------

def mix_stems(stems: np.ndarray) -> np.ndarray:
    """The float32 sum of the stems [S, C, T], in order: the mixture written with them."""
    mixture = np.zeros_like(stems[0])
    for stem in stems:
        mixture = mixture + stem
    return mixture


def build_remix(ref_index: int, catalog: tp.Sequence[Analysis],
                tracks: tp.Mapping[str, TrackInfo], rng: np.random.Generator,
                sources: tp.Sequence[str] = SOURCES) -> tp.Tuple[np.ndarray, dict]:
    """A remix around catalog track `ref_index`: (stems float32 [S, C, T], its recipe)."""
    reference = catalog[ref_index]
    samplerate = tracks[reference.name].samplerate
    order = [int(i) for i in rng.permutation(len(sources))]
    kept = order[0]
    parts: tp.List[tp.Any] = [None] * len(sources)
    recipe: tp.Dict[str, dict] = {}
    wav = read_audio(Path(tracks[reference.name].files[sources[kept]]), reference.start)
    parts[kept] = (wav, reference.beats)
    recipe[sources[kept]] = {'track': reference.name, 'pitch': 0, 'tempo': 0.}
    key = None if sources[kept] == 'drums' else reference.key
    for source_index in order[1:]:
        index, delta, pitch = find_partner(reference.tempo, key, catalog, rng)
        partner = catalog[index]
        if key is None:
            key = partner.key
        wav = read_audio(Path(tracks[partner.name].files[sources[source_index]]),
                         partner.start)
        beats = np.asarray(partner.beats)
        if delta or pitch:
            wav = repitch(wav, samplerate, pitch, 100 * delta)
            beats = beats / (1 + delta)
        parts[source_index] = (wav, beats)
        recipe[sources[source_index]] = {'track': partner.name, 'pitch': pitch,
                                         'tempo': round(100 * delta, 6)}
    stems, delays = align(parts, samplerate)
    for source, delay in zip(sources, delays):
        recipe[source]['delay'] = delay
    peak = float(np.abs(mix_stems(stems)).max()) if stems.size else 0.
    scale = max(1., HEADROOM * peak)
    stems = (stems / np.float32(scale)).astype(np.float32)
    recipe = {'reference': reference.name, 'scale': scale,
              'stems': {source: recipe[source] for source in sources}}
    return stems, recipe


def remix_name(copy: int, reference: str) -> str:
    return f'automix_{copy:02d}_{reference}'


def _is_complete(folder: Path, sources: tp.Sequence[str]) -> bool:
    if not (folder / RECIPE).exists():
        return False
    try:
        lengths = {audio_info(folder / f'{name}.wav').frames for name in [MIXTURE, *sources]}
    except ValueError:
        return False
    return len(lengths) == 1


def _write_remix(job: tp.Tuple[Path, int, int, int, tp.Sequence[Analysis],
                               tp.Dict[str, TrackInfo]]) -> dict:
    """Build and write one remix (a job of `write_automix`); return its recipe."""
    folder, seed, copy, ref_index, catalog, tracks = job
    rng = np.random.default_rng([seed, copy, ref_index])
    stems, recipe = build_remix(ref_index, catalog, tracks, rng)
    samplerate = tracks[catalog[ref_index].name].samplerate
    with atomic_folder(folder) as tmp:
        write_wav(tmp / f'{MIXTURE}.wav', mix_stems(stems), samplerate)
        for source, stem in zip(SOURCES, stems):
            write_wav(tmp / f'{source}.wav', stem, samplerate)
        write_json(tmp / RECIPE, recipe)


def _link_original(track: TrackInfo, folder: Path) -> None:
    """`folder` with symbolic links to the stems (and mixture) of `track`."""
    with atomic_folder(folder) as tmp:
        files = dict(track.files)
        if track.mixture is not None:
            files[MIXTURE] = track.mixture
        for name, path in files.items():
            (tmp / f'{name}{Path(path).suffix}').symlink_to(Path(path).resolve())


def cache_path(out: tp.Union[str, Path]) -> Path:
    """The analysis cache of the automix set `out`: a JSON file next to it."""
    out = Path(out)
    return out.parent / f'{out.name}.analysis.json'


def _check_manifest(out: Path, params: dict) -> None:
    """Refuse to add to an automix set made with other parameters, or to another folder."""
    path = out / MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text())
        if manifest['params'] != params:
            changed = ', '.join(f'{key}={manifest["params"].get(key)!r} (asked {value!r})'
                                for key, value in params.items()
                                if manifest['params'].get(key) != value)
            raise ValueError(f"{out} holds an automix set made with {changed}: delete it or "
                             f"write elsewhere.")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not an automix set ({MANIFEST} is missing): "
                         f"choose an empty or new folder.")
    write_json(path, {'params': params})      # completed with the recipes at the end
    return None


def write_automix(musdb: tp.Union[str, Path], out: tp.Union[str, Path], remixes: int = 6,
                  seed: int = 0, valid_count: int = 2, originals: bool = True,
                  workers: int = 1) -> dict:
    """Write `remixes` remixes per training track of `musdb` (MUSDB layout) into
    `out/train/automix_<copy>_<track>/{mixture,drums,bass,other,vocals}.wav`, and, with
    `originals`, links to the training tracks themselves (`out/train/<track>/`), so that
    `dset.train_folder=out/train` trains on both, as Demucs's `auto_mus`.

    The validation tracks (MUSDB's official ones when the names match, else the last
    `valid_count` by name: `split_valid`) are linked but never remixed. Remixes already
    written are kept. Returns the manifest (`out/automix.json`, written last).
    """
    musdb, out = Path(musdb), Path(out)
    folder = musdb / 'train'
    first = track_folders(folder)[0] if folder.is_dir() and track_folders(folder) else None
    if first is None:
        raise ValueError(f"{folder} holds no track folder: give the root of a MUSDB layout "
                         f"(ROOT/train/<track>/<source>.wav).")
    info = audio_info(first / f'{SOURCES[0]}.wav')
    tracks = index_tracks(folder, SOURCES, info.samplerate, info.channels)
    train, valid = split_valid(tracks, None, valid_count)
    params = {'musdb': str(musdb.resolve()), 'remixes': remixes, 'seed': seed,
              'valid': sorted(track.name for track in valid), 'originals': originals}
    _check_manifest(out, params)
    analyses = analyse_tracks(train, cache_path(out), workers)
    catalog = [analysis for analysis in analyses if analysis.rejected is None]
    rejected = {a.name: a.rejected for a in analyses if a.rejected is not None}
    for name, reason in rejected.items():
        logger.warning("Track %s is not remixed: %s", name, reason)
    if not catalog:
        raise ValueError(f"No track of {folder} can be remixed (drums and bass needed): "
                         f"{rejected}.")
    split = out / 'train'
    split.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(split)
    by_name = {track.name: track for track in tracks}
    names = [remix_name(copy, ref.name) for copy in range(remixes) for ref in catalog]
    clash = sorted(set(names) & set(by_name))
    if clash:
        raise ValueError(f"Training tracks named like remixes ({clash}): rename them.")
    if originals:
        for track in tracks:
            if not (split / track.name).exists():
                _link_original(track, split / track.name)
    jobs = [(split / remix_name(copy, ref.name), seed, copy, index, catalog, by_name)
            for copy in range(remixes) for index, ref in enumerate(catalog)]
    todo = [job for job in jobs if not _is_complete(job[0], SOURCES)]
    logger.info("Writing %d remixes (%d already there) into %s", len(todo),
                len(jobs) - len(todo), split)
    _map(_write_remix, todo, workers)
    recipes = {job[0].name: json.loads((job[0] / RECIPE).read_text()) for job in jobs}
    manifest = {'params': params, 'rejected': rejected, 'remixes': recipes}
    _warn_on_valid_split(split, valid, valid_count)
    write_json(out / MANIFEST, manifest)
    return manifest


def _warn_on_valid_split(split: Path, valid: tp.Sequence[TrackInfo], valid_count: int) -> None:
    """Training on `split` holds out validation tracks by name: say if they are not those
    kept out of the remixes."""
    names = [path.name for path in track_folders(split)]
    fake = [TrackInfo(name, {}, None, 0, 0, 0) for name in names]
    _, held = split_valid(fake, None, valid_count)
    if sorted(t.name for t in held) != sorted(t.name for t in valid):
        logger.warning("Training on %s would validate on %s, not on the tracks kept out of the "
                       "remixes: set dset.valid_tracks=[%s].", split,
                       [t.name for t in held], ','.join(t.name for t in valid))

