"""Importing MSST's MDX23C (TFC-TDF U-Net v3) checkpoints into our `tfc_tdf`: parity with the
reference code (audio-separator 0.47.1's `uvr_lib_v5/tfc_tdf_v3.py`, the same model as MSST's
`models/mdx23c_tfc_tdf_v3.py`) on the same weights and input."""
import functools
import importlib.util
import sys
import types
import typing as tp
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from separator.importers import import_checkpoint, importers, mdx23c as importer
from separator.starting_weights import imported_package
from separator.states import load_model
from tools import import_weights

SOURCES = ['drums', 'bass', 'other', 'vocals']
HOP, FRAMES = 60, 20          # hop 60 (n_fft 240): 20 frames, a multiple of 2 ** num_scales
CHUNK = (FRAMES - 1) * HOP    # 1140 samples: the one chunk the reference's forward takes
AUDIO = {'n_fft': 240, 'hop_length': HOP, 'dim_f': 112, 'num_channels': 2,
         'sample_rate': 44100, 'chunk_size': CHUNK, 'dim_t': FRAMES, 'min_mean_abs': 0.001}
MODEL = {'num_subbands': 2, 'num_scales': 2, 'scale': [2, 2], 'num_blocks_per_scale': 2,
         'num_channels': 8, 'growth': 4, 'bottleneck_factor': 4, 'norm': 'InstanceNorm',
         'act': 'gelu'}
