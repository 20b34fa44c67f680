"""Sony's X-UMX (nnabla `.h5`) imported as an `xumx` package (`separator.importers.
xumx_nnabla`). nnabla itself does not install here, so the files are written in its layout
by the helpers below (from nnabla's saver and layers, as the importer's docstring cites):
one with the names and shapes of the published model (tiny hidden size) whose every value
is distinct, to show that each dataset lands once and fills every tensor; one converted by
hand from asteroid's X-UMX, whose outputs ours must give; nnabla's reference LSTM, in numpy,
on those datasets; and the refusals of wrong files."""
import re
import typing as tp
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from separator.importers import convert_checkpoint, read_checkpoint, xumx_nnabla
from separator.models.xumx import XUMX
from separator.states import PackageError, load_model
from tools import import_weights

from .test_import_umx import HOP, NFFT, RATE, TOLERANCE, asteroid_xumx, ours_and_asteroids, \
    relative_diff

SONY_ORDER = ['bass', 'drums', 'vocals', 'other']   # model.py's and args.py's order
SCALES = ('input_mean', 'input_scale', 'output_scale', 'output_mean')
NNABLA_GATES = ('i', 'f', 'g', 'o')   # nnabla's utils/rnn.py `_lstm`: i, f, g, o = split(w)
TORCH_GATES = ('i', 'f', 'g', 'o')    # torch.nn.LSTM's row blocks


# ------------------------------------------------------------------ nnabla's layout

def write_nnabla_h5(parameters: tp.Dict[str, np.ndarray], path: Path) -> Path:
    """As nnabla's `_h5_parameter_file_saver`: a dataset per parameter at its name, with
    `need_grad` and `index` (the creation order) attributes."""
    with h5py.File(path, 'w') as file:
        for index, (name, value) in enumerate(parameters.items()):
            file[name] = value
            file[name].attrs['need_grad'] = not name.endswith(('/mean', '/var'))
            file[name].attrs['index'] = index
    return path


def published_shapes(hidden: int, nfft: int = 4096, max_bin: int = 1487, channels: int = 2,
                     layers: int = 3) -> tp.Dict[str, tp.Tuple[int, ...]]:
    """The parameters of ai-research-code's `OpenUnmix_CrossNet`, in their creation order
    (`__init__`'s scales, then `__call__`'s layers source by source), with their shapes."""
    bins, units = nfft // 2 + 1, hidden // 2
    shapes: tp.Dict[str, tp.Tuple[int, ...]] = {}
    for name in SCALES:
        shapes.update({f'{name}_{source}': (max_bin if 'input' in name else bins,)
                       for source in SONY_ORDER})

    def fc_bn(scope: str, inputs: int, outputs: int) -> None:
        shapes[f'{scope}/affine/W'] = (inputs, outputs)
        shapes.update({f'{scope}/bn/{stat}': (1, 1, outputs)
                       for stat in ('beta', 'gamma', 'mean', 'var')})

    for source in SONY_ORDER:
        fc_bn(f'fc1_{source}', channels * max_bin, hidden)
    for source in SONY_ORDER:
        shapes[f'lstm_{source}/lstm/weight_l0'] = (2, 4, units, hidden + units)
        shapes[f'lstm_{source}/lstm/weight'] = (layers - 1, 2, 4, units, 3 * units)
        shapes[f'lstm_{source}/lstm/bias'] = (layers, 2, 4, units)
    for source in SONY_ORDER:
        fc_bn(f'fc2_{source}', 2 * hidden, hidden)
    for source in SONY_ORDER:
        fc_bn(f'fc3_{source}', hidden, channels * bins)
    return shapes


def distinct_values(shapes: tp.Dict[str, tp.Tuple[int, ...]]) -> tp.Dict[str, np.ndarray]:
    """Every element of every dataset a different number (exact in float32)."""
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    values = np.random.default_rng(0).permutation(sum(sizes)).astype(np.float32) + 1
    out, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes):
        out[name] = values[start:start + size].reshape(shape)
        start += size
    return out


