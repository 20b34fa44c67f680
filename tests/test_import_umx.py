"""Open-Unmix (sigsep's `openunmix`) and asteroid's X-UMX imported as `xumx` packages
(`separator.importers.umx`): small networks with seeded random weights, saved in their own
layouts, imported, and run against their own code: the magnitude estimates, the waveforms of
their Separator without EM (`niter=0`) and with one EM iteration, X-UMX's waveforms."""
import json
import typing as tp
from pathlib import Path

import pytest
import torch

from separator.importers import convert_checkpoint, import_checkpoint, read_checkpoint, umx
from separator.models.xumx import XUMX
from separator.states import PackageError, atomic_save, load_model

import openunmix.model as openunmix_model  # noqa: E402  (Makefile PEERS)
import openunmix.utils as openunmix_utils  # noqa: E402

NFFT, HOP, RATE, BANDWIDTH, HIDDEN = 512, 128, 44100, 16000, 16
TARGETS = ['vocals', 'drums', 'bass']          # open-unmix's order; ours: drums, bass, vocals
TOLERANCE = 1e-5                               # max abs diff relative to the output's max


def randomize(module: torch.nn.Module, seed: int, mask_floor: float = 1.) -> None:
    """Seeded random weights and BatchNorm statistics; masks `relu(x * scale + mean)` with
    `output_mean` around `mask_floor` (3: no silent bin, for the EM parity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or name.endswith('window'):
                continue
            if 'running_var' in name:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
            elif 'output_mean' in name:
                tensor.copy_(mask_floor + 0.3 * torch.randn(tensor.shape, generator=generator))
            elif 'output_scale' in name and mask_floor > 1:
                tensor.copy_(0.1 + 0.2 * torch.rand(tensor.shape, generator=generator))
            else:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))


def open_unmix(channels: int = 2, layers: int = 2, unidirectional: bool = False,
               mask_floor: float = 1.) -> tp.Dict[str, torch.nn.Module]:
    """One of open-unmix's `OpenUnmix` per target, small, with random weights, in eval mode."""
    max_bin = int(openunmix_utils.bandwidth_to_max_bin(RATE, NFFT, BANDWIDTH))
    networks = {}
    for seed, target in enumerate(TARGETS):
        network = openunmix_model.OpenUnmix(nb_bins=NFFT // 2 + 1, nb_channels=channels,
                                            hidden_size=HIDDEN, nb_layers=layers,
                                            unidirectional=unidirectional, max_bin=max_bin)
        randomize(network, seed, mask_floor)
        networks[target] = network.eval()
    return networks


def save_model_folder(networks: tp.Dict[str, torch.nn.Module], folder: Path,
                      channels: int = 2, unidirectional: bool = False) -> Path:
    """open-unmix's files of a trained model: TARGET.pth, TARGET.json, separator.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for target, network in networks.items():
        torch.save(network.state_dict(), folder / f'{target}.pth')
        args = {'nfft': NFFT, 'nhop': HOP, 'hidden_size': HIDDEN, 'nb_channels': channels,
                'bandwidth': BANDWIDTH, 'seq_dur': 6.0, 'unidirectional': unidirectional,
                'target': target, 'lr': 0.001, 'root': '/data/musdb'}
        (folder / f'{target}.json').write_text(json.dumps({'args': args, 'best_epoch': 3}))
    (folder / 'separator.json').write_text(json.dumps(
        {'nfft': NFFT, 'nhop': HOP, 'sample_rate': RATE, 'nb_channels': channels}))
    return folder


def their_separator(networks: tp.Dict[str, torch.nn.Module], niter: int, channels: int = 2
                    ) -> torch.nn.Module:
    return openunmix_model.Separator(networks, niter=niter, n_fft=NFFT, n_hop=HOP,
                                     sample_rate=RATE, nb_channels=channels,
                                     wiener_win_len=300).eval()


def relative_diff(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> float:
    diff = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"{what}: max abs diff {diff:.2e} of the output scale")
    return diff


def their_magnitudes(networks: tp.Dict[str, torch.nn.Module], mix: torch.Tensor,
                     order: tp.Sequence[str]) -> torch.Tensor:
    """open-unmix's magnitude estimates `[B, S, C, F, N]` as its Separator computes them."""
    separator = their_separator(networks, 0, mix.shape[1])
    spec = separator.complexnorm(separator.stft(mix))
    return torch.stack([networks[target](spec.clone()) for target in order], 1)


