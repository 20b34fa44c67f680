"""Tests of the pitch/tempo augmentation (separator/data/repitch.py) and its hook in the
training sets (separator/data/segments.py)."""
import hashlib
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from separator.data.musdb import TrackInfo, index_tracks
from separator.data.repitch import Change, Repitch, repitch
from separator.data.segments import RemixSegments, TrainSegments

from .conftest import SOURCES, write_track

REPO = Path(__file__).resolve().parents[1]
SR = 44100
SEGMENT = 20011          # a prime number of frames (0.45 s)
SEED = 3


class Fixed(Repitch):
    """Every example gets the same change (to test the reading and cutting around it)."""

    def __init__(self, change: Change):
        super().__init__(proba=1)
        self.change = change

    def draw(self, seed: int, index: int) -> tp.Optional[Change]:
        return self.change


@pytest.fixture(scope='module')
def tracks(tmp_path_factory: pytest.TempPathFactory) -> tp.List[TrackInfo]:
    """Three tracks of noise, 1.5 s (long enough for every segment and tempo change)."""
    root = tmp_path_factory.mktemp('repitch')
    for index in range(3):
        write_track(root / 'train' / f'track{index}', seconds=1.5, seed=index)
    return index_tracks(root / 'train', SOURCES, SR, 2)


def _digest(example: torch.Tensor) -> str:
    return hashlib.sha1(example.numpy().tobytes()).hexdigest()


def _today(tracks: tp.List[TrackInfo], index: int, segment: int) -> np.ndarray:
    """TrainSegments's example before the repitch hook: the track and offset from the RNG of
    (seed, index), the stems read with soundfile and zero-padded."""
    rng = np.random.default_rng([SEED, index])
    lengths = np.array([track.length for track in tracks], dtype=np.float64)
    track = tracks[rng.choice(len(tracks), p=lengths / lengths.sum())]
    offset = int(rng.integers(0, max(track.length - segment, 0) + 1))
    stems = []
    for source in SOURCES:
        audio, _ = sf.read(track.files[source], start=offset, frames=segment, dtype='float32',
                           always_2d=True)
        stems.append(np.pad(audio.T, [(0, 0), (0, segment - audio.shape[0])]))
    return np.stack(stems)


def test_proba_zero_is_bit_identical(tracks: tp.List[TrackInfo]) -> None:
    off = TrainSegments(tracks, SOURCES, SEGMENT, 8, SEED, repitch=Repitch(proba=0))
    none = TrainSegments(tracks, SOURCES, SEGMENT, 8, SEED)
    for index in range(8):
        reference = _today(tracks, index, SEGMENT)
        assert np.array_equal(off[index].numpy(), reference)
        assert np.array_equal(none[index].numpy(), reference)
    clean = {source: {track.name for track in tracks} for source in SOURCES}
    remix_off = RemixSegments(tracks, SOURCES, SEGMENT, 8, SEED, clean, repitch=Repitch(proba=0))
    remix_none = RemixSegments(tracks, SOURCES, SEGMENT, 8, SEED, clean)
    for index in range(8):
        assert torch.equal(remix_off[index], remix_none[index])


def test_unchanged_examples_keep_their_draws(tracks: tp.List[TrackInfo]) -> None:
    """The repitch draws have their own stream: an example left as it is (proba 0.5) is the
    example of proba 0, and the changed ones differ from it."""
    half = Repitch(proba=0.5)
    dataset = TrainSegments(tracks, SOURCES, SEGMENT, 16, SEED, repitch=half)
    changed = [index for index in range(16) if half.draw(SEED, index) is not None]
    assert 0 < len(changed) < 16
    for index in range(16):
        same = np.array_equal(dataset[index].numpy(), _today(tracks, index, SEGMENT))
        assert same == (index not in changed), index


