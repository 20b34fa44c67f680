"""A model package, a bag or a checkpoint from someone else is data: loading it runs nothing.

Each hostile file below would run a command (`touch MARKER`) if the loader imported or called
what the file names, or unpickled what it holds; each must be refused with one line naming
the file, and the marker must not exist afterwards.
"""
import os
import subprocess
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from separator.models.hdemucs import HDemucs
from separator.pretrained import ModelLoadingError, get_model, load_xp
from separator.states import (PACKAGE_FORMAT, PackageError, atomic_save, build_model,
                              load_model, safe_load, serialize_model)
from separator.track_io import read_track

from .conftest import SOURCES, run_python

pytestmark = pytest.mark.usefixtures('one_thread')


class _RunsCommand:
    """Pickles as a call of `os.system(command)`: what an unsafe `torch.load` would run."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tp.Tuple[tp.Any, ...]:
        return (os.system, (self.command,))


def tiny_model() -> HDemucs:
    torch.manual_seed(0)
    return HDemucs(SOURCES, channels=4, depth=2, nfft=64, dconv_lstm=0, dconv_attn=0,
                   segment=1)


def separate(args: tp.Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_python(['-m', 'separator.separate', *args], cwd)


@pytest.fixture
def song(tmp_path: Path) -> Path:
    audio = 0.1 * np.random.default_rng(0).standard_normal((4410, 2)).astype(np.float32)
    sf.write(tmp_path / 'song.wav', audio, 44100)
    return tmp_path / 'song.wav'


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0, result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('separator: error')]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_pickled_code_in_a_package_is_not_run(tmp_path, song):
    marker = tmp_path / 'MARKER'
    repo = tmp_path / 'repo'
    package = serialize_model(tiny_model())
    package['sig'] = _RunsCommand(f'touch {marker}')
    atomic_save(package, repo / 'evil.th')
    result = separate(['-n', 'evil', '--repo', str(repo), str(song)], tmp_path)
    assert_refused(result, str(repo / 'evil.th'), 'only data')
    assert not marker.exists()
    with pytest.raises(RuntimeError, match='only data'):
        safe_load(repo / 'evil.th')
    assert not marker.exists()


@pytest.mark.parametrize('field', ['klass', 'model'])
def test_a_package_naming_a_function_is_refused(tmp_path, song, field):
    """Plain data that names `subprocess.check_call` with arguments that would run a
    command: the model is built from the registry only, so nothing is imported or called."""
    marker = tmp_path / 'MARKER'
    repo = tmp_path / 'repo'
    package = serialize_model(tiny_model())
    package.pop('model')
    package.pop('format')
    package.update({field: 'subprocess.check_call', 'args': [['touch', str(marker)]],
                    'kwargs': {}})
    atomic_save(package, repo / 'evil.th')
    result = separate(['-n', 'evil', '--repo', str(repo), str(song)], tmp_path)
    assert_refused(result, str(repo / 'evil.th'), 'subprocess.check_call', 'hdemucs')
    assert not marker.exists()
    with pytest.raises(PackageError, match='known models are .*hdemucs'):
        build_model(package)
    assert not marker.exists()


def test_a_package_of_the_old_layout_still_loads(tmp_path):
    """Format 1 named its class by path: the exact path of a registered class is accepted."""
    model = tiny_model()
    package = serialize_model(model)
    old = {key: value for key, value in package.items() if key not in ('model', 'format')}
    assert old['klass'] == 'separator.models.hdemucs.HDemucs'
    atomic_save(old, tmp_path / 'old.th')
    loaded = load_model(tmp_path / 'old.th')
    mix = torch.randn(1, 2, 4410)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(mix), model.eval()(mix))


def test_a_package_of_a_newer_format_is_refused(tmp_path):
    package = serialize_model(tiny_model())
    package['format'] = PACKAGE_FORMAT + 1
    atomic_save(package, tmp_path / 'repo' / 'new.th')
    with pytest.raises(ModelLoadingError, match=r'new\.th.*newer separator.*upgrade'):
        get_model('new', tmp_path / 'repo')


def test_a_bag_cannot_reach_outside_its_repo(tmp_path, song):
    """A bag entry is a plain name in the repo: `../outside/x` is refused even though that
    file is a valid package."""
    repo, outside = tmp_path / 'repo', tmp_path / 'outside'
    atomic_save(serialize_model(tiny_model()), outside / 'x.th')
    atomic_save(serialize_model(tiny_model()), repo / 'good.th')
    for entry in ['../outside/x', str(outside / 'x'), '.hidden', 'a/b']:
        (repo / 'bag.yaml').write_text(yaml.safe_dump({'models': ['good', entry]}))
        with pytest.raises(ModelLoadingError, match=r'bag\.yaml.*not a model name'):
            get_model('bag', repo)
    result = separate(['-n', 'bag', '--repo', str(repo), str(song)], tmp_path)
    assert_refused(result, 'bag.yaml', 'not a model name')
    with pytest.raises(ModelLoadingError, match='not a model name'):
        get_model('../outside/x', repo)
    with pytest.raises(ModelLoadingError, match='not a model name'):
        load_xp('../../etc', tmp_path)


def test_a_bag_of_models_that_disagree_is_refused(tmp_path):
    repo = tmp_path / 'repo'
    atomic_save(serialize_model(tiny_model()), repo / 'a.th')
    torch.manual_seed(0)
    other = HDemucs(SOURCES[:2], channels=4, depth=2, nfft=64, dconv_lstm=0, dconv_attn=0,
                    segment=1)
    atomic_save(serialize_model(other), repo / 'b.th')
    (repo / 'bag.yaml').write_text(yaml.safe_dump({'models': ['a', 'b']}))
    with pytest.raises(ModelLoadingError, match=r'bag\.yaml.*same sources'):
        get_model('bag', repo)
    slower = HDemucs(SOURCES, samplerate=22050, channels=4, depth=2, nfft=64, dconv_lstm=0,
                     dconv_attn=0, segment=1)
    atomic_save(serialize_model(slower), repo / 'c.th')
    (repo / 'rates.yaml').write_text(yaml.safe_dump({'models': ['a', 'c']}))
    with pytest.raises(ModelLoadingError, match=r'rates\.yaml.*same samplerate'):
        get_model('rates', repo)


def test_a_filename_without_stem_is_refused_before_any_work(tmp_path, song):
    result = separate(['--repo', str(tmp_path / 'nowhere'), '--filename', '{track}.{ext}',
                       str(song)], tmp_path)
    assert result.returncode == 2
    assert 'has no {stem}' in result.stderr and 'only the last' in result.stderr
    assert not (tmp_path / 'separated').exists()


@pytest.mark.parametrize('name', ['-song.mp3', 'a:b.mp3', '-'])
def test_ffmpeg_reads_any_file_name_as_a_file(tmp_path, monkeypatch, name):
    """A path that starts with `-` is not an option, one with `:` not a protocol, and `-`
    not standard input."""
    monkeypatch.chdir(tmp_path)
    tone = np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440).astype(np.float32)
    sf.write('tone.wav', np.stack([tone, tone], 1), 8000)
    subprocess.run(['ffmpeg', '-v', 'error', '-nostdin', '-i', 'tone.wav', '-f', 'mp3',
                    f'file:{tmp_path / name}'], check=True)
    wav, rate = read_track(Path(name))
    assert rate == 8000 and wav.shape[0] == 2
    assert abs(wav.shape[1] - 8000) < 2000     # the mp3 encoder's padding
    assert np.abs(wav).max() > 0.5


def test_a_checkpoint_holding_code_is_not_run(tiny_xp, tmp_path):
    """`continue_from`, export and the Mixer read another XP's checkpoint: data only."""
    marker = tmp_path / 'MARKER'
    xps = tmp_path / 'xps'
    cwd, sig = tiny_xp
    checkpoint = safe_load(cwd / 'outputs' / 'xps' / sig / 'checkpoint.th')
    checkpoint['history'].append({'evil': _RunsCommand(f'touch {marker}')})
    atomic_save(checkpoint, xps / 'evil' / 'checkpoint.th')
    result = run_python(['-m', 'tools.export', 'evil', '--xps', str(xps), '-o',
                         str(tmp_path / 'release')], cwd)
    assert result.returncode != 0
    assert 'only data' in result.stderr and 'Traceback' not in result.stderr, result.stderr
    assert not marker.exists()
    assert not (tmp_path / 'release' / 'evil.th').exists()


