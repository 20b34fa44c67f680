"""`optim.checkpointing`: the transformer and LSTM layers recomputed in the backward pass give
the same gradients (dropout included) and keep fewer activations; evaluation, copies (EMA)
and XPs work with it."""
import copy

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks

from separator.checkpointing import enable_checkpointing
from separator.models.bsrnn import BSRNN
from separator.models.hdemucs import HDemucs
from separator.models.htdemucs import HTDemucs
from separator.models.roformer import BSRoFormer, MelRoFormer

from .conftest import SOURCES, TINY, run_dora, signature, xp_folder

SMALL = {
    'htdemucs': lambda: HTDemucs(SOURCES, channels=4, depth=2, nfft=512, bottom_channels=16,
                                 t_layers=2, t_heads=2, t_dropout=0.2, segment=1.),
    'hdemucs': lambda: HDemucs(SOURCES, channels=4, depth=3, nfft=256, segment=1.,
                               dconv_lstm=1, dconv_attn=1),
    'bsrnn': lambda: BSRNN(SOURCES, dim=8, num_layers=2, rnn_hidden=8, n_fft=512,
                           hop_length=128),
    'bs_roformer': lambda: BSRoFormer(SOURCES, dim=16, depth=2, heads=2, dim_head=8,
                                      n_fft=256, hop_length=64, dropout=0.2,
                                      freqs_per_bands=[1] * 9 + [8] * 15),
    'mel_roformer': lambda: MelRoFormer(SOURCES, dim=16, depth=2, heads=2, dim_head=8,
                                        n_fft=256, hop_length=64, num_bands=8,
                                        value_residual=True, attn_gates=True),
}


def step(model: torch.nn.Module, mix: torch.Tensor, seed: int):
    """Loss, gradients, and the bytes of the tensors that autograd saved for the backward."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.zero_grad()
    torch.manual_seed(seed)      # the dropout draws
    with saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(mix).abs().mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, sum(saved)


@pytest.mark.parametrize('name', list(SMALL))
def test_same_gradients_less_memory(name):
    torch.manual_seed(0)
    plain = SMALL[name]().train()
    checkpointed = copy.deepcopy(plain)
    layers = enable_checkpointing(checkpointed)
    assert layers, name
    # Only the outermost units: no LSTM inside a checkpointed BLSTM / transformer again.
    assert not any(a != b and a.startswith(f'{b}.') for a in layers for b in layers)
    mix = torch.randn(2, 2, 44100 // 2 + 17, generator=torch.Generator().manual_seed(1))
    loss, grads, memory = step(plain, mix, seed=3)
    loss_c, grads_c, memory_c = step(checkpointed, mix, seed=3)
    print(f"{name}: {len(layers)} layers checkpointed; saved activations {memory / 2**20:.2f} "
          f"MiB -> {memory_c / 2**20:.2f} MiB")
    assert loss_c == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_c.keys()
    for key in grads:
        torch.testing.assert_close(grads_c[key], grads[key], rtol=1e-5, atol=1e-7, msg=key)
    assert memory_c < memory, (memory_c, memory)


def test_eval_and_copies():
    torch.manual_seed(0)
    model = SMALL['htdemucs']()
    reference = copy.deepcopy(model)
    enable_checkpointing(model)
    # A copy (as the EMAs make) runs its own weights, not those of the model it came from.
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.01)
    units = [m for m in twin.modules() if 'forward' in vars(m)]
    assert units and all(m.forward.__self__ is m for m in units)
    mix = torch.randn(1, 2, 22050, generator=torch.Generator().manual_seed(2))
    model.eval(), reference.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(mix), reference(mix))
        assert not torch.allclose(twin(mix), model(mix))


def test_xp_with_checkpointing(tmp_path, tiny_data):
    """The key is wired: the XP says how many layers it recomputes, and it is not part of the
    signature (an XP may switch it when memory runs short and resume)."""
    args = [*TINY, f'dset.musdb={tiny_data}', 'model=htdemucs', 'htdemucs.channels=4',
            'htdemucs.depth=2', 'htdemucs.nfft=512', 'htdemucs.bottom_channels=16',
            'htdemucs.t_layers=1', 'htdemucs.t_heads=2', 'epochs=1', 'max_batches=2']
    plain = signature(run_dora(['run', *args, 'misc.show=true'], tmp_path))
    result = run_dora(['run', *args, 'optim.checkpointing=true'], tmp_path)
    assert signature(result) == plain
    log = (xp_folder(tmp_path, plain) / 'train.log').read_text()
    assert 'optim.checkpointing: 2 layer(s) recomputed' in log, log[-2000:]