def import_folder(folder: Path, **kwargs: tp.Any) -> XUMX:
    return load_model(umx.convert_files(folder, **kwargs)).eval()


@pytest.mark.parametrize('layers', [1, 2, 3])
@pytest.mark.parametrize('unidirectional', [False, True])
def test_open_unmix_parity(tmp_path: Path, layers: int, unidirectional: bool, one_thread):
    networks = open_unmix(layers=layers, unidirectional=unidirectional)
    model = import_folder(save_model_folder(networks, tmp_path / 'umx',
                                            unidirectional=unidirectional))
    assert model.sources == ['drums', 'bass', 'vocals'] and not model.bridge
    assert model.in_bins == 186 and model.samplerate == RATE and model.hop_length == HOP
    assert model.wiener_iterations == 1 and model.wiener_frames == 300
    mix = 0.3 * torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.wiener_iterations = 0
        waveforms, magnitudes = model(mix, with_magnitudes=True)
        ref_magnitudes = their_magnitudes(networks, mix, model.sources)
        ref = their_separator(networks, 0)(mix)
    assert relative_diff(magnitudes, ref_magnitudes, 'magnitudes') <= TOLERANCE
    order = [TARGETS.index(source) for source in model.sources]
    assert relative_diff(waveforms, ref[:, order], 'waveforms, niter=0') <= TOLERANCE