def test_a_real_checkpoint_and_package_are_plain_data(tiny_xp, tmp_path):
    """What separator writes reads back under `weights_only=True`."""
    cwd, sig = tiny_xp
    path = cwd / 'outputs' / 'xps' / sig / 'checkpoint.th'
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    assert checkpoint['package']['model'] == 'hdemucs'
    result = run_python(['-m', 'tools.export', sig, '--xps', str(cwd / 'outputs' / 'xps'),
                         '-o', str(tmp_path)], cwd)
    assert result.returncode == 0, result.stderr
    package = torch.load(tmp_path / f'{sig}.th', map_location='cpu', weights_only=True)
    assert package['format'] == PACKAGE_FORMAT and package['model'] == 'hdemucs'


def quantized_package(model: torch.nn.Module) -> dict:
    from separator.states import get_quantizer, quantized_state
    quantizer = get_quantizer(model, min_size=0.0001, group_size=1)
    with torch.no_grad():
        return serialize_model(model, state=None) | {'state': quantized_state(quantizer)}


def test_a_quantized_package_names_its_quantizer_as_data(tmp_path):
    """diffq's own state holds its quantizer class and `diffq.restore_quantized_state` calls
    it: ours stores the name, and builds only diffq's DiffQuantizer."""
    import diffq
    model = tiny_model()
    package = quantized_package(model)
    assert package['state']['meta']['klass'] == 'diffq.DiffQuantizer'
    atomic_save(package, tmp_path / 'q.th')
    reference = load_model(tmp_path / 'q.th').eval()
    # The layout of earlier versions: the class itself, let through as a value.
    package['state']['meta']['klass'] = diffq.DiffQuantizer
    atomic_save(package, tmp_path / 'old.th')
    mix = torch.randn(1, 2, 4410)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / 'old.th').eval()(mix), reference(mix))
    package['state']['meta']['klass'] = 'subprocess.check_call'
    with pytest.raises(PackageError, match='subprocess.check_call'):
        load_model(package)
    package['state']['meta']['klass'] = 'diffq.DiffQuantizer'
    package['state']['meta']['init_kwargs'] = {'min_size': 0.0001, 'evil': 1}
    with pytest.raises(PackageError, match='evil'):
        load_model(package)


@pytest.mark.parametrize('how', ['reduce', 'klass'])
def test_importing_a_published_checkpoint_runs_nothing(tmp_path, how):
    """`tools.import_weights` and `continue_from=FILE` read published checkpoints: one that
    would run a command when unpickled, or names a function as its class (as a Demucs
    package names its class), is refused in one line naming the file."""
    marker = tmp_path / 'MARKER'
    evil = tmp_path / 'htdemucs.th'
    package = serialize_model(tiny_model())
    if how == 'reduce':
        package['state']['x'] = _RunsCommand(f'touch {marker}')
    else:
        package = {'klass': os.system, 'args': [f'touch {marker}'], 'kwargs': {},
                   'state': package['state']}
    torch.save(package, evil)
    result = run_python(['-m', 'tools.import_weights', str(evil), '-o',
                         str(tmp_path / 'out.th')], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f'import_weights: error: {evil}'), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr
    assert not marker.exists() and not (tmp_path / 'out.th').exists()
