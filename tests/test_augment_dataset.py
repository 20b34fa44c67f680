"""KUIELab's offline augmentation (`tools.augment_dataset`, `dset.extra_train`): pitch-shifted
and time-stretched copies of the training tracks, in their folder names, that an XP adds to
its training tracks (not the copies of its validation tracks) at the same epoch size."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from separator import builders
from tools import augment_dataset

from .conftest import SOURCES, write_track

CONF = Path(__file__).resolve().parent.parent / 'conf'
RATE = 44100


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """train/: three 1 s tracks, the vocals of track0 a 440 Hz sine; test/: one."""
    root = tmp_path / 'musdb'
    for index in range(3):
        write_track(root / 'train' / f'track{index}', seconds=1., seed=index)
    time = np.arange(RATE) / RATE
    sine = 0.3 * np.sin(2 * np.pi * 440 * time)
    sf.write(root / 'train' / 'track0' / 'vocals.wav', np.stack([sine, sine], 1).astype(
        np.float32), RATE, subtype='FLOAT')
    write_track(root / 'test' / 'song', seconds=1., seed=9)
    return root


def peak_hz(path: Path) -> float:
    wav = sf.read(path, dtype='float32')[0][:, 0]
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * RATE / len(wav))


def test_copies_and_extra_training_tracks(root, tmp_path, capsys):
    assert augment_dataset.main([str(root), '--max-pitch', '1', '--max-tempo', '10']) == 0
    assert "dset.extra_train=['train_p=*']" in capsys.readouterr().out
    names = sorted(p.name for p in root.iterdir() if p.name.startswith('train_'))
    # KUIELab's names; every (pitch, tempo) of the grid but (0, 0).
    assert names == sorted(f'train_p={p}_t={t}' for p in (-1, 0, 1) for t in (-10, 0, 10)
                           if (p, t) != (0, 0))
    # Tempo +10 %: 1 s plays in 1 / 1.1 s; -10 %: in 1 / 0.9 s (within Rubber Band's
    # rounding of a few samples).
    for tempo, factor in [(10, 1.1), (-10, 0.9)]:
        frames = sf.info(root / f'train_p=0_t={tempo}' / 'track1' / 'drums.wav').frames
        assert abs(frames - RATE / factor) <= 16, (tempo, frames)
    # One semitone up: 440 Hz to 440 x 2^(1/12) = 466.2 Hz (1 Hz bins).
    assert abs(peak_hz(root / 'train_p=1_t=0' / 'track0' / 'vocals.wav') - 466.16) <= 2
    assert abs(peak_hz(root / 'train_p=-1_t=10' / 'track0' / 'vocals.wav') - 415.30) <= 2
    # A second run writes nothing.
    before = {p: p.stat().st_mtime_ns for p in root.rglob('*.wav')}
    assert augment_dataset.augment(root, max_pitch=1, max_tempo=10, verbose=False) == 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob('*.wav')} == before

    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        base = ['dset=musdb44', f'dset.musdb={root}', f'dset.metadata={tmp_path / "meta"}',
                'dset.valid_count=1', 'dset.segment=0.5']
        plain = compose('config', overrides=base)
        extra = compose('config', overrides=[*base, "dset.extra_train=['train_p=*']"])
    train, valid, _test = builders.get_datasets(plain)
    train_extra, valid_extra, _ = builders.get_datasets(extra)
    assert [t.name for t in valid.tracks] == [t.name for t in valid_extra.tracks] == ['track2']
    assert len(train.tracks) == 2
    # 8 copies of the 2 training tracks join them; the copies of track2 (validation) do not.
    assert len(train_extra.tracks) == 2 + 8 * 2
    assert 'track2' not in {t.name for t in train_extra.tracks}
    assert len(train_extra) == len(train)          # the same epoch size


def test_errors_name_the_fix(root, tmp_path, capsys):
    assert augment_dataset.main([str(tmp_path / 'nothing')]) == 1
    assert 'nothing' in capsys.readouterr().err
    assert augment_dataset.main([str(root), '--max-tempo', '100']) == 2
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose('config', overrides=['dset=musdb44', f'dset.musdb={root}',
                                           f'dset.metadata={tmp_path / "meta"}',
                                           "dset.extra_train=['train_p=*']"])
    with pytest.raises(ValueError, match=r"matches no folder.*tools.augment_dataset"):
        builders.get_datasets(cfg)
