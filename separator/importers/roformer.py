"""BS-RoFormer and Mel-Band RoFormer state dicts with lucidrains' module names: the checkpoints
of Music-Source-Separation-Training (MSST: its `models/bs_roformer/` vendors lucidrains'
code; viperx', KimberleyJensen's... RoFormers) and those of lucidrains' `bs-roformer` package
(1.2.4), as `bs_roformer` / `mel_roformer` packages.

**The file** is a bare state dict (MSST saves `model.state_dict()`), or one under `state_dict`,
`state` or `model_state_dict`; DDP's `module.` prefix and the `.branch.` of lucidrains 1.x's
residual wrappers are dropped. Names: `band_split.to_features.K.{0.gamma,1.weight,1.bias}`,
`layers.B.J.layers.L.{0 (attention), 1 (feed-forward)}...`, `layers.B.J.norm.gamma`,
`final_norm.gamma`, `mask_estimators.S.to_freqs.K.0.I.{weight,bias}`. Each rotary embedding's
`freqs` is checked (the standard ones) and dropped.

**The config** (MSST's yaml, `--config`): the state dict has no STFT hop, sample rate or
source names, so one is required (`read_config` reads its `!!python/tuple` lists as
lists). Its `model:` section gives lucidrains' arguments (`dim`,
`depth`, `stereo`, `num_stems`, `time_transformer_depth`, `freq_transformer_depth`,
`linear_transformer_depth`, `freqs_per_bands` or `num_bands`, `dim_head`, `heads`,
`attn_dropout`, `ff_dropout`, `sample_rate`, `stft_n_fft`, `stft_hop_length`,
`stft_win_length`, `mask_estimator_depth`, `mlp_expansion_factor`, `skip_connection`,
`zero_dc`), with MSST's defaults for those it leaves out (`zero_dc`: true, MSST's default,
which lucidrains' package does not share: write `zero_dc: false` for its models);
`training: target_instrument` (one stem) or `instruments` names the sources; `audio:
chunk_size / sample_rate` gives the segment. What the tensors show (sizes, depths, band
widths, gates...) is read from them, and a config that says otherwise is refused, naming the
key. BS-RoFormer or Mel-RoFormer: `num_bands` or `freqs_per_bands` in the config, else
`final_norm` in the weights (BS-RoFormer's).

**The model** is ours with the options that compute what lucidrains' code computes
(`models/roformer.py`, `OPTIONS_DOC`): lucidrains' RMSNorm (`rms_style='l2'`), rotary
channel pairs (`'interleaved'`), attention gates, value residuals, Transformers of several
layers, optional linear-attention Transformers, per-Transformer or final norms, mask MLPs
without a norm, `zero_dc`. The STFT normalisation does not matter (the band split norm
removes the scale, the iSTFT undoes it), nor do `flash_attn`, `sage_attention`,
`use_torch_checkpoint` or the loss settings. Refused, naming the fix: hyper-connections
(`num_residual_streams` > 1, lucidrains' default since 1.x), PoPE (`use_pope`), `freq_range`,
a window shorter than `stft_n_fft`, lucidrains' Mel-RoFormer value residuals
(`learned_value_residual_mix`, which mix differently) and MSST's `*_experimental` RoFormers
with value residuals (their layers then have no residual connections).

Checked: on MSST's 14 RoFormer configs (at dim 32), MSST's own classes and the imported
models agree to 2.2e-7; `tests/test_import_roformer.py` checks lucidrains' 1.2.4 package.
"""
import logging
import re
import typing as tp

import torch

from ..models.bandsplit import band_widths
from ..states import PackageError

logger = logging.getLogger(__name__)

FORMAT = 'roformer'

WRAPPERS = ('state_dict', 'state', 'model_state_dict')   # where MSST finds the weights
KINDS = ('linear', 'time', 'band')

# MSST's model arguments that do not change what a trained model computes.
IGNORED = ('flash_attn', 'linear_flash_attn', 'sage_attention', 'use_torch_checkpoint',
           'dim_freqs_in', 'stft_normalized', 'multi_stft_resolution_loss_weight',
           'multi_stft_resolutions_window_sizes', 'multi_stft_hop_size',
           'multi_stft_normalized', 'match_input_audio_length', 'add_value_residual',
           'use_value_residual_learning', 'mc_hyper_conn_sinkhorn_iters')
