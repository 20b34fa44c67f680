"""Whole XPs under Dora: signature, learning, SIGKILL-and-resume exactness, continue_from, info.

Each XP is a real `dora run` in a subprocess, on a tiny synthetic set shared by the tests.
"""
import torch

from .conftest import (TINY, final_state, history, kill_after, run_dora, signature, start_dora,
                       without_durations, xp_folder)

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
                   'optim.lr_scheduler=cosine', 'optim.accumulate=2', 'misc.num_workers=1']
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

    assert without_durations(history(killed, sig)) == without_durations(history(straight, sig))
    expected, got = final_state(straight, sig), final_state(killed, sig)
    for key in ['model', 'best_state']:
        for name, value in expected[key].items():
            assert torch.equal(value, got[key][name]), f'{key}.{name} differs after resume'
    for name, value in expected['emas'][0]['state'].items():
        assert torch.equal(value, got['emas'][0]['state'][name]), f'ema {name} differs'
    assert expected['optimizer']['state'].keys() == got['optimizer']['state'].keys()


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


def test_mixed_precision_and_htdemucs(tiny_data, tmp_path):
    """bf16 and fp16 (with its GradScaler) train on CPU; HTDemucs trains under Dora."""
    base = TINY + [f'dset.musdb={tiny_data}', 'epochs=1', 'max_batches=2', 'test.every=0']
    for amp in ['bf16', 'fp16']:
        sig = signature(run_dora(['run', *base, f'optim.amp={amp}'], tmp_path))
        train = history(tmp_path, sig)[0]['train']
        assert 0 < train['loss'] < 1, train
        if amp == 'fp16':
            assert final_state(tmp_path, sig)['scaler']['scale'] > 0
    bad = run_dora(['run', *base, 'optim.amp=fp8'], tmp_path, check=False)
    assert bad.returncode != 0 and "optim.amp='fp8': use null, bf16 or fp16" in bad.stderr
    htdemucs = ['model=htdemucs', 'htdemucs.channels=4', 'htdemucs.nfft=2048',
                'htdemucs.bottom_channels=16', 'htdemucs.t_layers=1', 'htdemucs.t_heads=2',
                'htdemucs.dconv_comp=4']
    sig = signature(run_dora(['run', *base, *htdemucs], tmp_path))
    assert 'HTDemucs' in final_state(tmp_path, sig)['package']['klass']
