"""MDX23C checkpoints (ZFTurbo's Music-Source-Separation-Training, `model_type mdx23c`: the
TFC-TDF U-Net v3 of `models/mdx23c_tfc_tdf_v3.py`, also shipped by `audio-separator` as
`uvr_lib_v5/tfc_tdf_v3.py`) as `tfc_tdf` packages (`separator.models.tfc_tdf`, written
from that model).

**The file** is a bare state dict (MSST saves `model.state_dict()`), or one under
`state_dict`, `state` or `model_state_dict`; DDP's `module.` prefix is dropped. Its names:
`first_conv`, `encoder_blocks.I.{tfc_tdf.blocks.J, downscale.conv}`, `bottleneck_block.
blocks.J`, `decoder_blocks.I.{upscale.conv, tfc_tdf.blocks.J}`, `final_conv`; each unit
`J` has `tfc1`, `tdf` (norm, act, Linear, norm, act, Linear: indices 0-5), `tfc2` and
`shortcut`. Ours are the same tree under `encoder.I.{block.J, downscale}`, `bottleneck.J`,
`decoder.I.{upscale, block.J}`, the TDF split in `tdf.squeeze` / `tdf.expand`.

**The config** (MSST's yaml, `--config` / `continue_config=`) is required: the weights carry
no STFT, sample rate or source names. Read: `audio: n_fft, hop_length, dim_f, num_channels
(audio channels), sample_rate, chunk_size` (the segment); `model: num_subbands, num_scales,
scale, num_blocks_per_scale, num_channels, growth, bottleneck_factor, norm, act`;
`training: target_instrument` (one source, MSST's single-stem models) or `instruments`.
Each size the tensors show (channels, scales, units per scale, growth, scale, bins per
subband, TDF width, sources, norm layers) is checked against the config, and a disagreement
is refused naming the key. `norm`: InstanceNorm, BatchNorm, GroupNorm<groups>; missing,
null or any other name is no norm (what the reference builds), provided the weights have no
norm tensors. `act`: gelu (the default), relu, elu<alpha>; others are refused (the reference
has no others).

**The STFT**: the reference's is not normalised, ours is (scaled by 1/sqrt(n_fft), and the
iSTFT by sqrt(n_fft)). The network is linear and bias-free where the spectrogram enters it
(`first_conv`, and the mixture's columns of `final_conv.0`) and leaves it (`final_conv.2`),
so the scale is folded into those weights (x sqrt(n_fft) in, / sqrt(n_fft) out) and the
imported model computes exactly what the reference computes.

**Inputs**: the reference separates one chunk of `audio.chunk_size` samples
(`(frames - 1) * hop_length`, frames a multiple of `scale[0] ** num_scales`), where our model
does not pad and both agree; ours takes any length (it pads to such a length).
The reference's iSTFT assumes stereo (its output is `[..., 2, T]`); mono models are imported
(our model separates them) but have no reference output to compare with.

Checked: `tests/test_import_mdx23c.py` (audio-separator 0.47.1's copy of the reference code).
"""
import logging
import re
import typing as tp

import torch

from ..states import PackageError
from .roformer import raw_state

logger = logging.getLogger(__name__)

FORMAT = 'mdx23c'

CONFIG_FIX = ("give its Music-Source-Separation-Training yaml (`configs/config_*mdx23c*.yaml`, "
              "the one it was trained with) with --config (tools.import_weights) or "
              "continue_config=YAML")
# Names only the MDX23C model has.
MARKERS = ('first_conv.weight', 'final_conv.0.weight', 'final_conv.2.weight')
MARKER_PREFIXES = ('encoder_blocks.0.tfc_tdf.blocks.0.', 'bottleneck_block.blocks.0.')
MODEL_KEYS = ('num_subbands', 'num_scales', 'scale', 'num_blocks_per_scale', 'num_channels',
              'growth', 'bottleneck_factor', 'norm', 'act')
