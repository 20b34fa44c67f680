"""Importing lucidrains' BS-RoFormer / Mel-Band RoFormer state dicts (MSST's checkpoints):
parity with lucidrains' package `bs-roformer` (1.2.4) on the same weights and input."""
import typing as tp
import warnings

import pytest
import torch
import yaml

from separator.importers import import_checkpoint, roformer as importer
from separator.states import PackageError, load_model

import bs_roformer  # noqa: E402  (setup.py's dev extra: the reference)

SOURCES = ['drums', 'bass', 'other', 'vocals']
# bins per band for n_fft=512 (257 bins): a few bands of each width
FREQS_PER_BANDS = (2,) * 8 + (4,) * 8 + (16,) * 8 + (81,)
STFT = dict(stft_n_fft=512, stft_hop_length=128, stft_win_length=512)
LENGTH = 4099            # a prime number of samples: lucidrains returns the first 4096
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run much faster on one thread (see conftest)."""


def lucidrains(kind: str, seed: int, **kwargs: tp.Any) -> torch.nn.Module:
    """lucidrains' model, its norm gains and temperatures randomised too (their default is
    1 or 0, which a wrong mapping would not show), in eval mode."""
    torch.manual_seed(seed)
    common = dict(dim=32, dim_head=16, heads=2, num_residual_streams=1, **STFT)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # torch.stft's "rectangular window" at init
        if kind == 'bs':
            model = bs_roformer.BSRoformer(freqs_per_bands=FREQS_PER_BANDS,
                                           **common, **kwargs)
        else:
            model = bs_roformer.MelBandRoformer(add_value_residual=False, **common, **kwargs)
    for name, param in model.named_parameters():
        if name.endswith(('gamma', 'temperature')):
            param.data = 1 + 0.3 * torch.randn_like(param)
    return model.eval()


def msst_yaml(path, model: dict, sources: tp.Sequence[str], target: tp.Optional[str] = None
              ) -> str:
    """An MSST-style config: `audio:`, `model:` (lucidrains' arguments), `training:`."""
    config = {'audio': {'chunk_size': 131584, 'sample_rate': 44100, 'num_channels': 2},
              'model': {'dim': 32, 'dim_head': 16, 'heads': 2, 'flash_attn': True,
                        'attn_dropout': 0.1, 'ff_dropout': 0.1, **STFT, **model},
              'training': {'instruments': list(sources), 'target_instrument': target}}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def compare(reference: torch.nn.Module, package: dict, channels: int, seed: int = 1) -> float:
    """Max abs difference between lucidrains' output and ours (its first samples)."""
    ours = load_model(package).eval()
    torch.manual_seed(seed)
    mix = torch.randn(2, channels, LENGTH)
    with torch.no_grad():
        expected = reference(mix)
        output = ours(mix)
    if expected.dim() == 3:                 # one stem: lucidrains drops the stem dimension
        expected = expected[:, None]
    assert output.shape[:3] == expected.shape[:3] and output.shape[-1] == LENGTH
    assert expected.shape[-1] >= LENGTH - 128
    difference = (output[..., :expected.shape[-1]] - expected).abs().max().item()
    print(f"max abs diff {difference:.2e} (output scale {expected.abs().max():.2f})")
    return difference


def import_lucidrains(reference: torch.nn.Module, tmp_path, model: dict,
                      sources: tp.Sequence[str], wrap: tp.Optional[str] = None, **yaml_kw
                      ) -> dict:
    state = reference.state_dict()
    if wrap == 'module':                    # DDP's prefix
        state = {f'module.{key}': value for key, value in state.items()}
    elif wrap:
        state = {wrap: state}
    torch.save(state, tmp_path / 'model.ckpt')
    config = msst_yaml(tmp_path / 'config.yaml', model, sources, **yaml_kw)
    return import_checkpoint(tmp_path / 'model.ckpt', config)


BS_CASES = {   # lucidrains' arguments; stereo, stems
    'stereo_4stems_value_residual': (dict(depth=2, time_transformer_depth=1,
                                          freq_transformer_depth=1, mask_estimator_depth=2,
                                          zero_dc=False), True, 4),
    'mono_1stem_deep_time_zero_dc': (dict(depth=1, time_transformer_depth=2,
                                          freq_transformer_depth=1, mask_estimator_depth=1,
                                          zero_dc=True), False, 1),
}
MEL_CASES = {
    'stereo_4stems_linear_attention': (dict(depth=2, num_bands=12, time_transformer_depth=1,
                                            freq_transformer_depth=1,
                                            linear_transformer_depth=1,
                                            mask_estimator_depth=1, zero_dc=False), True, 4),
    'mono_1stem_deep_band_zero_dc': (dict(depth=1, num_bands=12, time_transformer_depth=1,
                                          freq_transformer_depth=2,
                                          linear_transformer_depth=0, mask_estimator_depth=2,
                                          zero_dc=True), False, 1),
}


@pytest.mark.parametrize('case', list(BS_CASES))
def test_bs_roformer_parity(case, tmp_path):
    kwargs, stereo, stems = BS_CASES[case]
    reference = lucidrains('bs', 0, stereo=stereo, num_stems=stems, **kwargs)
    package = import_lucidrains(reference, tmp_path, dict(
        stereo=stereo, num_stems=stems, freqs_per_bands=list(FREQS_PER_BANDS), **kwargs),
        SOURCES[:stems], wrap='state_dict' if stems == 1 else None)
    assert package['model'] == 'bs_roformer'
    assert package['kwargs']['value_residual'] == (kwargs['depth'] > 1)
    assert compare(reference, package, 2 if stereo else 1) <= TOLERANCE


@pytest.mark.parametrize('case', list(MEL_CASES))
def test_mel_roformer_parity(case, tmp_path):
    kwargs, stereo, stems = MEL_CASES[case]
    reference = lucidrains('mel', 0, stereo=stereo, num_stems=stems, **kwargs)
    package = import_lucidrains(reference, tmp_path, dict(
        stereo=stereo, num_stems=stems, sample_rate=44100, **kwargs),
        ['vocals', 'other'] if stems == 1 else SOURCES, target='vocals' if stems == 1 else None,
        wrap='module' if stems == 4 else None)
    assert package['model'] == 'mel_roformer'
    assert package['kwargs']['sources'] == (['vocals'] if stems == 1 else SOURCES)
    assert compare(reference, package, 2 if stereo else 1) <= TOLERANCE


def test_msst_skip_connection_and_mlp_expansion(tmp_path):
    """MSST's options that lucidrains 1.2.4 lacks, on lucidrains' modules: mask MLPs of
    `mlp_expansion_factor` x dim (its MaskEstimator takes it) and `skip_connection` (the time
    Transformer of block i also gets the outputs of blocks 0..i-1, added in order)."""
    depth, batch = 3, 2
    reference = lucidrains('mel', 2, depth=depth, num_bands=10, stereo=False, num_stems=2,
                           time_transformer_depth=1, freq_transformer_depth=1,
                           linear_transformer_depth=0, mask_estimator_depth=1)
    mel = bs_roformer.mel_band_roformer
    dims = reference.mask_estimators[0].dim_inputs
    torch.manual_seed(3)
    reference.mask_estimators = torch.nn.ModuleList(
        mel.MaskEstimator(dim=32, dim_inputs=dims, depth=1, mlp_expansion_factor=2)
        for _ in range(2))
    package = import_lucidrains(reference, tmp_path, dict(
        depth=depth, num_bands=10, stereo=False, num_stems=2, time_transformer_depth=1,
        freq_transformer_depth=1, mask_estimator_depth=1, mlp_expansion_factor=2,
        skip_connection=True, zero_dc=False), ['vocals', 'other'])
    assert package['kwargs']['skip_connections'] and package['kwargs']['mask_mult'] == 2
    outputs: tp.List[torch.Tensor] = []

    class AddPrevious(torch.nn.Module):       # before a time Transformer: [(b f), t, d]
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, value_residual=None):
            for previous in outputs:          # [(b t), f, d]
                x = x + previous.unflatten(0, (batch, -1)).transpose(1, 2).flatten(0, 1)
            return self.inner(x, value_residual=value_residual)

    class Record(AddPrevious):                # after a band Transformer
        def forward(self, x, value_residual=None):
            x, values = self.inner(x, value_residual=value_residual)
            outputs.append(x)
            return x, values

    for block in reference.layers:
        block[1], block[2] = AddPrevious(block[1]), Record(block[2])
    ours = load_model(package).eval()
    torch.manual_seed(1)
    mix = torch.randn(batch, 1, LENGTH)
    with torch.no_grad():
        outputs.clear()
        expected = reference(mix)
        output = ours(mix)
    difference = (output[..., :expected.shape[-1]] - expected).abs().max().item()
    print(f"max abs diff {difference:.2e}")
    assert difference <= TOLERANCE
    without = dict(package, kwargs=dict(package['kwargs'], skip_connections=False))
    with torch.no_grad():
        changed = (load_model(without).eval()(mix)[..., :expected.shape[-1]] - expected)
    assert changed.abs().max() > 100 * TOLERANCE     # the skips matter in this test


