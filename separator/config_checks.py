"""What is wrong with an XP's config, said in one line that names the key, the value and the
fix, before any work (no data generated, no model built).

Two kinds: the overrides that Hydra cannot compose (a typo in a key, an unknown recipe or
data set, an override it cannot parse: `explain_config_errors` turns Hydra's traceback into
one line), and values that compose but make no sense (`check_config`). The builders and the
solver check what only they can see (a batch that does not split across the processes, a
loss that needs another model); what a config says about itself is checked here, once.
"""
import difflib
import re
import sys
import typing as tp
from pathlib import Path

from omegaconf import OmegaConf, open_dict


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and the fix."""


def _positive(cfg: tp.Any, key: str, kind: type, allow_null: bool = False) -> None:
    value = cfg
    for part in key.split('.'):
        value = value[part]
    if value is None and allow_null:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and not float(value).is_integer()) or value <= 0:
        what = 'a whole number' if kind is int else 'a number'
        null = ' (or null)' if allow_null else ''
        raise ConfigError(f"{key}={value!r} must be {what} above 0{null}.")


def check_sizes(cfg: tp.Any) -> None:
    """Segment, batch, epoch counts and rates: positive numbers."""
    for key in ('epochs', 'batch_size', 'dset.samplerate', 'dset.channels'):
        _positive(cfg, key, int)
    _positive(cfg, 'dset.epoch_size', int, allow_null=True)
    _positive(cfg, 'optim.micro_batch', int, allow_null=True)
    for key in ('dset.segment', 'dset.shift'):
        _positive(cfg, key, float)
    if cfg.optim.accumulate < 1:
        raise ConfigError(f"optim.accumulate={cfg.optim.accumulate} must be a whole number "
                          f">= 1 (batches whose gradients add up before a step).")


def check_weights(cfg: tp.Any) -> None:
    """`weights`: null, or one number >= 0 per source, with a positive sum."""
    if cfg.weights is None:
        return
    sources = list(cfg.dset.sources)
    weights = list(cfg.weights)
    fix = f"give one weight per source of dset.sources={sources}, e.g. weights=" \
          f"[{','.join(['1'] * len(sources))}]"
    if len(weights) != len(sources):
        raise ConfigError(f"weights={weights} has {len(weights)} value(s) for "
                          f"{len(sources)} sources: {fix}.")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights):
        raise ConfigError(f"weights={weights} must be numbers >= 0: {fix}.")
    if sum(weights) <= 0:
        raise ConfigError(f"weights={weights} sum to 0: at least one source must be trained.")


SIGNATURE_KEYS = ('continue_from', 'dset.clean_lists', 'filter.model', 'mixer.models')


def _raw_text(key: str, overrides: tp.Sequence[str]) -> tp.Optional[str]:
    """The text typed after `key=` on the command line (the last one wins, as in Hydra)."""
    texts = [arg.split('=', 1)[1] for arg in overrides
             if arg.lstrip('+').split('=', 1)[0] == key]
    return texts[-1] if texts else None


def _unquote(text: str) -> str:
    return text.strip().strip('\'"').strip()


def _as_signature(value: tp.Any, raw: tp.Optional[str]) -> tp.Any:
    """A signature Hydra read as a number, back as the text that was typed: `12345678` is an
    int to Hydra and `3e324826` a float (inf), but both are signatures (8 hex digits)."""
    if value is None or isinstance(value, str):
        return value
    if raw is not None and not raw.strip().startswith('['):
        return _unquote(raw)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 8:
        return f"{value:08d}"     # a YAML file's unquoted all-digit signature
    return value


def recover_signatures(cfg: tp.Any, overrides: tp.Sequence[str]) -> None:
    """Put back, in `cfg`, the signatures that Hydra read as numbers (`continue_from=80166251`
    typed without quotes): the XP keeps the signature it was given, not a number that lost its
    leading zeros or became inf. Dora's grids quote their values, so this is the command line's
    case (and a recipe file's all-digit signature)."""
    for key in SIGNATURE_KEYS:
        section, _, name = key.rpartition('.')
        node = OmegaConf.select(cfg, section) if section else cfg
        if node is None or name not in node:
            continue
        value, raw = node[name], _raw_text(key, overrides)
        if key == 'mixer.models':
            if value is None:
                continue
            texts = [_unquote(part) for part in raw.strip().strip('[]').split(',')] \
                if raw is not None and raw.strip().startswith('[') else None
            if texts is not None and len(texts) != len(value):
                texts = None
            fixed = [_as_signature(item, None if texts is None else texts[index])
                     for index, item in enumerate(value)]
        else:
            fixed = _as_signature(value, raw)
        if fixed != value:
            with open_dict(cfg):
                node[name] = fixed


def _signature(value: tp.Any, key: str) -> None:
    """A number left where a signature goes (one that `recover_signatures` could not read back,
    e.g. a float in a recipe file): the signature cannot be recovered."""
    if value is not None and not isinstance(value, str):
        example = "\"mixer.models=['SIG']\"" if key == 'mixer.models' else f"\"{key}='SIG'\""
        raise ConfigError(f"{key}={value!r} is not a signature: Hydra read it as a number; "
                          f"quote it for Hydra and the shell: {example}.")


def check_signatures(cfg: tp.Any) -> None:
    """The keys that name other XPs hold strings."""
    _signature(cfg.continue_from, 'continue_from')
    _signature(cfg.dset.clean_lists, 'dset.clean_lists')
    _signature(cfg.filter.model, 'filter.model')
    for value in cfg.mixer.models or []:
        _signature(value, 'mixer.models')


def check_model(cfg: tp.Any) -> None:
    """`model` is a registered model with its config section."""
    from .models import MODELS
    if cfg.model not in MODELS:
        close = difflib.get_close_matches(str(cfg.model), list(MODELS), n=1)
        hint = f"did you mean model={close[0]}? " if close else ""
        raise ConfigError(f"model={cfg.model} is not a model: {hint}the models are "
                          f"{', '.join(sorted(MODELS))}.")
    if cfg.model not in cfg:
        raise ConfigError(f"model={cfg.model} has no config section `{cfg.model}:` in "
                          f"conf/config.yaml: add its hyper-parameters there.")


def check_choices(cfg: tp.Any) -> None:
    """Keys that take one of a few names."""
    from .metrics import SDR_IMPLS
    impl = cfg.test.get('sdr_impl', 'torch')
    if impl not in SDR_IMPLS:
        raise ConfigError(f"test.sdr_impl={impl} is not a bss_eval implementation: use one of "
                          f"{', '.join(SDR_IMPLS)}.")


def check_config(cfg: tp.Any) -> None:
    """Every value check of this module."""
    check_model(cfg)
    check_choices(cfg)
    check_sizes(cfg)
    check_weights(cfg)
    check_signatures(cfg)


def check_data_choice(cfg: tp.Any, overrides: tp.Sequence[str], conf: Path) -> tp.List[str]:
    """A recipe (`variant=`) must not silently replace the data set chosen with `dset=`:
    the keys of `conf/dset/NAME.yaml` that the variant overrode and the command line did not.
    Its path (`dset.musdb`) is an error, naming the fix; the other keys are returned, for a
    warning (a recipe may mean to change, say, the segment)."""
    chosen = [arg.split('=', 1)[1] for arg in overrides if arg.lstrip('+').startswith('dset=')]
    if not chosen or not (conf / 'dset' / f'{chosen[-1]}.yaml').exists():
        return []
    group = OmegaConf.to_container(OmegaConf.load(conf / 'dset' / f'{chosen[-1]}.yaml'))
    given = {arg.lstrip('+').split('=', 1)[0] for arg in overrides}
    shadowed = [key for key in group
                if f'dset.{key}' not in given and cfg.dset.get(key) != group[key]]
    variant = next((arg.split('=', 1)[1] for arg in overrides
                    if arg.startswith('variant=')), 'default')
    if 'musdb' in shadowed:
        raise ConfigError(f"variant={variant} sets dset.musdb={cfg.dset.musdb}, which replaces "
                          f"the data of dset={chosen[-1]} ({group['musdb']}): give its path "
                          f"on the command line, dset.musdb=PATH.")
    return [f"dset.{key}={cfg.dset.get(key)} (variant={variant}; dset={chosen[-1]} says "
            f"{group[key]})" for key in shadowed]


# ------------------------------------------------------------------ overrides Hydra refuses
def _typo(error: BaseException, base: tp.Any) -> tp.Optional[str]:
    """`optim.lrr=1`: the key, the closest existing one and the keys of its section."""
    match = re.search(r'full_key: (\S+)', str(error.__cause__ or ''))
    if not match:
        return None
    key = match.group(1)
    parent, _, name = key.rpartition('.')
    node = base
    for part in filter(None, parent.split('.')):
        node = node.get(part) if hasattr(node, 'get') else None
    keys = [str(k) for k in node.keys()] if hasattr(node, 'keys') else []
    close = difflib.get_close_matches(name, keys, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    where = f"the keys of {parent}" if parent else "the top-level keys"
    return (f"{key} is not a config key: {hint}{where} are {', '.join(keys)} "
            f"(conf/config.yaml).")


def _missing_option(error: BaseException) -> tp.Optional[str]:
    """`variant=foo`: the group's files."""
    match = re.search(r"Could not find '([^/']+)/([^']+)'", str(error))
    if not match:
        return None
    group, name = match.groups()
    options = re.search(rf"Available options in '{re.escape(group)}':\n((?:\t.*\n?)*)",
                        str(error))
    names = options.group(1).split() if options else []
    return (f"{group}={name}: there is no conf/{group}/{name}.yaml; choose among "
            f"{', '.join(names)}.")


def _unparsable(argv: tp.Sequence[str]) -> tp.Optional[str]:
    """An override the grammar refuses (`epochs=[1`): which one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parser = OverridesParser.create()
    for arg in argv:
        try:
            parser.parse_overrides([arg])
        except Exception as error:  # hydra's OverrideParseException
            first = str(error).splitlines()[0]
            return (f"cannot read the override {arg!r} ({first}): quote values with "
                    f"brackets, commas or spaces, e.g. \"key='a b'\".")
    return None


def describe_config_error(error: BaseException, argv: tp.Sequence[str],
                          base: tp.Any) -> tp.Optional[str]:
    """One line for an error of Hydra's (or Dora's) composition of `argv`, or None."""
    from hydra.errors import HydraException, OverrideParseException
    if isinstance(error, OverrideParseException):
        return _unparsable(argv)
    if isinstance(error, HydraException):
        return _typo(error, base) or _missing_option(error)
    match = re.search(r'Wrong type for (\S+), expected DictConfig', str(error))
    if isinstance(error, AssertionError) and match:
        key = match.group(1).rstrip(',')
        return f"{key} is a config section, not a value: set its keys, e.g. {key}.KEY=VALUE."
    return None


def explain_config_errors(main: tp.Any) -> None:
    """Make every Dora command of `main` (run, info, grid, launch) say in one line what is
    wrong with overrides that do not compose, and exit with status 2, instead of Hydra's
    traceback. Idempotent."""
    get_xp = main.get_xp
    if getattr(get_xp, 'explains', False):
        return

    def get_xp_explained(argv: tp.Sequence[str]) -> tp.Any:
        try:
            return get_xp(argv)
        except Exception as error:
            message = describe_config_error(error, list(argv), main._base_cfg)
            if message is None:
                raise
            print(f"separator: error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)

    get_xp_explained.explains = True  # type: ignore[attr-defined]
    main.get_xp = get_xp_explained


# ------------------------------------------------------------------ names in dora's tables
def override(key: str, value: tp.Any) -> str:
    """`key=value` as it must be typed on a command line to give `value` back: Hydra's syntax
    (a string that reads as a number, a boolean or null is quoted), shell-quoted when needed."""
    import shlex
    from dora.hydra import _hydra_value_as_override
    if isinstance(value, str) and re.fullmatch(r'[A-Za-z_][\w./-]*', value) and \
            value.lower() not in ('true', 'false', 'null', 'none', 'inf', 'nan'):
        text = value
    else:
        text = _hydra_value_as_override(value)
    return shlex.quote(f'{key}={text}')


def show_full_overrides(main: tp.Any) -> None:
    """Dora names an XP in its tables by its overrides with shortened keys (`opt.lr=0.003`):
    show them whole, so that a row can be pasted back into `dora run`."""
    main.short_name_part = override