NORMS = ('InstanceNorm', 'BatchNorm', 'GroupNorm<groups>')
UNITS = 'encoder_blocks.0.tfc_tdf.blocks.'     # the units of the first TFC-TDF block
UNIT = f'{UNITS}0'                             # the first TFC-TDF unit
FIRST_TDF = f'{UNIT}.tdf.2.weight'             # its first TDF Linear: [f / bn, f]
DOWNSCALE = 'encoder_blocks.0.downscale.conv.2.weight'


# ------------------------------------------------------------------ the state dict

def state_of(data: tp.Any) -> tp.Optional[tp.Dict[str, torch.Tensor]]:
    """The weights of a checkpoint (without DDP's `module.`), None if `data` holds no state
    dict."""
    state = raw_state(data)
    if state is None:
        return None
    return {(key[len('module.'):] if key.startswith('module.') else key): value
            for key, value in state.items()}


def matches(data: tp.Any) -> bool:
    """Whether `data` holds MDX23C (TFC-TDF v3) weights under MSST's names."""
    state = state_of(data)
    return (state is not None and all(name in state for name in MARKERS)
            and all(any(key.startswith(prefix) for key in state)
                    for prefix in MARKER_PREFIXES))


def count(state: tp.Dict[str, torch.Tensor], pattern: str) -> int:
    """1 + the largest index the group of `pattern` (a regex of whole names) takes, 0 if no
    name matches."""
    found = [int(match.group(1)) for key in state for match in [re.match(pattern, key)]
             if match]
    return 1 + max(found) if found else 0


def architecture(state: tp.Dict[str, torch.Tensor], where: str) -> dict:
    """What the tensors say of the model: sizes, scales, units, norm layers, outputs."""
    try:
        first, down = state['first_conv.weight'], state[DOWNSCALE]
        tdf, final = state[FIRST_TDF], state['final_conv.2.weight']
    except KeyError as error:
        raise PackageError(f"{where}: the tensor {error.args[0]} is missing: not a complete "
                           f"MDX23C (TFC-TDF v3) state dict.") from None
    norm_weight = f'{UNIT}.tfc1.0.weight'
    return {
        'spec_channels': first.shape[1],        # 2 x audio channels x subbands
        'num_channels': first.shape[0],
        'num_scales': count(state, r'encoder_blocks\.(\d+)\.'),
        'num_blocks_per_scale': count(state, re.escape(UNITS) + r'(\d+)\.'),
        'growth': down.shape[0] - down.shape[1],
        'scale': [int(size) for size in down.shape[2:]],
        'freqs': tdf.shape[1],                  # dim_f / subbands
        'tdf_hidden': tdf.shape[0],             # freqs / bottleneck_factor
        'outputs': final.shape[0],              # sources x spec_channels
        'norm_layers': norm_weight in state,
        'running_stats': f'{UNIT}.tfc1.0.running_mean' in state,
    }


# ------------------------------------------------------------------ the config

def section(config: dict, name: str, where: str) -> dict:
    """The config's `name:` section (a mapping); PackageError naming it if it is missing."""
    value = config.get(name)
    if not isinstance(value, dict):
        raise PackageError(f"the config of {where} has no `{name}:` section (MSST's MDX23C "
                           f"yaml has audio:, model: and training:): {CONFIG_FIX}.")
    return value


def required(values: dict, section_name: str, key: str, where: str) -> tp.Any:
    """`values[key]`; PackageError naming `section.key` if it is missing or null."""
    if values.get(key) is None:
        raise PackageError(f"the config of {where} has no {section_name}.{key} (MSST's MDX23C "
                           f"yaml has it): {CONFIG_FIX}.")
    return values[key]


