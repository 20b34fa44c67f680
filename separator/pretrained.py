"""Released models: packages written by `tools.export`, and bags of them.

A repository is a folder. A name resolves to

- `REPO/NAME.th`: one exported model package (`python -m tools.export SIG`);
- `REPO/NAME.yaml`: a bag of exported models, as in Demucs::

      models: [SIG1, SIG2]          # packages REPO/SIG1.th, REPO/SIG2.th
      weights: [[1., 1., 0., 1.],   # optional: one list per model, one weight per source;
                [1., 0., 1., 0.]]   # normalised per source over the models
      segment: 8                    # optional: chunk length (seconds) for every model
      settings: [{overlap: 0.5, shifts: 0}, {wiener: 1}]   # optional: per model, how it runs

`settings` (one mapping per model, `{}` for none) override the command's inference options
for that model alone:

- `overlap`, `shifts`: as the command's;
- `midside`: mid/side inference (`apply.apply_model`); a stereo model also separates
  [M, S], a mono model separates L, R, M and S each alone (aimless's CDX23 HDemucs) and
  its output is stereo, so is then the bag's (`mix_channels`: 2). On a mono mixture (a mono
  bag evaluated on a mono test set) there is no side and the model runs as is;
- `wiener`: EM iterations of the multichannel Wiener filter on that model's estimates,
  before the blend (danna's MDX21 blend filters its two spectrogram models only);
- `wiener_sources` (with `wiener`): filter only these sources, against the residual
  (mixture minus their sum) as one extra source; the model's other estimates are left as
  they are (aimless's CDX23 BandSplitRNN, trained on music only, its music filtered).

A model with `wiener` is separated whole before the blend (the filter needs the song), the
others stream. In a stereo bag of mono models (one has `midside`), a model without
`midside` separates each channel on its own.

The models of a bag may have different architectures, but must share their sources, sample
rate and channel count. Run a bag (or a single model) with `apply_bag`.

A repository is data: a package is read with `states.safe_load` (no pickled code) and built
from the model registry only; a name, of a model or of a bag's entry, is a plain file name
inside the repository (no folder, no `..`), so a bag cannot reach files elsewhere.
"""
import re
import typing as tp
from pathlib import Path

import torch
import yaml
from torch import nn

from .apply import Block, Reader, apply_model, collect, merge, slice_reader, stream_model
from .states import checkpoint_model, load_model, read_xp_checkpoint
from .wiener import wiener_filter

DEFAULT_REPO = Path('release_models')
DEFAULT_XPS = Path('outputs/xps')        # Dora's XP folder (conf: dora.dir + /xps)


class ModelLoadingError(ValueError):
    """A model or a bag cannot be loaded; the message names the file and the fix."""


# A model name or an XP signature: a plain file name, no folder, not hidden.
NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.+-]*')


