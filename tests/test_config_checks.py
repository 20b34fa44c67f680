"""Bad config values are refused before any work, with one line naming the key and the fix."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from separator.config_checks import ConfigError, check_config, recover_signatures

from .conftest import ROOT, TINY, run_dora, write_track


def config(*overrides: str):
    with initialize_config_dir(str(ROOT / 'conf'), version_base='1.3'):
        return compose('config', overrides=['variant=tiny', *overrides])


@pytest.mark.parametrize('override, words', [
    ('dset.segment=0', 'dset.segment=0 must be a number above 0'),
    ('dset.segment=-1.5', 'dset.segment=-1.5 must be'),
    ('dset.shift=0', 'dset.shift=0'),
    ('batch_size=0', 'batch_size=0 must be a whole number above 0'),
    ('batch_size=-3', 'batch_size=-3'),
    ('epochs=0', 'epochs=0'),
    ('epochs=-1', 'epochs=-1'),
    ('dset.epoch_size=0', 'dset.epoch_size=0 must be a whole number above 0 (or null)'),
    ('dset.epoch_size=2.5', 'dset.epoch_size=2.5'),
    ('optim.accumulate=0', 'optim.accumulate=0'),
    ('weights=[1,2,3]', 'weights=[1, 2, 3] has 3 value(s) for 4 sources'),
    ('weights=[0,0,0,0]', 'sum to 0'),
    ('weights=[1,-1,1,1]', 'must be numbers >= 0'),
])
def test_bad_values_are_refused(override, words):
    with pytest.raises(ConfigError) as error:
        check_config(config(override))
    assert words in str(error.value)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('override', ['dset.segment=0.5', 'batch_size=7', 'epochs=1',
                                      'dset.epoch_size=13', 'weights=[0,1,0,1]',
                                      'dset.epoch_size=null', "continue_from='12345678'",
                                      "mixer.models=['3e324826']"])
def test_good_values_pass(override):
    check_config(config(override))


@pytest.mark.parametrize('override, key, signature', [
    ('continue_from=12345678', 'continue_from', '12345678'),
    ('continue_from=00345678', 'continue_from', '00345678'),      # Hydra: a string already
    ('dset.clean_lists=1234e567', 'dset.clean_lists', '1234e567'),  # a float: inf
    ('filter.model=3e324826', 'filter.model', '3e324826'),
    ('mixer.models=[3e324826,abcdef12,00000001]', 'mixer.models',
     ['3e324826', 'abcdef12', '00000001']),
])
def test_unquoted_signatures_are_read_back_as_typed(override, key, signature):
    """Hydra reads an all-digit or `NeN` signature as a number; the XP gets the text typed."""
    cfg = config(override)
    recover_signatures(cfg, [override])
    value = cfg
    for part in key.split('.'):
        value = value[part]
    assert (list(value) if key == 'mixer.models' else value) == signature
    check_config(cfg)


@pytest.mark.parametrize('override, words', [
    ('dset.clean_lists=1234e567', "dset.clean_lists=inf is not a signature"),
    ('mixer.models=[3e324826]', "mixer.models=inf is not a signature"),
])
def test_a_number_that_cannot_be_read_back_is_refused(override, words):
    """A signature that is a number in a recipe file (no typed text to read back)."""
    cfg = config(override)
    recover_signatures(cfg, [])
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert words in str(error.value) and 'quote it' in str(error.value)


def test_dora_run_says_it_in_one_line_before_any_work(tmp_path: Path):
    result = run_dora(['run', *TINY, 'dset.segment=-1', f'dset.musdb={tmp_path / "data"}',
                       'dset.generate=true'], tmp_path, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if 'error' in line.lower()]
    assert errors == ['separator: error: dset.segment=-1 must be a number above 0.'], \
        result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'data').exists()        # no data was generated
    assert not list((tmp_path / 'outputs' / 'xps').iterdir())   # nor an XP folder


@pytest.mark.parametrize('override, line', [
    ('optim.lrr=1', 'optim.lrr is not a config key: did you mean optim.lr? the keys of optim '
                    'are lr, '),
    ('variant=tinyy', 'variant=tinyy: there is no conf/variant/tinyy.yaml; choose among '),
    ('dset=musdb', 'dset=musdb: there is no conf/dset/musdb.yaml; choose among automix, dnr, '
                   'musdb18, musdb44'),
    ('epochs=[1', "cannot read the override 'epochs=[1'"),
    ('optim=3', 'optim is a config section, not a value'),
    ('model=hdemucz', 'model=hdemucz is not a model: did you mean model=hdemucs? the models '
                      'are '),
    ('epochs=abc', "epochs='abc' must be a whole number above 0."),
])
def test_mistakes_get_one_line(tmp_path: Path, override, line):
    result = run_dora(['run', *TINY, override], tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [text for text in result.stderr.splitlines() if 'error' in text.lower()]
    assert len(errors) == 1 and errors[0].startswith(f'separator: error: {line}'), \
        result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    xps = tmp_path / 'outputs' / 'xps'
    assert not xps.exists() or not list(xps.iterdir())


def test_a_recipe_does_not_replace_the_chosen_data(tmp_path: Path):
    result = run_dora(['run', 'dset=musdb44', 'variant=tiny'], tmp_path, check=False)
    assert result.returncode == 2
    assert ('separator: error: variant=tiny sets dset.musdb=data/synthetic_tiny, which replaces '
            'the data of dset=musdb44 (/path/to/musdb18hq): give its path on the command '
            'line, dset.musdb=PATH.') in result.stderr.splitlines(), result.stderr[-2000:]


def test_a_real_data_set_is_not_taken_for_a_synthetic_one(tmp_path: Path):
    """`dset.musdb=PATH` without dset=musdb44 (the Demucs habit) on a MUSDB-layout folder:
    one line saying to add dset=musdb44, and nothing written into the folder."""
    write_track(tmp_path / 'mine' / 'train' / 'song', seconds=0.5)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / 'mine').rglob('*'))
    result = run_dora(['run', *TINY, f'dset.musdb={tmp_path / "mine"}', 'dset.generate=true'],
                      tmp_path, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith('separator:')]
    assert len(errors) == 1 and 'not a synthetic one: train on it with dset=musdb44' in \
        errors[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / 'mine').rglob('*')) == before


def test_continue_from_another_width_names_the_difference(tiny_xp, tiny_data):
    cwd, sig = tiny_xp
    result = run_dora(['run', *TINY, f'dset.musdb={tiny_data}', f"continue_from='{sig}'",
                       'hdemucs.channels=6', 'epochs=1'], cwd, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('separator:')]
    assert len(errors) == 1, result.stderr[-2000:]
    assert (f"continue_from={sig}: both are hdemucs, but they differ in channels: 4 there, 6 "
            f"here") in errors[0]
