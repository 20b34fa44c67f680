"""LoRA fine-tuning: adapters start at zero (the model is unchanged), only they learn, an XP
with them resumes exactly after a SIGKILL, and its export is the merged plain model."""
from pathlib import Path

import pytest
import torch
from torch import nn

from separator import lora
from separator.states import load_model
from tools.export import export_xp

from .conftest import (TINY, assert_same_xp, final_state, kill_after, run_dora, signature,
                       start_dora, xp_folder)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 8, 5), nn.ReLU(), nn.ConvTranspose1d(8, 4, 4, stride=2),
                         nn.Flatten(), nn.LazyLinear(3))


def test_adapters_start_at_zero_learn_alone_and_merge_into_plain_weights():
    model = small_model()
    x = torch.randn(2, 2, 31)
    before = model(x).detach()
    plain = {key: value.clone() for key, value in model.state_dict().items()}
    layers = lora.add_lora(model, rank=2, alpha=4)
    assert layers == ['0', '2', '4']
    assert torch.equal(model(x), before)           # B = 0: the same function
    learning = [name for name, param in model.named_parameters() if param.requires_grad]
    assert learning and all(name.endswith(('.down', '.up')) for name in learning)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    after = model(x).detach()
    assert not torch.allclose(after, before)
    state = model.state_dict()
    for key, value in plain.items():   # the frozen weights did not move
        name = key.replace('.weight', lora.PREFIX + '.original') \
            if key.replace('.weight', lora.PREFIX + '.original') in state else key
        assert torch.equal(state[name], value), key
    merged = lora.merged_state(model, state, {'rank': 2, 'alpha': 4, 'targets': ['*']})
    assert merged.keys() == plain.keys()
    fresh = small_model()
    fresh(x)
    fresh.load_state_dict(merged)
    assert torch.allclose(fresh(x), after, atol=1e-6), (fresh(x) - after).abs().max()


def test_no_layer_matched_is_an_error():
    with pytest.raises(ValueError, match=r"lora.targets=\['decoder.\*'\] match no linear"):
        lora.add_lora(small_model(), rank=2, alpha=1, targets=['decoder.*'])


def test_lora_xp_resumes_exactly_and_exports_merged(tiny_data, tmp_path: Path):
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=3', 'lora.rank=2', 'misc.num_workers=0',
                   "lora.targets=['*decoder*']"]
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    sig = signature(run_dora(['run', *args], straight))
    kill_after(start_dora(args, killed), killed, sig, epochs_done=1, delay=0.5)
    run_dora(['run', '-f', sig], killed)
    expected, _ = assert_same_xp(straight, killed, sig)
    assert any(key.endswith('.up') for key in expected['model'])

    package = export_xp(sig, straight / 'outputs' / 'xps', tmp_path / 'release')
    plain = load_model(package).eval()
    assert not any('parametrizations' in key for key in plain.state_dict())
    # The adapted model of the checkpoint, rebuilt: the export computes the same.
    adapted = load_model({**torch.load(package, weights_only=True), 'state': {}}, strict=False)
    lora.add_lora(adapted, rank=2, alpha=16, targets=['*decoder*'])
    adapted.load_state_dict(expected['best_state'])
    adapted.eval()
    mix = torch.randn(1, 2, 44100 // 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (plain(mix) - adapted(mix)).abs().max().item()
    print(f"export vs adapted model: max abs difference {difference:.2e}")
    assert difference < 1e-5
    assert (xp_folder(killed, sig) / 'checkpoint.th').exists()
    assert final_state(killed, sig)['lora'] == {'rank': 2, 'alpha': 16.0,
                                                'targets': ['*decoder*']}
