"""Tests of the automix set (separator/data/automix.py, tools/automix.py) on a small synthetic
MUSDB layout."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separator.data import automix, synthetic
from separator.data.musdb import index_tracks, split_valid
from tools import automix as automix_tool

REPO = Path(__file__).resolve().parents[1]
SOURCES = synthetic.SOURCES
SR = 22050
TRACKS = 4
ARGS = ['--remixes', '2', '--valid-count', '1', '--seed', '5']


def _digest(folder: Path) -> tp.Dict[str, str]:
    """SHA-1 of every file written (links to the originals aside) under `folder`."""
    return {str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob('*')) if path.is_file() and not path.is_symlink()}


@pytest.fixture(scope='module')
def sets(tmp_path_factory: pytest.TempPathFactory) -> tp.Dict[str, Path]:
    """A synthetic MUSDB layout, and two automix sets of it: one written in this process, one
    by `python -m tools.automix` in another."""
    root = tmp_path_factory.mktemp('automix')
    musdb = synthetic.write_dataset(root / 'musdb', tracks_train=TRACKS, tracks_test=0,
                                    seconds=6, samplerate=SR, verbose=False)
    assert automix_tool.main([str(musdb), str(root / 'one'), *ARGS]) == 0
    env = dict(os.environ, OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, '-m', 'tools.automix', str(musdb), str(root / 'two'),
                    *ARGS], cwd=REPO, env=env, check=True, capture_output=True)
    return {'musdb': musdb, 'one': root / 'one', 'two': root / 'two'}


def _remixes(out: Path) -> tp.List[Path]:
    return sorted(path for path in (out / 'train').iterdir() if path.name.startswith('automix'))


def test_writes_remixes_and_links(sets: tp.Dict[str, Path]) -> None:
    out = sets['one']
    valid = 'synth_train_003'                      # the last by name: --valid-count 1
    manifest = json.loads((out / 'automix.json').read_text())
    assert manifest['params']['valid'] == [valid]
    remixed = TRACKS - 1 - len(manifest['rejected'])
    assert remixed >= 2
    assert len(_remixes(out)) == 2 * remixed
    for folder in _remixes(out):
        infos = [sf.info(str(folder / f'{name}.wav')) for name in ['mixture', *SOURCES]]
        assert {(info.frames, info.samplerate, info.channels) for info in infos} == \
            {(infos[0].frames, SR, 2)}
        assert infos[0].frames > 3 * SR
        recipe = json.loads((folder / 'recipe.json').read_text())
        assert recipe == manifest['remixes'][folder.name]
        for stem in recipe['stems'].values():
            assert stem['track'] != valid
            assert abs(stem['tempo']) < 15 and abs(stem['pitch']) <= 3
    partners = [stem for recipe in manifest['remixes'].values()
                for stem in recipe['stems'].values() if stem['track'] != recipe['reference']]
    assert partners, "no remix takes a stem from another track"
    original = out / 'train' / 'synth_train_001' / 'bass.wav'
    assert original.is_symlink()
    assert original.resolve() == (sets['musdb'] / 'train' / 'synth_train_001' /
                                  'bass.wav').resolve()
    tracks = index_tracks(out / 'train', SOURCES, SR, 2)     # what training reads
    assert len(tracks) == TRACKS + 2 * remixed
    train, held = split_valid(tracks, None, 1)
    assert [track.name for track in held] == [valid]
    assert (out.parent / 'one.analysis.json').exists()


def test_mixture_is_the_sum_of_the_stems(sets: tp.Dict[str, Path]) -> None:
    for folder in _remixes(sets['one']):
        audio = {name: sf.read(str(folder / f'{name}.wav'), dtype='float32')[0]
                 for name in ['mixture', *SOURCES]}
        total = np.zeros_like(audio['drums'])
        for source in SOURCES:
            total = total + audio[source]
        assert np.array_equal(audio['mixture'], total), folder.name
        assert np.abs(audio['mixture']).max() < 1


def test_deterministic(sets: tp.Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs (two processes) give the same bytes; a third from the cached analysis too."""
    one, two = _digest(sets['one']), _digest(sets['two'])
    assert len(one) == 1 + 6 * len(_remixes(sets['one']))   # manifest, 5 wav + recipe each
    assert one == two
    for folder in _remixes(sets['two']):
        shutil.rmtree(folder)

    def no_analysis(*args: tp.Any, **kwargs: tp.Any) -> None:
        raise AssertionError("the cached analysis should have been used")

    monkeypatch.setattr(automix, 'analyse_stems', no_analysis)
    assert automix_tool.main([str(sets['musdb']), str(sets['two']), *ARGS]) == 0
    assert _digest(sets['two']) == one


