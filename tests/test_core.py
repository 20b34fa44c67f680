"""Unit tests of the pieces the solver is made of: metrics, losses, augment, apply, states."""
import errno
import os
import typing as tp

import pytest
import torch

from separator import augment, states
from separator.apply import apply_model, count_calls
from separator.ema import ModelEMA
from separator.losses import source_losses, weighted_loss
from separator.metrics import nsdr, trivial_estimates


def test_nsdr_reference_values():
    ref = torch.randn(4, 2, 1000)
    assert torch.allclose(nsdr(ref, torch.zeros_like(ref)), torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert (nsdr(ref, ref) > 60).all()
    # Half the amplitude: error is half the reference, 20 log10(2) = 6.02 dB.
    assert torch.allclose(nsdr(ref, ref / 2), torch.full((4,), 6.0206, dtype=torch.float64),
                          atol=1e-3)
    silent = torch.zeros(1, 2, 1000)
    assert nsdr(silent, silent).item() == 0


def test_trivial_estimates():
    mix = torch.randn(2, 100)
    guesses = trivial_estimates(mix, 4)
    assert torch.equal(guesses['mixture'][3], mix)
    assert torch.allclose(guesses['mixture_split'].sum(0), mix, atol=1e-6)
    assert not guesses['silence'].any()


def test_losses_and_weights():
    est, ref = torch.zeros(3, 4, 2, 10), torch.ones(3, 4, 2, 10)
    ref[:, 1] = 3
    losses = source_losses(est, ref, 'l1')
    assert losses.shape == (3, 4) and losses[0, 1] == 3 and losses[0, 0] == 1
    assert source_losses(est, ref, 'mse')[0, 1] == 9
    assert weighted_loss(losses).item() == pytest.approx(1.5)
    assert weighted_loss(losses, [0, 1, 0, 0]).item() == pytest.approx(3)
    with pytest.raises(ValueError, match='one weight per source'):
        weighted_loss(losses, [1, 1])
    with pytest.raises(ValueError, match='Unknown optim.loss'):
        source_losses(est, ref, 'l3')


def test_multi_resolution_stft_loss():
    """l1_mrstft = waveform L1 + the L1 of the STFTs' real and imaginary parts per window."""
    from separator.losses import stft_l1
    torch.manual_seed(0)
    ref = torch.randn(2, 3, 2, 1000)
    est = ref.clone()
    est[1, 2] += 0.1 * torch.randn(2, 1000)
    losses = source_losses(est, ref, 'l1_mrstft')
    assert losses.shape == (2, 3) and (losses[1, 2] > 0) and (losses.flatten()[:-1] == 0).all()
    spec = torch.stft((est - ref)[1, 2], 512, 147, window=torch.hann_window(512),
                      return_complex=True)
    by_hand = (est - ref)[1, 2].abs().mean() + torch.view_as_real(spec).abs().mean()
    # windows 4096, 2048, 1024 are longer than the 1000 samples: skipped
    assert torch.allclose(source_losses(est, ref, 'l1_mrstft', stft_weight=1.)[1, 2],
                          by_hand + stft_l1(est, ref, windows=[256])[1, 2])
    assert torch.allclose(source_losses(est, ref, 'l1_mrstft', stft_weight=0.),
                          source_losses(est, ref, 'l1'))


def test_augment_is_seeded_and_keeps_content():
    sources = torch.randn(8, 4, 2, 100)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        out = augment.remix(augment.flip_sign(augment.flip_channels(sources, gen), gen), gen)
        return out
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    out = run(0)
    # Remix permutes each source across examples of a group; flips keep the energy.
    for s in range(4):
        assert torch.allclose(out[:4, s].pow(2).sum(), sources[:4, s].pow(2).sum())
    gen = torch.Generator().manual_seed(0)
    scaled = augment.scale(sources, gen, 1., 0.5, 0.5)
    assert torch.allclose(scaled, sources * 0.5)
    # Any batch: 6 is a group of 4 and one of 2 (tests/test_any_batch.py).
    assert augment.remix(torch.randn(6, 4, 2, 10), gen, 1., 4).shape == (6, 4, 2, 10)


class Gains(torch.nn.Module):
    """A 'model' that returns fixed gains of its input, and records chunk lengths."""
    samplerate = 100
    segment = 1.

    def __init__(self):
        super().__init__()
        self.lengths = []
        self.gains = torch.tensor([1., 0.5, 0.25, 0.])

    def forward(self, mix):
        self.lengths.append(mix.shape[-1])
        return mix[:, None] * self.gains[None, :, None, None]


@pytest.mark.parametrize('chunking', ['fade', 'demucs'])
@pytest.mark.parametrize('shifts', [0, 2])
def test_apply_overlap_add_is_exact_for_linear_models(shifts, chunking):
    model = Gains()
    mix = torch.randn(2, 1234)
    out = apply_model(model, mix, overlap=0.25, shifts=shifts, chunking=chunking,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 2, 1234)
    assert torch.allclose(out, mix[None] * model.gains[:, None, None], atol=1e-5)
    assert max(model.lengths) == 100  # chunks of the model's segment, never the whole song
    with pytest.raises(ValueError, match="Unknown chunking 'x'"):
        apply_model(model, mix, chunking='x')


@pytest.mark.parametrize('chunking', ['fade', 'demucs'])
def test_count_calls_is_the_number_of_forward_calls(chunking):
    """count_calls (the progress bar's total): exact without shifts, an upper bound with."""
    for length, batch_size, overlap in [(50, 1, .25), (1234, 1, .25), (1234, 3, .5), (100, 2, .25)]:
        model = Gains()
        apply_model(model, torch.randn(2, length), overlap=overlap, batch_size=batch_size,
                    chunking=chunking)
        assert len(model.lengths) == count_calls(model, length, overlap=overlap,
                                                 batch_size=batch_size, chunking=chunking)
    model = Gains()
    apply_model(model, torch.randn(2, 1234), shifts=2, chunking=chunking,
                generator=torch.Generator().manual_seed(0))
    bound = count_calls(model, 1234, shifts=2, chunking=chunking)
    assert len(model.lengths) <= bound and (chunking == 'demucs' or len(model.lengths) == bound)
    assert count_calls(model, 1234, split=False) == 1


class ChunkSum(torch.nn.Module):
    """Every output frame is the sum of the chunk it was given: shows the chunks and padding."""
    samplerate = 10
    segment = 0.4                      # 4 frames
    audio_channels = 1

    def __init__(self, valid: tp.Optional[int] = None):
        super().__init__()
        if valid is not None:
            self.valid_length = lambda length: valid

    def forward(self, mix):
        return mix.sum(-1, keepdim=True).expand_as(mix)[:, None]


def test_demucs_chunking_by_hand():
    """demucs' chunking on 10 frames, segment 4, overlap 0.5: chunks at 0, 2, 4, 6 and 8
    (2 frames), triangle window [.5, 1, 1, .5] (its first 2 values on the last chunk)."""
    ones = torch.ones(1, 10)
    out = apply_model(ChunkSum(), ones, overlap=0.5, chunking='demucs')[0, 0]
    # frame 8: chunk 6 (sum 4, weight 1) and chunk 8 (sum 2, weight .5); frame 9: .5 and 1
    expected = torch.tensor([4.] * 8 + [(4 + 1) / 1.5, (2 + 2) / 1.5])
    assert torch.allclose(out, expected)
    # padded to valid_length 4, centred: the last chunk sees frames 7..10 (10 is a zero)
    out = apply_model(ChunkSum(valid=4), ones, overlap=0.5, chunking='demucs')[0, 0]
    expected = torch.tensor([4.] * 8 + [(4 + .5 * 3) / 1.5, (.5 * 4 + 3) / 1.5])
    assert torch.allclose(out, expected)
    # ours: chunks at 0, 2, 4 and 6, all of real audio
    assert torch.allclose(apply_model(ChunkSum(), ones, overlap=0.5)[0, 0], torch.full((10,), 4.))


def test_compiled_model_gives_the_same_output():
    from separator.models.hdemucs import HDemucs
    from separator.pretrained import compile_model
    torch.manual_seed(0)
    model = HDemucs(['drums', 'bass', 'other', 'vocals'], channels=4, depth=3, nfft=256,
                    dconv_depth=1, segment=0.5).eval()
    mix = torch.randn(2, 44100) * 0.1
    with torch.inference_mode():
        expected = apply_model(model, mix)
        forward = model.forward
        assert compile_model(model) is model and model.forward is not forward
        assert torch.allclose(apply_model(model, mix), expected, atol=1e-5)


def test_ema_tracks_weights():
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, 0.5)
    start = ema.state['weight'].clone()
    with torch.no_grad():
        model.weight.add_(2.)
    ema.update()
    assert torch.allclose(ema.state['weight'], start + 1.)


