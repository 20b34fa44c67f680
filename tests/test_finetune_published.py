"""A published checkpoint fine-tuned in a Dora XP: `continue_from=FILE` (a Demucs release
package written by demucs' own code), the XP starts from its exact weights, resumes exactly
after a SIGKILL, and `tools.export --format demucs` gives back a package that demucs' own
loader separates with, with our output."""
from pathlib import Path

import demucs.htdemucs
import demucs.pretrained
import demucs.states
import torch
from omegaconf import OmegaConf

from separator.importers import import_checkpoint
from separator.states import load_model

from .conftest import (SOURCES, TINY, assert_same_xp, final_state, kill_after, run_dora,
                       run_python, signature, start_dora)


def demucs_package(path: Path) -> Path:
    """demucs' own small HTDemucs, random weights, saved as demucs saves its releases."""
    torch.manual_seed(0)
    model = demucs.htdemucs.HTDemucs(sources=SOURCES, channels=8, depth=3, nfft=512,
                                     t_layers=1, t_heads=2, segment=1)
    package = demucs.states.serialize_model(model, OmegaConf.create({'seed': 0}))
    torch.save(package, path)
    return path


def test_a_demucs_package_fine_tunes_resumes_and_goes_back(tiny_data, tmp_path: Path):
    published = demucs_package(tmp_path / 'htdemucs_small.th')
    args = TINY + [f'dset.musdb={tiny_data}', f'continue_from={published}', 'epochs=2']

    # With a zero learning rate, the XP keeps exactly the weights of the file.
    frozen = run_dora(['run', *TINY, f'dset.musdb={tiny_data}', f'continue_from={published}',
                       'epochs=1', 'optim.lr=0'], tmp_path)
    assert f'Starting from the weights of file {published}' in frozen.stdout + frozen.stderr
    imported = import_checkpoint(published)['state']
    kept = final_state(tmp_path, signature(frozen))['model']
    assert kept.keys() == imported.keys()
    for name, value in imported.items():
        assert torch.equal(kept[name], value.float()), name

    # Fine-tuned, killed mid-training and resumed: as if never stopped.
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *args], straight))
    kill_after(start_dora(args, killed), killed, sig, epochs_done=1, delay=0.3)
    run_dora(['run', '-f', sig], killed)
    expected, _ = assert_same_xp(straight, killed, sig)
    moved = sum(not torch.equal(expected['model'][name], value.float())
                for name, value in imported.items() if value.is_floating_point())
    assert moved > len(imported) // 2

    # Back to Demucs: its own loader, the same output as our export of the XP.
    repo = tmp_path / 'demucs_repo'
    result = run_python(['-m', 'tools.export', sig, '--format', 'demucs', '-o', str(repo),
                         '--xps', str(straight / 'outputs' / 'xps')], tmp_path)
    assert result.returncode == 0, result.stderr
    theirs = demucs.pretrained.get_model(sig, repo=repo).eval()
    run_python(['-m', 'tools.export', sig, '-o', str(tmp_path / 'ours'), '--xps',
                str(straight / 'outputs' / 'xps')], tmp_path)
    ours = load_model(tmp_path / 'ours' / f'{sig}.th').eval()
    mix = 0.2 * torch.randn(1, 2, 44100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        difference = (theirs(mix) - ours(mix)).abs().max().item()
    print(f"demucs' loader vs ours on the fine-tuned XP: max abs difference {difference:.2e}")
    assert difference <= 1e-5
