"""Demucs's MDX21 Track A lineage (grids/mdx.py): its declared stages and parents at full
scale, the tiny scale run end to end without Slurm (`python -m tools.lineage mdx_tiny`), and
its bag, which blends several models per source, separating a song."""
import json

import yaml

from .conftest import run_dora, run_python, separate_with_bag, xp_folder
from .test_sdx23 import parse_table

MODELS = ['demucs', 'demucs_db', 'hdemucs_mask', 'hdemucs_cac']
STAGES = MODELS + [f'{model}_ft' for model in MODELS]
# Demucs's bag `mdx`, per source, the models it blends (in the order of MODELS).
BAG = {'drums': [1, 0, 1, 1], 'bass': [1, 1, 0, 0], 'other': [0, 0, 1, 1],
       'vocals': [0, 0, 1, 1]}


def test_full_scale_declares_the_four_models_and_their_fine_tunes(tmp_path):
    result = run_dora(['grid', 'mdx', '--dry_run', '--init'], tmp_path)
    rows = parse_table(result.stdout)
    assert list(rows) == STAGES, result.stdout
    sigs = {name: row[0] for name, row in rows.items()}
    for model in MODELS:
        assert rows[model][1:] == ('ready', [])
        assert rows[f'{model}_ft'][1:] == ('waiting', [sigs[model]])
    argv = json.loads((xp_folder(tmp_path, sigs['demucs']) / '.argv.json').read_text())
    assert argv == ['variant=mdx21', 'model="demucs"', 'svd.penalty=1e-05', 'svd.min_size=1',
                    'svd.dim=100', 'svd.niters=4', 'svd.convtr=true']


def test_tiny_lineage_runs_end_to_end_and_its_bag_blends(tmp_path):
    result = run_python(['-m', 'tools.lineage', 'mdx_tiny'], tmp_path, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    rows = parse_table(output[output.rindex('Lineage mdx_tiny: 8/8 stages done'):])
    assert list(rows) == STAGES and all(row[1] == 'done' for row in rows.values())
    sigs = {name: row[0] for name, row in rows.items()}
    for model in MODELS:    # each fine-tune starts from its model's weights
        log = (xp_folder(tmp_path, sigs[f'{model}_ft']) / 'train.log').read_text()
        assert f'Starting from the weights of XP {sigs[model]}' in log
    # The recipe's switches reached the XPs: the SVD penalty, repitch, both kinds of EMA.
    history = json.loads((xp_folder(tmp_path, sigs['demucs']) / 'history.json').read_text())
    assert {'loss_ema_0.999', 'loss_ema_epoch_0.9'} <= set(history[0]['valid'])

    bag = yaml.safe_load((tmp_path / 'release_models' / 'mdx_tiny.yaml').read_text())
    sources = ['drums', 'bass', 'other', 'vocals']
    by_model = dict(zip(bag['models'], bag['weights']))
    for source, uses in BAG.items():
        for model, used in zip(MODELS, uses):
            weight = by_model.get(sigs[f'{model}_ft'], [0] * 4)[sources.index(source)]
            assert weight == used, (source, model, bag)
    separate_with_bag(tmp_path, 'mdx_tiny')
