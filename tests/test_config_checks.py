"""Bad config values are refused before any work, with one line naming the key and the fix."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from separator.config_checks import ConfigError, check_config

from .conftest import ROOT, TINY, run_dora


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
    ('continue_from=12345678', "continue_from=12345678 is not a signature"),
    ('mixer.models=[3e324826]', "mixer.models=inf is not a signature"),
    ('dset.clean_lists=1234e567', "quote it"),
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


def test_dora_run_says_it_in_one_line_before_any_work(tmp_path: Path):
    result = run_dora(['run', *TINY, 'dset.segment=-1', f'dset.musdb={tmp_path / "data"}',
                       'dset.generate=true'], tmp_path, check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if 'error' in line.lower()]
    assert errors == ['separator: error: dset.segment=-1 must be a number above 0.'], \
        result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'data').exists()        # no data was generated
