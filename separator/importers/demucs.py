"""Demucs release packages (`HTDemucs`, `HDemucs`, `Demucs`) as separator packages, and back.

A Demucs package is what `demucs.states.serialize_model` returns, written with `torch.save`
(the `SIG.th` / `SIG-CHECKSUM.th` files of a Demucs repository)::

    {'klass': <the model class, pickled by reference: demucs.htdemucs.HTDemucs...>,
     'args': [], 'kwargs': {...}, 'state': {...}, 'training_args': {...}}

`state` is a state dict (float16 by default), or DiffQ's bit-packed quantized state marked
`'__quantized': True` (the `*_q` releases). Released packages also pickle
`fractions.Fraction` (a segment) and numpy scalars and dtypes.

**Reading is data only.** Nothing a package names is imported: `SAFE_GLOBALS` lets through
`torch.load(weights_only=True)` inert placeholder classes of our own whose
`__module__`/`__qualname__` are the names the pickles use (`DemucsClass` for the model
classes, `QuantizerClass` for diffq's quantizers); `fractions.Fraction` and numpy scalars
become numbers. `demucs` need not be installed, and is not imported.

**Mapping.**

* `demucs.htdemucs.HTDemucs` -> our `htdemucs` with `compat='demucs'` (demucs' padding and
  positional embedding, `use_train_segment` as in the package): the same output as demucs'
  own model to float error. The layers are renamed (`encoder` -> `freq_encoder`,
  `tencoder` -> `time_encoder`, decoders reversed, `crosstransformer.layers` ->
  `transformer.freq_layers`...) and two are laid out differently: the frequency embedding
  (`[F, C]` there, `[C, F]` here) and the 1x1 bottom convs of the frequency branch (1d
  there, 2d here).
* `demucs.hdemucs.HDemucs` (and `demucs.wdemucs.WDemucs`, its old name) -> our `hdemucs`
  with `compat='demucs'` (`'demucs_old'` for `hybrid_old=True`); demucs' `dconv_lstm` /
  `dconv_attn` (first layer with them) become our counts.
* `demucs.demucs.Demucs` (time domain, v2/v3) -> our `demucs`, whose arguments and state
  names are demucs' own: the same kwargs and state.

What our models do not have is refused with the kwarg and the value that cannot be
imported (`rewrite=False`, `multi_freqs`, `channels_time`, `dconv_mode` other than 1,
sparse attention, `t_emb` other than 'sin', Wiener filtering with iterations, `hybrid=False`
...). With `cac=False` and `wiener_iters=0` (demucs' default) demucs gives the magnitudes the
mixture's phase through an `atan2`, we by a division: the same up to float error.

A quantized state is dequantized (with `diffq`, which must be installed): the package holds
float weights, those demucs computes with. The package keeps what it came from in `demucs`:
`{'klass': the class path, 'training_args': the package's, as plain data}`.

**Bags** (`htdemucs_ft.yaml`: `models: [SIG...]`, optional `weights`, `segment`, next to the
`SIG.th` or `SIG-CHECKSUM.th` files): `import_bag` writes our bag, `OUT/NAME.yaml` listing
`OUT/SIG.th` (`separator.pretrained`).

**Back to demucs.** `to_demucs_package(package)` turns one of our `htdemucs` / `hdemucs`
(compat 'demucs') or `demucs` packages into a Demucs package; `save_demucs_package` writes it
so that its `klass` is pickled by name as the real demucs class (without importing demucs):
`demucs.states.load_model(path)` and `demucs --repo DIR -n NAME` load it and compute what our
model computes; `write_demucs_package` names it `SIG-CHECKSUM.th` in a Demucs repository.
"""
import fractions
import hashlib
import inspect
import io
import logging
import math
import pickle
import re
import typing as tp
from pathlib import Path

import numpy as np
import torch
import yaml

from ..atomic import atomic_file
from ..models import MODELS
from ..states import (DIFFQ_SUFFIX, QUANTIZED, PackageError, atomic_save, build_model,
                      load_model)

logger = logging.getLogger(__name__)

FORMAT = 'demucs'


# ------------------------------------------------------------------ placeholders

class DemucsClass:
    """Stands for a model class a Demucs package names in `klass`: an inert value, never
    built (a pickle that calls it gets an inert instance). `path` is the class path,
    `model` our registry name for it."""
    path = ''
    model = ''

    def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        pass


def _demucs_class(module: str, name: str, model: str) -> type:
    return type(name, (DemucsClass,), {'__module__': module, '__qualname__': name,
                                       'path': f'{module}.{name}', 'model': model})


HTDEMUCS = _demucs_class('demucs.htdemucs', 'HTDemucs', 'htdemucs')
HDEMUCS = _demucs_class('demucs.hdemucs', 'HDemucs', 'hdemucs')
WDEMUCS = _demucs_class('demucs.wdemucs', 'WDemucs', 'hdemucs')   # HDemucs' former name
DEMUCS = _demucs_class('demucs.demucs', 'Demucs', 'demucs')
MODEL_CLASSES = (HTDEMUCS, HDEMUCS, WDEMUCS, DEMUCS)
EXPORT_CLASSES = {'htdemucs': HTDEMUCS, 'hdemucs': HDEMUCS, 'demucs': DEMUCS}