TOLERANCE = 1e-5              # relative to the output's largest value


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run much faster on one thread (see conftest)."""


@functools.lru_cache(maxsize=1)
def reference_module() -> types.ModuleType:
    """audio-separator's `tfc_tdf_v3`, loaded by file path: importing it through its package
    would run `audio_separator/__init__.py`, which imports the whole Separator and its heavy
    dependencies (not installed here). Its one import, `device_utils`, is loaded the same way
    and registered under its package name first, where `tfc_tdf_v3` looks for it."""
    spec = importlib.util.find_spec('audio_separator')   # finds, does not run, the package
    assert spec is not None and spec.origin is not None, "pip install --no-deps audio-separator"
    folder = Path(spec.origin).parent / 'separator' / 'uvr_lib_v5'
    name = 'audio_separator.separator.uvr_lib_v5.device_utils'
    sys.modules[name] = load_file('mdx23c_reference_device_utils', folder / 'device_utils.py')
    try:
        return load_file('mdx23c_reference', folder / 'tfc_tdf_v3.py')
    finally:
        del sys.modules[name]


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def namespace(value: tp.Any) -> tp.Any:
    """A config dict as attributes (what MSST's ml_collections ConfigDict gives the model)."""
    if isinstance(value, dict):
        return types.SimpleNamespace(**{key: namespace(item) for key, item in value.items()})
    return value


def msst_config(model: dict, instruments: tp.Sequence[str], target: tp.Optional[str]) -> dict:
    return {'audio': dict(AUDIO), 'model': {**MODEL, **model},
            'training': {'instruments': list(instruments), 'target_instrument': target,
                         'batch_size': 6, 'lr': 9e-5}}


def reference_model(config: dict, seed: int) -> torch.nn.Module:
    """The reference at `config`, all weights random (norm gains and biases, BatchNorm
    statistics too: their defaults 1 and 0 would hide a wrong mapping), in eval mode."""
    torch.manual_seed(seed)
    model = reference_module().TFC_TDF_net(namespace(config), 'cpu')
    for name, tensor in model.state_dict().items():
        if name.endswith('num_batches_tracked'):
            continue
        if name.endswith('running_var'):
            tensor.copy_(0.5 + torch.rand_like(tensor))
        elif tensor.dim() == 1:   # norm weights, biases, running means
            tensor.copy_((1. if name.endswith('weight') else 0.) + 0.3 * torch.randn_like(tensor))
    return model.eval()


def write_msst(tmp_path: Path, reference: torch.nn.Module, config: dict,
               wrap: tp.Optional[str] = None) -> tp.Tuple[Path, Path]:
    """The reference's state dict as MSST saves it (`torch.save(model.state_dict())`; under
    DDP's `module.` or a `state_dict` key with `wrap`), and its yaml."""
    state = reference.state_dict()
    if wrap == 'module':
        state = {f'module.{key}': value for key, value in state.items()}
    elif wrap:
        state = {wrap: state}
    torch.save(state, tmp_path / 'model.ckpt')
    (tmp_path / 'config.yaml').write_text(yaml.safe_dump(config))
    return tmp_path / 'model.ckpt', tmp_path / 'config.yaml'


def relative_difference(reference: torch.nn.Module, package: dict, label: str) -> float:
    """Max abs difference between the reference's output and ours on one stereo chunk,
    relative to the output's largest value (printed)."""
    ours = load_model(package).eval()
    mix = 0.5 * torch.randn(2, 2, CHUNK, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')            # its torch.stft(return_complex=False)
        expected = reference(mix)
        output = ours(mix)
    if expected.dim() == 3:                        # one target: no source dimension
        expected = expected[:, None]
    assert output.shape == expected.shape == (2, len(ours.sources), 2, CHUNK)
    difference = (output - expected).abs().max().item()
    scale = expected.abs().max().item()
    print(f"{label}: max abs diff {difference:.2e} (output max {scale:.2f}, relative "
          f"{difference / scale:.1e})")
    return difference / scale


CASES = {   # model options, instruments, target_instrument, how the state dict is saved
    'all_sources_instancenorm_gelu': ({}, SOURCES, None, None),
    'one_target_batchnorm_elu': (dict(norm='BatchNorm', act='elu0.5', num_subbands=4,
                                      num_blocks_per_scale=1), ['vocals', 'other'], 'vocals',
                                 'state_dict'),
    'two_sources_groupnorm_relu': (dict(norm='GroupNorm2', act='relu', growth=8),
                                   ['vocals', 'other'], None, 'module'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_imported_model_computes_what_the_reference_computes(case, tmp_path):
    model, instruments, target, wrap = CASES[case]
    config = msst_config(model, instruments, target)
    reference = reference_model(config, seed=len(case))
    ckpt, config_path = write_msst(tmp_path, reference, config, wrap)
    package = import_checkpoint(ckpt, config_path)
    assert package['imported']['format'] == 'mdx23c' and package['model'] == 'tfc_tdf'
    assert package['kwargs']['sources'] == ([target] if target else instruments)
    assert package['kwargs']['segment'] == CHUNK / 44100
    assert len(package['state']) == len(reference.state_dict())   # each tensor once
    assert relative_difference(reference, package, case) <= TOLERANCE


def test_command_line_and_continue_from(tmp_path, capsys):
    """`tools.import_weights` (found from the content, or --format mdx23c) writes a package
    that computes what the reference computes; `continue_from=FILE continue_config=YAML`
    gives the same package."""
    config = msst_config({}, SOURCES, None)
    reference = reference_model(config, seed=3)
    ckpt, config_path = write_msst(tmp_path, reference, config)
    written = []
    for index, extra in enumerate([[], ['--format', 'mdx23c']]):
        out = tmp_path / 'release' / f'mdx23c_tiny{index}.th'
        assert import_weights.main([str(ckpt), '--config', str(config_path), *extra,
                                    '-o', str(out)]) == 0
        assert 'mdx23c format' in capsys.readouterr().out
        written.append(torch.load(out, weights_only=True))
    for package, how in zip(written, ['found from the content', '--format mdx23c']):
        assert relative_difference(reference, package, f'tools.import_weights, {how}'
                                   ) <= TOLERANCE
    cfg = OmegaConf.create({'continue_from': str(ckpt), 'continue_config': str(config_path),
                            'dset': {'sources': SOURCES, 'samplerate': 44100, 'channels': 2}})
    package = imported_package(cfg)
    assert relative_difference(reference, package, 'continue_from') <= TOLERANCE


def test_malformed_config_or_checkpoint_is_one_clear_line(tmp_path, capsys):
    config = msst_config({}, SOURCES, None)
    reference = reference_model(config, seed=4)
    ckpt, good = write_msst(tmp_path, reference, config)
    out, errors = str(tmp_path / 'out.th'), []

    def error_line(checkpoint: Path, *config_args: str) -> str:
        """The one error line of a failed `tools.import_weights` run."""
        assert import_weights.main([str(checkpoint), *config_args, '-o', out]) == 1
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and err.startswith('import_weights: error: '), err
        errors.append(err)
        return err

    def with_config(name: str, section: str, key: str, value: tp.Any = None) -> str:
        """The error with the good config but `section.key` set to `value` (None: removed)."""
        changed = {part: dict(values) for part, values in config.items()}
        if value is None:
            del changed[section][key]
        else:
            changed[section][key] = value
        path = tmp_path / f'{name}.yaml'
        path.write_text(yaml.safe_dump(changed))
        return error_line(ckpt, '--config', str(path))

    err = with_config('no_dim_f', 'audio', 'dim_f')
    assert str(ckpt) in err and 'no_dim_f.yaml' in err and 'audio.dim_f' in err
    err = with_config('wide', 'model', 'num_channels', 16)
    assert "model.num_channels is 16" in err and 'have 8' in err
    err = with_config('mono', 'audio', 'num_channels', 1)
    assert 'audio.num_channels' in err and 'first_conv' in err
    assert 'model.bottleneck_factor=2' in with_config('bn', 'model', 'bottleneck_factor', 2)
    assert "model.act is 'silu'" in with_config('silu', 'model', 'act', 'silu')
    assert "model.norm is 'BatchNorm'" in with_config('batch', 'model', 'norm', 'BatchNorm')
    assert 'model.norm is None' in with_config('nonorm', 'model', 'norm')
    err = with_config('three', 'training', 'instruments', SOURCES[:3])
    assert 'training.instruments' in err and 'output 4 source(s)' in err
    err = error_line(ckpt)                                           # no config
    assert '--config' in err and 'MDX23C' in err
    # the checkpoint: a tensor of another shape, a tensor missing
    state = reference.state_dict()
    key = 'decoder_blocks.1.tfc_tdf.blocks.1.tfc2.2.weight'
    torch.save({**state, key: state[key][:, :4]}, tmp_path / 'shape.ckpt')
    err = error_line(tmp_path / 'shape.ckpt', '--config', str(good))
    assert 'shape.ckpt' in err and f'{key} (8, 4, 3, 3)' in err
    key = 'encoder_blocks.1.tfc_tdf.blocks.0.tdf.5.weight'
    torch.save({name: value for name, value in state.items() if name != key},
               tmp_path / 'missing.ckpt')
    err = error_line(tmp_path / 'missing.ckpt', '--config', str(good))
    assert 'missing.ckpt' in err and 'lacks 1 tensor(s)' in err and key in err
    assert not Path(out).exists()
    print(''.join(errors), end='')   # here: capsys took the output of the runs


def test_detection():
    config = msst_config({}, SOURCES, None)
    state = reference_model(config, seed=5).state_dict()
    assert importer.matches(state) and importer.matches({'state_dict': state})
    assert importer.matches({f'module.{key}': value for key, value in state.items()})
    assert [module.FORMAT for module in importers() if module.matches(state)] == ['mdx23c']
    assert not importer.matches({'first_conv.weight': torch.ones(1)})
