"""The MUSDB18-HQ indexer and data sets: formats, cache, splits, and every input error."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from separator.data.audio import AudioError
from separator.data.musdb import index_tracks, musdb_validation_names, split_valid
from separator.data.segments import EpochSampler, StridedSegments, TrainSegments, WholeTracks

from .conftest import SOURCES, write_track


def index(folder: Path, cache=None, samplerate=44100, channels=2):
    return index_tracks(folder, SOURCES, samplerate, channels, cache)


def test_index_lengths_and_files(musdb_folder):
    tracks = index(musdb_folder / 'train')
    assert [t.name for t in tracks] == ['track0', 'track1', 'track2']
    assert all(t.length == 88200 and t.samplerate == 44100 and t.channels == 2 for t in tracks)
    assert set(tracks[0].files) == set(SOURCES)
    assert tracks[0].mixture.endswith('mixture.wav')


def test_cache_is_used_and_invalidated(musdb_folder, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    first = index(musdb_folder / 'train', cache)
    assert len(list(cache.iterdir())) == 1
    calls = []
    import separator.data.musdb as musdb
    original = musdb._index_track
    monkeypatch.setattr(musdb, '_index_track', lambda *a: calls.append(a[0]) or original(*a))
    assert index(musdb_folder / 'train', cache) == first
    assert calls == []
    # Rewriting a stem with a new length invalidates that track only.
    time.sleep(0.01)
    path = musdb_folder / 'train' / 'track1'
    for source in SOURCES + ['mixture']:
        sf.write(path / f'{source}.wav', np.zeros((1000, 2), np.float32), 44100)
    tracks = index(musdb_folder / 'train', cache)
    assert calls == [path]
    assert tracks[1].length == 1000


def test_missing_stem(musdb_folder):
    os.remove(musdb_folder / 'train' / 'track1' / 'bass.wav')
    with pytest.raises(AudioError, match=r'track1.*missing the stem\(s\) bass'):
        index(musdb_folder / 'train')


def test_corrupt_file(musdb_folder):
    path = musdb_folder / 'train' / 'track0' / 'vocals.wav'
    path.write_bytes(b'not a wav file at all' * 10)
    with pytest.raises(AudioError, match=r'vocals\.wav.*corrupt'):
        index(musdb_folder / 'train')


def test_wrong_samplerate(musdb_folder):
    path = musdb_folder / 'train' / 'track2' / 'drums.wav'
    sf.write(path, np.zeros((88200, 2), np.float32), 22050)
    with pytest.raises(AudioError, match=r'drums\.wav has sample rate 22050.*dset\.samplerate'):
        index(musdb_folder / 'train')


def test_wrong_channels(musdb_folder):
    path = musdb_folder / 'train' / 'track2' / 'other.wav'
    sf.write(path, np.zeros(88200, np.float32), 44100)
    with pytest.raises(AudioError, match=r'other\.wav has 1 channel.*-ac 2'):
        index(musdb_folder / 'train')


def test_mismatched_lengths(musdb_folder):
    path = musdb_folder / 'train' / 'track0' / 'bass.wav'
    sf.write(path, np.zeros((44100, 2), np.float32), 44100)
    with pytest.raises(AudioError, match=r'track0 have different lengths.*bass: 44100'):
        index(musdb_folder / 'train')


def test_empty_and_missing_folder(tmp_path):
    with pytest.raises(AudioError, match='does not exist'):
        index(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(AudioError, match='holds no track folder'):
        index(tmp_path / 'empty')


def test_truncated_file_read_error(musdb_folder):
    path = musdb_folder / 'train' / 'track0' / 'drums.wav'
    tracks = index(musdb_folder / 'train')
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    dataset = StridedSegments(tracks[:1], SOURCES, 44100, 44100)
    # A file truncated after indexing fails loudly, naming the file, never returns garbage.
    with pytest.raises(AudioError, match=r'track0/drums\.wav.*corrupt or truncated'):
        dataset[1]


def test_splits(musdb_folder):
    tracks = index(musdb_folder / 'train')
    train, valid = split_valid(tracks, None, 1)
    assert [t.name for t in valid] == ['track2'] and len(train) == 2
    train, valid = split_valid(tracks, ['track0'], 1)
    assert [t.name for t in valid] == ['track0']
    with pytest.raises(ValueError, match='unknown track'):
        split_valid(tracks, ['nope'], 1)
    with pytest.raises(ValueError, match='No training track left'):
        split_valid(tracks, None, 3)


def test_official_musdb_split(tmp_path):
    names = musdb_validation_names()
    assert len(names) == 14 and 'Leaf - Summerghost' in names
    for name in [names[0], 'Some - Train Song']:
        write_track(tmp_path / name, seconds=0.1)
    train, valid = split_valid(index(tmp_path), None, 1)
    assert [t.name for t in valid] == [names[0]]
    assert [t.name for t in train] == ['Some - Train Song']


def test_train_segments_deterministic_and_partial(musdb_folder):
    tracks = index(musdb_folder / 'train')
    dataset = TrainSegments(tracks, SOURCES, 22050, epoch_size=8, seed=3)
    assert torch.equal(dataset[5], dataset[5])
    assert not torch.equal(dataset[5], dataset[6])
    assert dataset[5].shape == (4, 2, 22050)
    other_seed = TrainSegments(tracks, SOURCES, 22050, epoch_size=8, seed=4)
    assert not torch.equal(dataset[5], other_seed[5])
    # The segment really is a slice of one track's stems.
    stems = {t.name: np.stack([sf.read(t.files[s], dtype='float32')[0].T for s in SOURCES])
             for t in tracks}
    segment = dataset[5].numpy()
    assert any(np.array_equal(segment, audio[..., o:o + 22050])
               for audio in stems.values() for o in range(0, 88200 - 22050 + 1))


def test_strided_and_whole(musdb_folder):
    tracks = index(musdb_folder / 'train')
    dataset = StridedSegments(tracks, SOURCES, 44100, 30000)
    assert len(dataset) == 3 * 3
    assert dataset[2].shape == (4, 2, 44100)
    whole = WholeTracks(index(musdb_folder / 'test'), SOURCES)
    name, mix, refs = whole[0]
    assert name == 'song' and mix.shape == (2, 88200) and refs.shape == (4, 2, 88200)
    assert torch.allclose(mix, refs.sum(0), atol=1e-6)


def test_epoch_sampler_shards():
    shards = []
    for rank in range(2):
        sampler = EpochSampler(10, rank, 2)
        sampler.set_epoch(3)
        shards.append(list(sampler))
    assert sorted(shards[0] + shards[1]) == list(range(30, 40))
    assert len(EpochSampler(10, 1, 2)) == 5
