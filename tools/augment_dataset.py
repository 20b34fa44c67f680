"""Offline pitch-shifted and time-stretched copies of a training set (KUIELab's MDX21
`src/utils/data_augmentation.py`).

    python -m tools.augment_dataset ROOT [--split train] [--max-pitch 2] [--max-tempo 20]
        [--tempo-step 10] [--sources drums bass other vocals] [--quick]

For every pitch shift p in [-max_pitch, max_pitch] semitones and tempo change t in
[-max_tempo, max_tempo] by `tempo-step` percent (t = 10: played at 110 % speed), but (0, 0),
writes `ROOT/SPLIT_p=P_t=T/<track>/<source>.wav` for every track of `ROOT/SPLIT` (KUIELab's
folder names). The defaults are the copies KUIELab trained with (their `aug_params` [2, 20]:
24 copies; their script writes +-3 and +-30 too). An XP trains on them with
`dset.extra_train=['train_p=*']`: their tracks join the training tracks (the copies of
validation tracks are left out), and the epoch size stays that of the original tracks, as
in KUIELab's loader.

Where we differ: they ran the `soundstretch` binary on each stem (with its speech mode for
vocals); we use Rubber Band through pedalboard (`separator.data.repitch`, no binary) on the
stems of a track together, as the channels of one signal, so the stems of a copy stay
aligned and their sum is its mixture (no mixture file is written: the loaders sum the
stems). Each copy of a track is written whole or not at all (a temporary folder, then a
rename); tracks already written are skipped, so an interrupted run resumes.
"""
import argparse
import sys
import typing as tp
from pathlib import Path

import numpy as np
import soundfile as sf

from separator.atomic import atomic_folder
from separator.data.audio import AudioError, read_audio
from separator.data.musdb import index_tracks
from separator.data.repitch import repitch

SOURCES = ['drums', 'bass', 'other', 'vocals']


def changes(max_pitch: int, max_tempo: int, tempo_step: int) -> tp.List[tp.Tuple[int, int]]:
    """Every (pitch, tempo) of the grid but (0, 0)."""
    tempos = range(-max_tempo, max_tempo + 1, tempo_step) if tempo_step > 0 else [0]
    return [(pitch, tempo) for pitch in range(-max_pitch, max_pitch + 1) for tempo in tempos
            if (pitch, tempo) != (0, 0)]


def copy_name(split: str, pitch: int, tempo: int) -> str:
    return f'{split}_p={pitch}_t={tempo}'


def augment(root: tp.Union[str, Path], split: str = 'train', max_pitch: int = 2,
            max_tempo: int = 20, tempo_step: int = 10,
            sources: tp.Sequence[str] = tuple(SOURCES), quick: bool = False,
            verbose: bool = True) -> int:
    """Write the missing copies; return the number of track copies written."""
    root = Path(root)
    tracks = index_tracks(root / split, list(sources), *_format(root / split, sources))
    written = 0
    grid = changes(max_pitch, max_tempo, tempo_step)
    for count, (pitch, tempo) in enumerate(grid, 1):
        out = root / copy_name(split, pitch, tempo)
        for track in tracks:
            folder = out / track.name
            if folder.is_dir():
                continue
            stems = np.stack([read_audio(Path(track.files[source])) for source in sources])
            shifted = repitch(stems, track.samplerate, pitch, tempo, quick=quick)
            with atomic_folder(folder) as tmp:
                for source, wav in zip(sources, shifted):
                    sf.write(str(tmp / f'{source}.wav'), wav.T, track.samplerate,
                             subtype='FLOAT')
            written += 1
        if verbose:
            print(f"[{count}/{len(grid)}] {out}: {len(tracks)} track(s)", file=sys.stderr,
                  flush=True)
    return written


def _format(folder: Path, sources: tp.Sequence[str]) -> tp.Tuple[int, int]:
    """The sample rate and channels of the set (of its first stem; index_tracks checks all)."""
    for track in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        for source in sources:
            for ext in ('.wav', '.flac'):
                path = track / f'{source}{ext}'
                if path.exists():
                    info = sf.info(str(path))
                    return info.samplerate, info.channels
    raise AudioError(f"No track with {', '.join(sources)} stems in {folder}: point ROOT at a "
                     f"MUSDB18-HQ layout (ROOT/{folder.name}/<track>/<source>.wav).")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m tools.augment_dataset',
                                     description="Pitch-shifted and time-stretched copies of "
                                                 "a training set (KUIELab's MDX21).")
    parser.add_argument('root', type=Path, help="root of a MUSDB18-HQ layout")
    parser.add_argument('--split', default='train', help="folder of the tracks to copy")
    parser.add_argument('--max-pitch', type=int, default=2, help="semitones (default 2)")
    parser.add_argument('--max-tempo', type=int, default=20, help="percent (default 20)")
    parser.add_argument('--tempo-step', type=int, default=10, help="percent (default 10)")
    parser.add_argument('--sources', nargs='+', default=SOURCES)
    parser.add_argument('--quick', action='store_true',
                        help="Rubber Band's faster, lower-quality mode")
    return parser


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    if args.max_pitch < 0 or args.max_tempo < 0 or args.max_tempo >= 100 or \
            args.tempo_step < 0:
        print("error: --max-pitch, --max-tempo and --tempo-step must be >= 0, --max-tempo "
              "below 100.", file=sys.stderr)
        return 2
    try:
        written = augment(args.root, args.split, args.max_pitch, args.max_tempo,
                          args.tempo_step, args.sources, args.quick)
    except (AudioError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted: the copies written so far are kept; run the same command again "
              "to go on.", file=sys.stderr)
        return 130
    print(f"{written} track copies written. Train on them with "
          f"dset.extra_train=['{args.split}_p=*'].")
    return 0


if __name__ == '__main__':
    sys.exit(main())