KNOWN = IGNORED + (
    'dim', 'depth', 'stereo', 'num_stems', 'time_transformer_depth', 'freq_transformer_depth',
    'linear_transformer_depth', 'freqs_per_bands', 'num_bands', 'dim_head', 'heads',
    'attn_dropout', 'ff_dropout', 'sample_rate', 'stft_n_fft', 'stft_hop_length',
    'stft_win_length', 'mask_estimator_depth', 'mlp_expansion_factor', 'skip_connection',
    'zero_dc', 'use_pope', 'freq_range', 'num_residual_streams', 'num_residual_fracs')

CONFIG_FIX = ("give its Music-Source-Separation-Training yaml (`configs/config_*.yaml`, the "
              "one it was trained with) with --config (tools.import_weights) or "
              "continue_config=YAML")


# ------------------------------------------------------------------ the state dict

def canonical(key: str) -> str:
    """A name without DDP's `module.` prefix and lucidrains 1.x's `.branch.` wrappers."""
    if key.startswith('module.'):
        key = key[len('module.'):]
    return key.replace('.branch.', '.')


def raw_state(data: tp.Any) -> tp.Optional[tp.Dict[str, torch.Tensor]]:
    """The state dict in `data` (itself, or under one of WRAPPERS), None if there is none."""
    if not isinstance(data, dict):
        return None
    for key in WRAPPERS:
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if not data or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                           for key, value in data.items()):
        return None
    return data


def state_of(data: tp.Any) -> tp.Optional[tp.Dict[str, torch.Tensor]]:
    """The weights (canonical names) of a RoFormer checkpoint, or None if there is no state
    dict in `data`."""
    state = raw_state(data)
    return None if state is None else {canonical(key): value for key, value in state.items()}


def matches(data: tp.Any) -> bool:
    """Whether `data` holds lucidrains-style RoFormer weights (band split, mask estimators
    and axial Transformers under lucidrains' names)."""
    state = state_of(data)
    return state is not None and all(
        any(re.match(pattern, key) for key in state)
        for pattern in (r'band_split\.to_features\.0\.', r'mask_estimators\.0\.to_freqs\.0\.',
                        r'layers\.0\.\d\.layers\.0\.'))


def count(state: tp.Dict[str, torch.Tensor], pattern: str) -> int:
    """1 + the largest index the group of `pattern` (a regex matching whole names) takes,
    0 if no name matches."""
    found = [int(match.group(1)) for key in state for match in [re.match(pattern, key)]
             if match]
    return 1 + max(found) if found else 0


def architecture(state: tp.Dict[str, torch.Tensor], where: str, wrapped: bool = True
                 ) -> dict:
    """What the tensors say of the model: sizes, depths, bands, options."""
    refuse_unsupported(state, where, wrapped)
    try:
        return _architecture(state)
    except KeyError as error:
        raise PackageError(f"{where}: the tensor {error.args[0]} is missing: not a complete "
                           f"BS-/Mel-RoFormer state dict.") from None


def refuse_unsupported(state: tp.Dict[str, torch.Tensor], where: str,
                       wrapped: bool = True) -> None:
    """PackageError for the variants whose weights we have no layer for. `wrapped`: the
    layers were under lucidrains 1.x's residual wrappers (`.branch.`)."""
    hyper = [key for key in state if key.rsplit('.', 1)[-1] in ('static_alpha', 'static_beta')]
    if hyper:
        raise PackageError(
            f"{where} has hyper-connections ({hyper[0]}: lucidrains' num_residual_streams > 1, "
            f"its default since 1.x), which separator's RoFormers do not have: use a checkpoint "
            f"trained with num_residual_streams=1 (MSST's models are).")
    mixed = [key for key in state if '.learned_value_residual_mix.' in key]
    if mixed:
        raise PackageError(
            f"{where} has lucidrains' Mel-RoFormer value residuals ({mixed[0]}), which are not "
            f"supported: use a checkpoint trained with add_value_residual=False (MSST's "
            f"Mel-RoFormers are).")
    mixed = [key for key in state if '.to_value_residual_mix.' in key]
    if mixed and not wrapped:
        # MSST's *_experimental RoFormers: with value residuals and one residual stream,
        # their layers drop the residual connections (a layout of their own)
        raise PackageError(
            f"{where} has value residuals ({mixed[0]}) but not lucidrains' residual wrappers "
            f"(`.branch.`): the layout of MSST's bs_roformer_experimental / "
            f"mel_band_roformer_experimental, which separator does not support.")


