"""Checks of the values of an XP's config, made before any work (no data generated, no model
built), each failing with one line that names the key, the value and the fix.

The builders and the solver check what only they can see (a batch that does not split
across the processes, a loss that needs another model); what a config says about itself
is checked here, once.
"""
import typing as tp


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


def _signature(value: tp.Any, key: str) -> None:
    """A signature read as a number: Hydra reads `continue_from=12345678` as an int and
    `3e324826` as a float (inf), and the signature cannot be recovered."""
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


def check_config(cfg: tp.Any) -> None:
    """Every check of this module, and that the chosen model has its config section."""
    if cfg.model not in cfg:
        raise ConfigError(f"model={cfg.model} has no config section `{cfg.model}:`.")
    check_sizes(cfg)
    check_weights(cfg)
    check_signatures(cfg)