class QuantizerClass(DemucsClass):
    """Stands for the diffq quantizer class a quantized state names in its `meta`."""


DIFFQ = type('DiffQuantizer', (QuantizerClass,), {
    '__module__': 'diffq.diffq', '__qualname__': 'DiffQuantizer',
    'path': 'diffq.diffq.DiffQuantizer', 'model': 'DiffQuantizer'})
UNIFORMQ = type('UniformQuantizer', (QuantizerClass,), {
    '__module__': 'diffq.uniform', '__qualname__': 'UniformQuantizer',
    'path': 'diffq.uniform.UniformQuantizer', 'model': 'UniformQuantizer'})


try:   # one placeholder per pickled name across the importers (the allowlist is by name)
    from .spleeter import PickledDtype
except ImportError:   # pragma: no cover - the spleeter importer is there
    class PickledDtype:   # type: ignore[no-redef]
        """Stands for `numpy.dtype(code, align, copy)`: records the code and the state."""

        def __init__(self, code: str = '', align: bool = False, copy: bool = True):
            self.code = code
            self.state: tp.Any = None

        def __setstate__(self, state: tp.Any) -> None:
            self.state = state


NUMERIC_KINDS = 'biuf'   # numpy dtype kinds a pickled scalar may have


def pickled_scalar(dtype: tp.Any, data: tp.Any = b'') -> tp.Union[bool, int, float]:
    """Stands for `numpy.core.multiarray.scalar(dtype, bytes)`: the Python number."""
    code = getattr(dtype, 'code', None)
    state = getattr(dtype, 'state', None)
    order = state[1] if isinstance(state, tuple) and len(state) > 1 else '|'
    try:
        np_dtype = np.dtype((order if order in '<>' else '') + str(code))
    except TypeError:
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {code!r}") from None
    if np_dtype.kind not in NUMERIC_KINDS or not isinstance(data, (bytes, bytearray)) \
            or len(data) != np_dtype.itemsize:
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {np_dtype} (numbers only)")
    return np.frombuffer(bytes(data), dtype=np_dtype)[0].item()


def pickled_fraction(numerator: tp.Any = 0, denominator: tp.Any = None) -> fractions.Fraction:
    """Stands for `fractions.Fraction(numerator, denominator)` (or `Fraction('39/5')`, as
    older Pythons pickle it), built from integers or a short string only."""
    if isinstance(numerator, str) and denominator is None and len(numerator) < 64:
        return fractions.Fraction(numerator)
    if type(numerator) is int and type(denominator) in (int, type(None)):
        return fractions.Fraction(numerator, 1 if denominator is None else denominator)
    raise pickle.UnpicklingError(f"fractions.Fraction({numerator!r}, {denominator!r})")


SAFE_GLOBALS = [
    *MODEL_CLASSES, DIFFQ, UNIFORMQ,
    (pickled_fraction, 'fractions.Fraction'),
    (pickled_scalar, 'numpy.core.multiarray.scalar'),
    (pickled_scalar, 'numpy._core.multiarray.scalar'),   # pickled by numpy >= 2
    (PickledDtype, 'numpy.dtype'),
]


def plain(value: tp.Any, key: str, strict: bool = True) -> tp.Any:
    """`value` in plain types: a Fraction as a float, tuples as lists; anything else that is
    not a number, string, list or dict raises a PackageError naming `key` (with `strict`),
    or becomes its repr."""
    if isinstance(value, fractions.Fraction):
        return float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item, f'{key}[{index}]', strict) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {str(name): plain(item, f'{key}.{name}', strict)
                for name, item in value.items()}
    if not strict:
        return repr(value)
    raise PackageError(f"the Demucs package's {key} is a {type(value).__name__}, not a "
                       f"number, string, list or dict: it cannot be imported.")


def exact_segment(segment: tp.Any, samplerate: int) -> float:
    """`segment` as a float; a Fraction (demucs' HTDemucs computes its training length
    `int(segment * samplerate)` exactly from it) as the float that gives the same length."""
    value = float(segment)
    if not isinstance(segment, fractions.Fraction):
        return value
    target = int(segment * samplerate)
    while int(value * samplerate) < target:
        value = math.nextafter(value, math.inf)
    while int(value * samplerate) > target:
        value = math.nextafter(value, -math.inf)
    return value


# ------------------------------------------------------------------ recognising a package

def matches(data: tp.Any) -> bool:
    """A Demucs package: a dict whose `klass` is one of the Demucs model classes."""
    return isinstance(data, dict) and data.get('klass') in MODEL_CLASSES and 'state' in data