def test_open_unmix_wiener_parity(tmp_path: Path, one_thread):
    """One EM iteration (their default): the same where some estimate is not silent."""
    networks = open_unmix(mask_floor=3.)
    model = import_folder(save_model_folder(networks, tmp_path / 'umx'), sources=TARGETS)
    mix = 0.3 * torch.randn(1, 2, 40000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():   # 313 frames: two Wiener windows of 300 frames
        out = model(mix)
        ref = their_separator(networks, 1)(mix)
    assert relative_diff(out, ref, 'waveforms, niter=1') <= TOLERANCE


def test_mono_model_and_single_target(tmp_path: Path, one_thread):
    networks = open_unmix(channels=1, layers=1)
    folder = save_model_folder(networks, tmp_path / 'umx', channels=1)
    mix = 0.3 * torch.randn(1, 1, 3000, generator=torch.Generator().manual_seed(3))
    # One target alone (open-unmix's load_target_models): named by the config.
    alone = load_model(convert_checkpoint(read_checkpoint(folder / 'vocals.pth'),
                                          {'target': 'vocals', 'nhop': HOP})).eval()
    assert alone.sources == ['vocals'] and alone.wiener_iterations == 0
    assert alone.audio_channels == 1
    with torch.no_grad():
        ref = their_separator({'vocals': networks['vocals']}, 0, channels=1)(mix)
        assert relative_diff(alone(mix), ref, 'mono, one target') <= TOLERANCE


def test_open_unmix_1_0_files(tmp_path: Path):
    """open-unmix 1.0's files (umxhq) hold `sample_rate` and the STFT windows: read as checks;
    a `.chkpnt` holds the weights under `state_dict`, next to the optimizer's."""
    networks = open_unmix(layers=1)
    paths = []
    for target, network in networks.items():
        state = dict(network.state_dict(), sample_rate=torch.tensor(22050.),
                     **{'stft.window': torch.hann_window(NFFT),
                        'transform.0.window': torch.hann_window(NFFT)})
        paths.append(tmp_path / f'{target}.chkpnt')
        torch.save({'epoch': 3, 'state_dict': state, 'optimizer': {'state': {}}}, paths[-1])
    package = umx.convert_files(paths, config={'nhop': HOP})
    assert package['kwargs']['samplerate'] == 22050 and package['kwargs']['sources'] == TARGETS
    assert package['imported']['format'] == 'umx'
    with pytest.raises(PackageError, match='sample_rate=44100, the weights 22050'):
        umx.convert_files(paths, config={'nhop': HOP, 'sample_rate': 44100})


def asteroid_xumx(sources: tp.Sequence[str], layers: int = 2, spec_power: int = 1
                  ) -> torch.nn.Module:
    """asteroid's XUMX network, small, with random weights. `asteroid.models.XUMX` refuses
    to build under torch 2 ("broken"); `BrokenXUMX` is its code, which runs but for its
    iSTFT (see `their_istft`)."""
    from asteroid.models import x_umx
    max_bin = int(openunmix_utils.bandwidth_to_max_bin(RATE, NFFT, BANDWIDTH))
    model = x_umx.BrokenXUMX(list(sources), window_length=NFFT, in_chan=NFFT, n_hop=HOP,
                             hidden_size=HIDDEN, nb_channels=2, sample_rate=RATE,
                             nb_layers=layers, max_bin=max_bin, spec_power=spec_power)
    randomize(model, 7)
    return model.eval()


def asteroid_package(model: torch.nn.Module) -> dict:
    """asteroid's `serialize` layout (which needs pytorch_lightning only for its `infos`)."""
    return {'model_name': 'XUMX', 'state_dict': model.state_dict(),
            'model_args': model.get_model_args(),
            'infos': {'software_versions': {'asteroid_version': '0.7.0'}}}


def their_istft(monkeypatch: pytest.MonkeyPatch) -> None:
    """asteroid's `_ISTFT` gives torch.istft (real, imaginary) pairs, which torch 2 refuses:
    the same values as the complex tensor it requires."""
    istft = torch.istft
    monkeypatch.setattr(torch, 'istft', lambda x, *args, **kwargs: istft(
        x if x.is_complex() else torch.view_as_complex(x.contiguous()), *args, **kwargs))


@pytest.mark.parametrize('layers', [1, 3])
def test_asteroid_xumx_parity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: int,
                              one_thread):
    sources = ['bass', 'drums', 'vocals', 'other']
    theirs = asteroid_xumx(sources, layers)
    path = tmp_path / 'best_model.pth'
    torch.save(asteroid_package(theirs), path)
    package = import_checkpoint(path)
    assert package['model'] == 'xumx' and package['imported']['format'] == 'umx'
    model = load_model(package).eval()
    assert model.sources == sources and model.bridge and model.in_bins == 186
    waveforms, magnitudes, ref, ref_magnitudes = ours_and_asteroids(model, theirs, monkeypatch)
    assert relative_diff(magnitudes, ref_magnitudes, 'X-UMX magnitudes') <= TOLERANCE
    assert ref.shape[-1] == 5000 // HOP * HOP   # their iSTFT has no length: our prefix
    assert relative_diff(waveforms[..., :ref.shape[-1]], ref, 'X-UMX waveforms') <= TOLERANCE
    # The bare state dict, named by asteroid's model_args in a config.
    bare = convert_checkpoint(theirs.state_dict(), {'n_hop': HOP, 'sample_rate': RATE})
    assert bare['kwargs'] == package['kwargs']


def ours_and_asteroids(model, theirs, monkeypatch):
    """Our X-UMX's waveforms and magnitudes, then asteroid's, on one mixture of 5000 samples
    without Wiener filter, asteroid's in our layout ([B, S, C, T'] and [B, S, C, F, N])."""
    mix = 0.3 * torch.randn(2, 2, 5000, generator=torch.Generator().manual_seed(4))
    theirs._return_time_signals = True
    their_istft(monkeypatch)
    with torch.no_grad():
        model.wiener_iterations = 0
        waveforms, magnitudes = model(mix, with_magnitudes=True)
        ref_magnitudes, ref = theirs(mix)   # [S, N, B, C, F], [S, B, C, T']
    return waveforms, magnitudes, ref.transpose(0, 1), ref_magnitudes.permute(2, 0, 3, 4, 1)


