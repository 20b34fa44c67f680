"""Divide and Remaster (`dset=dnr`): mono speech / music / sfx in ROOT/{tr,cv,tt}/<id>/, the
mixture as mix.wav; tested on generated noise in that layout, one frequency band per source
(so that a model can learn to separate them)."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from separator import builders

from .conftest import TINY, history, run_dora, run_python, signature

DNR_SOURCES = ['speech', 'music', 'sfx']
BANDS = {'speech': (100, 1000), 'music': (1000, 4000), 'sfx': (4000, 16000)}   # Hz
CONF = Path(__file__).resolve().parent.parent / 'conf'


def write_band_track(folder: Path, seconds: float, seed: int, samplerate: int = 44100) -> None:
    """One mono track of `BANDS` noise stems (same level) and their sum as mix.wav."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    frames = int(seconds * samplerate)
    freqs = np.fft.rfftfreq(frames, 1 / samplerate)
    mix = 0.
    for source, (low, high) in BANDS.items():
        spectrum = np.fft.rfft(rng.standard_normal(frames))
        spectrum[(freqs < low) | (freqs >= high)] = 0
        stem = np.fft.irfft(spectrum, frames)
        stem = (0.1 * stem / stem.std()).astype(np.float32)
        sf.write(folder / f'{source}.wav', stem, samplerate, subtype='FLOAT')
        mix = mix + stem
    sf.write(folder / 'mix.wav', mix, samplerate, subtype='FLOAT')


@pytest.fixture
def dnr_root(tmp_path: Path) -> Path:
    root = tmp_path / 'dnr_v2'
    for split, count in [('tr', 3), ('cv', 1), ('tt', 1)]:
        for index in range(count):
            write_band_track(root / split / f'{100 * len(split) + index}', seconds=2,
                             seed=index)
    return root


def test_dnr_splits_and_mixture(dnr_root, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose('config', overrides=['dset=dnr', f'dset.musdb={dnr_root}',
                                           f'dset.metadata={tmp_path / "metadata"}'])
    train, valid, test = builders.get_tracks(cfg.dset)
    assert [len(train), len(valid), len(test)] == [3, 1, 1]   # cv is the validation set
    assert Path(valid[0].files['speech']).parent.parent.name == 'cv'
    assert test[0].mixture.endswith('mix.wav') and test[0].channels == 1
    assert sorted(test[0].files) == sorted(DNR_SOURCES)


def test_dnr_xp_trains_and_tests(dnr_root, tmp_path):
    # The least budget (on 2 CPU cores) that beats the trivial estimates (below): 24 steps.
    args = [*TINY, 'dset=dnr', f'dset.musdb={dnr_root}', 'epochs=3', 'optim.lr=1e-2',
            'test.every=0']
    sig = signature(run_dora(['run', *args], tmp_path))
    test = history(tmp_path, sig)[-1]['test']
    print({key: round(value, 2) for key, value in test.items()})
    # What it learned: every source beats silence (0 dB: a model outputting zeros) and the
    # mixture; the mean beats also the mixture split evenly, the best estimate that does not
    # tell the bands apart (1.76 dB on noise of three equal levels).
    for trivial in ('silence', 'mixture', 'mixture_split'):
        assert test['nsdr'] > test[f'nsdr_{trivial}'], (trivial, test)
    for trivial in ('silence', 'mixture'):
        for source in DNR_SOURCES:
            assert test[f'nsdr_{source}'] > test[f'nsdr_{trivial}_{source}'], (source, test)

    export = run_python(['-m', 'tools.export', sig, '--xps', str(tmp_path / 'outputs' / 'xps'),
                         '-o', 'release'], tmp_path)
    assert export.returncode == 0, export.stderr
    scores = run_python(['-m', 'tools.test_pretrained', '--repo', 'release', '-n', sig,
                         '--musdb', str(dnr_root), '--split', 'tt', '--mixture-name', 'mix',
                         '--no-sdr'], tmp_path)
    assert scores.returncode == 0, scores.stderr
    assert '1 track(s) of' in scores.stdout and 'speech' in scores.stdout
    wrong = run_python(['-m', 'tools.test_pretrained', '--repo', 'release', '-n', sig,
                        '--musdb', str(dnr_root), '--no-sdr'], tmp_path)
    assert wrong.returncode == 2 and 'dnr_v2/test' in wrong.stderr
