"""Whole XPs under Dora: signature, learning, SIGKILL-and-resume exactness, continue_from, info.

Each XP is a real `dora run` in a subprocess, on a tiny synthetic set shared by the tests.
"""
import os
import shutil
import signal
import time
import types
import typing as tp
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from separator import builders
from separator.solver import Solver

from .conftest import (TINY, assert_same_xp, final_state, history, kill_after, run_dora,
                       signature, start_dora, xp_folder)

CONF = Path(__file__).resolve().parent.parent / 'conf'
LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
          torch.nn.Linear)


def test_signature_info_and_unknown_sig(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=1']
    result = run_dora(['run', *args], tmp_path)
    sig = signature(result)
    info = run_dora(['info', '-f', sig], tmp_path)
    assert f'Folder is {xp_folder(tmp_path, sig)}' in info.stdout + info.stderr
    # The same overrides give the same signature; a changed one, another.
    assert signature(run_dora(['run', *args], tmp_path)) == sig
    assert signature(run_dora(['run', *args, 'seed=1'], tmp_path)) != sig
    # Excluded keys (workers, verbosity) do not change it.
    assert signature(run_dora(['run', *args, 'misc.num_workers=0'], tmp_path)) == sig
    bad = run_dora(['info', '-f', 'deadbeef'], tmp_path, check=False)
    assert 'Could not find an existing run with sig deadbeef' in bad.stdout + bad.stderr


def test_sigkill_and_resume_is_exact(tiny_data, tmp_path):
    """An XP killed twice (mid-epoch, then near a checkpoint) ends as one never stopped."""
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=5', 'test.every=2', 'ema.batch=[0.9]',
                   'ema.epoch=[0.5]', 'optim.lr_scheduler=cosine', 'optim.accumulate=2',
                   'misc.num_workers=1',
                   # a few repitched examples (Rubber Band takes ~1 s for each here)
                   'augment.repitch.proba=0.05']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *args], straight))

    kill_after(start_dora(args, killed), killed, sig, epochs_done=1, delay=0.7)
    partial = len(history(killed, sig))
    assert 1 <= partial < 5
    kill_after(start_dora(['-f', sig], killed), killed, sig, epochs_done=3, delay=0.0)
    assert len(history(killed, sig)) < 5
    # What a kill in the middle of a save leaves is removed on resume.
    leftover = xp_folder(killed, sig) / '.checkpoint.th.k1ll3d.tmp'
    leftover.write_bytes(b'half a checkpoint')
    # `dora run -d -f SIG` without a GPU resumes it in as many processes as it ran: one.
    resumed = run_dora(['run', '-d', '-f', sig], killed)
    assert not leftover.exists()
    assert 'Resumed from' in resumed.stdout + resumed.stderr
    assert 'No GPU: DDP with 1 CPU worker(s) (gloo), as wrote its checkpoint' in \
        resumed.stdout + resumed.stderr

    assert_same_xp(straight, killed, sig)
    # Both EMAs were validated every epoch, the per-epoch one under its own name.
    valid = history(killed, sig)[-1]['valid']
    assert {'loss_main', 'loss_ema_0.9', 'loss_ema_epoch_0.5'} <= set(valid), valid


def test_fp16_sigkill_and_resume_is_exact(tiny_data, tmp_path):
    """An fp16 XP killed mid-epoch and resumed ends as one never stopped, its GradScaler's
    state included. No fp16 overflow happens in so few steps, so the loss scale stays at its
    initial 2 ** 16 (it grows after 2000 steps without one); what shows that the scaler ran,
    and that the resumed one goes on from the saved state, is its count of steps since the
    last overflow: all 4 steps (a fresh scaler after the kill would count only the last 2).
    fp16 computes slowly on CPU (no native kernels): 2 steps per epoch."""
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=2', 'max_batches=2', 'test.every=0',
                   'test.max_tracks=1', 'optim.amp=fp16']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *args], straight))
    kill_after(start_dora(args, killed), killed, sig, epochs_done=1, delay=0.5)
    assert len(history(killed, sig)) == 1
    resumed = run_dora(['run', '-f', sig], killed)
    assert 'Resumed from' in resumed.stdout + resumed.stderr

    expected, got = assert_same_xp(straight, killed, sig)
    assert expected['scaler']['_growth_tracker'] == 4, expected['scaler']
    assert got['scaler'] == expected['scaler']