def model_klass(data: tp.Any) -> type:
    """The Demucs model class (placeholder) a package names, checked."""
    if not isinstance(data, dict) or not {'klass', 'kwargs', 'state'} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise PackageError(f"not a Demucs package (a dict with klass, args, kwargs, state), "
                           f"got {keys}.")
    klass = data['klass']
    if not (isinstance(klass, type) and klass in MODEL_CLASSES):
        known = ', '.join(cls.path for cls in MODEL_CLASSES)
        name = getattr(klass, 'path', None) or repr(klass)
        raise PackageError(f"the Demucs package names the class {name}, not a Demucs model "
                           f"({known}): it is not imported, and nothing it names is.")
    return klass


# Demucs' positional parameters, for packages whose `args` are not empty.
POSITIONAL = ['sources', 'audio_channels']


def package_kwargs(data: dict) -> dict:
    """The package's constructor arguments as plain keyword arguments."""
    args, kwargs = data.get('args') or [], data.get('kwargs') or {}
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict) \
            or len(args) > len(POSITIONAL):
        raise PackageError(f"the Demucs package's args {args!r} / kwargs are not a short list "
                           f"and a dict: it is not a package of demucs' serialize_model.")
    kwargs = {**dict(zip(POSITIONAL, args)), **kwargs}
    kwargs = plain(kwargs, 'kwargs')
    segment = data['kwargs'].get('segment')
    if isinstance(segment, (int, float, fractions.Fraction)):
        kwargs['segment'] = exact_segment(segment, kwargs.get('samplerate', 44100))
    return kwargs


# ------------------------------------------------------------------ kwargs

def _refuse(kwargs: dict, klass: str, allowed: tp.Dict[str, tp.Callable[[tp.Any], bool]]
            ) -> None:
    """PackageError naming the first kwarg whose value our model cannot reproduce."""
    for key, ok in allowed.items():
        if key in kwargs and not ok(kwargs[key]):
            raise PackageError(f"the Demucs {klass} has {key}={kwargs[key]!r}, which "
                               f"separator's model does not implement: it cannot be imported.")


def _wiener_ok(kwargs: dict) -> tp.Callable[[tp.Any], bool]:
    """Wiener filtering with iterations (cac=False only) is not ours: 0 and -1 are."""
    return lambda iters: kwargs.get('cac', True) or iters <= 0


COMMON_REFUSED = {
    'rewrite': lambda value: bool(value),
    'multi_freqs': lambda value: not value,
    'dconv_mode': lambda value: value == 1,
    'context_enc': lambda value: value == 0,
}


def _same_channels(kwargs: dict) -> tp.Callable[[tp.Any], bool]:
    return lambda value: value is None or value == kwargs.get('channels', 48)


def _check_padding(kwargs: dict, klass: str) -> None:
    """demucs pads its layers by kernel_size // 4, ours by (kernel_size - stride) // 2."""
    kernel, stride = kwargs.get('kernel_size', 8), kwargs.get('stride', 4)
    if kernel // 4 != (kernel - stride) // 2:
        raise PackageError(f"the Demucs {klass} has kernel_size={kernel}, stride={stride}: "
                           f"its layers pad by kernel_size // 4, separator's by "
                           f"(kernel_size - stride) // 2, which differ: it cannot be imported.")


# Our argument: demucs' (same meaning, same default unless given).
HT_SAME = ['sources', 'audio_channels', 'samplerate', 'segment', 'channels', 'growth', 'nfft',
           'depth', 'kernel_size', 'stride', 'cac', 'context', 'norm_starts', 'norm_groups',
           'dconv_depth', 'dconv_comp', 'dconv_init', 'freq_emb', 'emb_scale',
           'bottom_channels', 't_layers', 't_heads', 't_hidden_scale', 't_dropout',
           't_cross_first', 't_layer_scale', 't_norm_first', 't_norm_in', 't_norm_out',
           't_gelu', 't_max_period', 't_weight_pos_embed', 'rescale', 'use_train_segment']
H_SAME = ['sources', 'audio_channels', 'samplerate', 'segment', 'channels', 'growth', 'nfft',
          'depth', 'kernel_size', 'stride', 'time_stride', 'cac', 'context', 'norm_starts',
          'norm_groups', 'dconv_depth', 'dconv_comp', 'dconv_init', 'freq_emb', 'emb_scale',
          'rescale']


def defaults(klass: str) -> dict:
    """The default arguments of demucs' class (as demucs 4.1.0 has them), where they differ
    from ours or ours has none, for the arguments we map."""
    common = {'audio_channels': 2, 'channels': 48, 'growth': 2, 'nfft': 4096, 'cac': True,
              'kernel_size': 8, 'time_stride': 2, 'stride': 4, 'context': 1, 'norm_starts': 4,
              'norm_groups': 4, 'dconv_depth': 2, 'freq_emb': 0.2, 'emb_scale': 10,
              'rescale': 0.1, 'samplerate': 44100, 'wiener_iters': 0}
    if klass == 'HTDemucs':
        return {**common, 'depth': 4, 'dconv_comp': 8, 'dconv_init': 1e-3,
                'bottom_channels': 0, 't_layers': 5, 't_hidden_scale': 4.0, 't_heads': 8,
                't_dropout': 0.0, 't_norm_in': True, 't_norm_first': True, 't_norm_out': True,
                't_max_period': 10000.0, 't_layer_scale': True, 't_gelu': True,
                't_weight_pos_embed': 1.0, 't_cross_first': False, 'segment': 10,
                'use_train_segment': True}
    return {**common, 'depth': 6, 'dconv_comp': 4, 'dconv_init': 1e-4, 'dconv_attn': 4,
            'dconv_lstm': 4, 'segment': 40, 'hybrid': True, 'hybrid_old': False}


