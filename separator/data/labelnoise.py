"""Label-noise injection: an SDX23-style "label noise" training set, with ground truth.

The SDX23 MDX track's label-noise set has one folder per track, named by a UUID, holding
`bass.wav drums.wav other.wav vocals.wav` and no mixture; some stems are wrong. `inject` makes
such a set from a clean MUSDB18-HQ-layout folder and records, in `OUT/manifest.json`, what was
done to every stem, so a noise filter can be scored (precision/recall) against the truth.

Each stem is corrupted with probability `rate`, with one kind drawn uniformly among `kinds`:

- `swap`: the stem is the clean audio of another source of the same track. Stems drawn `swap`
  in the same track are paired at random and exchange their audio (`mutual: true`, both
  recorded); a stem left without a partner takes another source one way (`mutual: false`,
  the track then holds that source twice).
- `other_track`: the stem is the clean audio of the same or another source of another track
  (`track`, `source`, and `offset`: where the excerpt starts in that track, in seconds;
  zero-padded when that track is shorter; never a silent excerpt).
- `bleed`: the clean stem plus 1 to 3 other (not silent) clean stems of the track, each at a
  gain in dB (`sources: {source: gain_db}`, gains in [-20, -6] dB rounded to 0.01 dB, applied
  to the stems as they are, sum in float64 then float32).
- `silence`: the stem is zeroed over `[start, end)` seconds (`whole: true` when it is the whole
  track).
- `shift`: the stem is delayed (`shift` > 0) or advanced (`shift` < 0) by 0.1 to 2 seconds
  (at most half the track), zero-padded, same length.

Every recorded time is also given in frames (`*_frame`, `*_frames`), so the corrupted audio can
be rebuilt exactly from the clean set and the manifest. A corruption must change the stem by
at least `MIN_CHANGE_DB` (energy of the change relative to the clean stem; any change for a
silent stem): swapping two silent stems, silencing a silent span... are redrawn (other
parameters, then other kinds, in a seeded order), so `clean: false` always means that the
audio differs audibly from the clean stem. A stem that no kind can change (e.g. every stem of
every track is silent) stays clean and says so (`note`). The redraws make the kinds slightly
less uniform than drawn (silent stems fall back to `swap`/`other_track`/`bleed`).

Output (float32 WAV without the PEAK timestamp, same sample rate and length per track as the
clean track, so the same arguments give identical bytes):

    OUT/<uuid>/{bass,drums,other,vocals}.wav
    OUT/manifest.json

`manifest.json` is written last (atomically): a folder without it is incomplete.
"""
import json
import shutil
import time
import typing as tp
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import AudioError, audio_info, convert_channels, fit_length, read_audio
from .musdb import track_folders
# `write_wav` writes float32 WAV without libsndfile's timestamped PEAK chunk (identical bytes
# run to run), as the synthetic generator does.
from .synthetic import write_wav
from ..atomic import atomic_folder, remove_stale_folders, write_json

SOURCES = ('bass', 'drums', 'other', 'vocals')
KINDS = ('swap', 'other_track', 'bleed', 'silence', 'shift')
MANIFEST = 'manifest.json'
MANIFEST_VERSION = 1

DEFAULT_RATE = 0.3
BLEED_DB = (-20.0, -6.0)            # gain of a bleeding stem, dB
SHIFT_SECONDS = (0.1, 2.0)          # |shift|, capped at half the track
SILENCE_FRACTION = (0.1, 0.6)       # length of a partial silent span, fraction of the track
WHOLE_SILENCE_PROB = 0.25           # a `silence` stem is silent throughout
SAME_SOURCE_PROB = 0.5              # an `other_track` stem carries the same source
MIN_CHANGE_DB = -30.0               # smallest change that counts as a corruption
ATTEMPTS = 4                        # parameter draws per kind before trying another kind

# UUIDs of the output folders: uuid5 of "<seed>/<split>/<clean track name>" in this namespace.
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, 'separator/labelnoise')