def test_draws_follow_the_options() -> None:
    options = Repitch(proba=0.2, max_pitch=2, max_tempo=12, tempo_std=5)
    changes = [options.draw(0, index) for index in range(4000)]
    applied = [change for change in changes if change is not None]
    assert abs(len(applied) / len(changes) - 0.2) < 0.03
    pitches = {change.pitch for change in applied}
    assert pitches == {-2, -1, 0, 1, 2}
    tempos = np.array([change.tempo for change in applied])
    assert np.abs(tempos).max() <= 12
    assert 4 < tempos.std() < 6
    capped = Repitch(proba=1, max_tempo=3, tempo_std=5)
    assert max(abs(capped.draw(0, index).tempo) for index in range(200)) == 3
    assert [options.draw(7, index) for index in range(50)] == \
        [Repitch(0.2, 2, 12, 5).draw(7, index) for index in range(50)]


def test_same_index_same_output(tracks: tp.List[TrackInfo]) -> None:
    """Twice in this process, through a loader with 2 workers in reverse order, and in another
    process."""
    dataset = TrainSegments(tracks, SOURCES, SEGMENT, 6, SEED, repitch=Repitch(proba=1))
    digests = [_digest(dataset[index]) for index in range(6)]
    assert digests == [_digest(dataset[index]) for index in range(6)]
    assert len(set(digests)) == 6
    loader = DataLoader(dataset, batch_size=None, sampler=list(reversed(range(6))),
                        num_workers=2)
    assert [_digest(example) for example in loader] == digests[::-1]
    script = textwrap.dedent(f"""
        import hashlib
        from separator.data.musdb import index_tracks
        from separator.data.repitch import Repitch
        from separator.data.segments import TrainSegments
        tracks = index_tracks({str(Path(tracks[0].files['drums']).parents[1])!r},
                              {SOURCES!r}, {SR}, 2)
        dataset = TrainSegments(tracks, {SOURCES!r}, {SEGMENT}, 6, {SEED},
                                repitch=Repitch(proba=1))
        for index in (5, 3, 1, 0, 2, 4):
            print(hashlib.sha1(dataset[index].numpy().tobytes()).hexdigest())
        """)
    out = subprocess.run([sys.executable, '-c', script], cwd=REPO, check=True,
                         capture_output=True, text=True, env={'OMP_NUM_THREADS': '1',
                                                              'PATH': '/usr/bin:/bin'})
    assert out.stdout.split() == [digests[index] for index in (5, 3, 1, 0, 2, 4)]


def _peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / SR)[np.argmax(spectrum)])