def test_continue_from(tiny_data, tmp_path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=1']
    parent = signature(run_dora(['run', *args], tmp_path))
    parent_state = final_state(tmp_path, parent)['best_state']
    child = run_dora(['run', *args, f'continue_from={parent}', 'optim.lr=0'], tmp_path)
    assert 'Starting from the weights of XP ' + parent in child.stdout + child.stderr
    child_state = final_state(tmp_path, signature(child))['model']
    # With a zero learning rate the child keeps exactly the parent's weights.
    for name, value in parent_state.items():
        assert torch.equal(value, child_state[name]), name

    unknown = run_dora(['run', *args, 'continue_from=deadbeef'], tmp_path, check=False)
    assert unknown.returncode != 0
    assert 'continue_from=deadbeef: no XP with that signature' in unknown.stderr

    # One signature in 40 is all digits: typed unquoted, Hydra reads a number; the XP still
    # starts from the XP named as typed (the CI failed on such a signature).
    xps = tmp_path / 'outputs' / 'xps'
    shutil.copytree(xps / parent, xps / '80345678')
    digits = run_dora(['run', *args, 'continue_from=80345678', 'optim.lr=0'], tmp_path)
    assert 'Starting from the weights of XP 80345678' in digits.stdout + digits.stderr


def test_model_learns(tmp_path):
    """A small HDemucs beats every trivial estimate on held-out synthetic songs."""
    from separator.data.synthetic import write_dataset
    data = write_dataset(tmp_path / 'data', tracks_train=12, tracks_test=2, seconds=10, seed=1,
                         verbose=False)
    args = ['variant=demo', f'dset.musdb={data}', 'dset.generate=false', 'dset.valid_count=1',
            'epochs=10', 'test.every=10', 'test.sdr=false']
    run_dora(['run', *args], tmp_path, timeout=1200)
    sig = signature(run_dora(['info', *args], tmp_path))  # same overrides, same XP
    test = history(tmp_path, sig)[-1]['test']
    baselines = ['nsdr_mixture', 'nsdr_mixture_split', 'nsdr_silence']
    best_trivial = max(test[key] for key in baselines)
    assert test['nsdr'] > best_trivial + 1.0, test
    for source in ['drums', 'bass', 'other', 'vocals']:
        assert test[f'nsdr_{source}'] > test[f'nsdr_silence_{source}'], test
        assert test[f'nsdr_{source}'] > test[f'nsdr_mixture_{source}'], test


def training_step_dtypes(overrides: tp.Sequence[str], data: Path, tmp_path: Path
                         ) -> tp.Tuple[tp.Set[torch.dtype], Solver]:
    """The dtypes that the Conv and Linear layers of the model output during one training step
    of a tiny XP with `overrides`, and its Solver: the objects `dora run` builds
    (separator/train.py), built here in process to watch them."""
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose('config', overrides=[*TINY, f'dset.musdb={data}', 'max_batches=1',
                                           f'dset.metadata={tmp_path / "metadata"}',
                                           *overrides])
    torch.manual_seed(cfg.seed)
    model = builders.get_model(cfg)
    optimizer = builders.get_optimizer(cfg, model)
    link = types.SimpleNamespace(history=[], update_history=lambda history: None)
    xp = types.SimpleNamespace(link=link, folder=tmp_path, sig='amp')
    solver = Solver(cfg, model, optimizer, None, builders.get_datasets(cfg), xp)
    dtypes: tp.Set[torch.dtype] = set()

    def record(module: torch.nn.Module, _inputs: tp.Any, output: torch.Tensor) -> None:
        if module.training:
            dtypes.add(output.dtype)

    hooks = [module.register_forward_hook(record) for module in model.modules()
             if isinstance(module, LAYERS)]
    try:
        solver._train_epoch(0)
    finally:
        for hook in hooks:
            hook.remove()
    return dtypes, solver


@pytest.mark.parametrize('amp,dtype', [(None, torch.float32), ('bf16', torch.bfloat16),
                                       ('fp16', torch.float16)])
def test_mixed_precision_computes_in_its_dtype(amp, dtype, tiny_data, tmp_path, one_thread):
    """Under optim.amp=bf16 (fp16) every Conv and Linear layer of the model computes in
    bfloat16 (float16) during a training step, in float32 without it; only fp16 scales the
    loss (GradScaler), and that step counts as one the scaler let through."""
    dtypes, solver = training_step_dtypes([] if amp is None else [f'optim.amp={amp}'],
                                          tiny_data, tmp_path)
    assert dtypes == {dtype}
    assert solver.scaler.is_enabled() == (amp == 'fp16')
    if amp == 'fp16':
        assert solver.scaler.state_dict()['_growth_tracker'] == 1


def test_mixed_precision_and_htdemucs(tiny_data, tmp_path):
    """bf16 trains under Dora (fp16: test_fp16_sigkill_and_resume_is_exact); an unknown
    precision is refused; HTDemucs trains under Dora."""
    base = TINY + [f'dset.musdb={tiny_data}', 'epochs=1', 'max_batches=2', 'test.every=0']
    sig = signature(run_dora(['run', *base, 'optim.amp=bf16'], tmp_path))
    train = history(tmp_path, sig)[0]['train']
    assert 0 < train['loss'] < 1, train
    assert not final_state(tmp_path, sig)['scaler']   # no GradScaler in bf16
    bad = run_dora(['run', *base, 'optim.amp=fp8'], tmp_path, check=False)
    assert bad.returncode != 0 and "optim.amp='fp8': use null, bf16 or fp16" in bad.stderr
    htdemucs = ['model=htdemucs', 'htdemucs.channels=4', 'htdemucs.nfft=2048',
                'htdemucs.bottom_channels=16', 'htdemucs.t_layers=1', 'htdemucs.t_heads=2',
                'htdemucs.dconv_comp=4']
    sig = signature(run_dora(['run', *base, *htdemucs], tmp_path))
    assert 'HTDemucs' in final_state(tmp_path, sig)['package']['klass']


def test_ctrl_c_says_how_to_resume(tiny_data, tmp_path):
    """SIGINT (Ctrl-C) during epoch 2: status 130, one line naming the command that resumes,
    no traceback; that command then finishes the XP."""
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=3', 'test.every=0', 'test.max_tracks=1',
                   'test.sdr=false']
    sig = signature(run_dora(['run', *args, 'misc.show=true'], tmp_path))
    log = tmp_path / 'log.txt'
    proc = start_dora(args, tmp_path, log)
    path = xp_folder(tmp_path, sig) / 'history.json'
    deadline = time.time() + 300
    while time.time() < deadline and not (path.exists() and history(tmp_path, sig)):
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    output = log.read_text()
    assert 'Traceback' not in output, output[-3000:]
    assert (f"separator: interrupted at epoch 2 of XP {sig}; `dora run -f {sig}` resumes it "
            f"from its checkpoint (epoch 1).") in output, output[-3000:]
    run_dora(['run', '-f', sig], tmp_path)
    assert len(history(tmp_path, sig)) == 3
