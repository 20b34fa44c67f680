"""Our time-domain Demucs (`separator.models.demucs.Demucs`) against demucs' own
(`demucs.demucs.Demucs`, demucs 4.1.0): same constructor, same state dict, same initial
weights for a seed, same outputs.

Models are small (channels 8, depth 3-4) but keep the switches of the MDX 2021 Track A time
model (`9357e12e`: 64 channels, depth 6, GELU, DConv branches with BLSTM and local attention
in the two deepest layers, GroupNorm from layer 4, rescale 0.1), scaled to depth 4: LSTM,
attention and GroupNorm from layer 2. The input (33053 samples, a prime) is long enough for
the DConv BLSTMs to run over windows (more than 200 steps in both deepest layers; 257 in the
deepest, where windows of 200 every 100 steps end with a short one). Each layer's output is
compared too: the deep layers weigh little in the output of such a small random model.
"""
import inspect
import typing as tp

import demucs.demucs
import pytest
import torch

from separator.models.demucs import DConv, Demucs
from separator.models.hdemucs import BLSTM, LocalAttention

SOURCES = ['drums', 'bass', 'other', 'vocals']
LENGTH = 33053     # a prime

SMALL = dict(channels=8, depth=4)
MDX21 = dict(SMALL, norm_starts=2, dconv_lstm=2, dconv_attn=2)   # 9357e12e's switches
CONFIGS = {
    'defaults': SMALL,
    'mdx21': MDX21,
    'mdx21_no_normalize': dict(MDX21, normalize=False),   # demucs' conf/config.yaml default
    'v2_like': dict(SMALL, dconv_mode=0, gelu=False, lstm_layers=2, normalize=False),
    'decoder_dconv': dict(MDX21, dconv_mode=3, dconv_depth=-2, context=2),
    'relu_no_resample': dict(channels=16, depth=3, glu=False, resample=False, growth=1.5,
                             norm_starts=1, norm_groups=2, dconv_attn=1, dconv_comp=3),
    'mono_no_rewrite': dict(SMALL, audio_channels=1, rewrite=False, kernel_size=6,
                            stride=3, context=0, rescale=0, dconv_lstm=3),
}


def make_pair(config: dict, seed: int = 0) -> tp.Tuple[torch.nn.Module, Demucs]:
    """demucs' model with random weights (seed), and ours with its state loaded.

    The LayerScales of the DConv branches are drawn in [0.5, 1.5] instead of their init
    (1e-4), so that the branches (BLSTM, attention) weigh in the output."""
    torch.manual_seed(seed)
    theirs = demucs.demucs.Demucs(SOURCES, **config)
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if name.endswith('.scale'):
                param.uniform_(0.5, 1.5)
    ours = Demucs(SOURCES, **config)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def test_constructor_keywords_and_defaults_are_demucs():
    theirs = inspect.signature(demucs.demucs.Demucs.__init__).parameters
    ours = inspect.signature(Demucs.__init__).parameters
    assert list(ours) == list(theirs)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in theirs.items()}


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_state_dict_and_seeded_init_are_demucs(name):
    config = CONFIGS[name]
    torch.manual_seed(1)
    theirs = demucs.demucs.Demucs(SOURCES, **config).state_dict()
    torch.manual_seed(1)
    ours = Demucs(SOURCES, **config).state_dict()
    assert list(ours) == list(theirs)      # names and order
    different = [key for key in theirs if not torch.equal(ours[key], theirs[key])]
    assert not different, different


def layer_outputs(model: torch.nn.Module, mix: torch.Tensor) -> tp.List[torch.Tensor]:
    """The output of every encoder and decoder layer of `model`, then the model's."""
    outputs: tp.List[torch.Tensor] = []
    layers = list(model.encoder) + list(model.decoder)
    hooks = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
             for layer in layers]
    try:
        with torch.no_grad():
            outputs.append(model.eval()(mix))
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_outputs_equal_demucs(name, one_thread):
    config = CONFIGS[name]
    theirs, ours = make_pair(config, seed=2)
    channels = config.get('audio_channels', 2)
    generator = torch.Generator().manual_seed(3)
    for length in (LENGTH, ours.valid_length(LENGTH)):
        assert ours.valid_length(length) == theirs.valid_length(length)
        mix = 0.3 * torch.randn(2, channels, length, generator=generator)
        expected = layer_outputs(theirs, mix)
        outputs = layer_outputs(ours, mix)
        assert len(outputs) == len(expected) == 2 * ours.depth + 1
        assert outputs[-1].shape == (2, len(SOURCES), channels, length)
        difference = (outputs[-1] - expected[-1]).abs().max().item()
        layers = [((out - ref).abs().max() / ref.abs().max().clamp(min=1)).item()
                  for out, ref in zip(outputs[:-1], expected[:-1])]
        print(f"{name}, length {length}: max |ours - demucs| = {difference:.2e} "
              f"(output max {expected[-1].abs().max().item():.2f}); layers: "
              f"max relative {max(layers):.2e}")
        assert difference <= 1e-5
        assert max(layers) <= 1e-5, layers