def test_msst_config_with_python_tuples(tmp_path):
    """MSST's yaml writes its band lists as `!!python/tuple`: read as lists (data only)."""
    reference = lucidrains('bs', 4, depth=1, stereo=True, num_stems=1, mask_estimator_depth=2,
                           time_transformer_depth=1, freq_transformer_depth=1)
    torch.save(reference.state_dict(), tmp_path / 'model.ckpt')
    bands = ''.join(f'\n    - {width}' for width in FREQS_PER_BANDS)
    (tmp_path / 'config.yaml').write_text(
        f"audio:\n  chunk_size: 352800\n  sample_rate: 44100\nmodel:\n  dim: 32\n  depth: 1\n"
        f"  stereo: true\n  num_stems: 1\n  time_transformer_depth: 1\n"
        f"  freq_transformer_depth: 1\n  linear_transformer_depth: 0\n"
        f"  freqs_per_bands: !!python/tuple{bands}\n  dim_head: 16\n  heads: 2\n"
        f"  stft_n_fft: 512\n  stft_hop_length: 128\n  stft_win_length: 512\n"
        f"  mask_estimator_depth: 2\n  zero_dc: false\n"
        f"  multi_stft_resolutions_window_sizes: !!python/tuple\n  - 4096\n  - 2048\n"
        f"training:\n  instruments:\n  - vocals\n  - other\n  target_instrument: vocals\n")
    package = import_checkpoint(tmp_path / 'model.ckpt', tmp_path / 'config.yaml')
    assert package['kwargs']['segment'] == 8. and package['kwargs']['sources'] == ['vocals']
    assert compare(reference, package, 2) <= TOLERANCE
    (tmp_path / 'hostile.yaml').write_text("model: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(PackageError, match='not a yaml file separator can read'):
        import_checkpoint(tmp_path / 'model.ckpt', tmp_path / 'hostile.yaml')


# ------------------------------------------------------------------ errors, detection


def test_matches_and_errors_name_the_fix(tmp_path):
    reference = lucidrains('bs', 5, depth=1, stereo=False, num_stems=1,
                           time_transformer_depth=1, freq_transformer_depth=1)
    state = reference.state_dict()
    assert importer.matches(state) and importer.matches({'state': state})
    assert not importer.matches({'blocks.0.time_transformer.attn.to_qkv.weight': torch.ones(1)})
    torch.save(state, tmp_path / 'model.ckpt')
    with pytest.raises(PackageError, match='without its STFT hop.*--config'):
        import_checkpoint(tmp_path / 'model.ckpt')
    model = dict(depth=1, stereo=False, num_stems=1, time_transformer_depth=1,
                 freq_transformer_depth=1, freqs_per_bands=list(FREQS_PER_BANDS))
    config = msst_yaml(tmp_path / 'wrong.yaml', dict(model, dim=64), ['vocals'])
    with pytest.raises(PackageError, match=r'model\.dim is 64 but .* have 32'):
        import_checkpoint(tmp_path / 'model.ckpt', config)
    config = msst_yaml(tmp_path / 'stereo.yaml', dict(model, stereo=True), ['vocals'])
    with pytest.raises(PackageError, match='check stereo'):
        import_checkpoint(tmp_path / 'model.ckpt', config)
    config = msst_yaml(tmp_path / 'two.yaml', dict(model), ['vocals', 'other'])
    with pytest.raises(PackageError, match='training.instruments'):
        import_checkpoint(tmp_path / 'model.ckpt', config)
    config = msst_yaml(tmp_path / 'window.yaml', dict(model, stft_win_length=256), ['vocals'])
    with pytest.raises(PackageError, match='stft_win_length=256'):
        import_checkpoint(tmp_path / 'model.ckpt', config)
    # lucidrains' default: 4 residual streams (hyper-connections)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        hyper = bs_roformer.BSRoformer(dim=32, depth=1, dim_head=16, heads=2,
                                       freqs_per_bands=FREQS_PER_BANDS, **STFT)
    torch.save(hyper.state_dict(), tmp_path / 'hyper.ckpt')
    config = msst_yaml(tmp_path / 'hyper.yaml', dict(model), ['vocals'])
    with pytest.raises(PackageError, match='hyper-connections.*num_residual_streams=1'):
        import_checkpoint(tmp_path / 'hyper.ckpt', config)
    # value residuals without lucidrains' residual wrappers: MSST's *_experimental layout
    deep = lucidrains('bs', 5, depth=2, stereo=False, num_stems=1, time_transformer_depth=1,
                      freq_transformer_depth=1)
    torch.save({key.replace('.branch.', '.'): value
                for key, value in deep.state_dict().items()}, tmp_path / 'experimental.ckpt')
    config = msst_yaml(tmp_path / 'deep.yaml', dict(model, depth=2), ['vocals'])
    with pytest.raises(PackageError, match='experimental'):
        import_checkpoint(tmp_path / 'experimental.ckpt', config)