def check_name(name: tp.Any, what: str) -> str:
    """`name` if it is a plain name (`NAME`), else a ModelLoadingError naming `what`."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or '..' in name:
        raise ModelLoadingError(f"{what}: {name!r} is not a model name (letters, digits, "
                                f"'_', '-', '.' and '+', no folder): models are looked up "
                                f"inside the repository only.")
    return name


class BagOfModels(nn.Module):
    """Several models whose estimates are blended per source with `weights`.

    Args:
        models: models with the same `sources`, `samplerate` and `audio_channels`.
        weights: one list per model with one weight per source (default: all 1); the
            estimate of a source is the weighted mean of the models' estimates.
        segment: if given, the chunk length in seconds used for every model.
        settings: one mapping per model of inference options that override the caller's
            for that model (`SETTINGS`: overlap, shifts, midside, wiener, wiener_sources).

    `mix_channels` is the channel count of the mixture the bag reads and of the stems it
    writes: `audio_channels`, but 2 for mono models when one of them runs mid/side.
    """

    def __init__(self, models: tp.Sequence[nn.Module],
                 weights: tp.Optional[tp.Sequence[tp.Sequence[float]]] = None,
                 segment: tp.Optional[float] = None,
                 settings: tp.Optional[tp.Sequence[tp.Mapping[str, tp.Any]]] = None):
        super().__init__()
        if not models:
            raise ModelLoadingError("A bag needs at least one model.")
        first = models[0]
        for index, other in enumerate(models):
            for attr in ('sources', 'samplerate', 'audio_channels'):
                if list_or_value(getattr(other, attr)) != list_or_value(getattr(first, attr)):
                    raise ModelLoadingError(
                        f"The models of a bag must have the same {attr}: model 0 has "
                        f"{getattr(first, attr)}, model {index} has {getattr(other, attr)}.")
            if segment is not None:
                other.segment = segment
        self.models = nn.ModuleList(models)
        self.sources = list(first.sources)
        self.samplerate = first.samplerate
        self.audio_channels = first.audio_channels
        self.segment = min(model.segment for model in models)
        if weights is None:
            weights = [[1.] * len(self.sources) for _ in models]
        check_weights(weights, len(models), self.sources)
        self.weights = [[float(w) for w in row] for row in weights]
        if settings is None:
            settings = [{} for _ in models]
        check_settings(settings, len(models), self.audio_channels, self.sources)
        self.settings = [dict(item) for item in settings]
        midside = any(item.get('midside') for item in self.settings)
        self.mix_channels = 2 if midside else self.audio_channels

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Run a bag with `separator.pretrained.apply_bag(bag, mix)`.")


def list_or_value(value: tp.Any) -> tp.Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def check_weights(weights: tp.Any, count: int, sources: tp.Sequence[str]) -> None:
    """Raise a ModelLoadingError unless `weights` is `count` lists of len(sources) numbers
    whose sum over the models is positive for every source."""
    shape = f"{count} list(s) (one per model) of {len(sources)} numbers (one per source " \
            f"{list(sources)})"
    if not isinstance(weights, (list, tuple)) or len(weights) != count:
        raise ModelLoadingError(f"Bag weights must be {shape}, got {weights!r}.")
    for row in weights:
        if (not isinstance(row, (list, tuple)) or len(row) != len(sources)
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                           for w in row)):
            raise ModelLoadingError(f"Bag weights must be {shape}, got {weights!r}.")
    for index, source in enumerate(sources):
        if sum(row[index] for row in weights) <= 0:
            raise ModelLoadingError(f"Bag weights for source {source!r} sum to "
                                    f"{sum(row[index] for row in weights)}: they must sum "
                                    f"to a positive number.")


SETTINGS = ('overlap', 'shifts', 'midside', 'wiener', 'wiener_sources')   # per model
_CHECKS = {'overlap': lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
           'shifts': lambda v: isinstance(v, int) and v >= 0,
           'wiener': lambda v: isinstance(v, int) and v >= 0,
           'midside': lambda v: isinstance(v, bool)}
_WANTED = {'overlap': 'a number in [0, 1)', 'shifts': 'a whole number >= 0',
           'wiener': 'a whole number of iterations >= 0', 'midside': 'true or false'}


def check_settings(settings: tp.Any, count: int, channels: int,
                   sources: tp.Sequence[str]) -> None:
    """Raise a ModelLoadingError unless `settings` is `count` mappings of valid `SETTINGS`
    for models of `channels` channels and `sources`."""
    if not isinstance(settings, (list, tuple)) or len(settings) != count or \
            not all(isinstance(item, dict) for item in settings):
        raise ModelLoadingError(f"Bag settings must be {count} mapping(s), one per model "
                                f"({{}} for none), got {settings!r}.")
    for index, item in enumerate(settings):
        unknown = set(item) - set(SETTINGS)
        if unknown:
            raise ModelLoadingError(f"Bag settings of model {index}: unknown {sorted(unknown)}; "
                                    f"the settings are {', '.join(SETTINGS)}.")
        for key, value in item.items():
            if key == 'wiener_sources':
                _check_wiener_sources(value, sources, index)
            elif isinstance(value, bool) and key != 'midside' or not _CHECKS[key](value):
                raise ModelLoadingError(f"Bag settings of model {index}: {key} must be "
                                        f"{_WANTED[key]}, got {value!r}.")
        if item.get('midside') and channels not in (1, 2):
            raise ModelLoadingError(f"Bag settings of model {index}: midside needs mono or "
                                    f"stereo models, these have {channels} channels.")
        if 'wiener_sources' in item and not item.get('wiener'):
            raise ModelLoadingError(f"Bag settings of model {index}: wiener_sources needs "
                                    f"the filter on: add wiener: 1 (its EM iterations, >= 1), "
                                    f"got wiener: {item.get('wiener', 0)}.")


def _check_wiener_sources(value: tp.Any, sources: tp.Sequence[str], index: int) -> None:
    """A ModelLoadingError unless `value` is a non-empty list of distinct `sources`."""
    valid = isinstance(value, (list, tuple)) and len(value) > 0 and \
        all(isinstance(name, str) and name in sources for name in value) and \
        len(set(value)) == len(value)
    if not valid:
        raise ModelLoadingError(
            f"Bag settings of model {index}: wiener_sources must be a non-empty list of "
            f"distinct sources among {list(sources)}, e.g. wiener_sources: [{sources[-1]}], "
            f"got {value!r}.")


def bag_members(model: nn.Module) -> tp.List[tp.Tuple[nn.Module, tp.Dict[str, tp.Any]]]:
    """The models of a bag with their settings; a plain model alone, with none."""
    if isinstance(model, BagOfModels):
        return list(zip(model.models, model.settings))
    return [(model, {})]


def _stream_channelwise(model: nn.Module, read: Reader, length: int,
                        shape: tp.Sequence[int], **options: tp.Any) -> tp.Iterator[Block]:
    """`stream_model` of a mono model on each channel of a [B, C, T] input alone (`shape`:
    B, C), the channels as items of one batch: [B, S, C, frames] blocks."""
    batch, channels = shape[:2]

    def read_channels(start: int, end: int) -> torch.Tensor:
        return read(start, end).reshape(batch * channels, 1, end - start)

    def regroup(blocks: tp.Iterator[Block]) -> tp.Iterator[Block]:
        for start, out in blocks:
            frames, sources = out.shape[-1], out.shape[1]
            yield start, out.reshape(batch, channels, sources, frames).transpose(1, 2)
    # Made now, not at the first block: its random shifts are drawn in the bag's order.
    return regroup(stream_model(model, read_channels, length, **options))


def _wiener_member(mix: torch.Tensor, estimates: torch.Tensor, iterations: int,
                   sources: tp.Sequence[str], only: tp.Optional[tp.Sequence[str]]
                   ) -> torch.Tensor:
    """The Wiener filter of a model's estimates [B, S, C, T] of `sources`; with `only`
    (`wiener_sources`), of those sources and the residual (mix minus their sum) as one
    more source, the other estimates left as they are."""
    if not only:
        return wiener_filter(mix, estimates, iterations)
    index = [list(sources).index(source) for source in only]
    chosen = estimates[:, index]
    residual = mix[:, None] - chosen.sum(1, keepdim=True)
    filtered = wiener_filter(mix, torch.cat([chosen, residual], 1), iterations)
    out = estimates.clone()
    out[:, index] = filtered[:, :len(index)]
    return out


def _member_stream(model: nn.Module, settings: tp.Mapping[str, tp.Any], read: Reader,
                   length: int, kwargs: tp.Dict[str, tp.Any], sources: tp.Sequence[str]
                   ) -> tp.Iterator[Block]:
    """The stream of one model of a bag (of `sources`), run with its own settings over the
    caller's (see the module doc)."""
    options = {**kwargs, **{key: value for key, value in settings.items()
                            if key not in ('wiener', 'wiener_sources')}}
    shape = read(0, 0).shape
    channels = shape[1]
    if settings.get('midside') and channels == 1:
        # A mono mixture has no side: the bag's mid/side is moot, a caller's still refused.
        options['midside'] = kwargs.get('midside', False)
    if model.audio_channels == 1 and channels > 1 and not options.get('midside'):
        stream = _stream_channelwise(model, read, length, shape, **options)
    else:
        stream = stream_model(model, read, length, **options)
    iterations = settings.get('wiener', 0)
    if not iterations:
        return stream
    estimates = collect(stream, length)
    mix = read(0, length).to(estimates.device)
    return iter([(0, _wiener_member(mix, estimates, iterations, sources,
                                    settings.get('wiener_sources')))])


