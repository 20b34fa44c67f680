"""Release: export a tiny XP, load it without Hydra, bags, and the `separator` command."""
import subprocess
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from separator.apply import apply_model
from separator.pretrained import BagOfModels, ModelLoadingError, apply_bag, get_model
from separator.separate import get_parser, separate_track
from separator.states import atomic_save, load_model, safe_load
from separator.track_io import read_track
from separator.wiener import wiener_filter
from tools import export

from .conftest import SOURCES, final_state, run_python

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def repo(tiny_xp) -> Path:
    cwd, sig = tiny_xp
    result = run_python(['-m', 'tools.export', sig, '--xps', str(cwd / 'outputs' / 'xps'),
                         '-o', str(cwd / 'release')], cwd)
    assert result.returncode == 0, result.stderr
    assert (cwd / 'release' / f'{sig}.th').exists()
    return cwd / 'release'


def plain(value: tp.Any) -> bool:
    """True if `value` is made of builtin types only (no OmegaConf containers)."""
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def test_export_package(tiny_xp, repo):
    cwd, sig = tiny_xp
    checkpoint = final_state(cwd, sig)
    package = safe_load(repo / f'{sig}.th')
    assert package['sig'] == sig
    assert package['metrics'] == checkpoint['history'][-1]['test']
    assert package['metrics']['nsdr'] == pytest.approx(checkpoint['history'][-1]['test']['nsdr'])
    assert plain(package['args']) and plain(package['kwargs'])  # no Hydra/OmegaConf objects
    reference = load_model({**checkpoint['package'], 'state': checkpoint['best_state']}).eval()
    model = get_model(sig, repo)
    assert not model.training
    mix = torch.randn(2, int(1.2 * model.samplerate), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(apply_model(model, mix), apply_model(reference, mix))


def test_export_half(tiny_xp, repo, capsys):
    cwd, sig = tiny_xp
    assert export.main([sig, '--half', '--xps', str(cwd / 'outputs' / 'xps'),
                        '-o', str(cwd / 'half')]) == 0
    package = safe_load(cwd / 'half' / f'{sig}.th')
    assert all(v.dtype == torch.float16 for v in package['state'].values()
               if v.is_floating_point())
    half, full = get_model(sig, cwd / 'half'), get_model(sig, repo)
    assert all(p.dtype == torch.float32 for p in half.parameters())
    mix = 0.1 * torch.randn(2, half.samplerate, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = half(mix[None]), full(mix[None])
    assert (a - b).norm() < 1e-2 * b.norm()


def export_format(tiny_xp, capsys, flag: str, suffix: str) -> tp.Tuple[Path, float]:
    """Export the tiny XP with `flag`; the file written and the difference printed."""
    cwd, sig = tiny_xp
    assert export.main([sig, flag, '--xps', str(cwd / 'outputs' / 'xps'),
                        '-o', str(cwd / suffix)]) == 0
    difference = float(capsys.readouterr().out.split('max abs difference with PyTorch ')[1]
                       .split()[0])
    return cwd / suffix / f'{sig}.{suffix}', difference


def test_export_torchscript(tiny_xp, repo, capsys):
    path, difference = export_format(tiny_xp, capsys, '--torchscript', 'ts')
    assert difference < 1e-5
    traced = torch.jit.load(str(path))
    sig = tiny_xp[1]
    model = get_model(sig, repo)
    mix = 0.1 * torch.randn(3, 2, int(model.segment * model.samplerate),
                            generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(traced(mix), model(mix), atol=1e-5)


def test_export_onnx(tiny_xp, repo, capsys):
    """The whole hybrid model (STFT and inverse included) in one ONNX graph, any batch."""
    import onnx
    import onnxruntime
    path, difference = export_format(tiny_xp, capsys, '--onnx', 'onnx')
    assert difference < 1e-4
    sig = tiny_xp[1]
    model = get_model(sig, repo)
    metadata = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    assert metadata['sources'].split(',') == list(model.sources)
    assert float(metadata['segment']) == model.segment and metadata['sig'] == sig
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for batch in (1, 5):
        mix = 0.1 * torch.randn(batch, 2, int(model.segment * model.samplerate),
                                generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = model(mix)
        assert torch.allclose(torch.from_numpy(session.run(None, {'mix': mix.numpy()})[0]),
                              expected, atol=1e-4)


def test_export_errors(tiny_xp, capsys):
    cwd, sig = tiny_xp
    xps = cwd / 'outputs' / 'xps'
    assert export.main(['nosuchsig', '--xps', str(xps), '-o', str(cwd / 'none')]) == 2
    err = capsys.readouterr().err
    assert 'nosuchsig' in err and 'dora info -f nosuchsig' in err and 'Traceback' not in err
    (xps / 'unfinished').mkdir()
    assert export.main(['unfinished', '--xps', str(xps), '-o', str(cwd / 'none')]) == 2
    assert 'dora run -f unfinished' in capsys.readouterr().err
    assert not (cwd / 'none').exists()


def test_bag(tiny_xp, repo, tmp_path):
    cwd, sig = tiny_xp
    package = safe_load(repo / f'{sig}.th')
    atomic_save(package, tmp_path / f'{sig}.th')
    generator = torch.Generator().manual_seed(1)
    other = dict(package, state={k: v + 0.05 * torch.randn(v.shape, generator=generator)
                                 if v.is_floating_point() else v
                                 for k, v in package['state'].items()})
    atomic_save(other, tmp_path / 'other.th')
    first, second = get_model(sig, tmp_path), get_model('other', tmp_path)
    mix = 0.1 * torch.randn(2, int(0.75 * first.samplerate), generator=generator)
    with torch.inference_mode():
        a, b = apply_model(first, mix), apply_model(second, mix)
        assert not torch.allclose(a, b)

        (tmp_path / 'select.yaml').write_text(yaml.safe_dump(
            {'models': [sig, 'other'], 'weights': [[1, 0, 1, 0], [0, 1, 0, 1]]}))
        bag = get_model('select', tmp_path)
        assert isinstance(bag, BagOfModels) and bag.sources == SOURCES
        expected = torch.stack([a[0], b[1], a[2], b[3]])
        assert torch.allclose(apply_bag(bag, mix), expected, atol=1e-6)

        (tmp_path / 'blend.yaml').write_text(yaml.safe_dump(
            {'models': [sig, 'other'], 'weights': [[1] * 4, [3] * 4], 'segment': 0.5}))
        bag = get_model('blend', tmp_path)
        assert bag.segment == 0.5
        expected = (apply_model(first, mix, segment=0.5) + 3 * apply_model(second, mix,
                                                                          segment=0.5)) / 4
        assert torch.allclose(apply_bag(bag, mix), expected, atol=1e-6)

    errors = {
        'missing': ({'models': [sig, 'absent']}, "absent"),
        'shape': ({'models': [sig, 'other'], 'weights': [[1, 1, 1, 1]]}, "one per model"),
        'zero': ({'models': [sig, 'other'], 'weights': [[1, 0, 1, 1], [1, 0, 1, 1]]}, "bass"),
        'mixed_rates': ({'models': [sig, 'rate']}, "samplerate"),
    }
    atomic_save(dict(package, kwargs={**package['kwargs'], 'samplerate': 22050}),
                tmp_path / 'rate.th')
    for name, (config, message) in errors.items():
        (tmp_path / f'{name}.yaml').write_text(yaml.safe_dump(config))
        with pytest.raises(ModelLoadingError, match=message):
            get_model(name, tmp_path)
    with pytest.raises(ModelLoadingError, match='select'):  # lists the known names
        get_model('nothing', tmp_path)


def test_bag_settings_per_model(tiny_xp, repo, tmp_path):
    """`settings`: each model runs with its own overlap, shifts, mid/side and Wiener filter
    (danna's blend filters two models of three), the others with the caller's options; the
    command line and the progress count follow them; bad settings are named."""
    cwd, sig = tiny_xp
    package = safe_load(repo / f'{sig}.th')
    atomic_save(package, tmp_path / f'{sig}.th')
    generator = torch.Generator().manual_seed(4)
    atomic_save(dict(package, state={k: v + 0.05 * torch.randn(v.shape, generator=generator)
                                     if v.is_floating_point() else v
                                     for k, v in package['state'].items()}),
                tmp_path / 'other.th')
    first, second = get_model(sig, tmp_path), get_model('other', tmp_path)
    (tmp_path / 'tuned.yaml').write_text(yaml.safe_dump(
        {'models': [sig, 'other'], 'weights': [[1, 1, 3, 1], [1, 2, 1, 1]],
         'settings': [{'wiener': 1, 'overlap': 0.5}, {'midside': True}]}))
    bag = get_model('tuned', tmp_path)
    assert bag.settings == [{'wiener': 1, 'overlap': 0.5}, {'midside': True}]
    mix = 0.1 * torch.randn(2, int(1.3 * first.samplerate), generator=generator)
    with torch.inference_mode():
        a = wiener_filter(mix, apply_model(first, mix, overlap=0.5), 1)
        b = apply_model(second, mix, midside=True)
        weights = torch.tensor([[1., 1, 3, 1], [1, 2, 1, 1]])[..., None, None]
        expected = (weights[0] * a + weights[1] * b) / weights.sum(0)
        torch.testing.assert_close(apply_bag(bag, mix), expected, atol=1e-6, rtol=1e-5)
        # The caller's options apply to what a model's settings leave: shifts here.
        shifted = apply_bag(bag, mix, shifts=1, generator=torch.Generator().manual_seed(0))
        assert not torch.allclose(shifted, expected, atol=1e-4)
    sf.write(tmp_path / 'song.wav', mix.numpy().T, 44100, subtype='FLOAT')
    result = separate(['--repo', str(tmp_path), '-n', 'tuned', '--float32', '--clip-mode',
                       'none', '--shifts', '0', 'song.wav'], tmp_path)
    assert result.returncode == 0, result.stderr
    stems = np.stack([sf.read(tmp_path / 'separated' / 'tuned' / 'song' / f'{source}.wav',
                              dtype='float32')[0].T for source in SOURCES])
    np.testing.assert_allclose(stems, expected.numpy(), atol=1e-5)
    errors = {'unknown': ([{'wienner': 1}, {}], r"unknown \['wienner'\]"),
              'count': ([{}], "2 mapping"),
              'overlap': ([{'overlap': 1.5}, {}], r"overlap must be a number in \[0, 1\)"),
              'shifts': ([{}, {'shifts': True}], "shifts must be a whole number"),
              'wiener': ([{'wiener': -1}, {}], "wiener must be a whole number")}
    for name, (settings, message) in errors.items():
        (tmp_path / f'{name}.yaml').write_text(yaml.safe_dump(
            {'models': [sig, 'other'], 'settings': settings}))
        with pytest.raises(ModelLoadingError, match=f'{name}.yaml.*{message}'):
            get_model(name, tmp_path)


def separate(args: tp.Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_python(['-m', 'separator.separate', *args], cwd)


def test_separate_cli(tiny_xp, repo, tmp_path):
    _cwd, sig = tiny_xp
    rng = np.random.default_rng(0)
    song = (0.1 * rng.standard_normal((int(1.5 * 44100), 2))).astype(np.float32)
    sf.write(tmp_path / 'song.wav', song, 44100)
    sf.write(tmp_path / 'mono.wav', 0.1 * rng.standard_normal(22050), 22050)
    (tmp_path / 'bad.wav').write_bytes(b'RIFF but not really a wav file' * 10)
    result = separate(['--repo', str(repo), '--shifts', '0', '-j', '1',
                       'song.wav', 'bad.wav', 'mono.wav'], tmp_path)
    assert result.returncode == 1, result.stderr
    assert 'bad.wav' in result.stderr and 'Traceback' not in result.stderr
    assert 'resampled from 22050 Hz to 44100 Hz' in result.stderr
    for track, frames in [('song', len(song)), ('mono', 44100)]:
        for source in SOURCES:
            path = tmp_path / 'separated' / sig / track / f'{source}.wav'
            info = sf.info(str(path))
            assert (info.frames, info.channels, info.samplerate) == (frames, 2, 44100)
            assert info.subtype == 'PCM_16'
    assert not (tmp_path / 'separated' / sig / 'bad').exists()


def test_separate_two_stems(tiny_xp, repo, tmp_path):
    _cwd, sig = tiny_xp
    mix = (0.1 * np.random.default_rng(1).standard_normal((44100, 2))).astype(np.float32)
    sf.write(tmp_path / 'song.wav', mix, 44100, subtype='FLOAT')
    result = separate(['-n', sig, '--repo', str(repo), '-o', 'out', '--two-stems', 'vocals',
                       '--float32', '--clip-mode', 'none', '--shifts', '0',
                       '--chunking', 'demucs', 'song.wav'], tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / 'out' / sig / 'song'
    assert sorted(p.name for p in folder.iterdir()) == ['no_vocals.wav', 'vocals.wav']
    vocals, _ = sf.read(folder / 'vocals.wav', dtype='float32')
    rest, _ = sf.read(folder / 'no_vocals.wav', dtype='float32')
    assert np.allclose(vocals + rest, mix, atol=1e-6)
    with torch.inference_mode():
        model = get_model(sig, repo)
        expected = apply_model(model, torch.from_numpy(mix.T.copy()), chunking='demucs')
        fade = apply_model(model, torch.from_numpy(mix.T.copy()))
    assert np.allclose(vocals, expected[SOURCES.index('vocals')].numpy().T, atol=1e-5)
    assert not np.allclose(vocals, fade[SOURCES.index('vocals')].numpy().T, atol=1e-5)


def test_separate_refuses_tracks_that_would_share_stems(tiny_xp, repo, tmp_path):
    """song.wav and song.flac would both write OUT/NAME/song/: refused before any work."""
    _cwd, sig = tiny_xp
    mix = (0.1 * np.random.default_rng(3).standard_normal((4410, 2))).astype(np.float32)
    for ext in ('wav', 'flac'):
        sf.write(tmp_path / f'song.{ext}', mix, 44100)
    result = separate(['--repo', str(repo), 'song.wav', 'song.flac'], tmp_path)
    assert result.returncode == 2
    assert 'song.wav and song.flac would write the same stems' in result.stderr
    assert "--filename '{track}_{trackext}/{stem}.{ext}'" in result.stderr
    assert not (tmp_path / 'separated').exists()
    result = separate(['--repo', str(repo), '--filename', '{track}_{trackext}/{stem}.{ext}',
                       'song.wav', 'song.flac'], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / 'separated' / sig).iterdir()) == [
        'song_flac', 'song_wav']


def test_separate_midside_wiener(tiny_xp, repo, tmp_path):
    _cwd, sig = tiny_xp
    assert all(flag in get_parser().format_help() for flag in ('--midside', '--wiener N'))
    mix = (0.1 * np.random.default_rng(2).standard_normal((44100, 2))).astype(np.float32)
    sf.write(tmp_path / 'song.wav', mix, 44100, subtype='FLOAT')
    result = separate(['--repo', str(repo), '--midside', '--wiener', '1', '--float32',
                       '--clip-mode', 'none', '--shifts', '0', 'song.wav'], tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / 'separated' / sig / 'song'
    stems = np.stack([sf.read(folder / f'{source}.wav', dtype='float32')[0]
                      for source in SOURCES])
    assert np.allclose(stems.sum(0), mix, atol=1e-4)  # the Wiener filter keeps the mixture
    wav = torch.from_numpy(mix.T.copy())
    with torch.inference_mode():
        expected = wiener_filter(wav, apply_model(get_model(sig, repo), wav, midside=True), 1)
    assert np.allclose(stems, expected.numpy().transpose(0, 2, 1), atol=1e-5)


def test_separate_streams_stems_in_every_format(tiny_xp, repo, tmp_path):
    """The command writes its stems block by block: with shifts, the rescaled stems equal
    `apply_model`'s estimates divided by their whole-stem peak, clamped ones are clamped,
    and flac/int24/mp3 are written; no temporary file is left."""
    _cwd, sig = tiny_xp
    mix = (20 * np.random.default_rng(3).standard_normal((int(3.3 * 44100), 2))).astype(np.float32)
    sf.write(tmp_path / 'loud.wav', mix, 44100, subtype='FLOAT')
    wav = torch.from_numpy(mix.T.copy())
    with torch.inference_mode():
        expected = apply_model(get_model(sig, repo), wav, shifts=2,
                               generator=torch.Generator().manual_seed(0)).numpy()
    peaks = np.abs(expected).reshape(len(SOURCES), -1).max(1)
    assert peaks.max() > 1, "the test needs stems past full scale"
    runs = {'float': ['--float32'], 'flac': ['--flac', '--int24', '--clip-mode', 'clamp'],
            'mp3': ['--mp3']}
    for out, flags in runs.items():
        result = separate(['--repo', str(repo), '-o', out, '--shifts', '2', *flags, 'loud.wav'],
                          tmp_path)
        assert result.returncode == 0, result.stderr
        folder = tmp_path / out / sig / 'loud'
        assert not [p for p in folder.iterdir() if p.name.startswith('.')]
    for index, source in enumerate(SOURCES):
        rescaled = expected[index] / max(1.01 * peaks[index], 1.)
        got, _ = sf.read(tmp_path / 'float' / sig / 'loud' / f'{source}.wav', dtype='float32')
        assert np.allclose(got.T, rescaled, atol=1e-6)
        flac = tmp_path / 'flac' / sig / 'loud' / f'{source}.flac'
        assert sf.info(str(flac)).subtype == 'PCM_24'
        got, _ = sf.read(flac, dtype='float32')
        assert np.allclose(got.T, np.clip(expected[index], -0.99, 0.99), atol=1e-6)
        got, rate = read_track(tmp_path / 'mp3' / sig / 'loud' / f'{source}.mp3')
        assert rate == 44100 and abs(got.shape[-1] - len(mix)) < 0.1 * 44100
        assert np.abs(got).max() > 0.1 * np.abs(rescaled).max()


class _FailingModel(torch.nn.Module):
    """Two sources, identity-like; raises `error` at its `fail_at`-th call."""
    samplerate, segment, audio_channels, sources = 100, 1., 2, ['a', 'b']

    def __init__(self, fail_at: int, error: BaseException = RuntimeError('model failed')):
        super().__init__()
        self.calls, self.fail_at, self.error = 0, fail_at, error

    def forward(self, mix):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return torch.stack([mix, mix / 2], 1)


def test_interrupted_separation_keeps_previous_stems(tmp_path):
    sf.write(tmp_path / 'song.wav', np.full((1000, 2), 0.25, np.float32), 100, subtype='FLOAT')
    folder = tmp_path / 'out'
    args = get_parser().parse_args(['song.wav', '--shifts', '0', '--float32'])
    written = separate_track(_FailingModel(fail_at=0), tmp_path / 'song.wav', folder, args)
    assert np.allclose(sf.read(written[1])[0], 0.125)
    sf.write(written[0], np.zeros((10, 2), np.float32), 100)     # a previous result
    with pytest.raises(RuntimeError, match='model failed'):
        separate_track(_FailingModel(fail_at=5), tmp_path / 'song.wav', folder, args)
    assert sf.info(str(written[0])).frames == 10           # left as it was
    assert sf.info(str(written[1])).frames == 1000
    assert sorted(p.name for p in written[0].parent.iterdir()) == ['a.wav', 'b.wav']


def test_ctrl_c_ends_the_command_with_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the second track separates: status 130, one line, the first track's stems
    whole, nothing of the second (not even its folder)."""
    from separator import separate as command
    for name in ('one', 'two'):
        sf.write(tmp_path / f'{name}.wav', np.full((1000, 2), 0.25, np.float32), 100,
                 subtype='FLOAT')
    model = _FailingModel(fail_at=10 ** 6)
    with torch.inference_mode():
        apply_model(model, torch.zeros(2, 1000), shifts=0)
    calls = model.calls                         # model calls per track
    monkeypatch.setattr(command, 'get_model', lambda name, repo: _FailingModel(
        fail_at=calls + 2, error=KeyboardInterrupt()))
    monkeypatch.chdir(tmp_path)
    status = command.main(['-n', 'm', '--shifts', '0', '-o', 'out', 'one.wav', 'two.wav'])
    err = capsys.readouterr().err
    assert status == 130
    lines = [line for line in err.splitlines() if line.startswith('separator:')]
    assert lines == ["separator: interrupted while separating two.wav: none of its stems was "
                     "written; the 1 track(s) before it are complete in out/m"], err
    assert sorted(p.name for p in (tmp_path / 'out' / 'm').iterdir()) == ['one']
    assert sf.info(str(tmp_path / 'out' / 'm' / 'one' / 'a.wav')).frames == 1000


def test_bad_paths_are_refused_before_any_work(tiny_xp, repo, tmp_path):
    song = tmp_path / 'song.wav'
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'file').write_text('not a folder')
    cases = [(['song.wav', 'folder'], 'folder is a folder: give audio files'),
             (['song.wav', 'nope.wav'], 'nope.wav: no such file'),
             (['song.wav', './song.wav'], 'song.wav and song.wav are the same file'),
             (['-o', 'file', 'song.wav'], '-o file is a file, not a folder')]
    for args, message in cases:
        result = separate(['--repo', str(repo), *args], tmp_path)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and 'Traceback' not in result.stderr, result.stderr
        assert not (tmp_path / 'separated').exists()
