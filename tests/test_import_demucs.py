"""Demucs release packages imported into our models, with the output of demucs' own model
(demucs 4.1.0) on the same input, and back (`separator.importers.demucs`).

Each package is written as demucs writes its releases: demucs' own model (small, seeded
random weights) through `demucs.states.serialize_model` (float16 weights, or DiffQ's
quantized state) and `torch.save`; the reference output is that of the model demucs' own
`load_model` rebuilds from the package (the weights it computes with).
"""
import fractions
import hashlib
import io
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import demucs.apply
import demucs.hdemucs
import demucs.htdemucs
import demucs.pretrained
import demucs.states
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from separator.apply import apply_model
from separator.importers import demucs as importer
from separator.importers import import_checkpoint
from separator.models import MODELS
from separator.models.hdemucs import HDemucs
from separator.models.htdemucs import HTDemucs
from separator.pretrained import get_model
from separator.states import PackageError, load_model, serialize_model

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ['drums', 'bass', 'other', 'vocals']
PRIME = 30011            # samples: a prime, shorter than the HTDemucs' 1 s training segment
TOLERANCE = 1e-5
TRAINING_ARGS = OmegaConf.create({'dset': {'segment': 11}, 'seed': 42})

SMALL_HT = dict(channels=8, depth=3, nfft=512, t_layers=2, t_heads=2, segment=1)
SMALL_H = dict(channels=8, depth=4, nfft=1024)
CASES = {
    'htdemucs_small': (demucs.htdemucs.HTDemucs, SMALL_HT),
    'htdemucs_magnitude_postnorm': (demucs.htdemucs.HTDemucs, dict(
        SMALL_HT, t_layers=3, cac=False, t_cross_first=True, t_norm_first=False,
        bottom_channels=16, t_layer_scale=False, t_gelu=False, t_norm_in=False)),
    'htdemucs_any_length': (demucs.htdemucs.HTDemucs, dict(
        SMALL_HT, use_train_segment=False, bottom_channels=16, wiener_iters=-1,
        end_iters=-1, cac=False)),
    'htdemucs_defaults': (demucs.htdemucs.HTDemucs, dict(segment=1)),
    'hdemucs_small': (demucs.hdemucs.HDemucs, SMALL_H),
    'hdemucs_magnitude_lstm_attn': (demucs.hdemucs.HDemucs, dict(
        channels=8, depth=5, nfft=1024, cac=False, dconv_lstm=3, dconv_attn=3)),
    'hdemucs_hybrid_old': (demucs.hdemucs.HDemucs, dict(
        channels=8, depth=4, nfft=1024, hybrid_old=True, norm_starts=2, context=2)),
}