@pytest.mark.parametrize('decay, unit, words', [(1.0, 'batch', 'ema.batch: decay 1.0'),
                                                (-0.1, 'epoch', 'ema.epoch: decay -0.1'),
                                                (0.9, 'step', "not 'step'")])
def test_ema_refuses_what_cannot_average(decay, unit, words):
    with pytest.raises(ValueError, match=words):
        ModelEMA(torch.nn.Linear(2, 2), decay, unit)


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.th'
    states.atomic_save({'a': 1}, path)

    def full_disk(obj, fout):
        fout.write(b'partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(OSError, match=r'No space left.*ckpt\.th.*previous version'):
        states.atomic_save({'a': 2}, path)
    monkeypatch.undo()
    assert states.safe_load(path) == {'a': 1}
    assert os.listdir(tmp_path) == ['ckpt.th']


def test_safe_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        states.safe_load(tmp_path / 'nope.th')
    (tmp_path / 'bad.th').write_bytes(b'garbage')
    with pytest.raises(RuntimeError, match=r'bad\.th.*corrupt'):
        states.safe_load(tmp_path / 'bad.th')


def test_loss_truncation_masks_the_largest_losses():
    from separator.losses import kept_count, truncation_mask
    losses = torch.tensor([[1., 9.], [5., 2.], [3., 4.], [100., 1.]])
    mask = truncation_mask(losses, 0.5)
    assert mask.tolist() == [[True, False], [False, True], [True, False], [False, True]]
    # The masked mean ignores the dropped examples: an outlier stem no longer matters.
    assert weighted_loss(losses, None, mask).item() == pytest.approx(((1 + 3) / 2 + 1.5) / 2)
    assert kept_count(4, 0.7) == 3
    assert kept_count(4, 0.9) == 4  # too small to drop anything: trained whole
    with pytest.raises(ValueError, match=r'must be in \(0, 1\)'):
        kept_count(4, 1.5)
    # Ranked relative to the target's level, a loud example with a small relative error is
    # kept and a quiet one with a large relative error is dropped.
    sources = torch.ones(4, 2, 1, 8) * torch.tensor([[1., 1.], [10., 1.], [1., 1.], [200., 1.]]
                                                    )[:, :, None, None]
    from separator.losses import target_levels
    levels = target_levels(sources)
    assert levels[:, 0].tolist() == [1., 10., 1., 200.]
    relative = truncation_mask(losses, 0.5, levels)        # relative losses 1, .5, 3, .5
    assert relative[:, 0].tolist() == [False, True, False, True]
    assert mask[:, 0].tolist() == [True, False, True, False]   # by the loss: the quiet ones