def _architecture(state: tp.Dict[str, torch.Tensor]) -> dict:
    """`architecture`; KeyError naming a tensor that a complete state dict has."""
    depth = count(state, r'layers\.(\d+)\.')
    per_block = count(state, r'layers\.0\.(\d+)\.')
    if depth < 1 or per_block not in (2, 3):
        raise KeyError('layers.0.0.layers.0.0.to_qkv.weight')
    # (time, band), or (linear, time, band): lucidrains' Mel-RoFormer keeps the slot of a
    # linear Transformer (None, no tensors) when linear_transformer_depth=0, MSST's does not
    kinds = KINDS[3 - per_block:]
    index = {kind: j for j, kind in enumerate(kinds)
             if count(state, rf'layers\.0\.{j}\.layers\.(\d+)\.')}
    for kind in ('time', 'band'):
        if kind not in index:
            raise KeyError(f'layers.0.{kinds.index(kind)}.layers.0.0.to_qkv.weight')
    depths = {kind: count(state, rf'layers\.0\.{j}\.layers\.(\d+)\.') for kind, j in
              index.items()}
    time = f"layers.0.{index['time']}.layers.0."
    dim = state['band_split.to_features.0.1.weight'].shape[0]
    qkv = state[time + '0.to_qkv.weight'].shape[0]
    heads = (state[time + '0.to_gates.weight'].shape[0] if time + '0.to_gates.weight' in state
             else None)
    later = f"layers.1.{index['time']}.layers.0.0.to_value_residual_mix.weight"
    num_bands = count(state, r'band_split\.to_features\.(\d+)\.')
    mask = 'mask_estimators.0.to_freqs.0.0.'
    linears = count(state, re.escape(mask) + r'(\d+)\.weight') // 2 + 1   # indices 0, 2, 4...
    return {
        'dim': dim, 'depth': depth, 'kinds': kinds, 'depths': depths, 'qkv': qkv,
        'heads': heads, 'gates': heads is not None, 'value_residual': later in state,
        'linear_heads': (state["layers.0.0.layers.0.0.temperature"].shape[0]
                         if 'linear' in index else None),
        'ff_mult': state[time + '1.net.1.weight'].shape[0] / dim,
        'transformer_norm': f"layers.0.{index['time']}.norm.gamma" in state,
        'final_norm': 'final_norm.gamma' in state,
        'widths': [state[f'band_split.to_features.{k}.1.weight'].shape[1]
                   for k in range(num_bands)],
        'num_stems': count(state, r'mask_estimators\.(\d+)\.'),
        'mask_layers': linears - 1,
        'mask_hidden': state[mask + '0.weight'].shape[0] if linears > 1 else None,
    }


def check_rotary(state: tp.Dict[str, torch.Tensor], dim_head: int, where: str) -> None:
    """The rotary embeddings' `freqs` must be rotary_embedding_torch's defaults (theta
    10000), those our `rotary_style='interleaved'` computes."""
    expected = 1. / (10000 ** (torch.arange(0, dim_head, 2).float() / dim_head))
    for key, value in state.items():
        if key.endswith('.rotary_embed.freqs') and (
                value.shape != expected.shape or not torch.allclose(value.float(), expected,
                                                                     rtol=1e-5, atol=0)):
            raise PackageError(f"{where}: {key} holds rotary frequencies other than "
                               f"rotary_embedding_torch's defaults (theta 10000, dim "
                               f"{dim_head}), which separator's RoFormers do not support.")


# ------------------------------------------------------------------ the config

def model_section(config: tp.Optional[dict], where: str, arch: dict) -> dict:
    """The config's `model:` section; PackageError asking for one if there is none."""
    if config is None:
        found = (f"dim {arch['dim']}, depth {arch['depth']}, {len(arch['widths'])} bands, "
                 f"{arch['num_stems']} stem(s)")
        raise PackageError(f"{where} is a BS-/Mel-RoFormer state dict ({found}) without its "
                           f"STFT hop, sample rate and source names: {CONFIG_FIX}.")
    model = config.get('model')
    if not isinstance(model, dict):
        raise PackageError(f"the config of {where} has no `model:` section (MSST's yaml has "
                           f"one, with dim, depth, stft_hop_length...): {CONFIG_FIX}.")
    unknown = sorted(set(model) - set(KNOWN))
    if unknown:
        logger.warning("%s: config keys %s are not known to the RoFormer importer and were "
                       "ignored.", where, unknown)
    return model