Array = np.ndarray
Params = tp.Dict[str, tp.Any]
Result = tp.Optional[tp.Tuple[Array, Params]]


@dataclass
class CleanTrack:
    """One clean track: its folder, and the length (frames) and channels of its stems."""
    name: str
    folder: Path
    length: int
    channels: int

    def path(self, source: str) -> Path:
        return self.folder / f'{source}.wav'


# --------------------------------------------------------------------------------------------
# Reading the clean set
# --------------------------------------------------------------------------------------------

def list_clean_tracks(split_dir: Path) -> tp.Tuple[tp.List[CleanTrack], int]:
    """Every track folder of `split_dir` (hidden folders are skipped) and the sample rate.

    Raises:
        AudioError: for a missing or empty folder, a missing or unreadable stem, stems of one
            track with different lengths or channels, or tracks with different sample rates.
    """
    if not split_dir.is_dir():
        raise AudioError(f"Clean folder {split_dir} does not exist. Give the root of a "
                         f"MUSDB18-HQ layout (ROOT/<split>/<track>/<source>.wav).")
    folders = track_folders(split_dir)
    if not folders:
        raise AudioError(f"Clean folder {split_dir} holds no track folder.")
    tracks = []
    samplerates = {}
    for folder in folders:
        formats = {}
        for source in SOURCES:
            path = folder / f'{source}.wav'
            if not path.exists():
                raise AudioError(f"Clean track {folder} has no {source}.wav (expected "
                                 f"{', '.join(s + '.wav' for s in SOURCES)}).")
            info = audio_info(path)
            formats[source] = (info.frames, info.channels)
            samplerates[folder.name] = info.samplerate
        if len(set(formats.values())) > 1:
            detail = ', '.join(f'{s}: {n} frames, {c} ch' for s, (n, c) in formats.items())
            raise AudioError(f"Stems of {folder} differ ({detail}): every stem of a track must "
                             f"have the same length and channels.")
        length, channels = formats[SOURCES[0]]
        if length <= 0:
            raise AudioError(f"Stems of {folder} are empty.")
        tracks.append(CleanTrack(folder.name, folder, length, channels))
    if len(set(samplerates.values())) > 1:
        raise AudioError(f"Clean tracks of {split_dir} have different sample rates "
                         f"({samplerates}): resample them to one rate first.")
    return tracks, next(iter(samplerates.values()))


def read_stems(track: CleanTrack) -> tp.Dict[str, Array]:
    """source -> float32 [C, T] clean audio of `track`."""
    return {source: read_audio(track.path(source)) for source in SOURCES}


# --------------------------------------------------------------------------------------------
# Corruptions. Each takes the clean stems of the track and returns (audio, params) or None
# when no draw changed the stem enough.
# --------------------------------------------------------------------------------------------

def change_db(new: Array, clean: Array) -> float:
    """Energy of `new - clean` relative to the energy of `clean`, dB: -inf for no change, +inf
    for any change of a silent stem."""
    diff = float(np.sum((new.astype(np.float64) - clean.astype(np.float64)) ** 2))
    ref = float(np.sum(clean.astype(np.float64) ** 2))
    if diff == 0:
        return -np.inf
    if ref == 0:
        return np.inf
    return 10 * np.log10(diff / ref)


def is_corrupted(new: Array, clean: Array) -> bool:
    """The change from `clean` to `new` is large enough to count as label noise."""
    return change_db(new, clean) > MIN_CHANGE_DB


@dataclass
class _Context:
    rng: np.random.Generator
    track: CleanTrack
    stems: tp.Dict[str, Array]
    tracks: tp.List[CleanTrack]
    samplerate: int


def corrupt_swap(ctx: _Context, source: str) -> Result:
    """One-way swap: the stem becomes the clean audio of another source of the track."""
    clean = ctx.stems[source]
    candidates = [other for other in SOURCES
                  if other != source and is_corrupted(ctx.stems[other], clean)]
    if not candidates:
        return None
    other = candidates[int(ctx.rng.integers(len(candidates)))]
    return ctx.stems[other].copy(), {'source': other, 'mutual': False}