def test_octave_up_doubles_the_frequency() -> None:
    frames = 2 * SR
    sine = np.sin(2 * np.pi * 441 * np.arange(frames) / SR).astype(np.float32)
    stems = np.stack([np.stack([sine, sine])] * 4)              # [S, C, T]
    out = Repitch(proba=1).apply(stems, Change(pitch=12, tempo=0), frames, SR)
    assert out.shape == stems.shape
    window = slice(SR // 2, SR // 2 + SR)                       # 1 s: 1 Hz bins
    assert _peak_hz(stems[0, 0, window]) == 441
    for stem in out:
        peak = _peak_hz(stem[0, window])
        print(f"+12 semitones: 441 Hz -> {peak} Hz")
        assert abs(peak - 882) <= 1
    assert abs(_peak_hz(repitch(sine, SR, -12, 0)[window]) - 220.5) <= 1


def _clicks(audio: np.ndarray) -> np.ndarray:
    """Frames of the clicks of a click track (one per local burst)."""
    loud = np.flatnonzero(np.abs(audio) > 0.3)
    return loud[np.concatenate([[True], np.diff(loud) > 100])]


def _check_spacing(found: np.ndarray, period: float) -> None:
    """Clicks `period` frames apart on average (within 0.5 %). Rubber Band places transients
    on its own hop grid: single intervals vary by about a hop, the drift stays ~0.2 %."""
    mean = (found[-1] - found[0]) / (len(found) - 1)
    print(f"mean click interval {mean:.1f} frames, asked {period:.1f}")
    assert abs(mean / period - 1) < 0.005


@pytest.mark.parametrize('tempo', [10.0, -10.0, 12.0])
def test_tempo_changes_the_duration(tempo: float) -> None:
    period = SR // 4
    frames = 2 * SR
    click = np.zeros(frames, dtype=np.float32)
    click[period // 2::period] = 1
    out = repitch(np.stack([click, click]), SR, 0, tempo)
    stretch = 1 + tempo / 100
    print(f"tempo {tempo:+} %: {frames} -> {out.shape[-1]} frames (asked {frames / stretch:.1f})")
    assert abs(out.shape[-1] - frames / stretch) <= 1
    found = _clicks(out[0])
    expected = np.arange(period // 2, frames, period) / stretch
    assert len(found) == len(expected)
    assert np.abs(found - expected).max() < 0.005 * SR        # every click within 5 ms
    _check_spacing(found, period / stretch)


def test_tempo_change_in_the_data_set(tmp_path: Path) -> None:
    """A segment sped up by 12 % reads 12 % more audio: 12 % more clicks, 12 % closer."""
    period = 4410
    frames = 4 * SR
    click = np.zeros((frames, 2), dtype=np.float32)
    click[period // 2::period] = 1
    folder = tmp_path / 'train' / 'clicks'
    folder.mkdir(parents=True)
    for source in SOURCES:
        sf.write(folder / f'{source}.wav', click, SR, subtype='FLOAT')
    tracks = index_tracks(tmp_path / 'train', SOURCES, SR, 2)
    segment = 2 * SR + 1
    for tempo in (12.0, -12.0):
        dataset = TrainSegments(tracks, SOURCES, segment, 2, SEED, repitch=Fixed(Change(0, tempo)))
        example = dataset[1].numpy()
        assert example.shape == (4, 2, segment)
        found = _clicks(example[1, 0])
        assert abs(len(found) - segment / period * (1 + tempo / 100)) <= 1
        _check_spacing(found, period / (1 + tempo / 100))


def test_stems_get_the_same_change(tmp_path: Path) -> None:
    """`other` is a copy of `drums`: repitched with the others, it stays equal to it."""
    root = tmp_path / 'train'
    for index in range(2):
        stems = write_track(root / f'track{index}', seconds=1.5, seed=10 + index)
        sf.write(root / f'track{index}' / 'other.wav', stems['drums'], SR, subtype='FLOAT')
    tracks = index_tracks(root, SOURCES, SR, 2)
    dataset = TrainSegments(tracks, SOURCES, SEGMENT, 4, SEED, repitch=Repitch(proba=1))
    plain = TrainSegments(tracks, SOURCES, SEGMENT, 4, SEED)
    for index in range(4):
        example = dataset[index]
        assert torch.equal(example[0], example[2])
        assert not torch.equal(example[1], example[2])
        assert not torch.equal(example, plain[index])


@pytest.mark.parametrize('segment', [7919, 20011, 44111])
def test_output_length_is_exact(tracks: tp.List[TrackInfo], segment: int) -> None:
    changes = [Change(2, 12.0), Change(-2, -12.0), Change(1, 0.7), Change(0, -3.3)]
    for change in changes:
        dataset = TrainSegments(tracks, SOURCES, segment, 2, SEED, repitch=Fixed(change))
        assert dataset[0].shape == (4, 2, segment), change
    clean = {source: {track.name for track in tracks} for source in SOURCES}
    remix = RemixSegments(tracks, SOURCES, segment, 2, SEED, clean, repitch=Repitch(proba=1))
    assert remix[0].shape == (4, 2, segment)
    short = TrainSegments(tracks, SOURCES, tracks[0].length, 1, SEED,
                          repitch=Fixed(Change(0, 12.0)))       # reads past the end: padded
    assert short[0].shape == (4, 2, tracks[0].length)


@pytest.mark.parametrize('key, value', [('proba', 1.5), ('max_pitch', 1.5), ('max_tempo', 100),
                                        ('tempo_std', -1)])
def test_bad_options_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"augment.repitch.{key}="):
        Repitch(**{key: value})