# ------------------------------------------------------------------ our own packages


def todays_package(dim: int = 32, depth: int = 2, heads: int = 2, dim_head: int = 16,
                   sources: int = 2) -> dict:
    """A `bs_roformer` package with today's arguments and state dict names (stereo, n_fft
    512, FREQS_PER_BANDS), written by hand, seeded random weights."""
    torch.manual_seed(6)
    state: tp.Dict[str, torch.Tensor] = {}

    def norm(name, size):
        state[name] = 1 + 0.2 * torch.randn(size)

    def linear(name, fan_out, fan_in, bias=True):
        state[f'{name}.weight'] = torch.randn(fan_out, fan_in) / fan_in ** 0.5
        if bias:
            state[f'{name}.bias'] = 0.1 * torch.randn(fan_out)
    widths = [2 * 2 * bins for bins in FREQS_PER_BANDS]
    for k, width in enumerate(widths):
        norm(f'band_split.projections.{k}.0.weight', width)
        linear(f'band_split.projections.{k}.1', dim, width)
    for block in range(depth):
        for kind in ('time', 'band'):
            prefix = f'blocks.{block}.{kind}_transformer'
            norm(f'{prefix}.attn.norm.weight', dim)
            linear(f'{prefix}.attn.to_qkv', 3 * heads * dim_head, dim, bias=False)
            linear(f'{prefix}.attn.to_out', dim, heads * dim_head, bias=False)
            norm(f'{prefix}.ff.0.weight', dim)
            linear(f'{prefix}.ff.1', 4 * dim, dim)
            linear(f'{prefix}.ff.4', dim, 4 * dim)
    state['final_norm.weight'] = torch.ones(dim)   # the mask norms then fold into lucidrains'
    for source in range(sources):
        for k, width in enumerate(widths):
            prefix = f'mask_estimators.{source}.mlps.{k}'
            norm(f'{prefix}.0.weight', dim)
            linear(f'{prefix}.1', 4 * dim, dim)
            linear(f'{prefix}.3', 2 * width, 4 * dim)
    kwargs = dict(sources=SOURCES[:sources], audio_channels=2, dim=dim, depth=depth,
                  heads=heads, dim_head=dim_head, dropout=0., n_fft=512, hop_length=128,
                  freqs_per_bands=list(FREQS_PER_BANDS))
    return {'format': 2, 'model': 'bs_roformer', 'args': [], 'kwargs': kwargs, 'state': state}


