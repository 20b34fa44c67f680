"""danna's MDX21 lineage (grids/mdx21_danna.py): its three models declared at full scale
with their recipes, the tiny scale run end to end without Slurm, and its bag (their weights
per source, the Wiener filter on the U-Net only) separating a song."""
import json

import yaml

from .conftest import run_dora, run_python, separate_with_bag, xp_folder
from .test_sdx23 import parse_table

STAGES = ['xumx', 'unet', 'demucs']
SOURCES = ['drums', 'bass', 'other', 'vocals']
# Their weights of models 1/2/3 per source (the repository's README).
WEIGHTS = {'drums': [.2, .2, .6], 'bass': [.1, .17, .73], 'other': [0, .5, .5],
           'vocals': [.2, .4, .4]}


def test_full_scale_declares_three_models_with_their_recipes(tmp_path):
    result = run_dora(['grid', 'mdx21_danna', '--dry_run', '--init'], tmp_path)
    rows = parse_table(result.stdout)
    assert list(rows) == STAGES, result.stdout
    for stage, variant in zip(STAGES, ['danna_xumx', 'danna_unet', 'danna_demucs']):
        assert rows[stage][1:] == ('ready', [])
        argv = json.loads((xp_folder(tmp_path, rows[stage][0]) / '.argv.json').read_text())
        assert argv == [f'variant={variant}'], argv


def test_tiny_lineage_runs_end_to_end_and_its_bag_blends(tmp_path):
    result = run_python(['-m', 'tools.lineage', 'mdx21_danna_tiny'], tmp_path, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    rows = parse_table(output[output.rindex('Lineage mdx21_danna_tiny: 3/3 stages done'):])
    assert list(rows) == STAGES and all(row[1] == 'done' for row in rows.values())
    sigs = {name: row[0] for name, row in rows.items()}
    for stage, model in zip(STAGES, ['xumx', 'd3unet', 'demucs_split']):
        log = (xp_folder(tmp_path, sigs[stage]) / 'train.log').read_text()
        assert f'Model {model}:' in log, (stage, log[-2000:])
    bag = yaml.safe_load((tmp_path / 'release_models' / 'mdx21_danna_tiny.yaml').read_text())
    assert bag['models'] == [sigs[stage] for stage in STAGES]
    for index, source in enumerate(SOURCES):
        assert [row[index] for row in bag['weights']] == WEIGHTS[source], (source, bag)
    assert bag['settings'] == [{}, {'wiener': 1}, {}]
    separate_with_bag(tmp_path, 'mdx21_danna_tiny')