def stream_bag(model: nn.Module, read: Reader, length: int, **kwargs: tp.Any
               ) -> tp.Iterator[Block]:
    """`apply.stream_model` for a bag or a single model: the estimates of every model of
    the bag, blended per source with the bag's weights, block by block."""
    if not isinstance(model, BagOfModels):
        return stream_model(model, read, length, **kwargs)
    # Made in order: each model draws its random shifts from the generator in turn.
    streams = [_member_stream(sub_model, settings, read, length, kwargs, model.sources)
               for sub_model, settings in bag_members(model)]
    totals = [sum(column) for column in zip(*model.weights)]

    def blend(estimates: tp.List[torch.Tensor]) -> torch.Tensor:
        out: tp.Any = 0.
        for estimate, weights in zip(estimates, model.weights):
            weight = torch.tensor(weights, dtype=estimate.dtype, device=estimate.device)
            out = out + estimate * weight[:, None, None]
        total = torch.tensor(totals, dtype=out.dtype, device=out.device)
        return out / total[:, None, None]
    return merge(streams, [0] * len(streams), length, blend)


def apply_bag(model: nn.Module, mix: torch.Tensor, **kwargs: tp.Any) -> torch.Tensor:
    """Separate `mix` [B, C, T] (or [C, T]) with a bag or a single model.

    Runs `apply_model(sub_model, mix, **kwargs)` for every model of the bag and blends the
    estimates per source with the bag's weights. A plain model is just `apply_model`.
    """
    if not isinstance(model, BagOfModels):
        return apply_model(model, mix, **kwargs)
    squeeze = mix.dim() == 2
    batched = mix[None] if squeeze else mix
    out = collect(stream_bag(model, slice_reader(batched),
                             batched.shape[-1], **kwargs), batched.shape[-1])
    return out[0] if squeeze else out


