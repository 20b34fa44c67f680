"""DiffQ: quantization-aware training, bit-packed export and load, exact resume."""
import pytest
import torch

from separator.apply import apply_model
from separator.pretrained import get_model
from separator.solver import _with_own_bit_widths
from separator.states import QUANTIZED, build_model, float_state, get_quantizer, safe_load
from tools import export

from .conftest import (TINY, assert_same_xp, final_state, history, kill_after, run_dora,
                       signature, start_dora)

pytestmark = pytest.mark.usefixtures('one_thread')

# diffq bit-packs by blocks of 2048 weights: give the tiny model parameters that fill some
# (channels=8) and quantize those above 0.002 MB (the default, 0.2 MB, is for real models).
DIFFQ = ['quant.diffq=0.01', 'quant.min_size=0.002', 'hdemucs.channels=8']
SHORT = ['max_batches=2', 'test.every=0', 'test.max_tracks=1']


@pytest.fixture(scope='module')
def diffq_xp(tiny_data, tmp_path_factory):
    cwd = tmp_path_factory.mktemp('diffq_xp')
    result = run_dora(['run', *TINY, f'dset.musdb={tiny_data}', *DIFFQ, *SHORT, 'epochs=1'], cwd)
    return cwd, signature(result)


def test_training_logs_size(diffq_xp):
    cwd, sig = diffq_xp
    checkpoint = final_state(cwd, sig)
    assert checkpoint['quantizer'] == {'min_size': 0.002, 'group_size': 8}
    float_mb = 4 * sum(v.numel() for v in float_state(checkpoint['model']).values()) / 2 ** 20
    train = history(cwd, sig)[0]['train']
    assert 0 < train['ms'] < 0.5 * float_mb, (train, float_mb)
    bits = [key for key in checkpoint['model'] if key.endswith('_diffq')]
    assert bits and all(key in checkpoint['best_state'] for key in bits)
    groups = checkpoint['optimizer']['param_groups']
    assert len(groups) == 2 and groups[1]['weight_decay'] == 0  # the bit widths' own group


def test_export_quantized(diffq_xp, capsys):
    cwd, sig = diffq_xp
    xps = str(cwd / 'outputs' / 'xps')
    assert export.main([sig, '--xps', xps, '-o', str(cwd / 'float')]) == 0
    assert export.main([sig, '--quantize', 'diffq', '--xps', xps, '-o', str(cwd / 'q')]) == 0
    assert 'x the float32 export' in capsys.readouterr().out
    size = (cwd / 'q' / f'{sig}.th').stat().st_size
    assert size < 0.5 * (cwd / 'float' / f'{sig}.th').stat().st_size
    assert safe_load(cwd / 'q' / f'{sig}.th')['state'][QUANTIZED]

    # The float model with its quantizer, in eval mode: what validation and test ran.
    checkpoint = final_state(cwd, sig)
    reference = build_model(checkpoint['package'])
    get_quantizer(reference, **checkpoint['quantizer'])
    reference.load_state_dict(checkpoint['best_state'])
    quantized, full = get_model(sig, cwd / 'q'), get_model(sig, cwd / 'float')
    assert not any(name.endswith('_diffq') for name, _ in quantized.named_parameters())
    mix = 0.1 * torch.randn(2, quantized.samplerate, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = apply_model(reference.eval(), mix)
        assert torch.allclose(apply_model(quantized, mix), expected, atol=1e-6)
        assert not torch.equal(apply_model(full, mix), expected)  # quantization did something


def test_quantize_needs_diffq(tiny_xp, capsys):
    cwd, sig = tiny_xp
    args = [sig, '--quantize', 'diffq', '--xps', str(cwd / 'outputs' / 'xps'),
            '-o', str(cwd / 'none')]
    assert export.main(args) == 2
    err = capsys.readouterr().err
    assert 'not trained with DiffQ' in err and f'dora run -f {sig} quant.diffq=' in err
    assert 'Traceback' not in err and not (cwd / 'none').exists()
    with pytest.raises(SystemExit):
        export.main(args + ['--half'])


def test_continue_from_mixes_float_and_diffq():
    model = torch.nn.Linear(64, 8)
    plain = {key: value.clone() for key, value in model.state_dict().items()}
    get_quantizer(model, min_size=0.0001, group_size=8)
    own = model.state_dict()
    assert set(_with_own_bit_widths(plain, own)) == set(own)         # float -> DiffQ
    assert set(_with_own_bit_widths(own, plain)) == set(plain)       # DiffQ -> float


def test_sigkill_and_resume_is_exact(tiny_data, tmp_path):
    """A DiffQ XP killed during its second epoch ends as one never stopped."""
    args = TINY + [f'dset.musdb={tiny_data}', *DIFFQ, *SHORT, 'epochs=2', 'ema.batch=[0.9]']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *args], straight))
    kill_after(start_dora(args, killed), killed, sig, epochs_done=1, delay=0.0)
    assert len(history(killed, sig)) == 1
    resumed = run_dora(['run', '-f', sig], killed)
    assert 'Resumed from' in resumed.stdout + resumed.stderr

    assert_same_xp(straight, killed, sig)         # the bit widths' Adam state too