def demucs_model(klass: type, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return klass(sources=SOURCES, **kwargs).eval()


def write_package(model: torch.nn.Module, path: Path, quantizer=None) -> dict:
    """`model` as a demucs release package at `path` (demucs' serialize_model, float16)."""
    package = demucs.states.serialize_model(model, TRAINING_ARGS, quantizer)
    torch.save(package, path)
    return package


def mixture(length: int = PRIME, seed: int = 1) -> torch.Tensor:
    return 0.2 * torch.randn(1, 2, length, generator=torch.Generator().manual_seed(seed))


def max_difference(theirs: torch.nn.Module, ours: torch.nn.Module, mix: torch.Tensor,
                   label: str) -> float:
    with torch.no_grad():
        expected, found = theirs.eval()(mix), ours.eval()(mix)
    assert found.shape == expected.shape
    difference = (found - expected).abs().max().item()
    print(f"{label}: max |ours - demucs| = {difference:.2e} (output max "
          f"{expected.abs().max().item():.2f})")
    return difference


@pytest.mark.parametrize('case', list(CASES))
def test_imported_model_computes_what_demucs_computes(case, tmp_path, one_thread):
    klass, kwargs = CASES[case]
    write_package(demucs_model(klass, kwargs), tmp_path / 'model.th')
    package = import_checkpoint(tmp_path / 'model.th')
    assert package['imported']['format'] == 'demucs'
    assert package['model'] == ('htdemucs' if klass is demucs.htdemucs.HTDemucs else 'hdemucs')
    reference = demucs.states.load_model(str(tmp_path / 'model.th'))   # float16 weights
    ours = load_model(package)
    assert max_difference(reference, ours, mixture(), case) <= TOLERANCE


def test_htdemucs_pads_to_its_training_segment_as_demucs(tmp_path, one_thread):
    """An input as long as the segment (no padding) and a 3-sample one (mostly padding)."""
    write_package(demucs_model(demucs.htdemucs.HTDemucs, SMALL_HT), tmp_path / 'model.th')
    reference = demucs.states.load_model(str(tmp_path / 'model.th'))
    ours = load_model(import_checkpoint(tmp_path / 'model.th'))
    assert ours.valid_length(100) == 44100 == reference.valid_length(100)
    for length in (44100, 3):
        assert max_difference(reference, ours, mixture(length), f"length {length}") \
            <= TOLERANCE


def test_quantized_packages(tmp_path, one_thread):
    """DiffQ's bit-packed states (the `*_q` releases), laid out in demucs' parameter order,
    are dequantized into the weights demucs computes with."""
    import diffq
    for name, (klass, kwargs) in [('htdemucs', CASES['htdemucs_magnitude_postnorm']),
                                  ('hdemucs', CASES['hdemucs_magnitude_lstm_attn'])]:
        model = demucs_model(klass, kwargs)
        quantizer = diffq.DiffQuantizer(model, min_size=0.001, group_size=8)
        path = tmp_path / f'{name}_q.th'
        package = write_package(model, path, quantizer)
        assert package['state']['__quantized'] and package['state']['quantized']
        quantizer.detach()
        reference = demucs.states.load_model(str(path))
        ours = load_model(import_checkpoint(path))
        assert max_difference(reference, ours, mixture(), f"{name} quantized") <= TOLERANCE


def test_fraction_segment_and_numpy_scalars(tmp_path, one_thread):
    """Released packages pickle fractions.Fraction and numpy scalars: read as numbers, the
    segment giving the same training length."""
    model = demucs_model(demucs.htdemucs.HTDemucs, dict(SMALL_HT, segment=fractions.Fraction(
        69, 100)))
    package = demucs.states.serialize_model(model, TRAINING_ARGS)
    package['training_args']['lr'] = np.float32(3e-4)
    package['training_args']['epochs'] = np.int64(360)
    package['kwargs']['samplerate'] = np.int64(44100)
    torch.save(package, tmp_path / 'model.th')
    imported = import_checkpoint(tmp_path / 'model.th')
    assert imported['kwargs']['samplerate'] == 44100
    assert isinstance(imported['kwargs']['segment'], float)
    assert imported['demucs']['training_args']['epochs'] == 360
    ours = load_model(imported)
    assert ours.training_length == int(fractions.Fraction(69, 100) * 44100) == 30429
    reference = demucs.states.load_model(str(tmp_path / 'model.th'))
    assert max_difference(reference, ours, mixture(), "segment 69/100 s") <= TOLERANCE


def test_reading_never_imports_demucs(tmp_path):
    write_package(demucs_model(demucs.htdemucs.HTDemucs, SMALL_HT), tmp_path / 'model.th')
    script = textwrap.dedent(f"""
        import sys
        from separator.importers import import_checkpoint, read_checkpoint
        data = read_checkpoint({str(tmp_path / 'model.th')!r})
        print(data['klass'].__module__, data['klass'].__qualname__, type(data['klass']))
        package = import_checkpoint({str(tmp_path / 'model.th')!r})
        print(package['model'], package['kwargs']['compat'])
        loaded = sorted(name for name in sys.modules if name.split('.')[0] == 'demucs')
        print('demucs modules:', loaded)
        assert not loaded
    """)
    result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    assert 'demucs.htdemucs HTDemucs' in result.stdout
    assert 'htdemucs demucs' in result.stdout


def fake_class(path: str) -> type:
    """A class that pickles (with importer.save_demucs_package) as the global `path`."""
    module, _, name = path.rpartition('.')
    return type(name, (importer.DemucsClass,), {'__module__': module, '__qualname__': name,
                                                'path': path})


def evil_packages(folder: Path) -> tp.List[tp.Tuple[str, Path]]:
    """A real package of ours as a Demucs package, whose klass names `os.system`, or a
    stdlib module that nothing imports (`tabnanny.check`): (global, file)."""
    base = importer.to_demucs_package(import_checkpoint(
        write_and_path(demucs_model(demucs.hdemucs.HDemucs, SMALL_H), folder)))
    files = []
    for index, path in enumerate(('os.system', 'tabnanny.check')):
        evil = folder / f'evil{index}.th'
        importer.save_demucs_package({**base, 'klass': fake_class(path)}, evil)
        files.append((path, evil))
    return files


def test_other_classes_are_refused(tmp_path):
    """A package whose klass is anything but a Demucs model is refused, naming it, and
    nothing it names is imported or called."""
    assert 'tabnanny' not in sys.modules
    for path, evil in evil_packages(tmp_path):
        with pytest.raises(PackageError, match='imports nothing') as error:
            import_checkpoint(evil, format='demucs')
        print(error.value)
        assert str(evil) in str(error.value)
        assert path in str(error.value).replace(str(evil), '')   # the file's name aside
    assert 'tabnanny' not in sys.modules
    # allowed globals that are not a model class: refused by the importer, by name
    base = importer.to_demucs_package(import_checkpoint(tmp_path / 'model.th'))
    with pytest.raises(PackageError, match='fractions.Fraction') as error:
        importer.convert({**base, 'klass': fractions.Fraction})
    print(error.value)
    with pytest.raises(PackageError, match='not a Demucs model'):
        importer.convert({**base, 'klass': 'demucs.htdemucs.HTDemucs'})


def test_unreadable_files_say_what_torch_found(tmp_path):
    """A truncated checkpoint or a file of another kind is refused naming the file and what
    torch found wrong with it."""
    data = write_and_path(demucs_model(demucs.hdemucs.HDemucs, SMALL_H), tmp_path).read_bytes()
    (tmp_path / 'cut.th').write_bytes(data[:len(data) // 2])
    (tmp_path / 'notes.th').write_text('not a checkpoint')
    (tmp_path / 'text.th').write_text('hello')
    for name, reason in [('cut.th', 'failed reading zip archive'),
                         ('notes.th', 'Unsupported operand 110'), ('text.th', 'KeyError')]:
        with pytest.raises(PackageError, match=reason) as error:
            import_checkpoint(tmp_path / name)
        print(error.value)
        assert 'weights_only' not in str(error.value)   # torch's advice: never ours
        assert str(tmp_path / name) in str(error.value)
        assert 'corrupt, truncated, or another kind of file' in str(error.value)


def test_wdemucs_is_hdemucs(tmp_path, one_thread):
    """`demucs.wdemucs.WDemucs`, HDemucs' former name, is imported as an hdemucs."""
    path = write_and_path(demucs_model(demucs.hdemucs.HDemucs, SMALL_H), tmp_path)
    data = torch.load(path, weights_only=False)
    importer.save_demucs_package({**data, 'klass': importer.WDEMUCS}, tmp_path / 'old.th')
    package = import_checkpoint(tmp_path / 'old.th')
    assert package['model'] == 'hdemucs'
    reference = demucs.states.load_model(str(path))
    assert max_difference(reference, load_model(package), mixture(), "WDemucs") <= TOLERANCE


def write_and_path(model: torch.nn.Module, folder: Path, name: str = 'model') -> Path:
    path = folder / f'{name}.th'
    write_package(model, path)
    return path


@pytest.mark.parametrize('kwargs,key', [
    (dict(SMALL_HT, t_emb='scaled'), 't_emb'),
    (dict(SMALL_HT, rewrite=False), 'rewrite'),
    (dict(SMALL_HT, channels_time=16), 'channels_time'),
    (dict(SMALL_HT, cac=False, wiener_iters=1, end_iters=1), 'wiener_iters'),
])
def test_what_our_model_lacks_is_refused(kwargs, key, tmp_path):
    path = write_and_path(demucs_model(demucs.htdemucs.HTDemucs, kwargs), tmp_path)
    with pytest.raises(PackageError, match=key) as error:
        import_checkpoint(path)
    print(error.value)


def test_bag(tmp_path, one_thread):
    """A Demucs bag (yaml + SIG-CHECKSUM.th / SIG.th) becomes our bag of the same models."""
    repo, out = tmp_path / 'demucs_repo', tmp_path / 'ours'
    repo.mkdir()
    theirs = [demucs_model(demucs.htdemucs.HTDemucs, SMALL_HT, seed=1),
              demucs_model(demucs.hdemucs.HDemucs, SMALL_H, seed=2)]
    demucs.states.save_with_checksum(demucs.states.serialize_model(theirs[0], TRAINING_ARGS),
                                     repo / 'aaaa1111.th')
    write_package(theirs[1], repo / 'bbbb2222.th')
    (repo / 'mybag.yaml').write_text("models: ['aaaa1111', 'bbbb2222']\n"
                                     "weights: [[1., 1., 0., 1.], [0., 1., 1., 1.]]\n"
                                     "segment: 1\n")
    target = importer.import_bag(repo / 'mybag.yaml', out)
    assert target == out / 'mybag.yaml'
    bag = get_model('mybag', out)
    assert bag.weights == [[1., 1., 0., 1.], [0., 1., 1., 1.]]
    expected = demucs.pretrained.get_model('mybag', repo)
    for index, (reference, ours) in enumerate(zip(expected.models, bag.models)):
        assert max_difference(reference, ours, mixture(), f"bag model {index}") <= TOLERANCE
    # a package whose content does not match its checksum is refused
    corrupt = next(repo.glob('aaaa1111-*.th'))
    corrupt.rename(repo / 'aaaa1111-00000000.th')
    with pytest.raises(PackageError, match='sha256'):
        importer.import_bag(repo / 'mybag.yaml', tmp_path / 'again')


def test_imported_model_through_our_chunking(tmp_path, one_thread):
    """Our apply_model (demucs chunking) on the imported HTDemucs, demucs' on its own: the
    chunks are padded to the training segment alike."""
    path = write_and_path(demucs_model(demucs.htdemucs.HTDemucs, SMALL_HT), tmp_path)
    reference = demucs.states.load_model(str(path)).eval()
    ours = load_model(import_checkpoint(path)).eval()
    mix = mixture(119083)    # 2.7 s: 4 chunks
    with torch.no_grad():
        expected = demucs.apply.apply_model(reference, mix, shifts=0, split=True,
                                            overlap=0.25, progress=False)
        found = apply_model(ours, mix, overlap=0.25, chunking='demucs')
    difference = (found - expected).abs().max().item()
    print(f"apply_model, 2.7 s: max |ours - demucs| = {difference:.2e}")
    assert difference <= TOLERANCE


# ------------------------------------------------------------------ back to demucs

def export_and_compare(package: dict, folder: Path, name: str, mix: torch.Tensor,
                       strict: bool = True) -> float:
    """Write our package as a Demucs package, load it with demucs (states.load_model and
    the repository of `demucs --repo DIR -n NAME`), return the max difference of outputs."""
    exported = importer.to_demucs_package(package, strict=strict)
    path = importer.write_demucs_package(exported, folder, name)
    content = path.read_bytes()
    assert path.name == f"{name}-{hashlib.sha256(content).hexdigest()[:8]}.th"
    theirs = demucs.states.load_model(str(path))
    assert type(theirs).__module__.startswith('demucs.')
    from_repo = demucs.pretrained.get_model(name, repo=folder)   # checks the checksum
    assert type(from_repo) is type(theirs)
    return max_difference(theirs, load_model(package), mix, f"exported {name}")


def test_export_round_trip(tmp_path, one_thread):
    """An imported model goes back to demucs with demucs' own names and kwargs."""
    model = demucs_model(*CASES['htdemucs_magnitude_postnorm'])
    path = write_and_path(model, tmp_path)
    exported = importer.to_demucs_package(import_checkpoint(path))
    original = demucs.states.serialize_model(model, TRAINING_ARGS, half=False)
    assert exported['klass'] is importer.HTDEMUCS
    assert set(exported['state']) == set(original['state'])
    assert list(exported['state']) == list(original['state'])   # demucs' order, too
    for key, value in original['kwargs'].items():
        assert exported['kwargs'].get(key, value) == value, key
    buffer = io.BytesIO(importer.demucs_package_bytes(exported))
    loaded = torch.load(buffer, weights_only=False)
    assert loaded['klass'] is demucs.htdemucs.HTDemucs
    half = importer.to_demucs_package(import_checkpoint(path), half=True)['state']
    assert all(value.dtype == torch.float16 for value in half.values())
    assert all(torch.equal(half[key].float(), original['state'][key].half().float())
               for key in half)


@pytest.mark.parametrize('name,kwargs', [
    ('htdemucs', dict(channels=8, depth=3, nfft=512, t_layers=3, t_heads=2, segment=1,
                      bottom_channels=16, cac=False, t_norm_first=False, compat='demucs',
                      use_train_segment=True)),
    ('htdemucs', dict(channels=8, depth=3, nfft=512, t_layers=2, t_heads=2, segment=1,
                      compat='demucs')),
    ('hdemucs', dict(channels=8, depth=5, nfft=1024, dconv_lstm=2, dconv_attn=1,
                     compat='demucs_old')),
])
def test_our_models_export_to_demucs(name, kwargs, tmp_path, one_thread):
    """Our models (compat 'demucs', random weights) as Demucs packages: demucs loads them
    and computes what they compute."""
    torch.manual_seed(3)
    model = (HTDemucs if name == 'htdemucs' else HDemucs)(SOURCES, **kwargs)
    package = serialize_model(model)
    assert export_and_compare(package, tmp_path / 'repo', 'exported', mixture()) <= TOLERANCE


def test_separator_padding_exports_only_when_asked(tmp_path, one_thread):
    """A model of compat 'separator' pads otherwise than demucs: refused by default; an
    HDemucs with strict=False gives the same output on lengths of its total stride; an
    HTDemucs never (its positional embedding is not demucs')."""
    torch.manual_seed(3)
    hdemucs = serialize_model(HDemucs(SOURCES, **SMALL_H))
    htdemucs = serialize_model(HTDemucs(SOURCES, channels=8, depth=3, nfft=512, t_layers=2,
                                        t_heads=2, bottom_channels=0))
    for package in (hdemucs, htdemucs):
        with pytest.raises(PackageError, match="compat='separator'") as error:
            importer.to_demucs_package(package)
        print(error.value)
    with pytest.raises(PackageError, match='positional embedding'):
        importer.to_demucs_package(htdemucs, strict=False)
    mix = mixture(4 * 256 * 2 * 4)
    assert export_and_compare(hdemucs, tmp_path / 'repo', 'loose', mix, strict=False) \
        <= TOLERANCE


def test_demucs_v3_is_imported_as_is(tmp_path, one_thread, monkeypatch):
    """demucs.demucs.Demucs -> our 'demucs' (same kwargs and state), when we have it."""
    from separator.models import demucs as ours
    import demucs.demucs
    if 'demucs' not in MODELS:   # registered by the integrator
        monkeypatch.setitem(MODELS, 'demucs', ours.Demucs)
    kwargs = dict(channels=8, depth=3, dconv_lstm=2, dconv_attn=2, segment=1)
    path = write_and_path(demucs_model(demucs.demucs.Demucs, kwargs), tmp_path)
    package = import_checkpoint(path)
    assert package['model'] == 'demucs'
    reference = demucs.states.load_model(str(path))
    mix = mixture(reference.valid_length(PRIME))
    assert max_difference(reference, load_model(package), mix, "demucs v3") <= TOLERANCE
    exported = importer.to_demucs_package(package)
    assert exported['klass'] is importer.DEMUCS
    assert list(exported['state']) == list(reference.state_dict())


@pytest.mark.parametrize('length', [24, 30, 37, 40, 41, 203])
def test_hdemucs_blstm_cuts_windows_as_demucs(length):
    """HDemucs's BLSTM (DConv branches of the deepest layers) on a sequence longer than its
    window: with compat 'demucs' it computes what demucs' BLSTM does (its window count, some
    past the end); the lengths where today's count differs are among these."""
    import demucs.demucs
    from separator.models.hdemucs import BLSTM, HDemucs, use_demucs_windows
    torch.manual_seed(0)
    theirs = demucs.demucs.BLSTM(8, layers=2, max_steps=16, skip=True).eval()
    ours = BLSTM(8, layers=2, max_steps=16).eval()
    ours.load_state_dict(theirs.state_dict())
    holder = torch.nn.Sequential(ours)
    use_demucs_windows(holder, 'demucs')
    x = torch.randn(2, 8, length)
    with torch.no_grad():
        difference = (theirs(x) - ours(x)).abs().max().item()
    print(f"BLSTM, {length} steps: max abs difference {difference:.2e}")
    assert difference <= 1e-6
    model = HDemucs(SOURCES, compat='demucs', **SMALL_H)
    assert all(module.demucs_windows for module in model.modules() if isinstance(module, BLSTM))
