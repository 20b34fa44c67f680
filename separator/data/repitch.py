"""Pitch and tempo augmentation of training examples (Demucs's `RepitchedWrapper`).

With probability `proba` an example is re-pitched by an integer number of semitones drawn
uniformly in [-max_pitch, max_pitch] and its tempo changed by a percentage drawn from a
normal law of std `tempo_std`, capped at +-max_tempo (tempo +10: played at 110 % speed,
10 % shorter). Every stem of the example gets the same change, so the stems stay aligned and
the mixture stays their sum.

Demucs pipes every stem through the `soundstretch` binary; we use Rubber Band through
pedalboard's `time_stretch` (a wheel, no binary), on the numpy side of the data set, so it
runs in the loader workers. The stems are processed together as the channels of one signal:
Rubber Band's timing decisions (transients, phase resets) are then the same for all of them,
and a stem equal to another comes out equal to it. Formants are not preserved: as
soundstretch, a pitch shift moves the whole spectrum.

The change of an example is a function of (seed, global index) only (the global index is
`epoch * epoch_size + i`), drawn from its own generator so the draws of the track and offset
are those of an example without augmentation.
"""
import dataclasses
import math
import typing as tp

import numpy as np

from .audio import fit_length

# Appended to (seed, index) to seed the generator of the repitch draws: a stream of its own,
# distinct from the one that draws the track and offset.
STREAM = 0x7e9175


@dataclasses.dataclass(frozen=True)
class Change:
    """A pitch shift (semitones) and a tempo change (percent: +10 plays at 110 % speed)."""
    pitch: int
    tempo: float

    @property
    def stretch(self) -> float:
        """Speed factor: the output lasts `1 / stretch` times the input."""
        return 1 + self.tempo / 100


def repitch(audio: np.ndarray, samplerate: int, pitch: float, tempo: float,
            quick: bool = False) -> np.ndarray:
    """Shift `audio` [..., T] by `pitch` semitones and speed it up by `tempo` percent, with
    the same change on every row: float32 [..., round(T / (1 + tempo / 100))].

    Rubber Band's latency is compensated (an onset at t comes out at t / (1 + tempo / 100)).
    `quick` trades quality for about twice the speed.
    """
    import pedalboard   # imported here: only the XPs that repitch need it

    if tempo <= -100:
        raise ValueError(f"tempo change {tempo} % would stop the audio: it must be > -100.")
    audio = np.asarray(audio, dtype=np.float32)
    lead, frames = audio.shape[:-1], audio.shape[-1]
    rows = audio.reshape(-1, frames)
    if frames <= rows.shape[0]:
        # pedalboard guesses the layout from the shape: more frames than channels is needed
        raise ValueError(f"Cannot repitch {frames} frames of {rows.shape[0]} channels: the "
                         f"audio must be longer than its channel count (raise dset.segment).")
    out = pedalboard.time_stretch(np.ascontiguousarray(rows), float(samplerate),
                                  stretch_factor=1 + tempo / 100,
                                  pitch_shift_in_semitones=float(pitch),
                                  high_quality=not quick, preserve_formants=False)
    return out.reshape(*lead, out.shape[-1])


class Repitch:
    """Random pitch and tempo changes of training examples, as Demucs's `RepitchedWrapper`
    (`augment.repitch`): with probability `proba`, pitch uniform in +-`max_pitch`
    semitones (an integer), tempo normal of std `tempo_std` percent capped at +-`max_tempo`.
    """

    def __init__(self, proba: float = 0.2, max_pitch: int = 2, max_tempo: float = 12,
                 tempo_std: float = 5, quick: bool = False):
        checks = [('proba', proba, 0 <= proba <= 1, 'a probability in [0, 1]'),
                  ('max_pitch', max_pitch, float(max_pitch).is_integer() and max_pitch >= 0,
                   'a whole number of semitones >= 0'),
                  ('max_tempo', max_tempo, 0 <= max_tempo < 100, 'a percentage in [0, 100)'),
                  ('tempo_std', tempo_std, tempo_std >= 0, 'a percentage >= 0')]
        for key, value, good, want in checks:
            if not good:
                raise ValueError(f"augment.repitch.{key}={value} is invalid: it must be {want}.")
        self.proba = float(proba)
        self.max_pitch = int(max_pitch)
        self.max_tempo = float(max_tempo)
        self.tempo_std = float(tempo_std)
        self.quick = quick

    def __repr__(self) -> str:
        return (f"Repitch(proba={self.proba}, max_pitch={self.max_pitch}, "
                f"max_tempo={self.max_tempo}, tempo_std={self.tempo_std})")

    def draw(self, seed: int, index: int) -> tp.Optional[Change]:
        """The change of example `index` (global index), None when it is left as it is."""
        if self.proba <= 0:
            return None
        rng = np.random.default_rng([seed, index, STREAM])
        applied = rng.random() < self.proba
        pitch = int(rng.integers(-self.max_pitch, self.max_pitch + 1))
        tempo = float(np.clip(rng.normal(0, self.tempo_std), -self.max_tempo, self.max_tempo))
        if not applied or (pitch == 0 and tempo == 0):
            return None
        return Change(pitch, tempo)

    @staticmethod
    def input_length(change: tp.Optional[Change], segment: int) -> int:
        """Frames to read so that `change` yields at least `segment` frames: more when the
        tempo goes up (the output is shorter than the input), fewer when it goes down."""
        if change is None:
            return segment
        return math.ceil(segment * change.stretch) + 1

    def apply(self, stems: np.ndarray, change: tp.Optional[Change], segment: int,
              samplerate: int) -> np.ndarray:
        """Apply `change` to all the stems [S, C, T] at once; cut or pad to `segment`."""
        if change is None:
            return fit_length(stems, segment)
        out = repitch(stems, samplerate, change.pitch, change.tempo, quick=self.quick)
        return fit_length(out, segment)
