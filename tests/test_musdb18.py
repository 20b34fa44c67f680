"""MUSDB18 as distributed (`dset=musdb18`: `{train,test}/<track>.stem.mp4`): decoded once into
the MUSDB18-HQ layout, with the real excerpt that stempeg ships and stem files made here with
ffmpeg; hostile names and broken files named with the fix; an XP trains on the decoded set."""
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separator.data.audio import AudioError
from separator.data.musdb import index_tracks
from separator.data.musdb_stems import STREAMS, decode_musdb18

from .conftest import SOURCES, TINY, history, run_dora, signature

RATE = 44100
FALCON = (Path(importlib.util.find_spec('stempeg').origin).parent / 'data'
          / 'The Easton Ellises - Falcon 69.stem.mp4')


def write_stem_file(path: Path, seconds: float, seed: int, streams: int = 5) -> np.ndarray:
    """A stem file of `streams` AAC streams (the mixture, then stems of tones below 5 kHz,
    which AAC at 256 kb/s keeps); returns the stems [streams - 1, 2, T] that went in."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    stems = []
    for _ in range(streams - 1):
        freqs, phases = rng.uniform(60, 5000, (2, 3)), rng.uniform(0, 2 * np.pi, (2, 3))
        stems.append(0.05 * np.sin(2 * np.pi * freqs[..., None] * time + phases[..., None]
                                   ).sum(1))
    stems = np.stack(stems).astype(np.float32)
    wavs = [stems.sum(0), *stems]
    inputs, maps = [], []
    path.parent.mkdir(parents=True, exist_ok=True)
    for index, wav in enumerate(wavs):
        wav_path = path.parent / f'.in{index}.wav'
        sf.write(wav_path, wav.T, RATE, subtype='FLOAT')
        inputs += ['-i', str(wav_path)]
        maps += ['-map', f'{index}:a']
    subprocess.run(['ffmpeg', '-v', 'error', '-y', *inputs, *maps, '-c:a', 'aac', '-b:a',
                    '256k', f'file:{path}'], check=True)
    for index in range(len(wavs)):
        (path.parent / f'.in{index}.wav').unlink()
    return stems


@pytest.fixture
def stems_root(tmp_path: Path) -> Path:
    """train/: two made stem files (one whose name starts with '-'), test/: the real
    MUSDB18 excerpt (6 s of The Easton Ellises - Falcon 69)."""
    root = tmp_path / 'musdb18'
    write_stem_file(root / 'train' / 'A song.stem.mp4', 1.7, seed=1)
    write_stem_file(root / 'train' / '-dash.stem.mp4', 1.3, seed=2)
    (root / 'test').mkdir()
    shutil.copy(FALCON, root / 'test' / FALCON.name)
    return root


def test_decodes_musdb_layout(stems_root, tmp_path):
    out = tmp_path / 'wav'
    assert decode_musdb18(stems_root, out) == 3
    for split, name, seconds in [('train', 'A song', 1.7), ('train', '-dash', 1.3),
                                 ('test', 'The Easton Ellises - Falcon 69', 6.05)]:
        folder = out / split / name
        assert sorted(p.stem for p in folder.iterdir()) == sorted(STREAMS)
        lengths = {sf.info(folder / f'{stream}.wav').frames for stream in STREAMS}
        assert len(lengths) == 1, (folder, lengths)   # the streams cut to one length
        length = lengths.pop()
        # AAC adds an encoder delay and rounds up to whole frames of 1024 samples.
        assert seconds * RATE <= length <= seconds * RATE + 3 * 1024, (name, length)
    # The decoded stems are the ones that went in (lossy: within AAC's error), and the
    # loaders index the folder as a MUSDB18-HQ one.
    wanted = write_stem_file(tmp_path / 'again' / 'x.stem.mp4', 1.7, seed=1)
    decoded = np.stack([sf.read(out / 'train' / 'A song' / f'{s}.wav', dtype='float32')[0].T
                        for s in STREAMS[1:]])
    # Find AAC's delay by cross-correlation of the first stem, then compare all of them.
    delay = int(np.argmax([np.dot(decoded[0, 0, d:d + 20000], wanted[0, 0, :20000])
                           for d in range(0, 3000)]))
    length = wanted.shape[-1] - 2048
    error = decoded[..., delay:delay + length] - wanted[..., :length]
    snr = 10 * np.log10((wanted[..., :length] ** 2).sum((1, 2)) / (error ** 2).sum((1, 2)))
    print(f"AAC delay {delay} samples; SNR of the decoded stems {np.round(snr, 1)} dB")
    assert (snr > 15).all(), snr
    tracks = index_tracks(out / 'test', SOURCES, RATE, 2)
    assert [t.name for t in tracks] == ['The Easton Ellises - Falcon 69']
    # The real excerpt: its mixture is the sum of its stems (MUSDB's), within AAC's error.
    falcon = out / 'test' / 'The Easton Ellises - Falcon 69'
    mix = sf.read(falcon / 'mixture.wav', dtype='float32')[0]
    total = sum(sf.read(falcon / f'{s}.wav', dtype='float32')[0] for s in SOURCES)
    assert 10 * np.log10((mix ** 2).sum() / ((mix - total) ** 2).sum()) > 15
    # A second pass writes nothing and leaves the files as they were.
    before = {p: p.stat().st_mtime_ns for p in out.rglob('*.wav')}
    assert decode_musdb18(stems_root, out) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*.wav')} == before


def test_broken_stem_files_are_named(stems_root, tmp_path):
    out = tmp_path / 'wav'
    assert decode_musdb18(stems_root, out) == 3
    garbage = stems_root / 'train' / 'broken.stem.mp4'
    garbage.write_bytes(b'\x00not an mp4' * 100)
    with pytest.raises(AudioError, match=r"broken\.stem\.mp4.*ffprobe"):
        decode_musdb18(stems_root, out)
    garbage.unlink()
    write_stem_file(stems_root / 'train' / 'two.stem.mp4', 1.0, seed=3, streams=2)
    with pytest.raises(AudioError, match=r"two\.stem\.mp4 holds 2 audio streams, not the 5"):
        decode_musdb18(stems_root, out)
    assert not (out / 'train' / 'two').exists() and not (out / 'train' / 'broken').exists()
    assert len(list(out.rglob('*.wav'))) == 15       # nothing decoded before was lost
    with pytest.raises(AudioError, match="No .stem.mp4 file in .*point dset.stems"):
        decode_musdb18(tmp_path / 'empty', out)


def test_xp_on_musdb18(stems_root, tmp_path):
    """`dset=musdb18`: the XP decodes the stem files, trains and tests on the real excerpt;
    a broken stem file stops it in one line naming the file."""
    out = tmp_path / 'decoded'
    args = [*TINY, 'dset=musdb18', f'dset.stems={stems_root}', f'dset.musdb={out}',
            'dset.valid_count=1', 'epochs=1', 'dset.segment=1', 'test.sdr=false']
    sig = signature(run_dora(['run', *args], tmp_path))
    assert (out / 'test' / 'The Easton Ellises - Falcon 69' / 'vocals.wav').exists()
    test = history(tmp_path, sig)[-1]['test']
    assert np.isfinite(test['nsdr']) and 'nsdr_mixture_vocals' in test
    (stems_root / 'train' / 'zz.stem.mp4').write_bytes(b'garbage')
    failed = run_dora(['run', *args, 'seed=2'], tmp_path, check=False)
    assert failed.returncode != 0
    assert 'zz.stem.mp4' in failed.stderr and 'Traceback' not in failed.stderr, failed.stderr