def corrupt_other_track(ctx: _Context, source: str) -> Result:
    """The stem becomes the same (or another) clean source of another track, from `offset`
    (an excerpt that is not silent)."""
    others = [track for track in ctx.tracks if track.name != ctx.track.name]
    if not others:
        return None
    clean = ctx.stems[source]
    length = ctx.track.length
    for _ in range(ATTEMPTS):
        track = others[int(ctx.rng.integers(len(others)))]
        if ctx.rng.random() < SAME_SOURCE_PROB:
            other_source = source
        else:
            choices = [s for s in SOURCES if s != source]
            other_source = choices[int(ctx.rng.integers(len(choices)))]
        offset = int(ctx.rng.integers(0, track.length - length + 1)) if track.length > length else 0
        audio = read_audio(track.path(other_source), start=offset, frames=length)
        audio = fit_length(convert_channels(audio, ctx.track.channels), length)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if np.any(audio) and is_corrupted(audio, clean):
            return audio, {'track': track.name, 'source': other_source,
                           'offset': offset / ctx.samplerate, 'offset_frame': offset}
    return None


def bleed_mix(clean: Array, bleeding: tp.Sequence[Array], gains_db: tp.Sequence[float]) -> Array:
    """clean + sum(10^(gain/20) * stem), computed in float64, as float32."""
    out = clean.astype(np.float64)
    for stem, gain_db in zip(bleeding, gains_db):
        out = out + 10 ** (gain_db / 20) * stem.astype(np.float64)
    return out.astype(np.float32)


def corrupt_bleed(ctx: _Context, source: str) -> Result:
    """Other clean stems of the track (not silent ones) leak into the stem, each at a gain in
    BLEED_DB."""
    clean = ctx.stems[source]
    others = [s for s in SOURCES if s != source and np.any(ctx.stems[s])]
    if not others:
        return None
    for _ in range(ATTEMPTS):
        count = int(ctx.rng.integers(1, len(others) + 1))
        picked = set(ctx.rng.choice(len(others), size=count, replace=False).tolist())
        chosen = [others[index] for index in sorted(picked)]
        gains = [round(float(ctx.rng.uniform(*BLEED_DB)), 2) for _ in chosen]
        audio = bleed_mix(clean, [ctx.stems[s] for s in chosen], gains)
        if is_corrupted(audio, clean):
            return audio, {'sources': dict(zip(chosen, gains))}
    return None


def corrupt_silence(ctx: _Context, source: str) -> Result:
    """The stem is zeroed over a random span, or throughout."""
    clean = ctx.stems[source]
    length = ctx.track.length
    for _ in range(ATTEMPTS):
        if ctx.rng.random() < WHOLE_SILENCE_PROB:
            start, end = 0, length
        else:
            span = max(1, int(round(ctx.rng.uniform(*SILENCE_FRACTION) * length)))
            start = int(ctx.rng.integers(0, length - span + 1))
            end = start + span
        audio = clean.copy()
        audio[:, start:end] = 0
        if is_corrupted(audio, clean):
            sr = ctx.samplerate
            return audio, {'start': start / sr, 'end': end / sr, 'whole': end - start == length,
                           'start_frame': start, 'end_frame': end}
    return None


def shift_audio(audio: Array, frames: int) -> Array:
    """Delay (`frames` > 0) or advance (< 0) along the last axis, zero-padded, same length."""
    out = np.zeros_like(audio)
    if frames >= audio.shape[-1] or -frames >= audio.shape[-1]:
        return out
    if frames > 0:
        out[..., frames:] = audio[..., :-frames]
    elif frames < 0:
        out[..., :frames] = audio[..., -frames:]
    else:
        out[...] = audio
    return out