def htdemucs_kwargs(kwargs: dict) -> dict:
    """Our HTDemucs arguments for demucs' HTDemucs ones (PackageError if not importable)."""
    _refuse(kwargs, 'HTDemucs', {
        **COMMON_REFUSED, 'channels_time': _same_channels(kwargs),
        'wiener_iters': _wiener_ok(kwargs),
        't_emb': lambda value: value == 'sin',
        't_sparse_self_attn': lambda value: not value,
        't_sparse_cross_attn': lambda value: not value,
        't_group_norm': lambda value: not value,
        't_norm_in_group': lambda value: not value or kwargs.get('t_norm_in', True),
        't_sin_random_shift': lambda value: value == 0})
    _check_padding(kwargs, 'HTDemucs')
    full = {**defaults('HTDemucs'), **kwargs}
    ours = {key: full[key] for key in HT_SAME}
    return {**ours, 'compat': 'demucs'}


def hdemucs_kwargs(kwargs: dict) -> dict:
    """Our HDemucs arguments for demucs' HDemucs ones (PackageError if not importable)."""
    _refuse(kwargs, 'HDemucs', {
        **COMMON_REFUSED, 'channels_time': _same_channels(kwargs),
        'wiener_iters': _wiener_ok(kwargs),
        'hybrid': lambda value: bool(value)})
    _check_padding(kwargs, 'HDemucs')
    full = {**defaults('HDemucs'), **kwargs}
    ours = {key: full[key] for key in H_SAME}
    depth = full['depth']
    # demucs: LSTM / attention in the layers of index >= dconv_lstm; ours: the deepest N
    ours['dconv_lstm'] = max(0, depth - full['dconv_lstm'])
    ours['dconv_attn'] = max(0, depth - full['dconv_attn'])
    ours['compat'] = 'demucs_old' if full.get('hybrid_old') else 'demucs'
    return ours


def our_kwargs(klass: type, kwargs: dict) -> dict:
    if klass is HTDEMUCS:
        return htdemucs_kwargs(kwargs)
    if klass in (HDEMUCS, WDEMUCS):
        return hdemucs_kwargs(kwargs)
    return dict(kwargs)   # demucs.demucs.Demucs: our 'demucs' has demucs' own arguments


def effective_kwargs(model: torch.nn.Module) -> dict:
    """All the constructor arguments of one of our models (given or default)."""
    args, kwargs = model._init_args_kwargs
    bound = inspect.signature(type(model)).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def demucs_kwargs(model: torch.nn.Module) -> tp.Tuple[type, dict]:
    """demucs' class (placeholder) and arguments for one of our models."""
    name = next(key for key, klass in MODELS.items() if type(model) is klass)
    ours = effective_kwargs(model)
    if name == 'demucs':
        return DEMUCS, ours
    same = HT_SAME if name == 'htdemucs' else H_SAME
    theirs = {key: ours[key] for key in same if key in ours}
    theirs['sources'] = list(theirs['sources'])
    if not ours['cac']:   # the mixture's phase, as ours: demucs' wiener_iters < 0
        theirs['wiener_iters'] = theirs['end_iters'] = -1
    if name == 'htdemucs':
        theirs['bottom_channels'] = model.bottom_channels
        return HTDEMUCS, theirs
    depth = ours['depth']
    theirs['dconv_lstm'] = depth - ours['dconv_lstm']
    theirs['dconv_attn'] = depth - ours['dconv_attn']
    theirs['hybrid_old'] = ours['compat'] == 'demucs_old'
    return HDEMUCS, theirs


# ------------------------------------------------------------------ state names

def _rename(rest: str, table: tp.Dict[str, str]) -> str:
    """`rest` with its first component renamed through `table`."""
    head, _, tail = rest.partition('.')
    head = table.get(head, head)
    return f'{head}.{tail}' if tail else head


