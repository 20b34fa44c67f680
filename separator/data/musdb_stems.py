"""MUSDB18 as distributed (`{train,test}/<track>.stem.mp4`, NI's stem format: five AAC
streams, the mixture then drums, bass, other, vocals) decoded once into the MUSDB18-HQ layout
that the loaders read (`{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav`).

`dset=musdb18 dset.stems=/path/to/musdb18` decodes on first use into `dset.musdb` (a cache:
float32 WAV, 5x the size of the mp4s). The loaders then read WAV ranges from disk, as for
MUSDB18-HQ: decoding AAC for every random segment would cost more than the training step.

Each track is written whole or not at all (`atomic_folder`), so a decode killed midway
resumes with the next missing track. A stem file that ffmpeg cannot read, or that does not
hold five streams of one rate and channel count, is named with the fix; nothing written
before is lost. The AAC streams of a stem file may decode one frame apart: every stem is cut
to the shortest (`track_io.read_stems`).
"""
import logging
import typing as tp
from pathlib import Path

import soundfile as sf

from ..atomic import atomic_folder
from ..locking import locked
from .audio import AudioError

logger = logging.getLogger(__name__)

STEM_SUFFIX = '.stem.mp4'
STREAMS = ('mixture', 'drums', 'bass', 'other', 'vocals')   # NI stem order, as MUSDB18 ships
SPLITS = ('train', 'test')


def stem_files(root: Path, split: str) -> tp.List[Path]:
    """The `.stem.mp4` files of `root/split`, sorted by name."""
    return sorted(path for path in (root / split).glob(f'*{STEM_SUFFIX}') if path.is_file())


def track_name(path: Path) -> str:
    return path.name[:-len(STEM_SUFFIX)]


def decode_track(path: Path, folder: Path) -> None:
    """Write `folder/<stream>.wav` for the five streams of the stem file `path`."""
    from ..track_io import read_stems
    audio, samplerate = read_stems(path)
    if len(audio) != len(STREAMS):
        raise AudioError(f"{path} holds {len(audio)} audio streams, not the {len(STREAMS)} of "
                         f"a MUSDB18 stem file ({', '.join(STREAMS)}): remove it from "
                         f"{path.parent} or convert it.")
    with atomic_folder(folder) as tmp:
        for name, wav in zip(STREAMS, audio):
            sf.write(str(tmp / f'{name}.wav'), wav.T, samplerate, subtype='FLOAT')


def decode_musdb18(stems: tp.Union[str, Path], out: tp.Union[str, Path]) -> int:
    """Decode every stem file of `stems/{train,test}` missing from `out`; the count written."""
    stems, out = Path(stems), Path(out)
    files = {split: stem_files(stems, split) for split in SPLITS}
    if not any(files.values()):
        raise AudioError(f"No {STEM_SUFFIX} file in {stems}/train or {stems}/test: point "
                         f"dset.stems at MUSDB18 as distributed (train/ and test/ folders of "
                         f"<track>{STEM_SUFFIX}).")
    written = 0
    with locked(out):
        for split, paths in files.items():
            for path in paths:
                folder = out / split / track_name(path)
                if folder.is_dir():
                    continue
                if not written:
                    logger.warning("dset.stems: decoding MUSDB18 stem files from %s into %s "
                                   "(once; WAV, about 5x their size)", stems, out)
                decode_track(path, folder)
                written += 1
    return written