def test_other_parameters_are_refused(sets: tp.Dict[str, Path],
                                      capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        automix_tool.main([str(sets['musdb']), str(sets['one']), '--remixes', '2',
                           '--valid-count', '1', '--seed', '6'])
    assert "seed=5 (asked 6)" in capsys.readouterr().err


def _click_track(bpm: float, seconds: float) -> np.ndarray:
    """Decaying 1 kHz blips every beat."""
    audio = np.zeros(int(seconds * SR), dtype=np.float32)
    blip = np.exp(-np.arange(400) / 60) * np.sin(2 * np.pi * 1000 * np.arange(400) / SR)
    for start in np.arange(0.25 * SR, len(audio) - 400, 60 / bpm * SR):
        audio[int(start):int(start) + 400] += blip
    return audio


@pytest.mark.parametrize('bpm', [96., 137.])
def test_click_track_tempo(bpm: float) -> None:
    tempo, beats = automix.estimate_tempo(_click_track(bpm, 12), SR)
    print(f"click track at {bpm} BPM: estimated {tempo:.2f} BPM "
          f"({100 * (tempo / bpm - 1):+.2f} %)")
    assert abs(tempo / bpm - 1) < 0.02
    assert abs(np.median(np.diff(beats)) * bpm / 60 - 1) < 0.02


def test_key_shift_and_tempo_match() -> None:
    key = np.array([.3, 0, .1, 0, .2, .1, 0, .2, 0, .1, 0, 0])
    assert automix.best_pitch_shift(np.roll(key, 2), key) == 2
    assert automix.best_pitch_shift(np.roll(key, -3), key) == -3
    assert automix.tempo_change(120, 110) == pytest.approx(120 / 110 - 1)
    assert automix.tempo_change(120, 62) == pytest.approx(120 / 124 - 1)    # half time
    assert automix.tempo_change(120, 100) is None                           # 20 % off


def test_align_lines_up_the_beats() -> None:
    """Clicks at irregular times (one lag only lines them up) and a copy 0.3 s later come out
    in time."""
    beats = np.cumsum(np.random.default_rng(0).uniform(0.3, 0.7, 16))
    blip = np.exp(-np.arange(400) / 60) * np.sin(2 * np.pi * 1000 * np.arange(400) / SR)
    click = np.zeros(int((beats[-1] + 0.5) * SR), dtype=np.float32)
    for beat in beats:
        click[int(beat * SR):int(beat * SR) + 400] += blip
    late = np.concatenate([np.zeros(int(0.3 * SR), np.float32), click])[:len(click)]
    stems, delays = automix.align([(np.stack([late, late]), beats + 0.3),
                                   (np.stack([click, click]), beats)], SR)
    print(f"delays {delays} frames (0.3 s = {int(0.3 * SR)})")
    assert abs(delays[1] - delays[0] - 0.3 * SR) <= 0.005 * SR
    onsets = [np.flatnonzero(np.abs(stem[0]) > 0.5)[0] for stem in stems]
    assert abs(onsets[0] - onsets[1]) <= 0.005 * SR
