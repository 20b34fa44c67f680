"""Tests of the label-noise injector (separator/data/labelnoise.py, tools/inject_labelnoise.py)."""
import json
import typing as tp
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separator.data import labelnoise, synthetic
from separator.data.musdb import index_tracks
from tools import inject_labelnoise

SOURCES = ['bass', 'drums', 'other', 'vocals']
SR = 44100
TRACKS = 4
SECONDS = 2

Stems = tp.Dict[str, np.ndarray]


@pytest.fixture(scope='module')
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_dataset(tmp_path_factory.mktemp('clean'), tracks_train=TRACKS,
                                   tracks_test=0, seconds=SECONDS, seed=0, verbose=False)


@pytest.fixture(scope='module')
def noisy(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelnoise.inject(clean, tmp_path_factory.mktemp('noisy') / 'out', rate=0.5,
                             seed=0, verbose=False)


def _read(folder: Path) -> Stems:
    """source -> float32 [2, T]"""
    return {source: sf.read(str(folder / f'{source}.wav'), dtype='float32',
                            always_2d=True)[0].T for source in SOURCES}


def _expected(stem: dict, source: str, clean_stems: Stems, clean_split: Path) -> np.ndarray:
    """Rebuild a stem from its clean track and its manifest entry."""
    audio = clean_stems[source]
    length = audio.shape[-1]
    if stem['clean']:
        return audio
    kind = stem['kind']
    if kind == 'swap':
        assert stem['source'] != source
        return clean_stems[stem['source']]
    if kind == 'other_track':
        other = _read(clean_split / stem['track'])[stem['source']]
        start = stem['offset_frame']
        assert start == round(stem['offset'] * SR)
        out = np.zeros_like(audio)
        piece = other[:, start:start + length]
        out[:, :piece.shape[-1]] = piece
        return out
    if kind == 'bleed':
        assert 1 <= len(stem['sources']) <= 3 and source not in stem['sources']
        out = audio.astype(np.float64)
        for other, gain_db in stem['sources'].items():
            assert -20 <= gain_db <= -6
            out = out + 10 ** (gain_db / 20) * clean_stems[other].astype(np.float64)
        return out.astype(np.float32)
    if kind == 'silence':
        start, end = stem['start_frame'], stem['end_frame']
        assert (start, end) == (round(stem['start'] * SR), round(stem['end'] * SR))
        assert stem['whole'] == (start == 0 and end == length)
        out = audio.copy()
        out[:, start:end] = 0
        return out
    if kind == 'shift':
        frames = stem['shift_frames']
        assert frames == round(stem['shift'] * SR)
        assert 0.1 * SR - 1 <= abs(frames) <= min(2 * SR, length // 2)
        out = np.zeros_like(audio)
        if frames > 0:
            out[:, frames:] = audio[:, :-frames]
        else:
            out[:, :frames] = audio[:, -frames:]
        return out
    raise AssertionError(f"unknown kind {kind}")


def _check_against_manifest(out: Path, clean: Path) -> dict:
    """Every stem of `out` is what its manifest entry says; returns the manifest."""
    manifest = labelnoise.load_manifest(out)
    clean_split = clean / 'train'
    for name, entry in manifest['tracks'].items():
        clean_stems = _read(clean_split / entry['source_track'])
        stems = _read(out / name)
        for source in SOURCES:
            stem = entry['stems'][source]
            want = _expected(stem, source, clean_stems, clean_split)
            got = stems[source]
            assert got.shape == clean_stems[source].shape
            if stem['kind'] == 'bleed':
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
            else:
                assert np.array_equal(got, want), (name, source, stem)
            if not stem['clean']:
                assert not np.array_equal(got, clean_stems[source]), (name, source, stem)
            if stem['kind'] == 'swap' and stem['mutual']:
                partner = entry['stems'][stem['source']]
                assert partner['kind'] == 'swap' and partner['mutual']
                assert partner['source'] == source
    return manifest


def test_layout(noisy: Path, clean: Path) -> None:
    manifest = labelnoise.load_manifest(noisy)
    folders = sorted(path.name for path in noisy.iterdir() if path.is_dir())
    assert len(folders) == TRACKS
    assert sorted(manifest['tracks']) == folders
    for name in folders:
        assert str(uuid.UUID(name)) == name
        assert sorted(path.name for path in (noisy / name).iterdir()) == \
            [f'{source}.wav' for source in SOURCES]
        for source in SOURCES:
            info = sf.info(str(noisy / name / f'{source}.wav'))
            assert (info.samplerate, info.channels, info.frames) == (SR, 2, SECONDS * SR)
            assert info.subtype == 'FLOAT'
    assert sorted(entry['source_track'] for entry in manifest['tracks'].values()) == \
        [synthetic.track_name('train', i) for i in range(TRACKS)]
    assert manifest['seed'] == 0 and manifest['rate'] == 0.5
    assert manifest['kinds'] == list(labelnoise.KINDS)
    assert manifest['clean_root'] == str(clean.resolve())
    for entry in manifest['tracks'].values():
        assert list(entry['stems']) == SOURCES
    assert not list(noisy.glob('.*'))       # no temporaries left
    _check_against_manifest(noisy, clean)


def test_index_tracks(noisy: Path) -> None:
    tracks = index_tracks(noisy, SOURCES, SR, 2)
    assert len(tracks) == TRACKS
    assert all(track.mixture is None and track.length == SECONDS * SR for track in tracks)


@pytest.mark.parametrize('kind', labelnoise.KINDS)
def test_each_kind_matches_audio(kind: str, clean: Path, tmp_path: Path) -> None:
    out = labelnoise.inject(clean, tmp_path / 'out', rate=1.0, seed=1, kinds=[kind],
                            verbose=False)
    manifest = _check_against_manifest(out, clean)
    stems = [stem for entry in manifest['tracks'].values() for stem in entry['stems'].values()]
    assert sum(stem['kind'] == kind for stem in stems) >= TRACKS
    for stem in stems:
        # A stem no kind can change (silent stem: silence/shift do nothing) stays clean.
        assert stem['kind'] == kind or (stem['clean'] and 'note' in stem)
    if kind == 'swap':
        assert any(stem['mutual'] for stem in stems if stem['kind'] == 'swap')


def test_rate_one_all_corrupted(clean: Path, tmp_path: Path) -> None:
    out = labelnoise.inject(clean, tmp_path / 'out', rate=1.0, seed=3, verbose=False)
    manifest = _check_against_manifest(out, clean)
    flags = labelnoise.clean_flags(manifest)
    assert len(flags) == TRACKS
    assert not any(flag for track in flags.values() for flag in track.values())
    assert manifest['counts']['clean'] == 0
    assert sum(manifest['counts'].values()) == TRACKS * len(SOURCES)


def test_rate_zero_all_clean(clean: Path, tmp_path: Path) -> None:
    out = labelnoise.inject(clean, tmp_path / 'out', rate=0.0, seed=0, verbose=False)
    manifest = _check_against_manifest(out, clean)       # clean stems are bit-identical
    flags = labelnoise.clean_flags(out)
    assert all(flag for track in flags.values() for flag in track.values())
    assert manifest['counts'] == {'clean': TRACKS * len(SOURCES),
                                  **{kind: 0 for kind in labelnoise.KINDS}}


def test_deterministic(clean: Path, noisy: Path, tmp_path: Path) -> None:
    again = labelnoise.inject(clean, tmp_path / 'again', rate=0.5, seed=0, verbose=False)
    files = sorted(path.relative_to(noisy) for path in noisy.rglob('*') if path.is_file())
    assert files == sorted(path.relative_to(again) for path in again.rglob('*')
                           if path.is_file())
    for path in files:
        assert (noisy / path).read_bytes() == (again / path).read_bytes(), path
    other = labelnoise.inject(clean, tmp_path / 'other', rate=0.5, seed=1, verbose=False)
    assert not set(labelnoise.load_manifest(other)['tracks']) & set(
        labelnoise.load_manifest(noisy)['tracks'])


def test_rate_monotonic(clean: Path, tmp_path: Path) -> None:
    low = labelnoise.clean_flags(
        labelnoise.inject(clean, tmp_path / 'low', rate=0.2, seed=0, verbose=False))
    high = labelnoise.clean_flags(
        labelnoise.inject(clean, tmp_path / 'high', rate=0.7, seed=0, verbose=False))
    for name, track in low.items():
        for source, is_clean in track.items():
            assert is_clean or not high[name][source]


def test_rewrite_and_foreign_out(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out'
    labelnoise.inject(clean, out, rate=0.5, seed=0, verbose=False)
    labelnoise.inject(clean, out, rate=0.5, seed=2, verbose=False)   # replaces the old set
    manifest = labelnoise.load_manifest(out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(manifest['tracks'])
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('x')
    with pytest.raises(ValueError, match='label-noise set'):
        labelnoise.inject(clean, foreign, verbose=False)
    with pytest.raises(ValueError, match='overlaps'):
        labelnoise.inject(clean, clean / 'train' / 'noisy', verbose=False)
    with pytest.raises(ValueError, match='Unknown label-noise kind'):
        labelnoise.inject(clean, tmp_path / 'x', kinds=['swap', 'reverb'], verbose=False)
    with pytest.raises(FileNotFoundError):
        labelnoise.load_manifest(tmp_path / 'nothing')


def test_cli(clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'out'
    assert inject_labelnoise.main([str(clean), str(out), '--rate', '0.5', '--seed', '0',
                                   '--kinds', 'swap,bleed', '--quiet']) == 0
    printed = capsys.readouterr().out
    assert 'swap' in printed and 'bleed' in printed and 'clean' in printed
    manifest = json.loads((out / labelnoise.MANIFEST).read_text())
    assert manifest['kinds'] == ['swap', 'bleed']
    assert {stem['kind'] for entry in manifest['tracks'].values()
            for stem in entry['stems'].values()} <= {None, 'swap', 'bleed'}
    for argv, message in (([str(tmp_path / 'missing'), str(out)], 'does not exist'),
                          ([str(clean), str(out), '--kinds', 'swap,reverb'], 'reverb'),
                          ([str(clean), str(out), '--rate', '1.5'], 'rate')):
        with pytest.raises(SystemExit) as error:
            inject_labelnoise.main(argv)
        assert error.value.code == 2
        assert message in capsys.readouterr().err