def _transformer_name(rest: str, model: torch.nn.Module) -> tp.Optional[str]:
    """demucs' name of one of our transformer's tensors (`rest` under `transformer.`)."""
    top = {'norm_in_freq': 'norm_in', 'norm_in_time': 'norm_in_t'}
    parts = rest.split('.')
    if parts[0] in top:
        return f'crosstransformer.{_rename(rest, top)}'
    branch = {'freq_layers': 'layers', 'time_layers': 'layers_t'}[parts[0]]
    index = int(parts[1])
    layer = getattr(model.transformer, parts[0])[index]
    inner = '.'.join(parts[2:])
    cross_pre = layer.cross and layer.norm_first
    table = {'attn': 'cross_attn' if layer.cross else 'self_attn', 'norm_attn': 'norm1',
             'norm_other': 'norm2', 'norm_ffn': 'norm3' if cross_pre else 'norm2',
             'scale_attn': 'gamma_1', 'scale_ffn': 'gamma_2'}
    inner = {'ffn.0.weight': 'linear1.weight', 'ffn.0.bias': 'linear1.bias',
             'ffn.3.weight': 'linear2.weight', 'ffn.3.bias': 'linear2.bias'}.get(inner, inner)
    return f'crosstransformer.{branch}.{index}.{_rename(inner, table)}'


def demucs_name(name: str, model: torch.nn.Module) -> str:
    """demucs' name of the tensor `name` of our HTDemucs / HDemucs `model`."""
    parts = name.split('.')
    head, rest = parts[0], '.'.join(parts[1:])
    depth = model.depth
    n_freq = getattr(model, 'n_freq_layers', depth)   # HDemucs: layers before the merge
    if head in ('time_encoder', 'freq_encoder', 'shared_encoder', 'time_decoder',
                'freq_decoder', 'shared_decoder'):
        index, rest = int(parts[1]), '.'.join(parts[2:])
        if head == 'shared_encoder':
            head, index = 'freq_encoder', index + n_freq
        if head == 'shared_decoder':
            head, index = 'freq_decoder', index + n_freq
        position = {'time_encoder': index, 'freq_encoder': index,
                    'time_decoder': n_freq - 1 - index,
                    'freq_decoder': depth - 1 - index}[head]
        theirs = {'time_encoder': 'tencoder', 'freq_encoder': 'encoder',
                  'time_decoder': 'tdecoder', 'freq_decoder': 'decoder'}[head]
        return f'{theirs}.{position}.{rest}'
    if head == 'freq_emb':
        return 'freq_emb.embedding.weight'
    if head == 'transformer':
        return tp.cast(str, _transformer_name(rest, model))
    bottom = {'freq_to_bottom': 'channel_upsampler', 'freq_from_bottom': 'channel_downsampler',
              'time_to_bottom': 'channel_upsampler_t',
              'time_from_bottom': 'channel_downsampler_t'}
    if head in bottom:
        return f'{bottom[head]}.{rest}'
    raise KeyError(name)


def to_demucs_layout(name: str, value: torch.Tensor) -> torch.Tensor:
    """One of our tensors in demucs' layout (`name`: ours)."""
    if name == 'freq_emb.weight':
        return value.t().contiguous()
    if name.startswith(('freq_to_bottom.', 'freq_from_bottom.')) and value.dim() == 4:
        return value[..., 0]
    return value


def to_our_layout(name: str, value: torch.Tensor) -> torch.Tensor:
    """One of demucs' tensors in our layout (`name`: ours)."""
    if name == 'freq_emb.weight':
        return value.t().contiguous()
    if name.startswith(('freq_to_bottom.', 'freq_from_bottom.')) and value.dim() == 3:
        return value[..., None]
    return value


def unused_names(model: torch.nn.Module) -> tp.Dict[str, torch.Tensor]:
    """demucs' tensors that its forward never uses and ours does not have, with demucs'
    initial values: the third LayerNorm of its post-norm cross-attention layers."""
    transformer = getattr(model, 'transformer', None)
    extra: tp.Dict[str, torch.Tensor] = {}
    if transformer is None:
        return extra
    for branch, layers in (('layers', transformer.freq_layers),
                           ('layers_t', transformer.time_layers)):
        for index, layer in enumerate(layers):
            if layer.cross and not layer.norm_first:
                prefix = f'crosstransformer.{branch}.{index}.norm3'
                extra[f'{prefix}.weight'] = torch.ones(transformer.dim)
                extra[f'{prefix}.bias'] = torch.zeros(transformer.dim)
    return extra


# The order in which demucs registers its layers' tensors (its parameters' order, which a
# quantized state follows), where it is not the order of the names.
TOP_ORDER = ['encoder', 'decoder', 'tencoder', 'tdecoder', 'freq_emb', 'channel_upsampler',
             'channel_downsampler', 'channel_upsampler_t', 'channel_downsampler_t',
             'crosstransformer']
ENC_ORDER = ['conv', 'norm1', 'rewrite', 'norm2', 'dconv']
DEC_ORDER = ['conv_tr', 'norm2', 'rewrite', 'norm1', 'dconv']
MODULE_ORDER = ['norm_in', 'norm_in_t', 'layers', 'layers_t',                # transformer
                'self_attn', 'cross_attn', 'linear1', 'linear2', 'norm1', 'norm2', 'norm3',
                'norm_out', 'gamma_1', 'gamma_2',                            # its layers
                'content', 'query', 'key', 'query_freqs', 'query_decay', 'proj',  # attention
                'lstm', 'linear',                                            # BLSTM
                'in_proj_weight', 'in_proj_bias', 'out_proj',                # attention
                'embedding', 'weight', 'bias', 'scale']
