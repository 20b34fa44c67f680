"""The SDX23 lineage (grids/sdx23.py): declared stages and signatures, the tiny scale run end
to end without Slurm (`python -m tools.lineage sdx23_tiny`), and its bag separating a song."""
import importlib
import json
import re

import pytest
import yaml

from separator.lineage import From, Lineage, Stage

from .conftest import run_dora, run_python, separate_with_bag, xp_folder

STAGES = ['pretrain_q0.7', 'pretrain_q0.5', 'pretrain_q0.3', 'filter1', 'joint', 'filter2',
          'vocals', 'bass', 'drums', 'other_q0.9', 'other']
PARENTS = {'pretrain_q0.5': ['pretrain_q0.7'], 'pretrain_q0.3': ['pretrain_q0.5'],
           'filter1': ['pretrain_q0.3'], 'joint': ['pretrain_q0.3', 'filter1'],
           'filter2': ['joint'], 'vocals': ['joint', 'filter2'], 'bass': ['joint', 'filter2'],
           'drums': ['joint', 'filter2'], 'other_q0.9': ['joint', 'filter2'],
           'other': ['other_q0.9', 'filter2']}


def parse_table(text: str) -> dict:
    """stage -> (sig, state, [parent sigs]) from the lineage table."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r'^(\S+)\s+([0-9a-f]{8})\s+(done|ready|waiting)\s+(.*)$', line)
        if match:
            name, sig, state, rest = match.groups()
            rows[name] = (sig, state, re.findall(r'\(([0-9a-f]{8})\)', rest))
    return rows


def test_a_lineage_checks_its_declaration():
    with pytest.raises(ValueError, match='b needs a, which must be declared before it'):
        Lineage('x', [Stage('b', {'continue_from': From('a')}), Stage('a')])
    with pytest.raises(ValueError, match='two stages are named a'):
        Lineage('x', [Stage('a'), Stage('a')])
    with pytest.raises(ValueError, match='unknown stage c'):
        Lineage('x', [Stage('a')], bag={'drums': 'c'})
    assert Stage('b', {'continue_from': From('a'), 'dset.clean_lists': From('f')}).parents \
        == ['a', 'f']


def test_lineages_judge_with_the_winners_statistic():
    """Every filter stage of the lineages passes filter.statistic=ccom and the winner's
    silence level explicitly (the config's defaults stay purity and -60); sdx23_small chooses
    its threshold from the scores (auto), not from the injected manifest."""
    thresholds = {}
    for name in ('sdx23', 'sdx23_small', 'sdx23_tiny'):
        lineage = importlib.import_module(f'grids.{name}').LINEAGE
        filters = [stage for stage in lineage.stages if 'filter.model' in stage.overrides]
        assert [stage.name for stage in filters] == ['filter1', 'filter2'], name
        for stage in filters:
            assert stage.overrides['filter.statistic'] == 'ccom', (name, stage)
            assert stage.overrides['filter.silence'] == -80, (name, stage)
        thresholds[name] = {stage.overrides.get('filter.threshold') for stage in filters}
    assert thresholds == {'sdx23': {None}, 'sdx23_small': {'auto'}, 'sdx23_tiny': {None}}


def test_grid_dry_run_lists_the_stages_their_parents_and_signatures(tmp_path):
    result = run_dora(['grid', 'sdx23', '--dry_run', '--init'], tmp_path)
    rows = parse_table(result.stdout)
    assert list(rows) == STAGES, result.stdout
    sigs = {name: row[0] for name, row in rows.items()}
    assert len(set(sigs.values())) == len(STAGES)
    assert rows['pretrain_q0.7'][1] == 'ready'
    assert all(rows[name][1] == 'waiting' for name in STAGES[1:])
    for name, parents in PARENTS.items():
        assert rows[name][2] == [sigs[parent] for parent in parents], name
    # Only the ready stage is scheduled; its XP is the q=0.7 pretrain of variant=sdx23.
    argv = json.loads((xp_folder(tmp_path, sigs['pretrain_q0.7']) / '.argv.json').read_text())
    assert argv == ['variant=sdx23', 'optim.loss_truncation=0.7', 'epochs=500']
    assert not xp_folder(tmp_path, sigs['pretrain_q0.5']).exists()
    # Signatures are a function of the declaration: the same on every call.
    again = parse_table(run_python(['-m', 'tools.lineage', 'sdx23', '--dry_run'],
                                   tmp_path).stdout)
    assert {name: row[0] for name, row in again.items()} == sigs

    # Every stage's XP is the published recipe (README, "The SDX23 recipe as one lineage";
    # written here by hand): its config once composed, parents given by their signatures.
    # (parent: continue_from, clean: the filter stage of dset.clean_lists, q: loss truncation,
    # weights, global batch, epochs at full scale: the winner's 500 / 200 / 360, ours 100.)
    def training(parent, clean, q, weights, epochs, batch=32):
        return dict(parent=parent, clean=clean, q=q, weights=weights, batch=batch,
                    epochs=epochs)

    recipe = {
        'pretrain_q0.7': training(None, None, 0.7, None, 500),
        'pretrain_q0.5': training('pretrain_q0.7', None, 0.5, None, 200),
        'pretrain_q0.3': training('pretrain_q0.5', None, 0.3, None, 100),
        'filter1': dict(judge='pretrain_q0.3'),
        'joint': training('pretrain_q0.3', 'filter1', None, None, 360),
        'filter2': dict(judge='joint'),
        'vocals': training('joint', 'filter2', None, [0, 0, 0, 1], 100),
        'bass': training('joint', 'filter2', None, [0, 1, 0, 1], 100),
        'drums': training('joint', 'filter2', None, [0.9, 0.05, 0, 0.05], 100),
        'other_q0.9': training('joint', 'filter2', 0.9, None, 100, batch=80),
        'other': training('other_q0.9', 'filter2', None, [0, 0, 1, 0], 100),
    }
    script = (
        "import json\n"
        "from grids.sdx23 import LINEAGE\n"
        "from separator.lineage import resolve\n"
        "from separator.train import main\n"
        "out = {}\n"
        "for item in resolve(LINEAGE, main):\n"
        "    cfg = item.xp.cfg\n"
        "    out[item.stage.name] = dict(\n"
        "        sig=item.sig, model=cfg.model, dset=list(cfg.dset.sources),\n"
        "        train_folder=cfg.dset.train_folder, judge=cfg.filter.model,\n"
        "        parent=cfg.continue_from, clean=cfg.dset.clean_lists,\n"
        "        q=cfg.optim.loss_truncation, batch=cfg.batch_size, epochs=cfg.epochs,\n"
        "        weights=None if cfg.weights is None else list(cfg.weights))\n"
        "print(json.dumps(out))\n")
    composed = run_python(['-c', script], tmp_path)
    assert composed.returncode == 0, composed.stderr[-3000:]
    configs = json.loads(composed.stdout.strip().splitlines()[-1])
    assert list(configs) == STAGES and configs['pretrain_q0.7']['train_folder']
    for name, expected in recipe.items():
        config = configs[name]
        assert config['sig'] == sigs[name], name
        # HTDemucs on the noisy (label-noise) training set, every stage.
        assert config['model'] == 'htdemucs', name
        assert config['dset'] == ['drums', 'bass', 'other', 'vocals'], name
        assert config['train_folder'] == configs['pretrain_q0.7']['train_folder'], name
        if 'judge' in expected:      # a filter stage: judges with its parent, trains nothing
            assert config['judge'] == sigs[expected['judge']], name
            assert config['parent'] is None and config['clean'] is None, name
            continue
        assert config['judge'] is None, name
        got = {key: config[key] for key in expected}
        want = dict(expected, parent=expected['parent'] and sigs[expected['parent']],
                    clean=expected['clean'] and sigs[expected['clean']])
        assert got == want, name


def test_tiny_lineage_runs_end_to_end_and_its_bag_separates(tmp_path):
    result = run_python(['-m', 'tools.lineage', 'sdx23_tiny'], tmp_path, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    final = output[output.rindex('Lineage sdx23_tiny: 11/11 stages done'):]
    assert "Bag test nSDR (each source from its stage's last test): drums " in final, final
    rows = parse_table(final)
    assert list(rows) == STAGES and all(row[1] == 'done' for row in rows.values()), final
    sigs = {name: row[0] for name, row in rows.items()}

    def log(stage: str) -> str:
        return (xp_folder(tmp_path, sigs[stage]) / 'train.log').read_text()

    # Every training stage starts from its parent's weights.
    for stage, parent in [('pretrain_q0.5', 'pretrain_q0.7'), ('joint', 'pretrain_q0.3'),
                          ('vocals', 'joint'), ('other', 'other_q0.9')]:
        assert f'Starting from the weights of XP {sigs[parent]}' in log(stage)
    # The filter stages judged every stem, and never kept a silent one.
    noisy = tmp_path / 'data' / 'labelnoise_sdx23_tiny'
    stems = sum(1 for _ in noisy.glob('*/*.wav'))
    for stage in ('filter1', 'filter2'):
        folder = xp_folder(tmp_path, sigs[stage]) / 'filter'
        scores = json.loads((folder / 'scores.json').read_text())['tracks']
        assert sum(len(track) for track in scores.values()) == stems == 40
        for source in ('drums', 'bass', 'other', 'vocals'):
            kept = (folder / f'clean_{source}.txt').read_text().split()
            assert kept and all(not scores[track][source]['silent'] for track in kept)
        history = json.loads((xp_folder(tmp_path, sigs[stage]) / 'history.json').read_text())
        assert set(history[0]['filter']) >= {'kept', 'stems', 'precision', 'recall', 'f1',
                                              'threshold'}
        config = json.loads((folder / 'scores.json').read_text())['config']
        assert (config['statistic'], config['silence_db']) == ('ccom', -80)
    # ... and the next stages trained on those clean lists.
    assert 'Clean stems per source' in log('joint') and 'Clean stems per source' in log('drums')

    # The bag: each source from its fine-tuned model.
    bag = yaml.safe_load((tmp_path / 'release_models' / 'sdx23_tiny.yaml').read_text())
    assert bag['models'] == [sigs[source] for source in ('drums', 'bass', 'other', 'vocals')]
    assert bag['weights'] == [[1. if i == j else 0. for j in range(4)] for i in range(4)]
    separate_with_bag(tmp_path, 'sdx23_tiny')

    # Running it again finds every stage done and trains nothing.
    again = run_python(['-m', 'tools.lineage', 'sdx23_tiny'], tmp_path)
    assert again.returncode == 0 and '=== Stage' not in again.stdout, again.stdout


def test_lineage_errors_name_the_fix(tmp_path):
    result = run_python(['-m', 'tools.lineage', 'nope'], tmp_path)
    assert result.returncode == 2 and 'no grid grids/nope.py' in result.stderr
    assert 'sdx23_tiny' in result.stderr
    result = run_python(['-m', 'tools.lineage', 'cpu_smoke'], tmp_path)
    assert result.returncode == 2 and 'declares no LINEAGE' in result.stderr
    result = run_python(['-m', 'tools.lineage', 'sdx23_tiny', '--until', 'foo'], tmp_path)
    assert result.returncode == 2 and 'no such stage' in result.stderr
    # A training XP pointed at clean lists that do not exist.
    result = run_dora(['run', 'variant=sdx23_tiny', 'dset.clean_lists=deadbeef', 'epochs=1'],
                      tmp_path, check=False)
    assert result.returncode != 0
    assert 'dset.clean_lists=deadbeef: neither a folder nor the signature' in result.stderr