def agree(name: str, given: tp.Any, found: tp.Any, where: str) -> tp.Any:
    """`found` (from the tensors); PackageError naming the key if the config gave another
    value."""
    if given is not None and given != found:
        raise PackageError(f"the config's model.{name} is {given!r} but the weights of {where} "
                           f"have {found!r}: is it the config of these weights?")
    return found


def refuse_options(model: dict, where: str) -> None:
    """PackageError for the options our RoFormers do not have."""
    if model.get('use_pope'):
        raise PackageError(f"the config of {where} sets use_pope (PoPE position embeddings), "
                           f"which separator's RoFormers do not support.")
    freq_range = model.get('freq_range')
    if freq_range is not None and [int(value) for value in freq_range] != [-1, -1]:
        raise PackageError(f"the config of {where} sets freq_range={list(freq_range)} (a "
                           f"frequency range), which separator's RoFormers do not support.")
    for key in ('num_residual_streams', 'num_residual_fracs'):
        if int(model.get(key) or 1) != 1:
            raise PackageError(f"the config of {where} sets {key}={model[key]} "
                               f"(hyper-connections), which separator's RoFormers do not have.")
    n_fft = int(model.get('stft_n_fft', 2048))
    window = int(model.get('stft_win_length', n_fft))
    if window != n_fft:
        raise PackageError(f"the config of {where} has stft_win_length={window} != "
                           f"stft_n_fft={n_fft}: separator's STFT windows are n_fft long.")


def source_names(config: dict, num_stems: int, where: str) -> tp.List[str]:
    """`training: target_instrument` (one stem) or `training: instruments`."""
    training = config.get('training') if isinstance(config.get('training'), dict) else {}
    target = training.get('target_instrument')
    if target is not None and num_stems == 1:
        return [str(target)]
    instruments = training.get('instruments')
    if not isinstance(instruments, (list, tuple)) or len(instruments) != num_stems:
        raise PackageError(f"the config of {where} must name its {num_stems} source(s): "
                           f"training.instruments (in the order of the mask estimators) or "
                           f"training.target_instrument (one stem); got instruments="
                           f"{instruments!r}, target_instrument={target!r}.")
    return [str(name) for name in instruments]


def is_mel(model: dict, arch: dict) -> bool:
    """Mel-RoFormer (`num_bands`) or BS-RoFormer (`freqs_per_bands`), else from the weights."""
    if 'num_bands' in model or 'freqs_per_bands' in model:
        return 'num_bands' in model
    return not arch['final_norm']


def whole(value: float) -> tp.Union[int, float]:
    """An int if `value` is a whole number (for readable package arguments)."""
    return int(value) if float(value).is_integer() else float(value)


