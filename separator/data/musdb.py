"""Indexing a MUSDB18-HQ folder: `ROOT/{train,test}/<track>/<source>.wav`, or any data set
of that shape (DnR: `ROOT/{tr,cv,tt}/<track>/{mix,speech,music,sfx}.wav`).

The index (lengths, sample rates, channels of every stem) is cached in a JSON file per
folder; an entry is recomputed when a file's size or modification time changes.
"""
import dataclasses
import hashlib
import json
import logging
import typing as tp
from pathlib import Path

from ..atomic import write_json
from .audio import AudioError, audio_info, check_format

logger = logging.getLogger(__name__)

MIXTURE = 'mixture'
EXTENSIONS = ('.wav', '.flac')


@dataclasses.dataclass
class TrackInfo:
    """One track: where its stems are and how long it is (frames)."""
    name: str
    files: tp.Dict[str, str]            # source name -> path
    mixture: tp.Optional[str]           # path of the mixture file, None: sum of the stems
    length: int
    samplerate: int
    channels: int


def _find_stem(folder: Path, name: str) -> tp.Optional[Path]:
    for ext in EXTENSIONS:
        path = folder / (name + ext)
        if path.exists():
            return path
    return None


def _stamp(path: Path) -> tp.List[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _index_track(folder: Path, sources: tp.Sequence[str], samplerate: int,
                 channels: int, mixture_name: str = MIXTURE) -> TrackInfo:
    files = {}
    missing = []
    for source in sources:
        path = _find_stem(folder, source)
        if path is None:
            missing.append(source)
        else:
            files[source] = path
    if missing:
        raise AudioError(
            f"Track folder {folder} is missing the stem(s) {', '.join(missing)} "
            f"(expected {', '.join(s + '.wav' for s in sources)}). Add the missing files or "
            f"remove the folder from the data set.")
    mixture = _find_stem(folder, mixture_name)
    lengths = {}
    for name, path in list(files.items()) + ([(mixture_name, mixture)] if mixture else []):
        info = audio_info(path)
        check_format(path, info, samplerate, channels)
        lengths[name] = info.frames
    if len(set(lengths.values())) > 1:
        detail = ', '.join(f'{name}: {length}' for name, length in lengths.items())
        raise AudioError(
            f"Stems of {folder} have different lengths ({detail} frames). Every stem of a track "
            f"must have the same length: trim or zero-pad them to the same number of frames.")
    return TrackInfo(name=folder.name, files={k: str(v) for k, v in files.items()},
                     mixture=str(mixture) if mixture else None,
                     length=next(iter(lengths.values())), samplerate=samplerate,
                     channels=channels)


def _cache_path(cache_dir: Path, folder: Path) -> Path:
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f'{folder.name}_{digest}.json'


def _load_cache(path: tp.Optional[Path]) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("Ignoring unreadable metadata cache %s", path)
        return {}



def track_folders(folder: Path) -> tp.List[Path]:
    """The track folders of `folder`, sorted by name.

    Hidden folders are skipped: they are the temporaries of writers that build a track, then
    rename it into place.
    """
    return sorted(path for path in Path(folder).iterdir()
                  if path.is_dir() and not path.name.startswith('.'))


def index_tracks(folder: tp.Union[str, Path], sources: tp.Sequence[str], samplerate: int,
                 channels: int, cache_dir: tp.Optional[tp.Union[str, Path]] = None,
                 mixture_name: str = MIXTURE) -> tp.List[TrackInfo]:
    """Index every track folder in `folder`, checking formats and lengths. The mixture, when a
    track has one, is `<mixture_name>.wav` (or .flac); without it, the sum of the stems.

    Raises:
        AudioError: naming the file and the fix, for an empty or missing folder, a missing,
            corrupt or mismatched stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"Data folder {folder} does not exist. Point dset.musdb at a "
                         f"MUSDB18-HQ layout (ROOT/train/<track>/<source>.wav).")
    track_dirs = track_folders(folder)
    if not track_dirs:
        raise AudioError(f"Data folder {folder} holds no track folder. Expected "
                         f"{folder}/<track>/{{{','.join(sources)}}}.wav, as in MUSDB18-HQ.")
    cache_path = _cache_path(Path(cache_dir), folder) if cache_dir is not None else None
    cache = _load_cache(cache_path)
    fresh = {}
    tracks = []
    for track_dir in track_dirs:
        names = list(sources) + [mixture_name]
        stamps = {name: _stamp(path) for name in names
                  if (path := _find_stem(track_dir, name)) is not None}
        key = str(track_dir.resolve())
        entry = cache.get(key)
        if (entry is not None and entry['stamps'] == stamps
                and entry['info']['samplerate'] == samplerate
                and entry['info']['channels'] == channels
                and set(entry['info']['files']) == set(sources)):
            info = TrackInfo(**entry['info'])
        else:
            info = _index_track(track_dir, sources, samplerate, channels, mixture_name)
        fresh[key] = {'stamps': stamps, 'info': dataclasses.asdict(info)}
        tracks.append(info)
    if cache_path is not None and fresh != cache:
        write_json(cache_path, fresh, indent=None)
    return tracks


def musdb_validation_names() -> tp.List[str]:
    """The 14 validation tracks of MUSDB18, as listed by the `musdb` package."""
    import musdb
    import yaml
    config = Path(musdb.__file__).parent / 'configs' / 'mus.yaml'
    return list(yaml.safe_load(config.read_text())['validation_tracks'])


def split_valid(tracks: tp.List[TrackInfo], valid_tracks: tp.Optional[tp.Sequence[str]],
                valid_count: int) -> tp.Tuple[tp.List[TrackInfo], tp.List[TrackInfo]]:
    """Split training tracks into (train, valid).

    `valid_tracks` names them explicitly; otherwise MUSDB's official validation tracks are used
    when the names match MUSDB's, and the last `valid_count` tracks (by name) when they don't.
    """
    names = [track.name for track in tracks]
    if valid_tracks is not None:
        unknown = sorted(set(valid_tracks) - set(names))
        if unknown:
            raise ValueError(f"dset.valid_tracks names unknown track(s): {unknown}. "
                             f"Known tracks are: {names}.")
        chosen = set(valid_tracks)
    else:
        official = set(musdb_validation_names()) & set(names)
        if official:
            chosen = official
        else:
            chosen = set(sorted(names)[len(names) - valid_count:]) if valid_count > 0 else set()
    train = [track for track in tracks if track.name not in chosen]
    valid = [track for track in tracks if track.name in chosen]
    if not train:
        raise ValueError(f"No training track left after holding out {len(valid)} for "
                         f"validation; lower dset.valid_count or add tracks.")
    return train, valid