def nnabla_lstm(state: dict, prefix: str) -> tp.Dict[str, np.ndarray]:
    """torch.nn.LSTM tensors as nnabla's `lstm/{weight_l0,weight,bias}`: per layer and
    direction (forward first) `[4, H, inputs + H]`, each gate's x columns then h columns,
    gates in nnabla's order; one bias per gate (PyTorch's two summed)."""
    order = [TORCH_GATES.index(gate) for gate in NNABLA_GATES]
    layers = 1 + max(int(key.split('_l')[-1].split('_')[0]) for key in state
                     if key.startswith(prefix + 'weight_ih_l'))
    weights, biases = [], []
    for layer in range(layers):
        per_direction, bias_per_direction = [], []
        for suffix in ('', '_reverse'):
            names = [f'{prefix}{kind}_l{layer}{suffix}' for kind in
                     ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')]
            if names[0] not in state:
                continue
            w_ih, w_hh, b_ih, b_hh = (state[name].double().numpy() for name in names)
            units = w_hh.shape[1]
            gates = np.concatenate([w_ih.reshape(4, units, -1), w_hh.reshape(4, units, units)],
                                   -1)
            per_direction.append(gates[order])
            bias_per_direction.append((b_ih + b_hh).reshape(4, units)[order])
        weights.append(np.stack(per_direction))
        biases.append(np.stack(bias_per_direction))
    out = {'lstm/weight_l0': weights[0], 'lstm/bias': np.stack(biases)}
    if layers > 1:
        out['lstm/weight'] = np.stack(weights[1:])
    return {key: value.astype(np.float32) for key, value in out.items()}


def nnabla_from_asteroid(model: torch.nn.Module) -> tp.Dict[str, np.ndarray]:
    """asteroid's X-UMX weights written as Sony's nnabla model names them (by hand: affine
    W is [in, out], BatchNorm parameters (1, 1, C), nnabla's LSTM layout)."""
    state = {key: value.detach() for key, value in model.state_dict().items()}
    out = {f'{name}_{source}': state[f'mean_scale.{name}_{source}'].numpy()
           for name in SCALES for source in model.sources}
    layers = (('fc1', 'layer_enc.{}.enc.0', 'layer_enc.{}.enc.1'),
              ('fc2', 'layer_dec.{}.dec.0', 'layer_dec.{}.dec.1'),
              ('fc3', 'layer_dec.{}.dec.3', 'layer_dec.{}.dec.4'))
    for source in model.sources:
        for name, linear, norm in layers:
            scope, linear, norm = f'{name}_{source}', linear.format(source), norm.format(source)
            out[f'{scope}/affine/W'] = state[f'{linear}.weight'].t().numpy()
            for theirs, ours in (('beta', 'bias'), ('gamma', 'weight'), ('mean', 'running_mean'),
                                 ('var', 'running_var')):
                out[f'{scope}/bn/{theirs}'] = state[f'{norm}.{ours}'].reshape(1, 1, -1).numpy()
        for key, value in nnabla_lstm(state, f'layer_lstm.{source}.').items():
            out[f'lstm_{source}/{key}'] = value
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def nnabla_reference_lstm(x: np.ndarray, w0: np.ndarray, w: tp.Optional[np.ndarray],
                          b: np.ndarray) -> np.ndarray:
    """nnabla's LSTM as its reference computes it (utils/rnn.py `_create_fixed_length_lstm`,
    `_lstm`): per layer and direction, each step xh = [x_t, h]; gate k = xh W[k]^T + b[k],
    k = i, f, g, o; c = s(f) c + s(i) tanh(g), h = s(o) tanh(c); the backward direction runs
    over the reversed steps and its h is concatenated after the forward one. `[T, B, I]`."""
    layers, directions, _, units = b.shape
    steps = list(x)
    for layer in range(layers):
        weight = w0 if layer == 0 else w[layer - 1]
        outputs: tp.List[tp.List[np.ndarray]] = [[] for _ in steps]
        for direction in range(directions):
            h = c = np.zeros((x.shape[1], units))
            order = range(len(steps)) if direction == 0 else reversed(range(len(steps)))
            for t in order:
                xh = np.concatenate([steps[t], h], 1)
                i, f, g, o = (xh @ weight[direction, k].T + b[layer, direction, k]
                              for k in range(4))
                c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                h = sigmoid(o) * np.tanh(c)
                outputs[t].append(h)
        steps = [np.concatenate(parts, 1) for parts in outputs]
    return np.stack(steps)


# ------------------------------------------------------------------ tests

@pytest.fixture
def published(tmp_path: Path) -> tp.Tuple[Path, tp.Dict[str, np.ndarray]]:
    """An `x-umx.h5` with the published model's names and shapes at hidden size 8."""
    values = distinct_values(published_shapes(hidden=8))
    return write_nnabla_h5(values, tmp_path / 'x-umx.h5'), values


def test_published_layout_imports_every_dataset_once(published, tmp_path: Path, capsys):
    path, values = published
    out = tmp_path / 'release_models' / 'xumx_sony.th'
    assert import_weights.main([str(path), '-o', str(out)]) == 0
    print(capsys.readouterr().out.strip())
    package = torch.load(out, map_location='cpu', weights_only=True)
    assert package['imported']['format'] == 'xumx_nnabla'
    kwargs = package['kwargs']
    assert kwargs['sources'] == SONY_ORDER   # the file's `index` order, not h5py's names'
    assert {key: kwargs[key] for key in ('nfft', 'hop_length', 'samplerate', 'hidden_size',
                                         'lstm_layers', 'bidirectional', 'bridge',
                                         'normalized_stft', 'audio_channels')} == {
        'nfft': 4096, 'hop_length': 1024, 'samplerate': 44100, 'hidden_size': 8,
        'lstm_layers': 3, 'bidirectional': True, 'bridge': True, 'normalized_stft': False,
        'audio_channels': 2}
    model = load_model(out)
    assert model.in_bins == 1487
    state = package['state']
    assert set(state) == set(model.state_dict())   # every tensor of ours, once
    # Every dataset element once, and nothing else: the values ours hold (but the zero
    # `bias_hh` PyTorch adds and the BatchNorm counters) are exactly the file's.
    ours = torch.cat([value.reshape(-1) for key, value in state.items()
                      if 'bias_hh' not in key and 'num_batches_tracked' not in key])
    theirs = np.concatenate([value.reshape(-1) for value in values.values()])
    assert torch.equal(ours.sort().values, torch.from_numpy(np.sort(theirs)))
    assert all(not state[key].any() for key in state if 'bias_hh' in key)
    # Where single datasets land (the transposes; the sources by name).
    assert torch.equal(state['networks.2.fc1.weight'],
                       torch.from_numpy(values['fc1_vocals/affine/W']).t())
    assert torch.equal(state['networks.3.bn3.running_var'],
                       torch.from_numpy(values['fc3_other/bn/var']).reshape(-1))
    assert torch.equal(state['networks.1.input_mean'],
                       torch.from_numpy(values['input_mean_drums']))


def test_old_nnabla_stft_filters_are_checked(tmp_path: Path):
    """nnabla < 1.17 saved its Python STFT's filters (`conv_r`...): read as checks."""
    values = distinct_values(published_shapes(hidden=4))
    nfft = 4096
    frequencies = np.arange(nfft // 2 + 1)[:, None, None] * np.arange(nfft) / nfft
    window = np.hanning(nfft + 1)[:-1]   # nnabla's `_stft_v1`
    filters = {'conv_r': np.cos(2 * np.pi * frequencies) * window,
               'conv_i': -np.sin(2 * np.pi * frequencies) * window}
    path = write_nnabla_h5({**filters, **values}, tmp_path / 'old.h5')
    assert convert_checkpoint(read_checkpoint(path))['kwargs']['nfft'] == nfft
    filters['conv_r'] = np.cos(2 * np.pi * frequencies) * np.hanning(nfft)   # symmetric Hann
    path = write_nnabla_h5({**filters, **values}, tmp_path / 'symmetric.h5')
    with pytest.raises(PackageError, match=r'symmetric\.h5: the dataset conv_r is not the DFT '
                                           r'of a periodic Hann'):
        convert_checkpoint(read_checkpoint(path))


@pytest.mark.parametrize('layers', [1, 3])
def test_asteroid_xumx_through_nnabla_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             layers: int, one_thread):
    theirs = asteroid_xumx(SONY_ORDER, layers)
    parameters = nnabla_from_asteroid(theirs)
    path = write_nnabla_h5(parameters, tmp_path / 'x-umx.h5')
    data = read_checkpoint(path)
    assert list(data) == list(parameters)
    package = convert_checkpoint(data, {'nhop': HOP, 'sample_rate': RATE}, name=str(path))
    model = load_model(package).eval()
    assert model.sources == SONY_ORDER and model.bridge and model.n_fft == NFFT
    # nnabla's own LSTM equations on the file's datasets give asteroid's LSTM, and ours.
    x = torch.randn(7, 2, theirs.hidden_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        asteroid_lstm = theirs.layer_lstm['vocals'](x)[0]
        our_lstm = model.networks[2].lstm(x)[0]
    reference = nnabla_reference_lstm(x.double().numpy(),
                                      parameters['lstm_vocals/lstm/weight_l0'],
                                      parameters.get('lstm_vocals/lstm/weight'),
                                      parameters['lstm_vocals/lstm/bias'])
    assert relative_diff(asteroid_lstm, torch.from_numpy(reference).float(),
                         "nnabla reference LSTM vs asteroid's") <= TOLERANCE
    assert relative_diff(our_lstm, torch.from_numpy(reference).float(),
                         "nnabla reference LSTM vs ours") <= TOLERANCE
    # The whole model against asteroid's XUMX on the same mixture.
    waveforms, magnitudes, ref, ref_magnitudes = ours_and_asteroids(model, theirs, monkeypatch)
    # The magnitudes (unnormalised STFT: up to ~1e2) within float32's rounding of their
    # scale; the waveforms (the model's output) within 1e-5.
    assert relative_diff(magnitudes, ref_magnitudes,
                         "X-UMX through nnabla's layout, magnitudes") <= TOLERANCE
    diff = (waveforms[..., :ref.shape[-1]] - ref).abs().max().item()
    print(f"X-UMX through nnabla's layout, waveforms: max abs diff {diff:.2e}")
    assert diff <= 1e-5


def import_error(path: Path, capsys) -> str:
    """The CLI's error output for `path`: one line, which is returned."""
    assert import_weights.main([str(path), '-o', str(path.with_suffix('.th'))]) == 1
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and error.startswith('import_weights: error: '), error
    return error


def edited(values: tp.Dict[str, np.ndarray], path: Path, **changes: tp.Any) -> Path:
    """The parameters with some datasets replaced (a value) or removed (None), written."""
    changed = {key.replace('__', '/'): value for key, value in changes.items()}
    out = {key: changed.get(key, value) for key, value in values.items()}
    out.update({key: value for key, value in changed.items() if key not in values})
    return write_nnabla_h5({k: v for k, v in out.items() if v is not None}, path)


def test_wrong_files_are_refused_with_one_clear_line(published, tmp_path: Path, capsys):
    path, values = published
    garbage = tmp_path / 'garbage.h5'
    garbage.write_bytes(b'not an hdf5 file' * 64)
    assert f'{garbage} is not an HDF5 file' in import_error(garbage, capsys)
    truncated = tmp_path / 'truncated.h5'
    truncated.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    error = import_error(truncated, capsys)
    assert str(truncated) in error and ('cannot be read' in error or 'not an HDF5' in error)
    cases = {
        'missing.h5': ({'fc2_drums__bn__var': None}, 'the dataset fc2_drums/bn/var is missing'),
        'shape.h5': ({'fc2_vocals__affine__W': values['fc2_vocals/affine/W'][:8]},
                     r'fc2_vocals/affine/W \(networks\.2\.fc2\.weight\) has shape \(8, 8\)'),
        'lstm.h5': ({'lstm_bass__lstm__weight': values['lstm_bass/lstm/weight'][:1]},
                    r'the dataset lstm_bass/lstm/weight has shape \(1, 2, 4, 4, 12\), not '
                    r'\(2, 2, 4, 4, 12\)'),
        'extra.h5': ({'fc4_bass__affine__W': np.ones((8, 8), np.float32)},
                     r"datasets of no X-UMX parameter .*\['fc4_bass/affine/W'\]"),
        'text.h5': ({'input_scale_other': np.array([b'1.0'] * 1487)},
                    'the dataset input_scale_other holds |S3, not numbers'),
    }
    for name, (changes, message) in cases.items():
        error = import_error(edited(values, tmp_path / name, **changes), capsys)
        assert str(tmp_path / name) in error
        assert re.search(message, error), error
    with pytest.raises(PackageError, match=r"names the sources \['bass', 'piano'\]"):
        convert_checkpoint(read_checkpoint(path), {'sources': ['bass', 'piano']})
    # By name or by HDF5's signature; other checkpoints are still PyTorch's.
    renamed = tmp_path / 'x-umx.bin'
    renamed.write_bytes(path.read_bytes())
    assert xumx_nnabla.reads(renamed) and isinstance(read_checkpoint(renamed), dict)
    torch.save(XUMX(['a', 'b'], hidden_size=4, lstm_layers=1, nfft=256, hop_length=64)
               .state_dict(), tmp_path / 'ours.th')
    assert not xumx_nnabla.reads(tmp_path / 'ours.th')