def test_package_round_trip(tmp_path: Path):
    networks = open_unmix(layers=1)
    package = umx.convert_files(save_model_folder(networks, tmp_path / 'umx'))
    path = tmp_path / 'umx.th'
    atomic_save(package, path)
    mix = torch.randn(1, 2, 3000)
    with torch.no_grad():
        assert torch.equal(load_model(package).eval()(mix), load_model(path).eval()(mix))


def test_wrong_files_are_refused_with_one_clear_message(tmp_path: Path):
    networks = open_unmix(layers=1)
    folder = save_model_folder(networks, tmp_path / 'umx')
    one = read_checkpoint(folder / 'vocals.pth')
    with pytest.raises(PackageError, match=r'one target: import all .*convert_files'):
        convert_checkpoint(one)
    not_umx = {'encoder.weight': torch.zeros(3, 3), 'decoder.bias': torch.zeros(3)}
    torch.save(not_umx, tmp_path / 'other.pth')
    with pytest.raises(PackageError, match='not Open-Unmix or X-UMX weights'):
        import_checkpoint(tmp_path / 'other.pth', format='umx')
    with pytest.raises(PackageError, match=r'other\.pth is not an Open-Unmix network'):
        umx.convert_files([folder / 'vocals.pth', tmp_path / 'other.pth'])
    with pytest.raises(PackageError, match=r'hidden_size=32, the weights 16: fix the config'):
        umx.convert_files(folder, config={'hidden_size': 32})
    with pytest.raises(PackageError, match=r'bandwidth=8000 Hz .* the weights 186 bins'):
        umx.convert_files(folder, config={'bandwidth': 8000})
    with pytest.raises(FileNotFoundError, match="0 files of target 'piano'"):
        umx.convert_files(folder, sources=['piano'])
    with pytest.raises(PackageError, match=r"keys \['learning_rate'\]"):
        umx.convert_files(folder, config={'learning_rate': 1.})
    with pytest.raises(PackageError, match='hop of a model of nfft=512'):
        convert_checkpoint({target: net.state_dict() for target, net in networks.items()})
    theirs = asteroid_xumx(['bass', 'vocals'], layers=1, spec_power=2)
    with pytest.raises(PackageError, match='spec_power=2'):
        convert_checkpoint(asteroid_package(theirs))


def test_existing_models_keep_the_normalised_stft():
    """`normalized_stft` (default True: today's behaviour, that of our checkpoints) is the
    only change: False scales the spectrograms by sqrt(nfft). In train mode (BatchNorm on the
    batch's statistics, whose eps matters at low level: the mixture is loud) a model without
    input offset separates the same either way."""
    torch.manual_seed(0)
    config = dict(nfft=NFFT, hop_length=HOP, hidden_size=HIDDEN, lstm_layers=1)
    ours = XUMX(['a', 'b'], **config).train()
    assert ours.normalized_stft and ours.stft_gain == 1
    unnormalized = XUMX(['a', 'b'], **config, normalized_stft=False).train()
    unnormalized.load_state_dict(ours.state_dict())
    mix = 10 * torch.randn(1, 2, 3000)
    with torch.no_grad():
        out, magnitudes = ours(mix, with_magnitudes=True)
        out_u, magnitudes_u = unnormalized(mix, with_magnitudes=True)
    assert relative_diff(magnitudes_u, magnitudes * NFFT ** 0.5, 'magnitudes') <= TOLERANCE
    assert relative_diff(out_u, out, 'waveforms') <= TOLERANCE