def corrupt_shift(ctx: _Context, source: str) -> Result:
    """The stem is moved in time by SHIFT_SECONDS (at most half the track), zero-padded."""
    clean = ctx.stems[source]
    sr = ctx.samplerate
    most = min(int(round(SHIFT_SECONDS[1] * sr)), ctx.track.length // 2)
    least = min(int(round(SHIFT_SECONDS[0] * sr)), most)
    if most <= 0:
        return None
    for _ in range(ATTEMPTS):
        frames = int(ctx.rng.integers(max(least, 1), most + 1))
        if ctx.rng.random() < 0.5:
            frames = -frames
        audio = shift_audio(clean, frames)
        if is_corrupted(audio, clean):
            return audio, {'shift': frames / sr, 'shift_frames': frames}
    return None


CORRUPTIONS: tp.Dict[str, tp.Callable[[_Context, str], Result]] = {
    'swap': corrupt_swap,
    'other_track': corrupt_other_track,
    'bleed': corrupt_bleed,
    'silence': corrupt_silence,
    'shift': corrupt_shift,
}
assert tuple(CORRUPTIONS) == KINDS


def _entry(kind: str, params: Params, audio: Array, clean: Array) -> Params:
    change = change_db(audio, clean)
    return {'clean': False, 'kind': kind, **params,
            'change_db': round(change, 2) if np.isfinite(change) else None}


def corrupt_track(ctx: _Context, rate: float, kinds: tp.Sequence[str]
                  ) -> tp.Tuple[tp.Dict[str, Array], tp.Dict[str, Params]]:
    """Draw which stems of the track are corrupted and how; returns (stems, manifest entries).

    The first draws (one uniform and one kind per stem) do not depend on `rate`, so with the
    same seed a higher rate corrupts a superset of the stems, with the same first kinds.
    """
    rng, stems = ctx.rng, ctx.stems
    draws = rng.random(len(SOURCES))
    kind_draws = rng.integers(len(kinds), size=len(SOURCES))
    wanted = {source: kinds[int(k)] for source, u, k in zip(SOURCES, draws, kind_draws)
              if u < rate}
    out: tp.Dict[str, Array] = {}
    entries: tp.Dict[str, Params] = {}
    swappers = [source for source in SOURCES if wanted.get(source) == 'swap']
    swappers = [swappers[int(i)] for i in rng.permutation(len(swappers))]
    for first, second in zip(swappers[0::2], swappers[1::2]):
        if is_corrupted(stems[second], stems[first]) and is_corrupted(stems[first], stems[second]):
            for this, that in ((first, second), (second, first)):
                out[this] = stems[that].copy()
                entries[this] = _entry('swap', {'source': that, 'mutual': True},
                                       out[this], stems[this])
    for source in SOURCES:
        if source in out:
            continue
        if source not in wanted:
            out[source] = stems[source]
            entries[source] = {'clean': True, 'kind': None}
            continue
        rest = [kind for kind in kinds if kind != wanted[source]]
        rest = [rest[int(i)] for i in rng.permutation(len(rest))]
        for kind in [wanted[source]] + rest:
            result = CORRUPTIONS[kind](ctx, source)
            if result is not None:
                audio, params = result
                out[source] = audio
                entries[source] = _entry(kind, params, audio, stems[source])
                break
        else:
            out[source] = stems[source]
            entries[source] = {'clean': True, 'kind': None,
                               'note': f"drawn for corruption ({wanted[source]}) but no kind "
                                       f"among {list(kinds)} changes this stem"}
    return out, {source: entries[source] for source in SOURCES}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def track_uuid(seed: int, split: str, name: str) -> str:
    """Deterministic UUID of the output folder of clean track `name`."""
    return str(uuid.uuid5(UUID_NAMESPACE, f'{seed}/{split}/{name}'))


def track_rng(seed: int, split: str, name: str) -> np.random.Generator:
    """Each track has its own generator: adding tracks does not change the others' draws
    (except which tracks `other_track` can pick)."""
    return np.random.default_rng(np.random.SeedSequence(
        [seed, zlib.crc32(split.encode()), zlib.crc32(name.encode())]))


def _is_uuid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def _prepare_out(out: Path, clean_split: Path) -> None:
    """Check that `out` is new, empty or a previous label-noise set, and remove the manifest
    of the previous set (the folder is incomplete until the new one is written)."""
    clean = clean_split.resolve()
    target = out.resolve()
    if target == clean or clean in target.parents or target in clean.parents:
        raise ValueError(f"Output folder {out} overlaps the clean folder {clean_split}: "
                         f"write the label-noise set elsewhere.")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"Output {out} exists and is not a folder.")
        foreign = sorted(path.name for path in out.iterdir()
                         if not (path.name == MANIFEST or path.name.startswith('.')
                                 or (path.is_dir() and _is_uuid(path.name))))
        if foreign:
            raise ValueError(f"Output folder {out} holds {', '.join(foreign[:5])}"
                             f"{'...' if len(foreign) > 5 else ''}, which a label-noise set "
                             f"does not: choose an empty or new folder.")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)