def test_mdx21_lstm_runs_over_windows():
    """The test input is long enough that the deepest BLSTMs cut it into windows."""
    _, ours = make_pair(MDX21)
    steps = []
    hooks = [module.register_forward_hook(lambda m, i, o: steps.append(i[0].shape[-1]))
             for module in ours.modules() if isinstance(module, BLSTM)]
    with torch.no_grad():
        ours(torch.randn(1, 2, LENGTH))
    for hook in hooks:
        hook.remove()
    assert len(steps) == 4 and min(steps) > 200, steps


@pytest.mark.parametrize('steps', [16, 17, 24, 30, 37, 40, 41, 63])
def test_blstm_windows_equal_demucs(steps):
    torch.manual_seed(0)
    theirs = demucs.demucs.BLSTM(4, layers=2, max_steps=16, skip=True)
    ours = BLSTM(4, layers=2, max_steps=16, skip=True, demucs_windows=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, steps)
    with torch.no_grad():
        difference = (ours(x) - theirs(x)).abs().max().item()
    assert difference <= 1e-6, difference


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter of `module` drawn anew, N(0, 0.5): no small init hides a branch."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(0.5 * torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize('steps', [9, 50])
def test_local_attention_equals_demucs(steps):
    theirs = demucs.demucs.LocalState(16, heads=4, ndecay=4)
    randomize(theirs, 6)
    ours = LocalAttention(16, heads=4, ndecay=4)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 16, steps)
    with torch.no_grad():
        expected = theirs(x)
        difference = (ours(x) - expected).abs().max().item()
    print(f"LocalState, {steps} steps: max |ours - demucs| = {difference:.2e} "
          f"(output max {expected.abs().max().item():.2f})")
    assert difference <= 1e-5


@pytest.mark.parametrize('depth', [2, -2])
def test_dconv_with_lstm_and_attention_equals_demucs(depth):
    torch.manual_seed(7)
    theirs = demucs.demucs.DConv(32, depth=depth, attn=True, lstm=True)
    randomize(theirs, 8)
    ours = DConv(32, depth=depth, attn=True, lstm=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 32, 260)   # windowed BLSTM: 3 windows of 200
    with torch.no_grad():
        expected = theirs(x)
        difference = (ours(x) - expected).abs().max().item()
    print(f"DConv depth {depth}: max |ours - demucs| = {difference:.2e} "
          f"(branch max {(expected - x).abs().max().item():.2f})")
    assert difference <= 1e-5


def test_rescale_divides_conv_weights_by_sqrt_std_over_reference():
    torch.manual_seed(4)
    plain = Demucs(SOURCES, **MDX21, rescale=0)
    torch.manual_seed(4)
    rescaled = Demucs(SOURCES, **MDX21, rescale=0.1)
    convs = [(a, b) for a, b in zip(plain.modules(), rescaled.modules())
             if isinstance(a, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    assert len(convs) > 20
    for a, b in convs:
        scale = (a.weight.std() / 0.1) ** 0.5
        assert torch.allclose(b.weight, a.weight / scale)
        assert torch.allclose(b.bias, a.bias / scale)


def test_v2_checkpoint_key_names_load():
    """Demucs v2 had no norm modules: the rewrite conv of an encoder without DConv and a
    decoder's transposed conv were module 2 of their layer, now 3."""
    theirs, _ = make_pair(CONFIGS['v2_like'])
    old = {}
    for key, value in theirs.state_dict().items():
        parts = key.split('.')
        if parts[0] in ('encoder', 'decoder') and parts[2] == '3':
            parts[2] = '2'
        old['.'.join(parts)] = value
    assert 'encoder.0.2.weight' in old and 'decoder.0.2.weight' in old
    ours = Demucs(SOURCES, **CONFIGS['v2_like'])
    ours.load_state_dict(old)
    assert 'encoder.0.2.weight' in old      # the caller's dict is left as it was
    mix = torch.randn(1, 2, 5003)
    with torch.no_grad():
        assert (ours.eval()(mix) - theirs.eval()(mix)).abs().max() <= 1e-5


def test_training_step(one_thread):
    torch.manual_seed(5)
    model = Demucs(SOURCES, **MDX21, segment=1)
    sources = 0.2 * torch.randn(2, len(SOURCES), 2, 8009)
    mix = sources.sum(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = (model(mix) - sources).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    print("l1 over 3 steps:", [round(value, 4) for value in losses])
    assert losses[-1] < losses[0]


def test_contract_and_errors():
    model = Demucs(SOURCES, **SMALL, samplerate=22050, segment=3)
    assert model.sources == SOURCES and model.audio_channels == 2
    assert model.samplerate == 22050 and model.segment == 3
    assert model._init_args_kwargs[1]['channels'] == 8
    with pytest.raises(ValueError, match='mixture'):
        model(torch.randn(1, 1, 1000))
    with pytest.raises(ValueError, match='heads'):
        Demucs(SOURCES, channels=6, depth=2, dconv_attn=0)


def test_traces_for_torchscript(one_thread):
    """`tools.export --torchscript` traces at a fixed length: the pads and trims follow."""
    _, ours = make_pair(MDX21)
    ours.eval()
    generator = torch.Generator().manual_seed(9)
    example, check = (torch.randn(batch, 2, 8009, generator=generator) for batch in (1, 2))
    with torch.no_grad():
        traced = torch.jit.trace(ours, example, check_trace=False)
        difference = (traced(check) - ours(check)).abs().max().item()
    assert difference <= 1e-6, difference
