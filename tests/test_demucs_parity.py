"""`chunking='demucs'`: `separator.apply.apply_model` separates as `demucs.apply.apply_model`
(demucs 4.1.0) does, to float error: same chunks, same padding of each chunk with the audio
around it, same triangle window, same shifted signals.

Both run the very same model object: demucs' own HTDemucs or HDemucs with random (seeded)
weights, small, trained segment 1 s, on a mixture of a prime number of samples (2.7 s: four
chunks at overlap 0.25, the last one short). With shifts, demucs draws its offsets from the
`random` module and we from a torch generator: demucs' `random` is replaced by one that
returns the offsets ours draws, so that both shift the song alike (as bench/separate.py).
"""
import typing as tp

import demucs.apply
import demucs.hdemucs
import demucs.htdemucs
import pytest
import torch

from separator.apply import apply_model

SOURCES = ['drums', 'bass', 'other', 'vocals']
SAMPLERATE = 44100
LENGTH = 119083          # a prime: 2.7 s
SEED = 3


def make_model(name: str) -> torch.nn.Module:
    """demucs' own class, small, random weights; it has sources, samplerate, audio_channels
    and segment (1 s), all that both apply_model need."""
    torch.manual_seed(0)
    if name == 'htdemucs':
        model = demucs.htdemucs.HTDemucs(sources=SOURCES, channels=8, depth=4, t_layers=1,
                                         t_heads=2, bottom_channels=0, segment=1)
    else:
        model = demucs.hdemucs.HDemucs(sources=SOURCES, channels=8, depth=4, nfft=1024, segment=1)
    return model.eval()


class FixedRandom:
    """Stands in for the `random` module of demucs.apply: randint gives `offsets` in turn."""

    def __init__(self, offsets: tp.List[int]):
        self.offsets = list(offsets)

    def randint(self, _low: int, _high: int) -> int:
        return self.offsets.pop(0)


def our_offsets(shifts: int) -> tp.List[int]:
    """The shifts ours draws from a generator seeded SEED: in [0, 0.5 s), one per shift."""
    generator = torch.Generator().manual_seed(SEED)
    return [int(torch.randint(0, SAMPLERATE // 2, (), generator=generator))
            for _ in range(shifts)]


# (model, shifts, segment): the model's segment, or an explicit shorter one (0.8 s: demucs
# pads an HTDemucs chunk to it, other models' to their valid length).
CASES = [('htdemucs', 0, None), ('htdemucs', 2, None), ('hdemucs', 0, None),
         ('hdemucs', 2, None), ('htdemucs', 2, 0.8), ('hdemucs', 0, 0.8)]


@pytest.mark.parametrize('name,shifts,segment', CASES)
def test_demucs_chunking_equals_demucs_apply_model(name, shifts, segment, monkeypatch,
                                                   one_thread):
    model = make_model(name)
    mix = 0.1 * torch.randn(1, 2, LENGTH, generator=torch.Generator().manual_seed(1))
    stub = FixedRandom(our_offsets(shifts))
    monkeypatch.setattr(demucs.apply, 'random', stub)
    with torch.no_grad():
        theirs = demucs.apply.apply_model(model, mix, shifts=shifts, split=True, overlap=0.25,
                                          segment=segment, progress=False)
        ours = apply_model(model, mix, segment=segment, overlap=0.25, shifts=shifts,
                           chunking='demucs', generator=torch.Generator().manual_seed(SEED))
        # The default chunking blends other chunks: it differs, so the comparison can tell.
        fade = apply_model(model, mix, segment=segment, overlap=0.25, shifts=shifts,
                           generator=torch.Generator().manual_seed(SEED))
    assert not stub.offsets          # demucs drew every shift ours did, no more
    assert ours.shape == theirs.shape == (1, len(SOURCES), 2, LENGTH)
    difference = (ours - theirs).abs().max().item()
    print(f"{name}, shifts={shifts}, segment={segment}: max |ours - demucs| = "
          f"{difference:.2e} (output peak {theirs.abs().max().item():.2e})")
    assert difference <= 1e-5
    assert (fade - theirs).abs().max().item() > 1e-4