def _write_track(folder: Path, stems: tp.Dict[str, Array], samplerate: int) -> None:
    """Write the stems into a hidden temporary folder, then rename it into place."""
    with atomic_folder(folder) as tmp:
        for source in SOURCES:
            write_wav(tmp / f'{source}.wav', np.asarray(stems[source], dtype=np.float32),
                      samplerate)


def check_kinds(kinds: tp.Optional[tp.Union[str, tp.Sequence[str]]]) -> tp.List[str]:
    """Normalise `kinds` (None: all of KINDS; a comma-separated string or a sequence) to a
    list in the order given, without duplicates. Raises ValueError for an unknown or no kind."""
    if kinds is None:
        return list(KINDS)
    if isinstance(kinds, str):
        kinds = [kind.strip() for kind in kinds.split(',') if kind.strip()]
    result: tp.List[str] = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"Unknown label-noise kind {kind!r}: choose among "
                             f"{', '.join(KINDS)}.")
        if kind not in result:
            result.append(kind)
    if not result:
        raise ValueError(f"No label-noise kind given: choose among {', '.join(KINDS)}.")
    return result


def count_kinds(manifest: tp.Mapping[str, tp.Any]) -> tp.Dict[str, int]:
    """Number of stems per kind, and of clean stems (`clean`)."""
    counts = {'clean': 0, **{kind: 0 for kind in KINDS}}
    for entry in manifest['tracks'].values():
        for stem in entry['stems'].values():
            counts['clean' if stem['clean'] else stem['kind']] += 1
    return counts