def as_lucidrains(state: dict, reference: torch.nn.Module, heads: int, dim_head: int) -> dict:
    """Today's weights in lucidrains' BSRoformer: same math up to its RMSNorm epsilon, with
    its rotary pairs (2i, 2i + 1) for our (i, i + d / 2) (q and k rows permuted), gates and
    value residuals off, and our mask norms (on the output of a final norm of gain 1, itself
    of RMS 1) folded into the first Linear of its mask MLPs."""
    theirs = dict(reference.state_dict())
    half = dim_head // 2
    pairs = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    rows = torch.arange(3 * heads * dim_head).view(3, heads, dim_head)
    rows[:2] = rows[:2, :, pairs]
    for name, value in state.items():
        parts = name.split('.')
        if parts[0] == 'band_split':
            theirs[f"band_split.to_features.{parts[2]}.{parts[3]}." +
                   ('gamma' if parts[3] == '0' else parts[4])] = value
        elif parts[0] == 'blocks':
            layer = (f"layers.{parts[1]}.{0 if parts[2] == 'time_transformer' else 1}"
                     f".layers.0")
            if parts[3] == 'ff':
                theirs[f"{layer}.1.branch.net.{parts[4]}." +
                       ('gamma' if parts[4] == '0' else parts[5])] = value
            elif parts[4] == 'norm':
                theirs[f"{layer}.0.branch.norm.gamma"] = value
            elif parts[4] == 'to_qkv':
                theirs[f"{layer}.0.branch.to_qkv.weight"] = value[rows.flatten()]
            else:
                theirs[f"{layer}.0.branch.to_out.0.weight"] = value
        elif parts[0] == 'final_norm':
            theirs['final_norm.gamma'] = value
    for name in theirs:
        if name.endswith(('to_gates.weight', 'to_value_residual_mix.weight')):
            theirs[name] = torch.zeros_like(theirs[name])
        elif name.endswith('to_gates.bias'):
            theirs[name] = torch.full_like(theirs[name], 30.)      # sigmoid: 1
        elif name.endswith('to_value_residual_mix.bias'):
            theirs[name] = torch.full_like(theirs[name], -30.)     # sigmoid: 1e-13
    for source, k in {(int(n.split('.')[1]), int(n.split('.')[3])) for n in state
                      if n.startswith('mask_estimators.')}:
        ours, mlp = f'mask_estimators.{source}.mlps.{k}', f'mask_estimators.{source}.to_freqs.{k}.0'
        theirs[f'{mlp}.0.weight'] = state[f'{ours}.1.weight'] * state[f'{ours}.0.weight']
        theirs[f'{mlp}.0.bias'] = state[f'{ours}.1.bias']
        theirs[f'{mlp}.2.weight'] = state[f'{ours}.3.weight']
        theirs[f'{mlp}.2.bias'] = state[f'{ours}.3.bias']
    return theirs


def test_todays_bs_roformer_package_still_loads(tmp_path):
    """A package with today's arguments and names loads strictly, and computes what
    lucidrains' BSRoformer computes with the same weights (see `as_lucidrains`)."""
    package = todays_package()
    torch.save(package, tmp_path / 'package.th')
    model = load_model(torch.load(tmp_path / 'package.th', weights_only=True)).eval()
    assert set(model.state_dict()) == set(package['state'])
    reference = lucidrains('bs', 0, depth=2, stereo=True, num_stems=2, mask_estimator_depth=2,
                           time_transformer_depth=1, freq_transformer_depth=1)
    reference.load_state_dict(as_lucidrains(package['state'], reference, 2, 16))
    torch.manual_seed(1)
    mix = torch.randn(2, 2, LENGTH)
    with torch.no_grad():
        expected = reference(mix)
        output = model(mix)
    difference = (output[..., :expected.shape[-1]] - expected).abs().max().item()
    print(f"max abs diff {difference:.2e} (output scale {expected.abs().max():.2f})")
    assert difference <= TOLERANCE
