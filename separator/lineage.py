"""Lineages: XPs that start from one another, declared once, run on Slurm or locally.

A recipe such as SDX23's is a chain of stages: an XP trains, a filter XP judges the data with
it, the next XP starts from its weights (`continue_from=SIG`) on the clean stems
(`dset.clean_lists=SIG`)... A stage's overrides name its parents with `From('stage')`; the
signature of a stage therefore depends on its parents' signatures, which are known before
anything runs, so the whole lineage is resolved at once. A list value may hold several
(`'mixer.models': [From('vocals'), From('drums')]`: a Mixer over two stages):

    lineage = Lineage('sdx23', base={'variant': 'sdx23'}, stages=[
        Stage('pretrain', {'optim.loss_truncation': 0.5}),
        Stage('filter', {'filter.model': From('pretrain')}),
        Stage('joint', {'continue_from': From('pretrain'), 'dset.clean_lists': From('filter')}),
    ], bag={'drums': 'joint', ...})

A stage is `done` when its XP's history is complete (all epochs; one entry for a filter XP),
`ready` when all its parents are done, `waiting` otherwise. `submit` (from a Dora grid)
schedules the ready stages, so each `dora grid NAME` advances the lineage;
`python -m tools.lineage NAME` runs them one after the other without Slurm.
"""
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .atomic import write_text

DONE, READY, WAITING = 'done', 'ready', 'waiting'


@dataclass(frozen=True)
class From:
    """An override value: the signature of the stage `stage` of the same lineage."""
    stage: str


@dataclass
class Stage:
    """One XP of a lineage: its overrides (on top of the lineage's `base`), and Slurm settings
    on top of the lineage's."""
    name: str
    overrides: tp.Dict[str, tp.Any] = field(default_factory=dict)
    slurm: tp.Dict[str, tp.Any] = field(default_factory=dict)

    @property
    def parents(self) -> tp.List[str]:
        """The stages named by `From` values, also inside lists (`mixer.models`), once each."""
        names: tp.List[str] = []
        for value in self.overrides.values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, From) and item.stage not in names:
                    names.append(item.stage)
        return names


BagEntry = tp.Union[str, tp.Mapping[str, float]]


def blend(entry: BagEntry) -> tp.Dict[str, float]:
    """A bag entry as {stage: weight}: a stage name alone is that stage with weight 1."""
    return {entry: 1.} if isinstance(entry, str) else {k: float(v) for k, v in entry.items()}


