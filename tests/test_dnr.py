"""Divide and Remaster (`dset=dnr`): mono speech / music / sfx in ROOT/{tr,cv,tt}/<id>/, the
mixture as mix.wav; tested on generated noise in that layout."""
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from separator import builders

from .conftest import TINY, history, run_dora, run_python, signature, write_track

DNR_SOURCES = ['speech', 'music', 'sfx']
CONF = Path(__file__).resolve().parent.parent / 'conf'


@pytest.fixture
def dnr_root(tmp_path: Path) -> Path:
    root = tmp_path / 'dnr_v2'
    for split, count in [('tr', 3), ('cv', 1), ('tt', 1)]:
        for index in range(count):
            write_track(root / split / f'{100 * len(split) + index}', seconds=2, channels=1,
                        seed=index, sources=DNR_SOURCES, mixture_name='mix')
    return root


def test_dnr_splits_and_mixture(dnr_root, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose('config', overrides=['dset=dnr', f'dset.musdb={dnr_root}',
                                           f'dset.metadata={tmp_path / "metadata"}'])
    train, valid, test = builders.get_tracks(cfg.dset)
    assert [len(train), len(valid), len(test)] == [3, 1, 1]   # cv is the validation set
    assert Path(valid[0].files['speech']).parent.parent.name == 'cv'
    assert test[0].mixture.endswith('mix.wav') and test[0].channels == 1
    assert sorted(test[0].files) == sorted(DNR_SOURCES)


def test_dnr_xp_trains_and_tests(dnr_root, tmp_path):
    args = [*TINY, 'dset=dnr', f'dset.musdb={dnr_root}', 'epochs=1', 'max_batches=2',
            'test.every=1']
    sig = signature(run_dora(['run', *args], tmp_path))
    test = history(tmp_path, sig)[0]['test']
    assert all(math.isfinite(test[f'nsdr_{source}']) for source in DNR_SOURCES), test

    export = run_python(['-m', 'tools.export', sig, '--xps', str(tmp_path / 'outputs' / 'xps'),
                         '-o', 'release'], tmp_path)
    assert export.returncode == 0, export.stderr
    scores = run_python(['-m', 'tools.test_pretrained', '--repo', 'release', '-n', sig,
                         '--musdb', str(dnr_root), '--split', 'tt', '--mixture-name', 'mix',
                         '--no-sdr'], tmp_path)
    assert scores.returncode == 0, scores.stderr
    assert '1 track(s) of' in scores.stdout and 'speech' in scores.stdout
    wrong = run_python(['-m', 'tools.test_pretrained', '--repo', 'release', '-n', sig,
                        '--musdb', str(dnr_root), '--no-sdr'], tmp_path)
    assert wrong.returncode == 2 and 'dnr_v2/test' in wrong.stderr