LSTM_PARAM = re.compile(r'(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?')
LSTM_KINDS = ['weight_ih', 'weight_hh', 'bias_ih', 'bias_hh']


def demucs_order(name: str) -> tp.Tuple[tp.Tuple[int, ...], ...]:
    """Sort key putting demucs' tensor names in the order of its `named_parameters()`."""
    parts = name.split('.')
    key = [(TOP_ORDER.index(parts[0]),)]
    order = ENC_ORDER if parts[0] in ('encoder', 'tencoder') else DEC_ORDER
    for position, part in enumerate(parts[1:], 1):
        lstm = LSTM_PARAM.fullmatch(part)
        if part.isdigit():
            key.append((int(part),))
        elif lstm:
            key.append((int(lstm.group(2)), int(bool(lstm.group(3))),
                        LSTM_KINDS.index(lstm.group(1))))
        elif position == 2 and parts[0] in ('encoder', 'tencoder', 'decoder', 'tdecoder'):
            key.append((order.index(part),))
        else:
            key.append((MODULE_ORDER.index(part),))
    return tuple(key)


def name_pairs(model: torch.nn.Module) -> tp.List[tp.Tuple[str, tp.Optional[str]]]:
    """(demucs' name, our name or None) of every tensor of the demucs model that `model`
    (our HTDemucs / HDemucs / demucs) stands for, in demucs' parameter order."""
    ours = list(model.state_dict())
    if next(key for key, klass in MODELS.items() if type(model) is klass) == 'demucs':
        return [(name, name) for name in ours]
    pairs: tp.List[tp.Tuple[str, tp.Optional[str]]] = [
        (demucs_name(name, model), name) for name in ours]
    pairs += [(name, None) for name in unused_names(model)]
    return sorted(pairs, key=lambda pair: demucs_order(pair[0]))


# ------------------------------------------------------------------ quantized states

def _skeleton(shapes: tp.Sequence[tp.Tuple[str, torch.Size]]) -> torch.nn.Module:
    """A module holding zero parameters of these names and shapes, registered in this
    order: what diffq needs to restore a quantized state made on that parameter list."""
    root = torch.nn.Module()
    for name, shape in shapes:
        *path, leaf = name.split('.')
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape)))
    return root


