"""Tests of the synthetic MUSDB18-HQ-like generator (separator/data/synthetic.py)."""
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separator.data import synthetic
from separator.data.synthetic import SOURCES

REPO = Path(__file__).resolve().parents[1]
STEMS = ['mixture'] + SOURCES
SR = 44100
SECONDS = 3.0
TRAIN, TEST = 3, 1


def _write(root: Path, **kwargs: tp.Any) -> Path:
    params = dict(tracks_train=TRAIN, tracks_test=TEST, seconds=SECONDS, seed=0, verbose=False)
    params.update(kwargs)
    return synthetic.write_dataset(root, **params)


def _tracks(root: Path) -> tp.List[Path]:
    return sorted(root.glob('*/synth_*'))


def _read(folder: Path) -> tp.Dict[str, np.ndarray]:
    """stem -> float32 [2, T]"""
    return {name: sf.read(str(folder / f'{name}.wav'), dtype='float32', always_2d=True)[0].T
            for name in STEMS}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp('synth'))


@pytest.fixture(scope='module')
def songs() -> tp.List[tp.Tuple[synthetic.SongPlan, tp.Dict[str, np.ndarray]]]:
    """A few 6 s songs where every source plays (plans with a silent stem are skipped)."""
    out = []
    index = 0
    while len(out) < 3:
        rng = synthetic.track_rng(7, 'train', index)
        plan = synthetic.plan_song(rng, 6.0, SR)
        if plan.silent is None and plan.active['vocals'].any():
            out.append((plan, synthetic.render_song(plan, rng)))
        index += 1
    return out


def _band_fraction(x: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(x.mean(0))) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    return float(power[(freqs >= low) & (freqs < high)].sum() / power.sum())


def _frame_rms(x: np.ndarray, frame: int = 441) -> np.ndarray:
    mono = x.mean(0)
    mono = mono[:len(mono) // frame * frame].reshape(-1, frame)
    return np.sqrt((mono.astype(np.float64) ** 2).mean(1))


def test_layout_and_format(dataset: Path) -> None:
    names = {split: sorted(p.name for p in (dataset / split).iterdir())
             for split in ('train', 'test')}
    assert names == {'train': [f'synth_train_{i:03d}' for i in range(TRAIN)],
                     'test': [f'synth_test_{i:03d}' for i in range(TEST)]}
    for track in _tracks(dataset):
        assert sorted(p.name for p in track.iterdir()) == sorted(f'{s}.wav' for s in STEMS)
        for stem in STEMS:
            info = sf.info(str(track / f'{stem}.wav'))
            assert (info.samplerate, info.channels, info.subtype, info.format) == \
                (SR, 2, 'FLOAT', 'WAV')
            assert info.frames == int(SECONDS * SR)


def test_mixture_is_exact_sum_and_below_peak(dataset: Path) -> None:
    for track in _tracks(dataset):
        audio = _read(track)
        total = np.zeros_like(audio['drums'])
        for source in SOURCES:
            total = total + audio[source]
        assert np.array_equal(audio['mixture'], total)
        assert 0 < np.abs(audio['mixture']).max() < synthetic.MAX_PEAK


def test_synthesize_track_api() -> None:
    stems = synthetic.synthesize_track(np.random.default_rng(3), 1.5, 22050)
    assert list(stems) == SOURCES
    for audio in stems.values():
        assert audio.dtype == np.float32 and audio.shape == (2, int(1.5 * 22050))
        assert np.isfinite(audio).all()
    assert np.abs(synthetic.mix_stems(stems)).max() < synthetic.MAX_PEAK


def test_deterministic(dataset: Path, tmp_path: Path) -> None:
    # Same seed: identical bytes, also with more tracks (each track has its own generator).
    again = _write(tmp_path / 'again', tracks_train=TRAIN + 1)
    for track in _tracks(dataset):
        other = again / track.parent.name / track.name
        for stem in STEMS:
            assert (track / f'{stem}.wav').read_bytes() == (other / f'{stem}.wav').read_bytes()
    # Another seed: different audio.
    changed = _write(tmp_path / 'changed', tracks_train=1, tracks_test=0, seed=1)
    first = _read(dataset / 'train' / 'synth_train_000')['mixture']
    assert not np.array_equal(first, _read(changed / 'train' / 'synth_train_000')['mixture'])
    # Different tracks of one set differ.
    assert not np.array_equal(first, _read(dataset / 'train' / 'synth_train_001')['mixture'])


def test_rerun_keeps_complete_tracks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _write(tmp_path, tracks_train=2, tracks_test=0, seconds=1.0)
    track = root / 'train' / 'synth_train_000'
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in root.rglob('*.wav')}
    original = (track / 'vocals.wav').read_bytes()
    # A temporary folder left by a crashed run (dead process id) is cleaned up.
    stale = root / 'train' / '.synth_train_000.tmp-999999999'
    stale.mkdir()
    (track / 'vocals.wav').unlink()
    synthetic.write_dataset(root, tracks_train=2, tracks_test=0, seconds=1.0, seed=0)
    out = capsys.readouterr().out
    assert 'synth_train_001: exists' in out and 'synth_train_000' in out
    assert not stale.exists()
    assert sorted(p.name for p in (root / 'train').iterdir()) == ['synth_train_000',
                                                                 'synth_train_001']
    for path, stamp in stamps.items():
        if path.parent.name == 'synth_train_001':
            assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    # The incomplete track was rebuilt, identically.
    assert (track / 'vocals.wav').read_bytes() == original