def compile_model(model: nn.Module) -> nn.Module:
    """Compile the forward of `model`, or of every model of a bag, with `torch.compile`.

    In place (the model object, its attributes and weights stay), returns `model`. The
    output equals the eager one to float error; on CPU a chunk is ~1.5-2x faster: Inductor
    fuses the element-wise ops around the convolutions and attention and, with `freezing`
    (for inference: under `torch.inference_mode` the weights are constants), folds the
    weights and prepacks them for oneDNN. The first call of every input shape compiles:
    1-2 min on a small CPU, ~30 s when Inductor's kernel cache (`/tmp/torchinductor_$USER`)
    already holds it; needs a C++ compiler on CPU. Worth it for long or many tracks: chunks
    all have the same shape, so one compilation serves all.
    """
    for sub_model in (model.models if isinstance(model, BagOfModels) else [model]):
        sub_model.forward = torch.compile(sub_model.forward, dynamic=False,
                                          options={'freezing': True})
    return model


def list_models(repo: tp.Union[str, Path] = DEFAULT_REPO) -> tp.List[str]:
    """Names of the models and bags in `repo`, sorted."""
    repo = Path(repo)
    if not repo.is_dir():
        return []
    return sorted({path.stem for path in repo.iterdir()
                   if path.suffix in ('.th', '.yaml') and not path.name.startswith('.')})