def dequantize(state: dict, shapes: tp.Sequence[tp.Tuple[str, torch.Size]]) -> dict:
    """The float weights of DiffQ's quantized `state`, by demucs' names (`shapes`: demucs'
    parameters in its order). Needs `diffq`; the quantizer used is diffq's own class named
    by the state (DiffQuantizer or UniformQuantizer), with its own arguments only."""
    try:
        import diffq
    except ImportError as error:
        raise ImportError(f"This Demucs package is quantized with DiffQ: install it "
                          f"(`pip install diffq`) to import it. ({error})") from error
    meta = state.get('meta') if isinstance(state.get('meta'), dict) else {}
    classes = {DIFFQ: diffq.DiffQuantizer, UNIFORMQ: diffq.UniformQuantizer}
    klass = classes.get(meta.get('klass'))
    if klass is None:
        raise PackageError(f"the quantized state names the quantizer {meta.get('klass')!r}, "
                           f"not diffq's DiffQuantizer or UniformQuantizer.")
    kwargs = meta.get('init_kwargs', {})
    allowed = set(inspect.signature(klass).parameters) - {'model'}
    if not isinstance(kwargs, dict) or set(kwargs) - allowed:
        raise PackageError(f"the quantized state has quantizer arguments {kwargs!r}; "
                           f"{klass.__name__} takes {sorted(allowed)}.")
    skeleton = _skeleton(shapes)
    quantizer = klass(skeleton, **kwargs)
    try:
        quantizer.restore_quantized_state(state)
    except (AssertionError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:
        raise PackageError(f"the quantized state does not fit the model its kwargs describe "
                           f"({error or 'diffq assertion'}).") from None
    finally:
        quantizer.detach()
    return {name: param.detach().clone() for name, param in skeleton.named_parameters()
            if not name.endswith(DIFFQ_SUFFIX)}


# ------------------------------------------------------------------ import

def demucs_state(data: dict, model: torch.nn.Module,
                 pairs: tp.List[tp.Tuple[str, tp.Optional[str]]]) -> dict:
    """The package's float state by demucs' names (dequantized if quantized)."""
    state = data['state']
    if not isinstance(state, dict):
        raise PackageError(f"the Demucs package's state is a {type(state).__name__}, not a "
                           f"state dict.")
    if not state.get(QUANTIZED):
        return state
    logger.info("Dequantizing the DiffQ state of the Demucs package.")
    ours = model.state_dict()
    shapes = []
    for theirs, mine in pairs:
        value = ours[mine] if mine is not None else unused_names(model)[theirs]
        shapes.append((theirs, to_demucs_layout(mine or '', value).shape))
    return dequantize(state, shapes)


def convert_state(state: dict, model: torch.nn.Module,
                  pairs: tp.List[tp.Tuple[str, tp.Optional[str]]], klass: str) -> dict:
    """Our state dict from demucs' (every tensor of ours found, nothing of demucs' left)."""
    expected = {theirs for theirs, _ in pairs}
    extra = [name for name in state if name not in expected and name != QUANTIZED]
    missing = [theirs for theirs, mine in pairs if mine is not None and theirs not in state]
    if missing or extra:
        raise PackageError(f"the {klass} state does not match its kwargs: missing "
                           f"{missing[:5]}, unexpected {extra[:5]}.")
    out = {}
    for theirs, mine in pairs:
        if mine is not None:
            if not isinstance(state[theirs], torch.Tensor):
                raise PackageError(f"the {klass} state's {theirs} is not a tensor.")
            out[mine] = to_our_layout(mine, state[theirs])
    return out


def convert(data: tp.Any, config: tp.Optional[dict] = None) -> dict:
    """A separator package from a Demucs package (module docstring); `config` is not used
    (a Demucs package has its hyper-parameters)."""
    klass = model_klass(data)
    if klass.model not in MODELS:
        raise PackageError(f"{klass.path} needs separator's {klass.model!r} model, which "
                           f"this version does not have: upgrade separator.")
    kwargs = our_kwargs(klass, package_kwargs(data))
    try:
        model = build_model({'model': klass.model, 'kwargs': kwargs})
    except (ValueError, TypeError) as error:
        raise PackageError(f"the {klass.path} of the package does not fit separator's "
                           f"{klass.model}: {error}") from None
    pairs = name_pairs(model)
    state = convert_state(demucs_state(data, model, pairs), model, pairs, klass.__name__)
    training_args = data.get('training_args')
    package = {'model': klass.model, 'args': [], 'kwargs': kwargs, 'state': state,
               'demucs': {'klass': klass.path}}
    if isinstance(training_args, dict):
        package['demucs']['training_args'] = plain(training_args, 'training_args', False)
    return package


# ------------------------------------------------------------------ bags

def find_package(folder: Path, sig: str) -> Path:
    """The package of `sig` in a Demucs repository: `SIG.th` or `SIG-CHECKSUM.th` (whose
    sha256 must start with CHECKSUM, as demucs checks)."""
    found = [path for path in sorted(folder.glob(f'{sig}*.th'))
             if path.stem == sig or path.stem.rsplit('-', 1)[0] == sig]
    if len(found) != 1:
        what = 'no' if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise PackageError(f"{folder} has {what} package for {sig} ({sig}.th or "
                           f"{sig}-CHECKSUM.th): put exactly one there.")
    path = found[0]
    if path.stem != sig:
        checksum = path.stem.rsplit('-', 1)[1]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(checksum):
            raise PackageError(f"{path}: its sha256 starts with {digest[:len(checksum)]}, not "
                               f"{checksum}: the file is corrupt; download it again.")
    return path


def read_bag(path: tp.Union[str, Path]) -> dict:
    """A Demucs bag yaml (`models`, optional `weights`, `segment`) as plain data."""
    from . import read_config
    from ..pretrained import check_name
    config = read_config(path)
    assert config is not None
    models = config.get('models')
    if not isinstance(models, list) or not models:
        raise PackageError(f"{path} is not a Demucs bag: it needs `models: [SIG, ...]`.")
    unknown = set(config) - {'models', 'weights', 'segment'}
    if unknown:
        raise PackageError(f"{path} has keys {sorted(unknown)} a Demucs bag does not have "
                           f"(models, weights, segment).")
    for sig in models:
        check_name(sig, f"{path}, models")
    return config


def import_bag(bag: tp.Union[str, Path], out: tp.Union[str, Path],
               name: tp.Optional[str] = None) -> Path:
    """Import a Demucs bag: the yaml `bag` (`models`, `weights`, `segment`) and its
    packages (next to it) become `out/SIG.th` and `out/NAME.yaml` (NAME: the bag's name by
    default), our bag (`separator.pretrained.get_model(NAME, out)`). Returns the yaml."""
    from . import import_checkpoint
    bag = Path(bag)
    config = read_bag(bag)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for sig in dict.fromkeys(config['models']):
        package = import_checkpoint(find_package(bag.parent, sig), format=FORMAT)
        atomic_save(package, out / f'{sig}.th')
    target = out / f'{name or bag.stem}.yaml'
    with atomic_file(target, 'w') as fout:
        yaml.safe_dump(config, fout, default_flow_style=None, sort_keys=False)
    return target


# ------------------------------------------------------------------ export

def check_exportable(package: dict, model: torch.nn.Module, strict: bool) -> str:
    """Our registry name of the package's model, if demucs computes what it computes."""
    name = package.get('model')
    if name not in EXPORT_CLASSES:
        raise PackageError(f"a {name!r} package cannot be a Demucs package: only htdemucs, "
                           f"hdemucs and demucs can.")
    if name == 'demucs':
        return name
    compat = getattr(model, 'compat', 'separator')
    if name == 'htdemucs' and model.per_source_decoders:
        raise PackageError("an htdemucs with per_source_decoders has no Demucs equivalent.")
    if compat == 'separator' and (strict or name == 'htdemucs'):
        why = ("its transformer has separator's positional embedding, not demucs'"
               if name == 'htdemucs' else
               "it pads as separator does, demucs otherwise (the outputs differ at the end "
               "of inputs whose length is not a multiple of its total stride; "
               "strict=False exports it all the same)")
        raise PackageError(f"this {name} was built with compat='separator': {why}. Models "
                           f"imported from demucs, or trained with {name}.compat=demucs, "
                           f"export exactly.")
    return name


def to_demucs_package(package: dict, strict: bool = True, half: bool = False) -> dict:
    """A Demucs package (`demucs.states.serialize_model`'s layout) for one of our
    `htdemucs` / `hdemucs` (compat 'demucs') or `demucs` packages: demucs' kwargs and
    state names, float32 weights (float16 with `half`, as demucs' releases; a quantized
    package of ours is exported dequantized); `klass` is the placeholder of the demucs
    class, which `save_demucs_package` pickles by name. With `strict=False`, an hdemucs of
    compat 'separator' is exported too (demucs pads differently: see `check_exportable`)."""
    model = load_model(package)
    check_exportable(package, model, strict)
    klass, kwargs = demucs_kwargs(model)
    ours = model.state_dict()
    extra = unused_names(model) if klass is not DEMUCS else {}
    dtype = torch.float16 if half else None
    state = {theirs: (to_demucs_layout(mine, ours[mine]) if mine is not None
                      else extra[theirs]).detach().to('cpu', dtype=dtype, copy=True)
             for theirs, mine in name_pairs(model)}
    training_args = (package.get('demucs') or {}).get('training_args') or {}
    return {'klass': klass, 'args': [], 'kwargs': kwargs, 'state': state,
            'training_args': training_args}


class _ByNamePickler(pickle._Pickler):   # type: ignore[name-defined]
    """Pickles our placeholder classes as the classes they stand for (a GLOBAL opcode with
    their path), without importing those."""

    def save_global(self, obj: tp.Any, name: tp.Optional[str] = None) -> None:
        if isinstance(obj, type) and issubclass(obj, DemucsClass) and obj.path:
            module, _, qualname = obj.path.rpartition('.')
            if self.proto >= 4:
                self.save(module)
                self.save(qualname)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f'{module}\n{qualname}\n'.encode('utf-8'))
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)   # type: ignore[attr-defined]
    dispatch[type] = save_global