def model_kwargs(config: dict, arch: dict, where: str) -> tp.Tuple[str, dict]:
    """The registry name and arguments of our model, from the config and the tensors."""
    model = model_section(config, where, arch)
    refuse_options(model, where)
    mel = is_mel(model, arch)
    dim = agree('dim', model.get('dim'), arch['dim'], where)
    depths = arch['depths']
    heads = arch['heads'] or int(model.get('heads', 8))
    if arch['qkv'] % (3 * heads):
        raise PackageError(f"{where}: to_qkv has {arch['qkv']} outputs, not a multiple of 3 x "
                           f"heads={heads}: check model.heads in the config.")
    dim_head = arch['qkv'] // (3 * heads)
    if arch['linear_heads'] not in (None, heads):
        raise PackageError(f"{where}: the linear attention has {arch['linear_heads']} heads, "
                           f"the others {heads}: not a layout separator's RoFormers have.")
    hidden = arch['mask_hidden']
    mask_mult = whole(hidden / dim) if hidden else model.get('mlp_expansion_factor', 4)
    if hidden:
        if int(mask_mult * dim) != hidden:
            raise PackageError(f"{where}: mask MLPs of {hidden} hidden features for dim {dim} "
                               f"are not a multiple separator can build.")
        agree('mlp_expansion_factor', model.get('mlp_expansion_factor'), mask_mult, where)
    ff_mult = whole(arch['ff_mult'])
    if int(ff_mult * dim) != arch['ff_mult'] * dim:
        raise PackageError(f"{where}: feed-forwards of {arch['ff_mult'] * dim:g} hidden "
                           f"features for dim {dim} are not a multiple separator can build.")
    audio = config.get('audio') if isinstance(config.get('audio'), dict) else {}
    samplerate = int(model.get('sample_rate') or audio.get('sample_rate') or 44100)
    segment = float(audio['chunk_size']) / samplerate if audio.get('chunk_size') else 8.
    attn_dropout = float(model.get('attn_dropout', 0.1 if mel else 0.))
    ff_dropout = float(model.get('ff_dropout', 0.1 if mel else 0.))
    # MSST's MLP(depth): Mel-RoFormer's has `depth` hidden layers, BS-RoFormer's depth - 1
    mask_depth = model.get('mask_estimator_depth')
    agree('mask_estimator_depth', None if mask_depth is None else int(mask_depth),
          arch['mask_layers'] + (0 if mel else 1), where)
    kwargs = {
        'sources': source_names(config, agree('num_stems', model.get('num_stems'),
                                              arch['num_stems'], where), where),
        'audio_channels': 2 if model.get('stereo', False) else 1,
        'samplerate': samplerate, 'segment': segment, 'dim': dim,
        'depth': agree('depth', model.get('depth'), arch['depth'], where),
        'heads': agree('heads', model.get('heads'), heads, where),
        'dim_head': agree('dim_head', model.get('dim_head'), dim_head, where),
        'ff_mult': ff_mult,
        'dropout': attn_dropout, 'ff_dropout': ff_dropout, 'mask_mult': mask_mult,
        'n_fft': int(model.get('stft_n_fft', 2048)),
        'hop_length': int(model.get('stft_hop_length', 512)),
        'rms_style': 'l2', 'rotary_style': 'interleaved', 'attn_gates': arch['gates'],
        'value_residual': arch['value_residual'],
        'time_depth': agree('time_transformer_depth', model.get('time_transformer_depth'),
                            depths['time'], where),
        'band_depth': agree('freq_transformer_depth', model.get('freq_transformer_depth'),
                            depths['band'], where),
        'linear_depth': agree('linear_transformer_depth',
                              model.get('linear_transformer_depth') or None,
                              depths.get('linear', 0) or None, where) or 0,
        'transformer_norm': arch['transformer_norm'], 'final_norm': arch['final_norm'],
        'skip_connections': bool(model.get('skip_connection', False)),
        'mask_norm': False, 'mask_layers': arch['mask_layers'],
        'zero_dc': bool(model.get('zero_dc', True)),
    }
    if mel:
        kwargs['num_bands'] = agree('num_bands', model.get('num_bands'), len(arch['widths']),
                                    where)
    else:
        channels, bins = kwargs['audio_channels'], kwargs['n_fft'] // 2 + 1
        if sum(arch['widths']) != 2 * channels * bins:
            raise PackageError(
                f"the band split of {where} takes {sum(arch['widths'])} features, not 2 x "
                f"{channels} channel(s) x {bins} bins (stft_n_fft={kwargs['n_fft']}): check "
                f"stereo and stft_n_fft in the config.")
        kwargs['freqs_per_bands'] = [width // (2 * channels) for width in arch['widths']]
        given = model.get('freqs_per_bands')
        agree('freqs_per_bands', None if given is None else [int(v) for v in given],
              kwargs['freqs_per_bands'], where)
    return ('mel_roformer' if mel else 'bs_roformer'), kwargs


# ------------------------------------------------------------------ names

ATTENTION = {'norm.gamma': 'attn.norm.weight', 'to_qkv.weight': 'attn.to_qkv.weight',
             'to_gates.weight': 'attn.to_gates.weight', 'to_gates.bias': 'attn.to_gates.bias',
             'to_out.0.weight': 'attn.to_out.weight',
             'to_value_residual_mix.weight': 'attn.to_value_mix.weight',
             'to_value_residual_mix.bias': 'attn.to_value_mix.bias',
             # linear attention
             'to_qkv.0.weight': 'attn.to_qkv.weight', 'temperature': 'attn.temperature',
             'to_out.1.weight': 'attn.to_out.weight'}
PATTERNS = (
    (r'band_split\.to_features\.(\d+)\.0\.gamma', 'band_split.projections.{0}.0.weight'),
    (r'band_split\.to_features\.(\d+)\.1\.(weight|bias)', 'band_split.projections.{0}.1.{1}'),
    (r'mask_estimators\.(\d+)\.to_freqs\.(\d+)\.0\.(\d+)\.(weight|bias)',
     'mask_estimators.{0}.mlps.{1}.{2}.{3}'),
    (r'final_norm\.gamma', 'final_norm.weight'),
)


def rename(state: tp.Dict[str, torch.Tensor], kinds: tp.Sequence[str], model: tp.Any,
           where: str) -> tp.Dict[str, torch.Tensor]:
    """Our state dict: lucidrains' names mapped onto the modules of `model` (built on the
    meta device from the package's arguments), float32."""
    renamed, unknown = {}, []
    for key, value in state.items():
        name = our_name(key, kinds, model)
        if name is None:
            if not key.endswith('.rotary_embed.freqs'):
                unknown.append(key)
            continue
        renamed[name] = value.float() if value.is_floating_point() else value
    if unknown:
        raise PackageError(f"{where} has tensors the RoFormer importer does not know "
                           f"({', '.join(unknown[:4])}): a RoFormer variant separator does not "
                           f"support.")
    return renamed


def our_name(key: str, kinds: tp.Sequence[str], model: tp.Any) -> tp.Optional[str]:
    """Our name of lucidrains' tensor `key`, None if unknown."""
    for pattern, template in PATTERNS:
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(*match.groups())
    match = re.fullmatch(r'layers\.(\d+)\.(\d+)\.norm\.gamma', key)
    if match:
        block, kind = int(match.group(1)), kinds[int(match.group(2))]
        return f'blocks.{block}.{kind}_transformer.norm.weight'
    match = re.fullmatch(r'layers\.(\d+)\.(\d+)\.layers\.(\d+)\.([01])\.(.+)', key)
    if not match:
        return None
    block, kind, layer = int(match.group(1)), kinds[int(match.group(2))], int(match.group(3))
    prefix, rest = model.layer_name(block, kind, layer), match.group(5)
    if match.group(4) == '0':
        return f'{prefix}.{ATTENTION[rest]}' if rest in ATTENTION else None
    match = re.fullmatch(r'net\.(\d+)\.(gamma|weight|bias)', rest)
    if not match:
        return None
    return f"{prefix}.ff.{match.group(1)}.{match.group(2).replace('gamma', 'weight')}"


def check_bands(model: tp.Any, arch: dict, where: str) -> None:
    """Our bands must have the checkpoint's widths (mel bands: same filters as librosa's)."""
    ours = band_widths(model.bands, model.audio_channels)
    if ours != arch['widths']:
        diff = next(k for k, (a, b) in enumerate(zip(ours + [0] * len(arch['widths']),
                                                     arch['widths'])) if a != b)
        raise PackageError(
            f"{where}: band {diff} has {arch['widths'][diff]} input features in the weights but "
            f"{ours[diff] if diff < len(ours) else 0} in the model the config describes "
            f"({len(ours)} bands): check stereo, stft_n_fft, sample_rate, num_bands / "
            f"freqs_per_bands in the config.")


# ------------------------------------------------------------------ convert

def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """A `bs_roformer` / `mel_roformer` package from a lucidrains-style RoFormer state dict
    and its MSST yaml config (see the module docstring)."""
    from ..models import roformer   # the models import nothing of the importers
    where = 'the checkpoint'
    raw = raw_state(data)
    if raw is None:
        raise PackageError(f"{where} holds no state dict (a dict of tensors, or one under "
                           f"{', '.join(WRAPPERS)}): not a RoFormer checkpoint.")
    state = {canonical(key): value for key, value in raw.items()}
    arch = architecture(state, where, any('.branch.' in key for key in raw))
    name, kwargs = model_kwargs(config, arch, where)
    klass = roformer.MelRoFormer if name == 'mel_roformer' else roformer.BSRoFormer
    try:
        with torch.device('meta'):
            model = klass(**kwargs)
    except ValueError as error:
        raise PackageError(f"the config of {where} does not describe a model separator can "
                           f"build: {error}") from None
    check_bands(model, arch, where)
    check_rotary(state, kwargs['dim_head'], where)
    renamed = rename(state, arch['kinds'], model, where)
    wrong = [f"{key} {tuple(renamed[key].shape)} (model: {tuple(value.shape)})"
             for key, value in model.state_dict().items()
             if key in renamed and renamed[key].shape != value.shape]
    if wrong:
        raise PackageError(f"{where}: tensors of other shapes than the config gives "
                           f"({'; '.join(wrong[:3])}): is it the config of these weights?")
    return {'model': name, 'kwargs': kwargs, 'state': renamed}
