"""Mid/side inference (`apply_model(..., midside=True)`) with hand-made models."""
import pytest
import torch

from separator.apply import apply_model

GAINS = torch.tensor([0.5, 2., -1.])  # one per source


class Toy(torch.nn.Module):
    """[B, C, T] -> [B, 3, C, T]: per-source gains times `transform` of the input."""

    def __init__(self, transform, audio_channels: int = 2):
        super().__init__()
        self.transform = transform
        self.audio_channels = audio_channels
        self.samplerate = 100
        self.segment = 1.

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        assert mix.shape[1] == self.audio_channels
        return GAINS[:, None, None] * self.transform(mix)[:, None]


def stereo_mix(batch: int = 2, length: int = 250) -> torch.Tensor:
    return torch.randn(batch, 2, length, generator=torch.Generator().manual_seed(0))


def by_hand(gains_of_channels: torch.Tensor) -> torch.Tensor:
    """[B, 2, T] per-channel outputs -> [B, 3, 2, T] estimates of the Toy model."""
    return GAINS[:, None, None] * gains_of_channels[:, None]


def test_linear_channelwise_model_unchanged():
    model = Toy(lambda x: x)
    mix = stereo_mix()
    normal = apply_model(model, mix)
    assert torch.allclose(apply_model(model, mix, midside=True), normal, atol=1e-6)
    # Chunks (segment 1 s = 100 frames) and shifts go through the same way.
    generator = torch.Generator().manual_seed(0)
    shifted = apply_model(model, mix, shifts=2, generator=generator, midside=True)
    assert torch.allclose(shifted, normal, atol=1e-6)
    assert torch.allclose(apply_model(model, mix[0], midside=True), normal[0], atol=1e-6)


def test_left_only_model():
    """A model that copies its left input to both outputs: by hand, with M = (L + R) / 2,
    L' = (L + M + M) / 2 = L + R / 2 and R' = (L + M - M) / 2 = L / 2."""
    model = Toy(lambda x: x[:, :1].expand(-1, 2, -1))
    mix = stereo_mix()
    left, right = mix.unbind(1)
    normal = apply_model(model, mix)
    assert torch.allclose(normal, by_hand(torch.stack([left, left], 1)))
    out = apply_model(model, mix, midside=True)
    assert torch.allclose(out, by_hand(torch.stack([left + right / 2, left / 2], 1)),
                          atol=1e-6)
    assert not torch.allclose(out, normal, atol=1e-2)


def test_mono_model_gets_four_passes():
    """A mono model sees L, R, M and S alone (aimless); a squaring model shows it:
    L' = (L^2 + M^2 + S^2) / 2, R' = (R^2 + M^2 - S^2) / 2, stereo."""
    model = Toy(lambda x: x ** 2, audio_channels=1)
    mix = stereo_mix()
    left, right = mix.unbind(1)
    mid, side = (left + right) / 2, (left - right) / 2
    expected = by_hand(torch.stack([left ** 2 + mid ** 2 + side ** 2,
                                    right ** 2 + mid ** 2 - side ** 2], 1) / 2)
    out = apply_model(model, mix, midside=True)
    assert out.shape == (2, 3, 2, 250)
    assert torch.allclose(out, expected, atol=1e-5)


def test_needs_stereo_mix_and_mono_or_stereo_model():
    with pytest.raises(ValueError, match='stereo mixture, got 1 channel'):
        apply_model(Toy(lambda x: x, audio_channels=1), stereo_mix()[:, :1], midside=True)
    with pytest.raises(ValueError, match='mono or stereo model'):
        apply_model(Toy(lambda x: x[:, :1].expand(-1, 3, -1), audio_channels=3),
                    stereo_mix(), midside=True)