def test_source_spectra_make_a_real_task(songs) -> None:
    """Vocals and other share the 200 Hz - 2 kHz band, bass lives below 300 Hz, drums are
    transient."""
    for _, stems in songs:
        assert _band_fraction(stems['vocals'], 200, 2000) > 0.5
        assert _band_fraction(stems['other'], 200, 2000) > 0.5
        assert _band_fraction(stems['bass'], 0, 300) > 0.75
        assert _band_fraction(stems['drums'], 2000, SR / 2) > 0.005    # hats and snares

        def crest(x: np.ndarray) -> float:
            rms = _frame_rms(x)
            rms = rms[rms > 0]
            return float(np.percentile(rms, 95) / np.percentile(rms, 50))
        assert crest(stems["drums"]) > 2.0
        assert crest(stems['drums']) > max(crest(stems[s]) for s in ('bass', 'other', 'vocals'))


def test_drum_onsets_on_the_beat_grid(songs) -> None:
    hop = 256
    for plan, stems in songs:
        mono = stems['drums'].mean(0)
        frames = np.abs(mono[:len(mono) // hop * hop].reshape(-1, hop)).max(1)
        rise = np.diff(frames, prepend=0)
        peaks: tp.List[int] = []          # strongest rises, at least 40 ms apart
        for frame in np.argsort(rise)[::-1]:
            if rise[frame] < 0.3 * rise.max():
                break
            if all(abs(frame - p) * hop > 0.04 * SR for p in peaks):
                peaks.append(frame)
        peaks = np.array(peaks)
        assert len(peaks) >= 4
        grid = plan.grid()
        distance = np.abs(peaks[:, None] * hop - grid[None]).min(1) / SR
        assert np.mean(distance < 0.015) > 0.9


def test_silent_sections_exist(songs, dataset: Path) -> None:
    # In the written files: some stem plays in the track but is exactly zero for >= 0.5 s.
    found = 0
    for track in _tracks(dataset):
        for source, audio in _read(track).items():
            if source == 'mixture' or not audio.any():
                continue
            window = SR // 2
            silent = ~np.abs(audio).any(0)
            counts = np.concatenate([[0], np.cumsum(silent)])
            found += int((counts[window:] - counts[:-window] == window).any())
    assert found > 0
    # In bars the plan leaves out, vocals are exactly zero (up to the breath before the next
    # phrase), as are drums in an intro bar.
    checked = 0
    for plan, stems in songs:
        for bar in np.flatnonzero(~plan.active['vocals']):
            begin, end = plan.sample(bar), min(plan.sample(bar + 1) - int(0.35 * SR), plan.length)
            if end > begin:
                assert not stems['vocals'][:, begin:end].any()
                checked += 1
        if not plan.active['drums'][0]:
            assert not stems['drums'][:, :plan.sample(1) - int(0.02 * SR)].any()
    assert checked > 0


def test_whole_silent_stem_in_default_set() -> None:
    """With the default set (seed 0), some track has an entirely silent stem."""
    silent = [(split, index, plan.silent)
              for split, count in (('train', synthetic.DEFAULT_TRACKS_TRAIN),
                                   ('test', synthetic.DEFAULT_TRACKS_TEST))
              for index in range(count)
              for plan in [synthetic.plan_song(synthetic.track_rng(0, split, index),
                                               synthetic.DEFAULT_SECONDS)]
              if plan.silent is not None]
    assert silent
    split, index, source = silent[0]
    # The silent stem does not depend on the duration: check it on a short render.
    stems = synthetic.synthesize_track(synthetic.track_rng(0, split, index), 2.0)
    assert not stems[source].any()
    assert synthetic.mix_stems(stems).any()


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / 'cli'
    result = subprocess.run(
        [sys.executable, '-m', 'tools.make_synthetic', str(out), '--tracks-train', '1',
         '--tracks-test', '1', '--seconds', '1', '--seed', '2', '--samplerate', '22050'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'synth_train_000' in result.stdout
    for split in ('train', 'test'):
        for stem in STEMS:
            info = sf.info(str(out / split / f'synth_{split}_000' / f'{stem}.wav'))
            assert (info.samplerate, info.frames, info.channels) == (22050, 22050, 2)


def test_other_parameters_in_same_folder_is_an_error(tmp_path):
    root = tmp_path / 'set'
    synthetic.write_dataset(root, tracks_train=1, tracks_test=1, seconds=1.0, seed=0, verbose=False)
    # More tracks with the same parameters: allowed.
    synthetic.write_dataset(root, tracks_train=2, tracks_test=1, seconds=1.0, seed=0, verbose=False)
    with pytest.raises(ValueError, match=r'made with seed=0 \(asked 1\).*Delete the folder'):
        synthetic.write_dataset(root, tracks_train=2, tracks_test=1, seconds=1.0, seed=1, verbose=False)
    with pytest.raises(ValueError, match=r'tracks_train=2 \(asked 1\)'):
        synthetic.write_dataset(root, tracks_train=1, tracks_test=1, seconds=1.0, seed=0, verbose=False)
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'file.txt').write_text('x')
    with pytest.raises(ValueError, match='not a synthetic set'):
        synthetic.write_dataset(tmp_path / 'other', tracks_train=1, tracks_test=1, seconds=1.0,
                      verbose=False)