@dataclass
class Lineage:
    """Stages in an order where parents come first; `bag` maps each source to the stage whose
    model separates it in the final bag of models (exported by `tools.lineage`), or to a
    blend {stage: weight, ...} (Demucs's MDX21 bag: drums from three models)."""
    name: str
    stages: tp.List[Stage]
    base: tp.Dict[str, tp.Any] = field(default_factory=dict)
    slurm: tp.Dict[str, tp.Any] = field(default_factory=dict)
    bag: tp.Dict[str, BagEntry] = field(default_factory=dict)
    bag_segment: tp.Optional[float] = None    # the bag's chunk length (seconds), if any
    # How a stage's model runs in the bag (pretrained.SETTINGS: overlap, shifts, midside,
    # wiener, wiener_sources), e.g. {'xumx': {'wiener': 1}}: danna's Wiener filter on two models of three.
    bag_settings: tp.Dict[str, tp.Dict[str, tp.Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: tp.Set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"Lineage {self.name}: two stages are named {stage.name}.")
            for parent in stage.parents:
                if parent not in seen:
                    raise ValueError(f"Lineage {self.name}: stage {stage.name} needs "
                                     f"{parent}, which must be declared before it.")
            seen.add(stage.name)
        for source, entry in self.bag.items():
            weights = blend(entry)
            for stage in weights:
                if stage not in seen:
                    raise ValueError(f"Lineage {self.name}: the bag takes {source} from an "
                                     f"unknown stage {stage}.")
            if not weights or sum(weights.values()) <= 0 or min(weights.values()) < 0:
                raise ValueError(f"Lineage {self.name}: the bag's weights for {source} must "
                                 f"be >= 0 with a positive sum, not {weights}.")
        for stage in self.bag_settings:
            if stage not in seen:
                raise ValueError(f"Lineage {self.name}: bag_settings name an unknown stage "
                                 f"{stage}.")


@dataclass
class Resolved:
    """A stage with its Dora XP (argv, signature, folder) and its state."""
    stage: Stage
    argv: tp.List[str]
    xp: tp.Any
    history: tp.List[dict]
    state: str

    @property
    def sig(self) -> str:
        return self.xp.sig

    @property
    def is_filter(self) -> bool:
        return bool(self.xp.cfg.filter.model)

    def summary(self) -> str:
        """The stage's main figure for the table: test nSDR, or what the filter kept."""
        if self.is_filter:
            entry = next((h['filter'] for h in self.history if 'filter' in h), None)
            if entry is None:
                return ''
            text = f"kept {entry['kept']}/{entry['stems']} stems"
            if 'f1' in entry:
                text += f", F1 {entry['f1']:.3f}"
            if 'f1_usable' in entry:
                text += f" (usable {entry['f1_usable']:.3f})"
            return text
        epochs = f"epoch {len(self.history)}/{self.xp.cfg.epochs}"
        tests = [h['test'] for h in self.history if h.get('test')]
        if tests and 'nsdr' in tests[-1]:
            return f"{epochs}, nSDR {tests[-1]['nsdr']:.2f} dB"
        return epochs if self.history else ''


def is_done(cfg: tp.Any, history: tp.Sequence[dict]) -> bool:
    if cfg.filter.model:
        return any('filter' in entry for entry in history)
    return len(history) >= cfg.epochs


def substitute(value: tp.Any, sigs: tp.Mapping[str, str]) -> tp.Any:
    """An override value with each `From` (alone or in a list) replaced by that stage's
    signature."""
    if isinstance(value, From):
        return sigs[value.stage]
    if isinstance(value, (list, tuple)):
        return [substitute(item, sigs) for item in value]
    return value


def resolve(lineage: Lineage, main: tp.Any) -> tp.List[Resolved]:
    """Signatures and states of every stage; `main` is the Dora main (separator.train.main)."""
    resolved: tp.Dict[str, Resolved] = {}
    for stage in lineage.stages:
        sigs = {name: item.sig for name, item in resolved.items()}
        values = {key: substitute(value, sigs)
                  for key, value in {**lineage.base, **stage.overrides}.items()}
        argv = main.value_to_argv(values)
        resolved[stage.name] = Resolved(stage, argv, main.get_xp(argv), [], WAITING)
    stages = list(resolved.values())
    refresh(stages, main)
    return stages


def refresh(stages: tp.Sequence[Resolved], main: tp.Any) -> None:
    """Read the histories again and update the states (the signatures do not change)."""
    states: tp.Dict[str, str] = {}
    for item in stages:
        item.history = main.get_xp_history(item.xp)
        if is_done(item.xp.cfg, item.history):
            item.state = DONE
        elif all(states[parent] == DONE for parent in item.stage.parents):
            item.state = READY
        else:
            item.state = WAITING
        states[item.stage.name] = item.state


def format_table(lineage: Lineage, stages: tp.Sequence[Resolved]) -> str:
    sigs = {item.stage.name: item.sig for item in stages}
    rows = [('stage', 'sig', 'state', 'parents', 'progress')]
    for item in stages:
        parents = ', '.join(f'{name} ({sigs[name]})' for name in item.stage.parents) or '-'
        rows.append((item.stage.name, item.sig, item.state, parents, item.summary()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"Lineage {lineage.name}: {sum(s.state == DONE for s in stages)}/{len(stages)} "
             f"stages done"]
    for row in rows:
        lines.append('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if lineage.bag:
        lines.append("Bag: " + ', '.join(
            f'{source} <- ' + ' + '.join(
                f'{stage} ({sigs[stage]})' + ('' if weight == 1 else f' x{weight:g}')
                for stage, weight in blend(entry).items() if weight)
            for source, entry in lineage.bag.items()))
        scores = bag_nsdr(lineage, stages)
        if scores:
            mean = sum(scores.values()) / len(scores)
            lines.append("Bag test nSDR (each source from its stage's last test): " + ', '.join(
                f'{source} {value:.2f}' for source, value in scores.items()) +
                f", mean {mean:.2f} dB")
    return '\n'.join(lines)


def bag_nsdr(lineage: Lineage, stages: tp.Sequence[Resolved]) -> tp.Dict[str, float]:
    """source -> the test nSDR of that source in the last test of the stage the bag takes it
    from; {} until every such stage has one, and for a bag that blends several models for a
    source (its score is the blend's: `python -m tools.test_pretrained`)."""
    by_name = {item.stage.name: item for item in stages}
    scores = {}
    for source, entry in lineage.bag.items():
        weights = {stage: weight for stage, weight in blend(entry).items() if weight}
        if len(weights) != 1:
            return {}
        stage, = weights
        tests = [h['test'] for h in by_name[stage].history if h.get('test')]
        key = f'nsdr_{source}'
        if not tests or key not in tests[-1]:
            return {}
        scores[source] = float(tests[-1][key])
    return scores


def has_slurm_job(xp: tp.Any) -> bool:
    """Whether Dora keeps a Slurm job for this XP (then a grid shows its state)."""
    return (Path(xp.folder) / xp.dora.shep.job_file).exists()


def submit(launcher: tp.Any, lineage: Lineage, main: tp.Any) -> tp.List[Resolved]:
    """From a Dora grid: print the lineage and schedule its ready stages.

    Done stages that ran on Slurm are scheduled too, so that the grid's table keeps showing
    them (Dora does not run a completed job again); stages done locally are only listed.
    Waiting stages are listed, not submitted: run the grid again once their parents are done.
    """
    stages = resolve(lineage, main)
    print(format_table(lineage, stages), flush=True)
    for item in stages:
        if item.state == READY or (item.state == DONE and has_slurm_job(item.xp)):
            launcher.slurm(**{**lineage.slurm, **item.stage.slurm})(item.argv)
    return stages


def bag_config(lineage: Lineage, stages: tp.Sequence[Resolved],
               sources: tp.Sequence[str]) -> tp.Dict[str, tp.Any]:
    """The bag of `lineage.bag`: one model per stage used, with per source the weight the bag
    gives it (0 for the sources it does not separate); `segment` if the lineage sets one;
    each model's `settings` if the lineage has `bag_settings`."""
    sigs = {item.stage.name: item.sig for item in stages}
    missing = [source for source in sources if source not in lineage.bag]
    if missing:
        raise ValueError(f"Lineage {lineage.name}: its bag gives no model for {missing}.")
    blends = {source: blend(lineage.bag[source]) for source in sources}
    models: tp.List[str] = []
    for source in sources:
        for stage, weight in blends[source].items():
            if weight and sigs[stage] not in models:
                models.append(sigs[stage])
    weights = [[sum(weight for stage, weight in blends[source].items() if sigs[stage] == sig)
                for source in sources] for sig in models]
    config: tp.Dict[str, tp.Any] = {'models': models, 'weights': weights}
    if lineage.bag_segment is not None:
        config['segment'] = lineage.bag_segment
    if lineage.bag_settings:
        by_sig = {sigs[stage]: dict(settings) for stage, settings in lineage.bag_settings.items()}
        config['settings'] = [by_sig.get(sig, {}) for sig in models]
    return config


def write_bag(path: Path, config: tp.Mapping[str, tp.Any], comment: str = '') -> None:
    """Write a bag YAML atomically (a temporary file, then a rename)."""
    header = ''.join(f'# {line}\n' for line in comment.splitlines())
    write_text(path, header + yaml.safe_dump(dict(config), default_flow_style=None,
                                             sort_keys=False))
