"""Small tools: the list of one's XPs, and the README's config table."""
import shlex

from tools import config_table

from .conftest import ROOT, run_python


def test_xps_lists_signature_progress_metrics_and_overrides(tiny_xp):
    cwd, sig = tiny_xp
    result = run_python(['-m', 'tools.xps', '--xps', str(cwd / 'outputs' / 'xps')], cwd)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ['signature', 'epochs', 'train']
    row = next(line for line in rows if line.startswith(sig))
    columns = row.split()
    assert columns[1] == '1/1'                         # epochs=1 of the fixture, done
    assert float(columns[2]) > 0 and float(columns[3]) > 0
    overrides = row[row.index('variant=tiny'):]
    assert 'epochs=1' in shlex.split(overrides) and 'max_batches=2' in shlex.split(overrides)


def test_xps_without_a_folder_says_so(tmp_path):
    result = run_python(['-m', 'tools.xps', '--xps', str(tmp_path / 'none')], tmp_path)
    assert result.returncode == 2 and 'no XP folder' in result.stderr


def test_readme_config_table_is_the_one_of_the_config():
    """Every key of conf/config.yaml, with its comment, in README.md: regenerate it with
    `python -m tools.config_table --write` after changing the config."""
    readme = (ROOT / 'README.md').read_text()
    made = config_table.table((ROOT / 'conf' / 'config.yaml').read_text())
    assert config_table.with_table(readme, made) == readme
    assert '| `optim.lr` | `3e-4` | learning rate |' in made
    assert '`optim.loss` | `l1` | l1, mse, l1_mrstft' in made      # continued comments joined
    assert 'hydra' not in made.split('|')[5]


def test_config_keys_follow_nesting_and_comments():
    text = ("a:\n  b: 1   # one\n            # more\n  c:\n    d: x\ne: [1, 2]  # list\n"
            "hydra:\n  run: z\n")
    assert config_table.config_keys(text) == [('a.b', '1', 'one more'), ('a.c.d', 'x', ''),
                                              ('e', '[1, 2]', 'list')]