def integer(values: dict, section_name: str, key: str, where: str) -> int:
    """A required whole-number entry; PackageError naming it otherwise."""
    value = required(values, section_name, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise PackageError(f"the config's {section_name}.{key} is {value!r}, not a whole "
                           f"number.")
    return int(value)


def agree(key: str, given: tp.Any, found: tp.Any, where: str, meaning: str = '') -> None:
    """PackageError naming the key if the config's `given` is not what the tensors show."""
    if given != found:
        shown = f" ({meaning})" if meaning else ''
        raise PackageError(f"the config's {key} is {given!r} but the weights of {where} have "
                           f"{found!r}{shown}: is it the config of these weights?")


def source_names(config: dict, where: str) -> tp.List[str]:
    """`training.target_instrument` (one source) if set, else `training.instruments`: as
    the reference counts its outputs."""
    training = section(config, 'training', where)
    target = training.get('target_instrument')
    if target:
        return [str(target)]
    instruments = training.get('instruments')
    if not isinstance(instruments, (list, tuple)) or not instruments:
        raise PackageError(f"the config of {where} must name its sources: "
                           f"training.instruments (in the order of the outputs) or "
                           f"training.target_instrument (one source); got instruments="
                           f"{instruments!r}.")
    return [str(name) for name in instruments]


def our_norm(model: dict, arch: dict, where: str) -> str:
    """Our `norm` for the config's `model.norm`, checked against the weights' norm layers."""
    norm = model.get('norm')
    known = isinstance(norm, str) and (norm in ('InstanceNorm', 'BatchNorm')
                                       or 'GroupNorm' in norm)
    if not known:
        # the reference builds no norm for a missing, null or unknown name
        if arch['norm_layers']:
            raise PackageError(f"the weights of {where} have norm layers ({UNIT}.tfc1.0.weight) "
                               f"but the config's model.norm is {norm!r}, which the reference "
                               f"reads as no norm: set model.norm ({', '.join(NORMS)}).")
        return 'none'
    if 'GroupNorm' in norm and not re.fullmatch(r'GroupNorm\d+', norm):
        raise PackageError(f"the config's model.norm is {norm!r}: separator's tfc_tdf has "
                           f"GroupNorm<groups> (e.g. GroupNorm4) only.")
    if not arch['norm_layers']:
        raise PackageError(f"the config's model.norm is {norm!r} but the weights of {where} "
                           f"have no norm layers ({UNIT}.tfc1.0.weight): is it the config of "
                           f"these weights?")
    if arch['running_stats'] != (norm == 'BatchNorm'):
        found = 'BatchNorm' if arch['running_stats'] else 'InstanceNorm or GroupNorm'
        agree('model.norm', norm, found, where, 'running statistics or not')
    return norm


def our_act(model: dict) -> str:
    """Our `act` for the config's `model.act` (the reference's default: gelu)."""
    act = model.get('act', 'gelu')
    if act in ('gelu', 'relu') or (isinstance(act, str) and re.fullmatch(
            r'elu(\d+(\.\d*)?|\.\d+)', act)):
        return act
    raise PackageError(f"the config's model.act is {act!r}, which neither the reference nor "
                       f"separator's tfc_tdf has: use gelu, relu or elu<alpha> (e.g. elu1.0).")


def model_kwargs(config: tp.Optional[dict], arch: dict, where: str) -> dict:
    """The arguments of our `tfc_tdf` model, from the config, checked against the tensors."""
    if config is None:
        raise PackageError(f"{where} is an MDX23C (TFC-TDF v3) state dict without its STFT, "
                           f"sample rate and source names: {CONFIG_FIX}.")
    audio, model = section(config, 'audio', where), section(config, 'model', where)
    unknown = sorted(set(model) - set(MODEL_KEYS))
    if unknown:
        logger.warning("%s: config keys model.%s are not known to the MDX23C importer and "
                       "were ignored.", where, ', model.'.join(unknown))
    kwargs: tp.Dict[str, tp.Any] = {'sources': source_names(config, where)}
    for key in ('n_fft', 'hop_length', 'dim_f'):
        kwargs[key] = integer(audio, 'audio', key, where)
    for key in ('num_subbands', 'num_scales', 'num_blocks_per_scale', 'num_channels',
                'growth', 'bottleneck_factor'):
        kwargs[key] = integer(model, 'model', key, where)
    scale = required(model, 'model', 'scale', where)
    if not isinstance(scale, (list, tuple)) or len(scale) != 2:
        raise PackageError(f"the config's model.scale is {scale!r}, not a (time, frequency) "
                           f"pair such as [2, 2].")
    kwargs['scale'] = [int(step) for step in scale]
    channels = int(audio.get('num_channels', 2))
    samplerate = int(audio.get('sample_rate', 44100))
    kwargs.update(audio_channels=channels, samplerate=samplerate,
                  segment=float(integer(audio, 'audio', 'chunk_size', where)) / samplerate,
                  norm=our_norm(model, arch, where), act=our_act(model))
    check_sizes(kwargs, arch, where)
    return kwargs


def check_sizes(kwargs: dict, arch: dict, where: str) -> None:
    """PackageError naming the config key whose value the tensors contradict."""
    for key in ('num_channels', 'num_scales', 'num_blocks_per_scale', 'growth', 'scale'):
        agree(f'model.{key}', kwargs[key], arch[key], where)
    subbands = kwargs['num_subbands']
    spec = 2 * kwargs['audio_channels'] * subbands
    agree('2 x audio.num_channels x model.num_subbands', spec, arch['spec_channels'], where,
          'the input channels of first_conv')
    agree('audio.dim_f / model.num_subbands', kwargs['dim_f'] // subbands, arch['freqs'],
          where, f'the input features of {FIRST_TDF}')
    hidden = arch['freqs'] // kwargs['bottleneck_factor']
    if hidden != arch['tdf_hidden']:
        raise PackageError(
            f"the config's model.bottleneck_factor={kwargs['bottleneck_factor']} gives TDFs "
            f"of {hidden} hidden features but the weights of {where} have "
            f"{arch['tdf_hidden']} ({FIRST_TDF}): is it the config of these weights?")
    sources = len(kwargs['sources'])
    if sources * spec != arch['outputs']:
        raise PackageError(
            f"the weights of {where} output {arch['outputs'] / spec:g} source(s) "
            f"(final_conv.2: {arch['outputs']} channels of {spec}) but the config names "
            f"{sources} ({', '.join(kwargs['sources'])}): check training.target_instrument "
            f"and training.instruments.")


# ------------------------------------------------------------------ names

UNIT_NAMES = {'tdf.0': 'tdf.squeeze.0', 'tdf.2': 'tdf.squeeze.2', 'tdf.3': 'tdf.expand.0',
              'tdf.5': 'tdf.expand.2'}
PATTERNS = (
    (r'encoder_blocks\.(\d+)\.tfc_tdf\.blocks\.(\d+)\.(.+)', 'encoder.{0}.block.{1}.{2}'),
    (r'encoder_blocks\.(\d+)\.downscale\.conv\.(.+)', 'encoder.{0}.downscale.{1}'),
    (r'bottleneck_block\.blocks\.(\d+)\.(.+)', 'bottleneck.{0}.{1}'),
    (r'decoder_blocks\.(\d+)\.upscale\.conv\.(.+)', 'decoder.{0}.upscale.{1}'),
    (r'decoder_blocks\.(\d+)\.tfc_tdf\.blocks\.(\d+)\.(.+)', 'decoder.{0}.block.{1}.{2}'),
    (r'(first_conv\..+|final_conv\..+)', '{0}'),
)


# ours -> theirs: to name the reference's tensors in errors
INVERSE = (
    (r'encoder\.(\d+)\.block\.(\d+)\.(.+)', 'encoder_blocks.{0}.tfc_tdf.blocks.{1}.{2}'),
    (r'encoder\.(\d+)\.downscale\.(.+)', 'encoder_blocks.{0}.downscale.conv.{1}'),
    (r'bottleneck\.(\d+)\.(.+)', 'bottleneck_block.blocks.{0}.{1}'),
    (r'decoder\.(\d+)\.upscale\.(.+)', 'decoder_blocks.{0}.upscale.conv.{1}'),
    (r'decoder\.(\d+)\.block\.(\d+)\.(.+)', 'decoder_blocks.{0}.tfc_tdf.blocks.{1}.{2}'),
)


def our_name(key: str) -> tp.Optional[str]:
    """Our name of the reference's tensor `key`, None if it is not one of the model's."""
    for pattern, template in PATTERNS:
        match = re.fullmatch(pattern, key)
        if match:
            name = template.format(*match.groups())
            for theirs, ours in UNIT_NAMES.items():
                if f'.{theirs}.' in name:
                    return name.replace(f'.{theirs}.', f'.{ours}.')
            return name
    return None


def their_name(name: str) -> str:
    """The reference's name of our tensor `name` (the inverse of `our_name`)."""
    for ours, theirs in UNIT_NAMES.items():
        name = name.replace(f'.{theirs}.', f'.{ours}.')
    for pattern, template in INVERSE:
        match = re.fullmatch(pattern, name)
        if match:
            return template.format(*match.groups())
    return name


def rename(state: tp.Dict[str, torch.Tensor], where: str) -> tp.Dict[str, torch.Tensor]:
    """Our state dict (float32): every tensor of the reference under exactly one name."""
    renamed: tp.Dict[str, torch.Tensor] = {}
    unknown = [key for key in state if our_name(key) is None]
    if unknown:
        raise PackageError(f"{where} has tensors the MDX23C importer does not know "
                           f"({', '.join(unknown[:4])}): not MSST's mdx23c model.")
    for key, value in state.items():
        renamed[our_name(key)] = value.float() if value.is_floating_point() else value
    assert len(renamed) == len(state), "two tensors of the reference under one name"
    return renamed


def check_tensors(renamed: tp.Dict[str, torch.Tensor], expected: tp.Dict[str, torch.Tensor],
                  where: str) -> None:
    """PackageError naming (in the reference's names) the tensors the model the config
    describes has and the checkpoint lacks, or has with another shape."""
    missing = [their_name(key) for key in expected if key not in renamed]
    if missing:
        raise PackageError(f"{where} lacks {len(missing)} tensor(s) of the model its config "
                           f"describes ({', '.join(missing[:3])}): a truncated checkpoint, or "
                           f"not the config of these weights.")
    wrong = [f"{their_name(key)} {tuple(renamed[key].shape)} (the config's model: "
             f"{tuple(value.shape)})" for key, value in expected.items()
             if key in renamed and renamed[key].shape != value.shape]
    if wrong:
        raise PackageError(f"{where}: tensors of other shapes than the config gives "
                           f"({'; '.join(wrong[:3])}): is it the config of these weights?")


def fold_stft_scale(state: tp.Dict[str, torch.Tensor], n_fft: int, spec_channels: int
                    ) -> None:
    """Fold our normalised STFT's 1/sqrt(n_fft) into the weights, in place (module doc)."""
    scale = n_fft ** 0.5
    state['first_conv.weight'] = state['first_conv.weight'] * scale
    final_in = state['final_conv.0.weight'].clone()
    final_in[:, :spec_channels] *= scale          # the mixture's channels come first
    state['final_conv.0.weight'] = final_in
    state['final_conv.2.weight'] = state['final_conv.2.weight'] / scale


# ------------------------------------------------------------------ convert

def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """A `tfc_tdf` package from an MSST MDX23C state dict and its yaml (module docstring)."""
    from ..models.tfc_tdf import TFCTDFNet   # the models import nothing of the importers
    where = 'the checkpoint'
    state = state_of(data)
    if state is None:
        raise PackageError(f"{where} holds no state dict (a dict of tensors, or one under "
                           f"state_dict, state or model_state_dict): not an MDX23C checkpoint.")
    arch = architecture(state, where)
    kwargs = model_kwargs(config, arch, where)
    try:
        with torch.device('meta'):
            model = TFCTDFNet(**kwargs)
    except ValueError as error:
        raise PackageError(f"the config of {where} does not describe a model separator's "
                           f"tfc_tdf can build: {error}") from None
    renamed = rename(state, where)
    check_tensors(renamed, model.state_dict(), where)
    fold_stft_scale(renamed, kwargs['n_fft'], arch['spec_channels'])
    return {'model': 'tfc_tdf', 'kwargs': kwargs, 'state': renamed}