def _load_package(path: Path) -> nn.Module:
    try:
        model = load_model(path)
    except (RuntimeError, ValueError, KeyError, TypeError, ImportError, AttributeError) as error:
        raise ModelLoadingError(f"Cannot load the model package {path}: {error}") from error
    return model.float().eval()


def _load_bag(path: Path, repo: Path) -> BagOfModels:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ModelLoadingError(f"Cannot read the bag {path}: {error}") from error
    if not isinstance(config, dict) or not isinstance(config.get('models'), list) \
            or not config['models']:
        raise ModelLoadingError(f"Bag {path} must be a mapping with `models: [SIG, ...]` "
                                f"(and optional `weights`, `segment` and `settings`).")
    unknown = set(config) - {'models', 'weights', 'segment', 'settings'}
    if unknown:
        raise ModelLoadingError(f"Bag {path} has unknown keys {sorted(unknown)}; the keys are "
                                f"models, weights, segment and settings.")
    names = [check_name(name, f"Bag {path}, models") for name in config['models']]
    missing = [name for name in names if not (repo / f'{name}.th').exists()]
    if missing:
        raise ModelLoadingError(
            f"Bag {path} uses models missing from {repo}: {', '.join(missing)}. Export them "
            f"with `python -m tools.export {' '.join(missing)} -o {repo}`.")
    segment = config.get('segment')
    if segment is not None and (not isinstance(segment, (int, float)) or segment <= 0):
        raise ModelLoadingError(f"Bag {path}: segment must be a positive number of seconds, "
                                f"got {segment!r}.")
    models = [_load_package(repo / f'{name}.th') for name in names]
    try:
        return BagOfModels(models, config.get('weights'), segment,
                           config.get('settings')).eval()
    except ModelLoadingError as error:
        raise ModelLoadingError(f"Bag {path}: {error}") from None


def load_xp(sig: str, xps: tp.Union[str, Path] = DEFAULT_XPS) -> nn.Module:
    """The model of XP `sig` (its best state, else its last weights), in eval mode, on CPU:
    use a trained XP before exporting it. An XP trained with DiffQ gives its quantized
    weights, those its validation and test ran with."""
    check_name(sig, "XP signature")
    try:
        checkpoint = read_xp_checkpoint(sig, xps, f"XP {sig}")
    except ValueError as error:
        raise ModelLoadingError(str(error)) from error
    try:
        return checkpoint_model(checkpoint)
    except (RuntimeError, ValueError, KeyError, TypeError, ImportError, AttributeError) as error:
        raise ModelLoadingError(f"cannot load XP {sig} from {Path(xps) / sig}: "
                                f"{error}") from error


def get_model(name: str, repo: tp.Union[str, Path] = DEFAULT_REPO) -> nn.Module:
    """The model or bag `name` of `repo` (see the module doc), on CPU, in eval mode."""
    repo = Path(repo)
    check_name(name, f"Model name (in {repo})")
    if not repo.is_dir():
        raise ModelLoadingError(f"No model repository {repo}: export models into it with "
                                f"`python -m tools.export SIG -o {repo}`.")
    package, bag = repo / f'{name}.th', repo / f'{name}.yaml'
    if package.exists() and bag.exists():
        raise ModelLoadingError(f"{name} is ambiguous: both {package} and {bag} exist. "
                                f"Rename one of them.")
    if package.exists():
        return _load_package(package)
    if bag.exists():
        return _load_bag(bag, repo)
    names = list_models(repo)
    known = f"Models in {repo}: {', '.join(names)}." if names else f"{repo} has no models."
    raise ModelLoadingError(f"No model {name!r} ({package} or {bag}). {known} Export an XP "
                            f"with `python -m tools.export SIG -o {repo}`.")
