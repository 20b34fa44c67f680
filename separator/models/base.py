"""The model contract: what every separation model provides. Read this page before adding one.

A model is an `nn.Module` that maps a mixture `[B, C, T]` to its sources `[B, S, C, T]`
(S = len(sources), C = audio_channels, the same T). Subclass `SeparationModel`, decorate
`__init__` with `capture_init` (its arguments are what a package stores: plain numbers,
strings, lists and dicts), call `super().__init__(sources, audio_channels, samplerate,
segment)` first, and register the class in `models/__init__.py` under the name of its config
section. Then training, validation, export (TorchScript, ONNX), bags, the `separator` command
and the SDX23 filter all work with it, and none of them needs to know it.

Attributes every model has (set by `SeparationModel.__init__`):
    sources: the names of its outputs, in order.
    audio_channels: channels in and out (1 mono, 2 stereo).
    samplerate: Hz of its input and output.
    segment: seconds: the training segment, and the chunk length of chunked inference.

Optional, with the defaults of this class:
    valid_length(length): the input length the model needs to output `length` samples
        (chunked inference pads to it); the identity for models that take any length.
    n_fft, hop_length: for spectrogram models, their STFT (the one spelling of the FFT size
        in code; config keys keep their historical names, e.g. `hdemucs.nfft`).
    magnitude(wav): magnitude spectrograms of waveforms `[B, S, C, T]`; a model that has it
        can also return its magnitude estimates (`forward(mix, with_magnitudes=True)`), for
        losses in the magnitude domain (`criterion.XUMXLoss`).
"""
import functools
import typing as tp

from torch import nn


def capture_init(init):
    """Decorate `__init__` so that the instance remembers its constructor arguments."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self._init_args_kwargs = (args, kwargs)
        init(self, *args, **kwargs)
    return __init__


class SeparationModel(nn.Module):
    """The base of every model; see the module docstring for the contract."""

    def __init__(self, sources: tp.Sequence[str], audio_channels: int = 2,
                 samplerate: int = 44100, segment: float = 10.):
        super().__init__()
        if not sources:
            raise ValueError(f"{type(self).__name__} needs at least one source.")
        self.sources = list(sources)
        self.audio_channels = audio_channels
        self.samplerate = samplerate
        self.segment = segment

    def valid_length(self, length: int) -> int:
        """The input length to give the model for `length` samples of output."""
        return length
