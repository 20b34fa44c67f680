"""The SDX23 lineage (grids/sdx23.py): declared stages and signatures, the tiny scale run end
to end without Slurm (`python -m tools.lineage sdx23_tiny`), and its bag separating a song."""
import json
import re

import pytest
import yaml

from separator.lineage import From, Lineage, Stage

from .conftest import run_dora, run_python, write_track, xp_folder

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
        assert set(history[0]['filter']) >= {'kept', 'stems', 'precision', 'recall', 'f1'}
    # ... and the next stages trained on those clean lists.
    assert 'Clean stems per source' in log('joint') and 'Clean stems per source' in log('drums')

    # The bag: each source from its fine-tuned model.
    bag = yaml.safe_load((tmp_path / 'release_models' / 'sdx23_tiny.yaml').read_text())
    assert bag['models'] == [sigs[source] for source in ('drums', 'bass', 'other', 'vocals')]
    assert bag['weights'] == [[1. if i == j else 0. for j in range(4)] for i in range(4)]
    song = tmp_path / 'song'
    write_track(song, seconds=3)
    separated = run_python(['-m', 'separator.separate', '-n', 'sdx23_tiny', '--repo',
                            'release_models', '-o', 'separated', str(song / 'mixture.wav')],
                           tmp_path)
    assert separated.returncode == 0, separated.stdout + separated.stderr
    out = tmp_path / 'separated' / 'sdx23_tiny' / 'mixture'
    assert sorted(path.name for path in out.iterdir()) == [
        'bass.wav', 'drums.wav', 'other.wav', 'vocals.wav']

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