class _PickleModule:
    """What `torch.save(pickle_module=...)` uses: `_ByNamePickler`."""
    Pickler = _ByNamePickler
    Unpickler = pickle.Unpickler
    dump = staticmethod(pickle.dump)
    load = staticmethod(pickle.load)


def save_demucs_package(package: dict, path: tp.Union[str, Path, tp.BinaryIO]) -> None:
    """`torch.save` a Demucs package (`to_demucs_package`) to `path` (atomically) or a
    binary file, its `klass` pickled as the real demucs class."""
    if isinstance(path, (str, Path)):
        with atomic_file(Path(path), 'wb') as fout:
            torch.save(package, fout, pickle_module=_PickleModule)
    else:
        torch.save(package, path, pickle_module=_PickleModule)


def demucs_package_bytes(package: dict) -> bytes:
    """The bytes `save_demucs_package` writes."""
    buffer = io.BytesIO()
    save_demucs_package(package, buffer)
    return buffer.getvalue()


def write_demucs_package(package: dict, folder: tp.Union[str, Path], sig: str) -> Path:
    """Write a Demucs package (`to_demucs_package`) into the Demucs repository `folder` as
    `SIG-CHECKSUM.th` (CHECKSUM: the first 8 hex digits of its sha256, as demucs'
    `save_with_checksum` names its releases and `demucs --repo` checks), atomically,
    replacing any other `SIG-*.th`; returns its path."""
    from ..pretrained import check_name
    check_name(sig, "Demucs signature")
    if '-' in sig:
        raise PackageError(f"{sig!r}: a Demucs signature has no '-' (demucs reads "
                           f"SIG-CHECKSUM.th).")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    content = demucs_package_bytes(package)
    target = folder / f"{sig}-{hashlib.sha256(content).hexdigest()[:8]}.th"
    with atomic_file(target, 'wb') as fout:
        fout.write(content)
    for other in folder.glob(f'{sig}*.th'):   # demucs refuses two files of one signature
        if other != target and (other.stem == sig or other.stem.rsplit('-', 1)[0] == sig):
            other.unlink()
    return target