def inject(clean_root: tp.Union[str, Path], out: tp.Union[str, Path], rate: float = DEFAULT_RATE,
           seed: int = 0, split: str = 'train',
           kinds: tp.Optional[tp.Union[str, tp.Sequence[str]]] = None,
           verbose: bool = True) -> Path:
    """Write a label-noise copy of `clean_root/split/` into `out`; returns `out`.

    Writes `out/<uuid>/{bass,drums,other,vocals}.wav` (no mixture) for every clean track and
    `out/manifest.json` (last, atomically). Each stem is corrupted with probability `rate` by a
    kind drawn among `kinds` (default: all of KINDS); see the module docstring. The output is
    a deterministic function of the arguments (identical bytes). `out` must be new, empty or a
    previous output of `inject`: folders of a previous set that the new one does not have are
    removed.

    Raises:
        ValueError (AudioError for audio problems): a missing or bad clean folder, an unknown
            kind, a rate outside [0, 1], a negative seed, a foreign or overlapping `out`.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    seed = int(seed)
    kinds = check_kinds(kinds)
    clean_root, out = Path(clean_root), Path(out)
    split_dir = clean_root / split
    tracks, samplerate = list_clean_tracks(split_dir)
    if kinds == ['other_track'] and len(tracks) < 2 and rate > 0:
        raise ValueError(f"Kind other_track needs at least two clean tracks; {split_dir} has "
                         f"{len(tracks)}.")
    names = {track.name: track_uuid(seed, split, track.name) for track in tracks}
    _prepare_out(out, split_dir)
    for path in out.iterdir():          # folders of a previous set that this one lacks
        if path.is_dir() and _is_uuid(path.name) and path.name not in names.values():
            shutil.rmtree(path)
    remove_stale_folders(out)
    entries = {}
    begin = time.time()
    for index, track in enumerate(tracks):
        ctx = _Context(rng=track_rng(seed, split, track.name), track=track,
                       stems=read_stems(track), tracks=tracks, samplerate=samplerate)
        stems, stem_entries = corrupt_track(ctx, rate, kinds)
        name = names[track.name]
        _write_track(out / name, stems, samplerate)
        entries[name] = {'source_track': track.name, 'stems': stem_entries}
        if verbose:
            detail = ' '.join(f"{source}={entry['kind'] or 'clean'}"
                              for source, entry in stem_entries.items())
            print(f"[labelnoise] {index + 1}/{len(tracks)} {track.name} -> {name}: {detail}",
                  flush=True)
    manifest = {
        'version': MANIFEST_VERSION,
        'seed': seed,
        'rate': rate,
        'kinds': kinds,
        'split': split,
        'clean_root': str(clean_root.resolve()),
        'samplerate': samplerate,
        'sources': list(SOURCES),
        'tracks': {name: entries[name] for name in sorted(entries)},
    }
    manifest['counts'] = count_kinds(manifest)
    write_json(out / MANIFEST, manifest)
    if verbose:
        counts = ', '.join(f'{kind}: {count}' for kind, count in manifest['counts'].items())
        print(f"[labelnoise] {len(tracks)} tracks in {out} ({time.time() - begin:.1f}s); "
              f"stems {counts}", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# Reading the ground truth
# --------------------------------------------------------------------------------------------

def load_manifest(out: tp.Union[str, Path]) -> tp.Dict[str, tp.Any]:
    """The manifest of a label-noise set: `out` is its folder or the manifest file itself.

    Raises:
        FileNotFoundError: no manifest (not a label-noise set, or an interrupted `inject`).
    """
    path = Path(out)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"No {MANIFEST} at {path}: {Path(out)} is not a complete "
                                f"label-noise set (run `python -m tools.inject_labelnoise`).")
    manifest = json.loads(path.read_text())
    if 'tracks' not in manifest:
        raise ValueError(f"{path} is not a label-noise manifest (no 'tracks').")
    return manifest


def teaches_its_source(entry: tp.Mapping[str, tp.Any], source: str) -> bool:
    """Whether the stem of manifest entry `entry`, labelled `source`, is still a right
    example of `source` when sources are remixed across tracks, as the SDX23 recipe trains:
    clean, shifted in time, partly silent (songs drop instruments too), or another track's
    audio of the same source. Not so: another source's audio (`swap`, `other_track` of another
    source), `bleed`, and whole silence."""
    if entry['clean']:
        return True
    kind = entry['kind']
    return (kind == 'shift' or (kind == 'silence' and not entry.get('whole'))
            or (kind == 'other_track' and entry.get('source') == source))


Flags = tp.Dict[str, tp.Dict[str, bool]]


def stem_flags(manifest: tp.Union[tp.Mapping[str, tp.Any], str, Path],
               flag: tp.Callable[[tp.Mapping[str, tp.Any], str], bool]) -> Flags:
    """uuid -> source -> flag(stem entry, source). `manifest` is a loaded manifest, or a
    folder/file given to `load_manifest`."""
    if isinstance(manifest, (str, Path)):
        manifest = load_manifest(manifest)
    return {name: {source: flag(stem, source) for source, stem in entry['stems'].items()}
            for name, entry in manifest['tracks'].items()}


def usable_flags(manifest: tp.Union[tp.Mapping[str, tp.Any], str, Path]) -> Flags:
    """uuid -> source -> `teaches_its_source` (the truth for a filter of remix training)."""
    return stem_flags(manifest, teaches_its_source)


def clean_flags(manifest: tp.Union[tp.Mapping[str, tp.Any], str, Path]) -> Flags:
    """uuid -> source -> True when the stem is clean (the ground truth of a noise filter)."""
    return stem_flags(manifest, lambda stem, source: bool(stem['clean']))
