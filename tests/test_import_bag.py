"""`python -m tools.import_weights BAG.yaml -o DIR/NAME.yaml`: a Demucs bag (its remote/*.yaml
and the packages next to it, written here by demucs 4.1.0's own code) becomes our bag, which
separates as demucs separates with its bag."""
from pathlib import Path

import demucs.apply
import demucs.hdemucs
import demucs.htdemucs
import demucs.pretrained
import demucs.states
import pytest
import torch
from omegaconf import OmegaConf

from separator.pretrained import apply_bag, get_model
from tools import import_weights

SOURCES = ['drums', 'bass', 'other', 'vocals']
TRAINING_ARGS = OmegaConf.create({'dset': {'segment': 1}, 'seed': 42})
WEIGHTS = [[1., 1., 0., 1.], [0., 1., 1., 1.]]
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run much faster on one thread (see conftest)."""


def demucs_repo(folder: Path) -> Path:
    """A Demucs repository: two tiny models (seeded random weights), one saved with its
    checksum in the name as demucs' releases are, and the bag yaml naming them."""
    folder.mkdir()
    torch.manual_seed(1)
    hybrid_transformer = demucs.htdemucs.HTDemucs(SOURCES, channels=8, depth=3, nfft=512,
                                                  t_layers=1, t_heads=2, segment=1)
    torch.manual_seed(2)
    hybrid = demucs.hdemucs.HDemucs(SOURCES, channels=8, depth=4, nfft=1024)
    demucs.states.save_with_checksum(
        demucs.states.serialize_model(hybrid_transformer, TRAINING_ARGS), folder / 'aaaa1111.th')
    torch.save(demucs.states.serialize_model(hybrid, TRAINING_ARGS), folder / 'bbbb2222.th')
    (folder / 'tinybag.yaml').write_text(f"models: ['aaaa1111', 'bbbb2222']\n"
                                         f"weights: {WEIGHTS}\nsegment: 1\n")
    return folder / 'tinybag.yaml'


def run(capsys, *argv: str) -> str:
    code = import_weights.main(list(argv))
    captured = capsys.readouterr()
    assert code == (0 if not captured.err else 1), captured
    return captured.err or captured.out


def test_bag_imported_separates_as_demucs(tmp_path, capsys):
    bag_yaml = demucs_repo(tmp_path / 'demucs')
    out = tmp_path / 'release_models'
    message = run(capsys, str(bag_yaml), '-o', str(out / 'mybag.yaml'))
    assert 'Imported the Demucs bag' in message and '2 models' in message
    assert sorted(path.name for path in out.iterdir()) == ['aaaa1111.th', 'bbbb2222.th',
                                                            'mybag.yaml']
    ours = get_model('mybag', out)
    theirs = demucs.pretrained.get_model('tinybag', bag_yaml.parent)
    assert ours.weights == WEIGHTS and ours.segment == 1
    mix = 0.2 * torch.randn(1, 2, 66150, generator=torch.Generator().manual_seed(3))  # 1.5 s
    with torch.no_grad():
        expected = demucs.apply.apply_model(theirs, mix, shifts=0, split=True, overlap=0.25,
                                            progress=False)
        found = apply_bag(ours, mix, overlap=0.25, chunking='demucs')
    difference = (found - expected).abs().max().item()
    figure = (f"bag of 2, 1.5 s: max |ours - demucs| = {difference:.2e} (output max "
              f"{expected.abs().max().item():.2f})")
    assert difference <= TOLERANCE
    # `-o` a folder: the bag keeps its name
    run(capsys, str(bag_yaml), '-o', str(tmp_path / 'other'))
    assert (tmp_path / 'other' / 'tinybag.yaml').is_file()
    print(figure)


def test_bag_errors_are_one_line(tmp_path, capsys):
    bag_yaml = demucs_repo(tmp_path / 'demucs')
    error = run(capsys, str(bag_yaml), '--config', str(bag_yaml), '-o', str(tmp_path / 'x.yaml'))
    assert error.count('\n') == 1 and 'takes no --config' in error
    (bag_yaml.parent / 'bbbb2222.th').unlink()
    error = run(capsys, str(bag_yaml), '-o', str(tmp_path / 'x.yaml'))
    assert error.count('\n') == 1 and error.startswith('import_weights: error: ')
    assert 'bbbb2222' in error and str(bag_yaml.parent) in error
    (bag_yaml.parent / 'notabag.yaml').write_text("audio:\n  n_fft: 8192\n")
    error = run(capsys, str(bag_yaml.parent / 'notabag.yaml'), '-o', str(tmp_path / 'x.yaml'))
    assert 'notabag.yaml' in error and 'models: [SIG, ...]' in error
    assert not (tmp_path / 'x.yaml').exists()
    print(error, end='')
