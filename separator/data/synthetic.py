"""Synthetic multitrack songs in the MUSDB18-HQ layout.

No real data set can be downloaded, so we make songs whose separation is a real task: every
track has a tempo, a key and a chord progression shared by bass, other and vocals, the sources
overlap in frequency (the voice sings in the register of the chord instruments), and sources
drop in and out by sections, as in real songs.

Everything is rendered with vectorised numpy: each note is synthesised on its own short array
(band-limited wavetable oscillators, FFT filters) and added into the stem, so there is no per
sample Python loop.

Layout written by `write_dataset`:
`ROOT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav`, stereo float32 WAV, with
mixture == drums + bass + other + vocals exactly (float32 sum in that order). Tracks are about
3.5 MB per second (5 files, stereo float32 at 44.1 kHz).
"""
import json
import math
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..atomic import atomic_folder, remove_stale_folders, write_json
from ..locking import locked

SOURCES = ['drums', 'bass', 'other', 'vocals']
MIXTURE = 'mixture'
SPLITS = {'train': 0, 'test': 1}
MAX_PEAK = 0.9

DEFAULT_TRACKS_TRAIN = 12
DEFAULT_TRACKS_TEST = 4
DEFAULT_SECONDS = 20.0
DEFAULT_SEED = 0
DEFAULT_SAMPLERATE = 44100

STEPS = 16                      # sixteenth notes per 4/4 bar
TABLE_SIZE = 4096               # samples of one wavetable cycle
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord progressions as scale degrees (0 = tonic), e.g. I-V-vi-IV.
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4), (0, 3, 0, 4),
                (0, 6, 5, 4), (0, 2, 3, 4), (0, 5, 1, 4))
# Probability that a whole stem is silent in a track (at most one stem per track).
SILENT_STEM_PROBS = (('vocals', 0.12), ('drums', 0.04), ('bass', 0.03), ('other', 0.03))

Array = np.ndarray
Hits = tp.List[tp.Tuple[str, int, float]]


# --------------------------------------------------------------------------------------------
# Song plan: tempo, key, chords and which source plays in which bar.
# --------------------------------------------------------------------------------------------

@dataclass
class SongPlan:
    """Musical skeleton of one track, shared by all its instruments."""
    samplerate: int
    length: int                         # samples
    bpm: float
    tonic: int                          # pitch class of the key, 0 = C
    scale: tp.Tuple[int, ...]           # semitones of the scale above the tonic
    chords: tp.List[int]                # scale degree of the chord of each bar
    swing: float                        # delay of odd sixteenths, fraction of a sixteenth
    active: tp.Dict[str, Array]         # source -> bool [n_bars], plays in that bar
    silent: tp.Optional[str]            # source that is silent for the whole track

    @property
    def n_bars(self) -> int:
        return len(self.chords)

    @property
    def step_seconds(self) -> float:
        return 15.0 / self.bpm

    def sample(self, bar: int, step: float = 0) -> int:
        """Sample index of sixteenth `step` of `bar` (steps may run past the bar), with swing."""
        total = bar * STEPS + step
        delay = self.swing if int(total) % 2 == 1 else 0.0
        return int(round((total + delay) * self.step_seconds * self.samplerate))

    def grid(self) -> Array:
        """Sample indexes of every sixteenth of the song."""
        return np.array([self.sample(bar, step) for bar in range(self.n_bars)
                         for step in range(STEPS)])

    def chord_pcs(self, bar: int, seventh: bool = False) -> tp.List[int]:
        """Pitch classes of the chord of `bar`: stacked scale thirds on its degree."""
        degree = self.chords[min(bar, self.n_bars - 1)]
        offsets = (0, 2, 4, 6) if seventh else (0, 2, 4)
        return [(self.tonic + self.scale[(degree + o) % 7]) % 12 for o in offsets]

    def scale_notes(self, low: int, high: int) -> Array:
        """MIDI pitches of the scale within [low, high]."""
        notes = np.arange(low, high + 1)
        return notes[np.isin((notes - self.tonic) % 12, self.scale)]


def _draw_silent_stem(rng: np.random.Generator) -> tp.Optional[str]:
    draw = rng.random()
    for source, prob in SILENT_STEM_PROBS:
        if draw < prob:
            return source
        draw -= prob
    return None


def _draw_sections(rng: np.random.Generator, n_bars: int,
                   silent: tp.Optional[str]) -> tp.Dict[str, Array]:
    """Which source plays in which bar: intros, breaks, verses without vocals."""
    active = {source: np.ones(n_bars, dtype=bool) for source in SOURCES}
    intro = 1 if n_bars < 8 or rng.random() < 0.5 else 2
    active['vocals'][:intro] = False
    for start in range(intro, n_bars, 2):
        if rng.random() < 0.2:
            active['vocals'][start:start + 2] = False
    if rng.random() < 0.35:
        active['drums'][0] = False
    for bar in range(2, n_bars):
        if rng.random() < 0.08:
            active['drums'][bar] = False
            if rng.random() < 0.5:
                active['bass'][bar] = False
    if rng.random() < 0.3:
        active['bass'][0] = False
    if active['drums'][0] and rng.random() < 0.15:
        active['other'][0] = False
    if silent is not None:
        active[silent][:] = False
    return active


def plan_song(rng: np.random.Generator, seconds: float,
              samplerate: int = DEFAULT_SAMPLERATE) -> SongPlan:
    """Draw the skeleton of a track. The silent stem is drawn first so it does not depend on
    `seconds`."""
    length = int(round(seconds * samplerate))
    if length <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    silent = _draw_silent_stem(rng)
    bpm = float(rng.uniform(80, 160))
    tonic = int(rng.integers(12))
    scale = MINOR if rng.random() < 0.45 else MAJOR
    progression = PROGRESSIONS[rng.integers(len(PROGRESSIONS))]
    bars_per_chord = 2 if bpm > 125 and rng.random() < 0.5 else 1
    swing = float(rng.choice([0.0, 0.0, 0.0, 0.15, 0.3]))
    n_bars = max(1, math.ceil(seconds * bpm / 240))
    chords = [progression[(bar // bars_per_chord) % len(progression)] for bar in range(n_bars)]
    active = _draw_sections(rng, n_bars, silent)
    return SongPlan(samplerate=samplerate, length=length, bpm=bpm, tonic=tonic, scale=scale,
                    chords=chords, swing=swing, active=active, silent=silent)


# --------------------------------------------------------------------------------------------
# DSP helpers
# --------------------------------------------------------------------------------------------

def _hz(midi: tp.Union[float, Array]) -> tp.Union[float, Array]:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69) / 12)


def _lowpass_gain(freqs: Array, cutoff: float, order: int = 2) -> Array:
    return 1 / np.sqrt(1 + (freqs / cutoff) ** (2 * order))


def _highpass_gain(freqs: Array, cutoff: float, order: int = 2) -> Array:
    return 1 / np.sqrt(1 + (cutoff / np.maximum(freqs, 1e-3)) ** (2 * order))


def _fft_filter(x: Array, samplerate: int, gain: tp.Callable[[Array], Array]) -> Array:
    """Zero-phase filtering by a magnitude response given as a function of frequency (Hz).
    Circular: meant for stationary noise banks."""
    freqs = np.fft.rfftfreq(len(x), 1 / samplerate)
    return np.fft.irfft(np.fft.rfft(x) * gain(freqs), len(x))


def _noise_bank(rng: np.random.Generator, samplerate: int, seconds: float,
                gain: tp.Callable[[Array], Array]) -> Array:
    noise = _fft_filter(rng.standard_normal(int(seconds * samplerate)), samplerate, gain)
    return noise / (noise.std() + 1e-12)


def _noise_slice(rng: np.random.Generator, bank: Array, length: int) -> Array:
    start = int(rng.integers(0, max(1, len(bank) - length)))
    return bank[start:start + length]


def _table(amps: Array, phase: float = -np.pi / 2) -> Array:
    """One cycle of a waveform with harmonic amplitudes `amps` (harmonic 1 first), extended by
    one sample for linear interpolation."""
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1:len(amps) + 1] = np.asarray(amps) * np.exp(1j * phase)
    wave = np.fft.irfft(spectrum, TABLE_SIZE) * (TABLE_SIZE / 2)
    return np.append(wave, wave[0])


def _n_harmonics(f0: float, samplerate: int, most: int) -> int:
    """Harmonics that stay below ~0.45 fs, so the wavetable does not alias."""
    return int(max(1, min(most, 0.45 * samplerate / max(f0, 1.0), TABLE_SIZE // 2 - 1)))


def _oscillate(tables: Array, freq: tp.Union[float, Array], n: int, samplerate: int,
               phase0: float = 0.0) -> Array:
    """Read wavetables [M, TABLE_SIZE + 1] with a common phase at `freq` Hz (a constant or one
    value per sample). Returns [M, n]."""
    if np.ndim(freq) == 0:
        cycles = phase0 + float(freq) / samplerate * np.arange(n)
    else:
        cycles = phase0 + np.cumsum(freq) / samplerate
    pos = (cycles % 1.0) * TABLE_SIZE
    index = pos.astype(np.int64)
    frac = pos - index
    low = tables[:, index]
    return low + frac * (tables[:, index + 1] - low)


def _two_tables(bright: Array, dull: Array, freq: float, n: int, samplerate: int,
                brightness: Array, phase0: float = 0.0) -> Array:
    """A voice whose timbre moves from `bright` to `dull` as `brightness` goes from 1 to 0:
    a cheap stand-in for a low-pass filter envelope or decaying upper harmonics."""
    waves = _oscillate(np.stack([bright, dull]), freq, n, samplerate, phase0)
    return waves[1] + brightness * (waves[0] - waves[1])


def _adsr(gate: int, samplerate: int, attack: float, decay: float, sustain: float,
          release: float) -> Array:
    """Envelope of a note held for `gate` samples, followed by its release (ends at 0)."""
    n_release = max(1, int(release * samplerate))
    t = np.arange(gate + n_release) / samplerate
    attack = max(attack, 1 / samplerate)
    env = np.where(t < attack, t / attack,
                   sustain + (1 - sustain) * np.exp(-np.maximum(t - attack, 0) / decay))
    held = env[min(gate, len(env) - 1)]
    tail = np.clip(1 - (t - gate / samplerate) / release, 0, 1) ** 2
    return np.where(t < gate / samplerate, env, held * tail)


def _percussive(n: int, samplerate: int, tau: float, attack: float = 0.001) -> Array:
    """Fast attack, exponential decay, short fade to exactly zero at the end."""
    t = np.arange(n) / samplerate
    env = np.minimum(t / attack, 1.0) * np.exp(-t / tau)
    fade = min(n, int(0.005 * samplerate))
    env[n - fade:] *= np.linspace(1, 0, fade)
    return env


def _half_hann(n: int) -> Array:
    """Rising half of a Hann window; rising and falling halves sum to exactly one."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / max(n, 1))


def _smooth(x: Array, width: int) -> Array:
    """Two passes of a centred moving average (triangular kernel) with edge padding."""
    if width < 2 or len(x) == 0:
        return x
    n = len(x)
    for _ in range(2):
        padded = np.concatenate([np.full(width // 2, x[0]), x, np.full(width - width // 2, x[-1])])
        csum = np.concatenate([[0.0], np.cumsum(padded)])
        x = (csum[width:] - csum[:-width])[:n] / width
    return x


def _add(buffer: Array, x: Array, start: int) -> None:
    """buffer[start:start + len(x)] += x, clipped to the buffer."""
    begin, end = max(start, 0), min(start + len(x), len(buffer))
    if begin < end:
        buffer[begin:end] += x[begin - start:end - start]


def _active_rms(x: Array) -> float:
    """RMS over the samples that are not silent, so sparse parts are not over-amplified."""
    count = np.count_nonzero(np.abs(x) > 1e-9)
    return float(np.sqrt(np.sum(x ** 2) / count)) if count else 0.0


def _normalise(x: Array) -> Array:
    rms = _active_rms(x)
    return x / rms if rms > 0 else x


def _pan(mono: Array, pan: float, delay: int) -> Array:
    """Constant-power pan in [-1, 1] plus a small inter-channel delay for stereo width."""
    angle = (pan + 1) * np.pi / 4
    out = np.sqrt(2) * np.array([np.cos(angle), np.sin(angle)])[:, None] * mono[None]
    if delay > 0:
        far = 0 if pan >= 0 else 1
        out[far, delay:] = out[far, :-delay].copy()
        out[far, :delay] = 0
    return out


def _voicing(pcs: tp.Sequence[int], low: int) -> tp.List[int]:
    """Chord pitch classes placed in the octave [low, low + 12)."""
    return sorted(low + (pc - low) % 12 for pc in pcs)


def _chord_runs(plan: SongPlan, source: str) -> tp.List[tp.Tuple[int, int]]:
    """(first bar, end bar) of runs of active bars with the same chord: held instruments play
    one note per run instead of re-attacking every bar."""
    runs: tp.List[tp.Tuple[int, int]] = []
    active = plan.active[source]
    for bar in range(plan.n_bars):
        if not active[bar]:
            continue
        if runs and runs[-1][1] == bar and plan.chords[runs[-1][0]] == plan.chords[bar]:
            runs[-1] = (runs[-1][0], bar + 1)
        else:
            runs.append((bar, bar + 1))
    return runs


# --------------------------------------------------------------------------------------------
# Drums
# --------------------------------------------------------------------------------------------

KICK_PATTERNS = ((0, 8), (0, 4, 8, 12), (0, 6, 8), (0, 3, 8, 11), (0, 7, 10), (0, 8, 10),
                 (0, 10))
SNARE_PATTERNS = ((4, 12), (4, 12), (8,), (4, 12, 14))
HAT_PATTERNS = (tuple(range(0, 16, 2)), tuple(range(16)), (2, 6, 10, 14), (0, 4, 8, 12))
DRUM_PARTS = ('kick', 'snare', 'hat', 'open_hat', 'tom_hi', 'tom_lo', 'crash')


def _kick(rng: np.random.Generator, sr: int, click_bank: Array) -> Array:
    """Pitched-down sine sweep with a fast decay and a short noise click."""
    n = int(0.4 * sr)
    t = np.arange(n) / sr
    f_end, sweep = rng.uniform(42, 62), rng.uniform(80, 160)
    freq = f_end + sweep * np.exp(-t / rng.uniform(0.02, 0.05))
    body = np.sin(2 * np.pi * np.cumsum(freq) / sr) * _percussive(n, sr, rng.uniform(0.08, 0.2))
    click = _noise_slice(rng, click_bank, n) * _percussive(n, sr, 0.002) * rng.uniform(0.1, 0.4)
    return body + click


def _snare(rng: np.random.Generator, sr: int, noise_bank: Array) -> Array:
    """Noise burst plus a tonal body (two damped partials)."""
    n = int(0.35 * sr)
    t = np.arange(n) / sr
    tone = rng.uniform(160, 250)
    body = (np.sin(2 * np.pi * tone * t) + 0.5 * np.sin(2 * np.pi * 1.6 * tone * t))
    body *= _percussive(n, sr, rng.uniform(0.03, 0.06))
    noise = _noise_slice(rng, noise_bank, n) * _percussive(n, sr, rng.uniform(0.06, 0.16))
    mix = rng.uniform(0.5, 0.8)
    return mix * noise / 2 + (1 - mix) * body


def _tom(rng: np.random.Generator, sr: int, f0: float, noise_bank: Array) -> Array:
    n = int(0.5 * sr)
    t = np.arange(n) / sr
    freq = f0 * (1 + 0.5 * np.exp(-t / 0.03))
    body = np.sin(2 * np.pi * np.cumsum(freq) / sr) * _percussive(n, sr, rng.uniform(0.15, 0.3))
    return body + 0.1 * _noise_slice(rng, noise_bank, n) * _percussive(n, sr, 0.03)


def _cymbal(rng: np.random.Generator, sr: int, bank: Array, seconds: float,
            tau: float) -> Array:
    n = int(seconds * sr)
    return _noise_slice(rng, bank, n) * _percussive(n, sr, tau)


def _drum_kit(rng: np.random.Generator, sr: int) -> tp.Dict[str, tp.List[Array]]:
    """A few variants of each drum sound, so repeated hits are not sample-identical."""
    hat_cut = float(rng.uniform(6000, 9000))
    hats = _noise_bank(rng, sr, 2.0, lambda f: _highpass_gain(f, hat_cut, 3))
    crash_bank = _noise_bank(rng, sr, 2.0, lambda f: _highpass_gain(f, 4000, 2))
    snare_bank = _noise_bank(rng, sr, 2.0,
                             lambda f: _highpass_gain(f, 1000, 2) * _lowpass_gain(f, 9000, 2))
    hat_tau, open_tau = rng.uniform(0.012, 0.035), rng.uniform(0.1, 0.25)
    tom_low = rng.uniform(85, 120)
    kit: tp.Dict[str, tp.List[Array]] = {
        'kick': [_kick(rng, sr, hats) for _ in range(3)],
        'snare': [_snare(rng, sr, snare_bank) for _ in range(3)],
        'hat': [_cymbal(rng, sr, hats, 0.12, hat_tau) for _ in range(4)],
        'open_hat': [_cymbal(rng, sr, hats, 0.5, open_tau) for _ in range(2)],
        'tom_hi': [_tom(rng, sr, tom_low * 1.5, snare_bank) for _ in range(2)],
        'tom_lo': [_tom(rng, sr, tom_low, snare_bank) for _ in range(2)],
        'crash': [_cymbal(rng, sr, crash_bank, 1.8, rng.uniform(0.5, 0.9))],
    }
    levels = {'kick': 1.0, 'snare': 1.0, 'hat': 0.5, 'open_hat': 0.4, 'tom_hi': 0.7,
              'tom_lo': 0.7, 'crash': 0.4}
    return {part: [levels[part] * s / np.max(np.abs(s)) for s in sounds]
            for part, sounds in kit.items()}


@dataclass
class _DrumStyle:
    kicks: tp.Tuple[tp.Tuple[int, ...], tp.Tuple[int, ...]]     # pattern A and B
    snares: tp.Tuple[int, ...]
    hats: tp.Tuple[int, ...]
    open_prob: float
    ghost_prob: float
    fill_prob: float


def _drum_style(rng: np.random.Generator) -> _DrumStyle:
    kick_a = KICK_PATTERNS[rng.integers(len(KICK_PATTERNS))]
    kick_b = kick_a if rng.random() < 0.5 else KICK_PATTERNS[rng.integers(len(KICK_PATTERNS))]
    return _DrumStyle(kicks=(kick_a, kick_b),
                      snares=SNARE_PATTERNS[rng.integers(len(SNARE_PATTERNS))],
                      hats=HAT_PATTERNS[rng.integers(len(HAT_PATTERNS))],
                      open_prob=float(rng.uniform(0, 0.5)), ghost_prob=float(rng.uniform(0, 0.2)),
                      fill_prob=float(rng.uniform(0.2, 0.7)))


def _drum_bar(rng: np.random.Generator, style: _DrumStyle, bar: int, fill: bool,
              crash: bool) -> Hits:
    """Hits (part, step, velocity) of one bar: pattern plus random variations and a fill."""
    end = 12 if fill else STEPS
    kicks = style.kicks[(bar // 4) % 2]
    hits: Hits = [('kick', s, rng.uniform(0.85, 1.0)) for s in kicks
                  if s < end and rng.random() > 0.05]
    hits += [('kick', s, rng.uniform(0.55, 0.8)) for s in (2, 3, 6, 7, 10, 11, 14, 15)
             if s < end and s not in kicks and rng.random() < 0.06]
    hits += [('snare', s, rng.uniform(0.85, 1.0)) for s in style.snares if s < end]
    hits += [('snare', s, rng.uniform(0.15, 0.35)) for s in (2, 7, 9, 15)
             if s < end and rng.random() < style.ghost_prob]
    for step in style.hats:
        if step >= end:
            continue
        accent = 0.8 if step % 4 == 0 else 0.65 if step % 2 == 0 else 0.45
        velocity = accent * rng.uniform(0.85, 1.1)
        part = 'open_hat' if step in (6, 14) and rng.random() < style.open_prob else 'hat'
        hits.append((part, step, velocity))
    if fill:
        for step in range(12, 16):
            part = ('snare', 'tom_hi', 'tom_lo')[rng.integers(3)]
            hits.append((part, step, 0.6 + 0.1 * (step - 12) + rng.uniform(0, 0.1)))
    if crash:
        hits.append(('crash', 0, rng.uniform(0.7, 1.0)))
    return hits


def _render_drums(plan: SongPlan, rng: np.random.Generator) -> Array:
    sr = plan.samplerate
    kit = _drum_kit(rng, sr)
    style = _drum_style(rng)
    parts = {part: np.zeros(plan.length) for part in DRUM_PARTS}
    active = plan.active['drums']
    previous_fill = False
    jitter = 0.002 * sr
    for bar in range(plan.n_bars):
        if not active[bar]:
            previous_fill = False
            continue
        next_off = bar + 1 < plan.n_bars and not active[bar + 1]
        fill = bool((bar % 4 == 3 and rng.random() < style.fill_prob)
                    or (next_off and rng.random() < 0.7))
        crash = bool(previous_fill or (bar > 0 and not active[bar - 1])
                     or (bar % 8 == 0 and rng.random() < 0.5))
        for part, step, velocity in _drum_bar(rng, style, bar, fill, crash):
            sounds = kit[part]
            sound = sounds[rng.integers(len(sounds))]
            start = plan.sample(bar, step) + int(rng.normal(0, jitter))
            _add(parts[part], velocity * sound, start)
        previous_fill = fill
    pans = {'kick': 0.0, 'snare': rng.uniform(-0.15, 0.15), 'hat': rng.uniform(0.2, 0.5),
            'tom_hi': rng.uniform(-0.4, -0.1), 'tom_lo': rng.uniform(0.1, 0.4),
            'crash': rng.uniform(-0.5, -0.2)}
    pans['open_hat'] = pans['hat']
    if rng.random() < 0.5:          # drummer's or audience's perspective
        pans = {k: -v for k, v in pans.items()}
    return sum(_pan(parts[part], pans[part], int(abs(pans[part]) * 20)) for part in DRUM_PARTS)


# --------------------------------------------------------------------------------------------
# Bass
# --------------------------------------------------------------------------------------------

BASS_RHYTHMS = (
    ((0, 4), (4, 4), (8, 4), (12, 4)),
    tuple((s, 2) for s in range(0, 16, 2)),
    ((0, 3), (3, 3), (6, 2), (8, 3), (11, 3), (14, 2)),
    ((0, 6), (6, 2), (8, 6), (14, 2)),
    ((0, 8), (8, 8)),
    ((0, 2), (3, 1), (4, 2), (8, 2), (10, 2), (12, 3), (15, 1)),
)


def _bass_tables(f0: float, sr: int, kind: int, cut_bright: float,
                 cut_dull: float) -> tp.Tuple[Array, Array]:
    """Saw, square or soft waveforms, low-passed at two cutoffs (for the filter envelope)."""
    k = np.arange(1, _n_harmonics(f0, sr, 24) + 1)
    if kind == 0:
        base = 1 / k
    elif kind == 1:
        base = (k % 2) / k
    else:
        base = 1 / k ** 2
    freqs = k * f0
    return (_table(base * _lowpass_gain(freqs, cut_bright, 2)),
            _table(base * _lowpass_gain(freqs, cut_dull, 2)))


def _bass_notes(plan: SongPlan, rng: np.random.Generator,
               low: int) -> tp.List[tp.Tuple[int, int, int]]:
    """(start sample, gate samples, midi) of the bass line: chord roots with octave jumps,
    fifths and passing notes that walk to the next chord."""
    rhythm = BASS_RHYTHMS[rng.integers(len(BASS_RHYTHMS))]
    legato = rng.uniform(0.6, 0.95)
    notes = []
    scale_notes = plan.scale_notes(low - 2, low + 26)
    for bar in range(plan.n_bars):
        if not plan.active['bass'][bar]:
            continue
        bar_rhythm = rhythm
        if rng.random() >= 0.85:
            bar_rhythm = BASS_RHYTHMS[rng.integers(len(BASS_RHYTHMS))]
        root = low + (plan.chord_pcs(bar)[0] - low) % 12
        next_root = low + (plan.chord_pcs(bar + 1)[0] - low) % 12
        for i, (step, duration) in enumerate(bar_rhythm):
            draw = rng.random()
            midi = root
            if draw < 0.12:
                midi = root + 12
            elif draw < 0.22:
                midi = root + 7
            last = i == len(bar_rhythm) - 1
            if last and next_root != root and rng.random() < 0.35:
                # approach the next root from the scale note next to it
                index = int(np.searchsorted(scale_notes, next_root))
                index += -1 if root < next_root else 1
                midi = int(scale_notes[np.clip(index, 0, len(scale_notes) - 1)])
            start = plan.sample(bar, step)
            gate = max(1, int((plan.sample(bar, step + duration) - start) * legato))
            notes.append((start, gate, midi))
    return notes


def _render_bass(plan: SongPlan, rng: np.random.Generator) -> Array:
    sr = plan.samplerate
    low = 28 + (plan.tonic - 28) % 12 if rng.random() < 0.7 else 33 + (plan.tonic - 33) % 12
    kind = int(rng.integers(3))
    cut_bright, cut_dull = rng.uniform(500, 1200), rng.uniform(150, 300)
    filter_tau = rng.uniform(0.04, 0.25)
    attack, decay, sustain = rng.uniform(0.002, 0.015), rng.uniform(0.1, 0.4), rng.uniform(0.4, 0.8)
    mono = np.zeros(plan.length)
    tables: tp.Dict[int, tp.Tuple[Array, Array]] = {}
    for start, gate, midi in _bass_notes(plan, rng, low):
        if start >= plan.length:
            continue
        f0 = float(_hz(midi))
        if midi not in tables:
            tables[midi] = _bass_tables(f0, sr, kind, cut_bright, cut_dull)
        env = _adsr(gate, sr, attack, decay, sustain, 0.04)
        brightness = np.exp(-np.arange(len(env)) / (filter_tau * sr))
        note = _two_tables(*tables[midi], f0, len(env), sr, brightness, rng.random())
        _add(mono, env * note * rng.uniform(0.8, 1.0), start)
    return _pan(mono, rng.uniform(-0.1, 0.1), int(rng.integers(0, 4)))


# --------------------------------------------------------------------------------------------
# Other: chords and arpeggios on 1 to 3 instruments
# --------------------------------------------------------------------------------------------

SAW_RHYTHMS = (((2, 1), (6, 1), (10, 1), (14, 1)), ((0, 3), (3, 3), (6, 2), (10, 2), (12, 4)),
               ((0, 16),), ((0, 2), (4, 2), (8, 2), (12, 2)))
KEYS_RHYTHMS = (((0, 2), (6, 2), (8, 2), (14, 2)), ((0, 3), (4, 3), (8, 3), (12, 3)),
                ((0, 4), (6, 6), (12, 4)))


def _detuned(table: Array, f0: float, n: int, sr: int, cents: float,
             rng: np.random.Generator) -> Array:
    """Two oscillators detuned by +-cents: a chorus that makes held chords move."""
    ratio = 2 ** (cents / 1200)
    return 0.5 * (_oscillate(table[None], f0 * ratio, n, sr, rng.random())[0]
                  + _oscillate(table[None], f0 / ratio, n, sr, rng.random())[0])


def _render_pad(plan: SongPlan, rng: np.random.Generator) -> Array:
    """Organ or soft-saw pad holding the chords."""
    sr = plan.samplerate
    low = int(rng.integers(52, 61))
    organ = rng.random() < 0.5
    attack, cents = rng.uniform(0.02, 0.4), rng.uniform(3, 10)
    seventh = rng.random() < 0.4
    mono = np.zeros(plan.length)
    for first, end in _chord_runs(plan, 'other'):
        start = plan.sample(first)
        gate = plan.sample(end) - start
        for midi in _voicing(plan.chord_pcs(first, seventh), low):
            f0 = float(_hz(midi))
            k = np.arange(1, _n_harmonics(f0, sr, 16) + 1)
            if organ:
                amps = np.where(np.isin(k, (1, 2, 3, 4, 6, 8)), 1 / k ** 0.8, 0.0)
            else:
                amps = _lowpass_gain(k * f0, 1500, 2) / k ** 1.3
            env = _adsr(gate, sr, attack, 0.5, 0.85, 0.3)
            _add(mono, env * _detuned(_table(amps), f0, len(env), sr, cents, rng), start)
    return mono


def _render_pluck(plan: SongPlan, rng: np.random.Generator) -> Array:
    """Arpeggios of plucked strings: harmonics shaped by the pluck position, upper ones decay
    faster (a vectorised stand-in for Karplus-Strong)."""
    sr = plan.samplerate
    low = int(rng.integers(57, 67))
    rate = 1 if plan.bpm < 110 and rng.random() < 0.5 else 2
    order = int(rng.integers(4))
    tau = rng.uniform(0.12, 0.4)
    position = rng.uniform(0.1, 0.3)
    mono = np.zeros(plan.length)
    tables: tp.Dict[int, tp.Tuple[Array, Array]] = {}
    n = int(min(3 * tau, 1.0) * sr)
    env = _percussive(n, sr, tau, attack=0.002)
    brightness = np.exp(-np.arange(n) / (tau / 4 * sr))
    for bar in range(plan.n_bars):
        if not plan.active['other'][bar]:
            continue
        chord = _voicing(plan.chord_pcs(bar), low)
        notes = chord + [m + 12 for m in chord]
        steps = range(0, STEPS, rate)
        if order == 0:
            sequence = [notes[i % 6] for i in range(len(steps))]
        elif order == 1:
            sequence = [notes[-1 - i % 6] for i in range(len(steps))]
        elif order == 2:
            cycle = notes + notes[-2:0:-1]
            sequence = [cycle[i % len(cycle)] for i in range(len(steps))]
        else:
            sequence = [notes[j] for j in rng.integers(0, 6, len(steps))]
        for step, midi in zip(steps, sequence):
            start = plan.sample(bar, step)
            if start >= plan.length:
                break
            f0 = float(_hz(midi))
            if midi not in tables:
                k = np.arange(1, _n_harmonics(f0, sr, 30) + 1)
                tables[midi] = (_table(np.abs(np.sin(np.pi * k * position)) / k),
                                _table(np.array([1.0, 0.3])))
            note = _two_tables(*tables[midi], f0, n, sr, brightness, rng.random())
            _add(mono, env * note * rng.uniform(0.6, 1.0), start)
    return mono


def _render_chord_hits(plan: SongPlan, rng: np.random.Generator, bright: bool) -> Array:
    """Bright detuned saw stabs (`bright`) or electric-piano comping with decaying overtones."""
    sr = plan.samplerate
    rhythms = SAW_RHYTHMS if bright else KEYS_RHYTHMS
    rhythm = rhythms[rng.integers(len(rhythms))]
    low = int(rng.integers(55, 65) if bright else rng.integers(50, 60))
    cutoff = rng.uniform(2000, 6000)
    seventh = not bright and rng.random() < 0.6
    mono = np.zeros(plan.length)
    tables: tp.Dict[int, tp.Tuple[Array, Array]] = {}
    for bar in range(plan.n_bars):
        if not plan.active['other'][bar]:
            continue
        for step, duration in rhythm:
            start = plan.sample(bar, step)
            if start >= plan.length:
                break
            gate = int((plan.sample(bar, step + duration) - start) * 0.8)
            velocity = rng.uniform(0.7, 1.0)
            for midi in _voicing(plan.chord_pcs(bar, seventh), low):
                f0 = float(_hz(midi))
                if midi not in tables:
                    k = np.arange(1, _n_harmonics(f0, sr, 40) + 1)
                    if bright:
                        saw = _table(_lowpass_gain(k * f0, cutoff, 1) / k)
                        tables[midi] = (saw, saw)
                    else:
                        amps = np.array([1, 0.45, 0.2, 0.25, 0.08, 0.05])[:len(k)]
                        tables[midi] = (_table(amps), _table(np.array([1.0, 0.08])))
                if bright:
                    env = _adsr(gate, sr, 0.005, 0.15, 0.5, 0.08)
                    note = _detuned(tables[midi][0], f0, len(env), sr, 12, rng)
                else:
                    env = _adsr(gate, sr, 0.003, 0.8, 0.3, 0.15)
                    brightness = np.exp(-np.arange(len(env)) / (0.15 * sr))
                    note = _two_tables(*tables[midi], f0, len(env), sr, brightness, rng.random())
                _add(mono, velocity * env * note, start)
    return mono


OTHER_INSTRUMENTS: tp.Dict[str, tp.Callable[[SongPlan, np.random.Generator], Array]] = {
    'pad': _render_pad,
    'pluck': _render_pluck,
    'saw': lambda plan, rng: _render_chord_hits(plan, rng, bright=True),
    'keys': lambda plan, rng: _render_chord_hits(plan, rng, bright=False),
}


def _render_other(plan: SongPlan, rng: np.random.Generator) -> Array:
    names = list(OTHER_INSTRUMENTS)
    chosen = [names[i] for i in rng.permutation(len(names))[:rng.integers(1, 4)]]
    out = np.zeros((2, plan.length))
    for name in chosen:
        mono = _normalise(OTHER_INSTRUMENTS[name](plan, rng)) * 10 ** (rng.uniform(-4, 2) / 20)
        pan = rng.uniform(-0.7, 0.7)
        out += _pan(mono, pan, int(rng.integers(0, 20)))
    return out


# --------------------------------------------------------------------------------------------
# Vocals
# --------------------------------------------------------------------------------------------

# F1-F3 (Hz) of a, e, i, o, u, ae, er, and the "singer's formant" F4
VOWELS = np.array([[730, 1090, 2440, 3300], [530, 1840, 2480, 3300], [270, 2290, 3010, 3500],
                   [570, 840, 2410, 3300], [300, 870, 2240, 3300], [660, 1720, 2410, 3300],
                   [490, 1350, 1690, 3300]], dtype=np.float64)
FORMANT_BANDWIDTHS = np.array([80.0, 110.0, 160.0, 250.0])
FORMANT_LEVELS = np.array([1.0, 0.6, 0.3, 0.2])
SYLLABLE_STEPS = (1, 2, 2, 2, 3, 4, 4, 6)


@dataclass
class _Voice:
    low: int                    # MIDI range of the melody
    high: int
    formant_shift: float        # > 1 for higher (shorter vocal tract) voices
    vibrato_rate: float
    vibrato_depth: float        # semitones
    glide: float                # seconds of the portamento between notes
    breath: float               # aspiration noise level in the glottal source
    legato: float               # probability that two syllables are tied


@dataclass
class _Syllable:
    onset: int
    offset: int                 # onset of the next syllable or end of the phrase
    midi: int
    vowel: int
    gain: float
    tied: bool                  # crossfades into the next syllable (no gap)
    consonant: bool


def _draw_voice(rng: np.random.Generator) -> _Voice:
    high = rng.random() < 0.5
    return _Voice(low=57 if high else 51, high=76 if high else 69,
                  formant_shift=float(rng.uniform(1.1, 1.2) if high else rng.uniform(0.95, 1.05)),
                  vibrato_rate=float(rng.uniform(5.0, 6.2)),
                  vibrato_depth=float(rng.uniform(0.2, 0.6)),
                  glide=float(rng.uniform(0.03, 0.09)), breath=float(rng.uniform(0.003, 0.02)),
                  legato=float(rng.uniform(0.5, 0.85)))


def _next_pitch(rng: np.random.Generator, notes: Array, index: int, chord: tp.List[int],
                strong: bool) -> int:
    """Melody step on the scale: chord tones near the last note on strong beats, small steps
    elsewhere."""
    if strong:
        candidates = np.flatnonzero(np.isin(notes % 12, chord))
        near = candidates[np.abs(candidates - index) <= 3]
        if len(near):
            return int(near[rng.integers(len(near))])
    step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
    return int(np.clip(index + step, 0, len(notes) - 1))


def _vocal_phrases(plan: SongPlan, rng: np.random.Generator,
                   voice: _Voice) -> tp.List[tp.List[_Syllable]]:
    """Phrases of 1-2 bars, each ending with a rest for breathing, made of syllables."""
    notes = plan.scale_notes(voice.low, voice.high)
    index = len(notes) // 2
    active = plan.active['vocals']
    phrases = []
    bar = 0
    while bar < plan.n_bars:
        if not active[bar]:
            bar += 1
            continue
        span = 2 if bar + 1 < plan.n_bars and active[bar + 1] and rng.random() < 0.6 else 1
        step = bar * STEPS + int(rng.choice([0, 0, 1, 2, 4]))
        last = (bar + span) * STEPS - int(rng.integers(2, 7))
        syllables: tp.List[_Syllable] = []
        while last - step >= 1:
            duration = min(int(rng.choice(SYLLABLE_STEPS)), last - step)
            chord = plan.chord_pcs(step // STEPS)
            strong = step % 4 == 0 or step + duration == last
            index = _next_pitch(rng, notes, index, chord, strong)
            syllables.append(_Syllable(
                onset=plan.sample(0, step), offset=plan.sample(0, step + duration),
                midi=int(notes[index]), vowel=int(rng.integers(len(VOWELS))),
                gain=float(rng.uniform(0.6, 1.0)), tied=bool(rng.random() < voice.legato),
                consonant=bool(rng.random() < 0.5)))
            step += duration
        syllables = [s for s in syllables if s.onset < plan.length]
        if syllables:
            syllables[-1].tied = False
            phrases.append(syllables)
        bar += span
    return phrases


def _formant_filter(x: Array, formants: Array, samplerate: int) -> Array:
    """Zero-phase vocal tract: lip radiation (+6 dB/oct) times a parallel bank of formant
    resonances (magnitude 1 / sqrt(1 + ((f - F) / (B / 2))^2)). Zero padding keeps the short
    impulse response from wrapping around."""
    n = len(x)
    n_fft = 1 << int(math.ceil(math.log2(n + 2048)))
    freqs = np.fft.rfftfreq(n_fft, 1 / samplerate)
    resonances = FORMANT_LEVELS[:, None] / np.sqrt(
        1 + ((freqs[None] - formants[:, None]) / (FORMANT_BANDWIDTHS[:, None] / 2)) ** 2)
    gain = freqs / 1000 * (0.01 + resonances.sum(0))
    return np.fft.irfft(np.fft.rfft(x, n_fft) * gain, n_fft)[:n]


def _pitch_contour(syllables: tp.List[_Syllable], begin: int, n: int, sr: int, voice: _Voice,
                   rng: np.random.Generator) -> Array:
    """f0 (Hz) per sample of a phrase: note targets with glides, delayed vibrato, slow drift."""
    onsets = np.array([s.onset - begin for s in syllables])
    samples = np.arange(n)
    which = np.clip(np.searchsorted(onsets, samples, side='right') - 1, 0, len(onsets) - 1)
    midi = np.array([s.midi for s in syllables], dtype=np.float64)[which]
    midi = _smooth(midi, int(voice.glide * sr))
    since = np.maximum(samples - onsets[which], 0) / sr
    vibrato = np.sin(2 * np.pi * voice.vibrato_rate * samples / sr + rng.uniform(0, 2 * np.pi))
    vibrato *= voice.vibrato_depth * np.clip((since - 0.12) / 0.25, 0, 1)
    knots = np.arange(0, n + int(0.15 * sr), int(0.15 * sr))
    drift = np.interp(samples, knots, rng.normal(0, 0.07, len(knots)))
    return _hz(midi + vibrato + drift)


def _syllable_windows(syllables: tp.List[_Syllable], sr: int,
                      rng: np.random.Generator) -> tp.List[tp.Tuple[int, int, int, int]]:
    """(start, end, fade in, fade out) of each syllable. Tied syllables crossfade with
    complementary Hann halves (sum exactly 1); others leave a gap, and envelopes are exactly
    zero outside the windows, so phrases are separated by true silence."""
    crossfade = int(0.03 * sr)
    windows = []
    previous_tied = False
    for i, syl in enumerate(syllables):
        if previous_tied:
            start, fade_in = syl.onset - crossfade // 2, crossfade
        else:
            start, fade_in = syl.onset, int(rng.uniform(0.015, 0.04) * sr)
        if syl.tied:
            end, fade_out = syl.offset - crossfade // 2 + crossfade, crossfade
        else:
            last = i == len(syllables) - 1
            gap = 0 if last else int(min(rng.uniform(0.03, 0.1) * sr, (syl.offset - syl.onset) / 3))
            end = syl.offset - gap
            fade_out = int(rng.uniform(0.04, 0.12) * sr)
        length = end - start
        if fade_in + fade_out > length:
            # shrink only the fades that are not crossfades, which must stay complementary
            if previous_tied and not syl.tied:
                fade_out = max(0, length - fade_in)
            elif syl.tied and not previous_tied:
                fade_in = max(0, length - fade_out)
            elif not syl.tied and not previous_tied:
                fade_in = fade_in * length // (fade_in + fade_out)
                fade_out = length - fade_in
        windows.append((start, end, fade_in, fade_out))
        previous_tied = syl.tied
    return windows


def _envelope(length: int, fade_in: int, fade_out: int) -> Array:
    env = np.ones(length)
    if fade_in:
        env[:fade_in] = _half_hann(fade_in)
    if fade_out:
        env[length - fade_out:] *= _half_hann(fade_out)[::-1]
    return env


def _sing_phrase(out: Array, syllables: tp.List[_Syllable], voice: _Voice, sr: int,
                 rng: np.random.Generator, fricatives: Array) -> None:
    """Glottal source (harmonics ~1/k^2) through per-syllable vowel formants, enveloped."""
    windows = _syllable_windows(syllables, sr, rng)
    begin = min(w[0] for w in windows)
    end = max(w[1] for w in windows)
    n = end - begin
    f0 = _pitch_contour(syllables, begin, n, sr, voice, rng)
    k = np.arange(1, _n_harmonics(float(f0.max()), sr, 60) + 1)
    source = _oscillate(_table(1 / k ** 2)[None], f0, n, sr, rng.random())[0]
    source += voice.breath * rng.standard_normal(n) * np.abs(source).max()
    for syl, (start, stop, fade_in, fade_out) in zip(syllables, windows):
        segment = source[start - begin:stop - begin]
        sung = _formant_filter(segment, VOWELS[syl.vowel] * voice.formant_shift, sr)
        sung *= syl.gain / (np.sqrt(np.mean(sung ** 2)) + 1e-12)
        _add(out, sung * _envelope(stop - start, fade_in, fade_out), start)
        if syl.consonant:
            length = int(rng.uniform(0.03, 0.07) * sr)
            burst = _noise_slice(rng, fricatives, length)
            burst = burst * _percussive(length, sr, length / sr / 3, 0.004)
            _add(out, rng.uniform(0.15, 0.4) * burst, syl.onset - length // 2)
    if rng.random() < 0.5:
        # an audible breath before the phrase
        length = int(rng.uniform(0.12, 0.25) * sr)
        breath = _formant_filter(rng.standard_normal(length), VOWELS[0] * 1.2, sr)
        breath *= _envelope(length, length // 2, length // 2) / (breath.std() + 1e-12)
        _add(out, rng.uniform(0.02, 0.06) * breath, begin - length - int(0.03 * sr))


def _render_vocals(plan: SongPlan, rng: np.random.Generator) -> Array:
    sr = plan.samplerate
    voice = _draw_voice(rng)
    fricatives = _noise_bank(rng, sr, 1.0, lambda f: _highpass_gain(f, 3500, 2))
    mono = np.zeros(plan.length)
    for syllables in _vocal_phrases(plan, rng, voice):
        _sing_phrase(mono, syllables, voice, sr, rng, fricatives)
    return _pan(mono, rng.uniform(-0.1, 0.1), int(rng.integers(0, 4)))


# --------------------------------------------------------------------------------------------
# Track
# --------------------------------------------------------------------------------------------

RENDERERS: tp.Dict[str, tp.Callable[[SongPlan, np.random.Generator], Array]] = {
    'drums': _render_drums, 'bass': _render_bass, 'other': _render_other,
    'vocals': _render_vocals,
}
STEM_LEVELS_DB = {'drums': 0.0, 'bass': -1.0, 'other': -3.0, 'vocals': 0.0}


def mix_stems(stems: tp.Mapping[str, Array]) -> Array:
    """The mixture as the float32 sum of the float32 stems in SOURCES order: the exact sum
    that write_dataset stores."""
    mixture = np.zeros_like(np.asarray(stems[SOURCES[0]], dtype=np.float32))
    for source in SOURCES:
        mixture = mixture + np.asarray(stems[source], dtype=np.float32)
    return mixture


def render_song(plan: SongPlan, rng: np.random.Generator) -> tp.Dict[str, Array]:
    """Render the stems of `plan`: source -> float32 [2, T], mixture peak below MAX_PEAK."""
    stems = {}
    for source in SOURCES:
        if plan.silent == source:
            stems[source] = np.zeros((2, plan.length))
            continue
        audio = _normalise(RENDERERS[source](plan, rng))
        stems[source] = audio * 10 ** ((STEM_LEVELS_DB[source] + rng.uniform(-4, 4)) / 20)
    peak = np.abs(sum(stems.values())).max()
    gain = rng.uniform(0.5, 0.88) / peak if peak > 0 else 1.0
    out = {source: (gain * stems[source]).astype(np.float32) for source in SOURCES}
    mix_peak = float(np.abs(mix_stems(out)).max())
    if mix_peak >= MAX_PEAK:        # float32 rounding cannot get there, but make sure
        out = {s: (x * np.float32(0.88 / mix_peak)).astype(np.float32) for s, x in out.items()}
    return out


def synthesize_track(rng: np.random.Generator, seconds: float,
                     samplerate: int = DEFAULT_SAMPLERATE) -> tp.Dict[str, Array]:
    """One synthetic song: source name (SOURCES) -> float32 [2, T], T = round(seconds * sr).

    The mixture is `mix_stems(stems)`; its peak is below MAX_PEAK.
    """
    return render_song(plan_song(rng, seconds, samplerate), rng)


# --------------------------------------------------------------------------------------------
# Data set on disk
# --------------------------------------------------------------------------------------------

def track_name(split: str, index: int) -> str:
    return f'synth_{split}_{index:03d}'


def track_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Each track has its own generator, so adding tracks does not change the others."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def write_wav(path: Path, audio: Array, samplerate: int) -> None:
    """float32 WAV without the PEAK chunk, whose timestamp would make files differ between
    runs."""
    with sf.SoundFile(str(path), 'w', samplerate=samplerate, channels=audio.shape[0],
                      format='WAV', subtype='FLOAT') as fout:
        try:
            sfc_set_add_peak_chunk = 0x1050
            sf._snd.sf_command(fout._file, sfc_set_add_peak_chunk, sf._ffi.NULL, 0)
        except AttributeError:
            pass
        fout.write(np.ascontiguousarray(audio.T))
    _zero_peak_timestamp(path)


def _zero_peak_timestamp(path: Path) -> None:
    """Fallback when libsndfile could not be told to drop the PEAK chunk: walk the RIFF chunks
    before the audio data and zero the PEAK timestamp."""
    with open(path, 'r+b') as fio:
        offset = 12                                 # after 'RIFF', size, 'WAVE'
        while True:
            fio.seek(offset)
            header = fio.read(8)
            if len(header) < 8 or header[:4] == b'data':
                return
            size = int.from_bytes(header[4:], 'little')
            if header[:4] == b'PEAK':
                fio.seek(offset + 12)               # id, size, version, then the timestamp
                fio.write(bytes(4))
                return
            offset += 8 + size + size % 2


def _is_complete(folder: Path, length: int, samplerate: int) -> bool:
    """All stems exist, with the expected length and sample rate."""
    try:
        for name in [MIXTURE] + SOURCES:
            info = sf.info(str(folder / f'{name}.wav'))
            if info.frames != length or info.samplerate != samplerate or info.channels != 2:
                return False
    except (RuntimeError, OSError):      # missing or unreadable file
        return False
    return True


def _write_track(folder: Path, stems: tp.Dict[str, Array], samplerate: int) -> None:
    """Write all stems into a hidden temporary folder next to `folder`, then rename it into
    place, so a track folder is either complete or absent."""
    with atomic_folder(folder) as tmp:
        write_wav(tmp / f'{MIXTURE}.wav', mix_stems(stems), samplerate)
        for source in SOURCES:
            write_wav(tmp / f'{source}.wav', stems[source], samplerate)


MANIFEST = 'synthetic.json'


def _has_tracks(root: Path) -> bool:
    """Whether `root` looks like a MUSDB-layout data set: a split folder holding track
    folders with audio, or .stem.mp4 files."""
    for split in ('train', 'test'):
        folder = root / split
        if folder.is_dir() and (any(folder.glob('*/*.wav')) or any(folder.glob('*/*.flac'))
                                or any(folder.glob('*.stem.mp4'))):
            return True
    return False


def _check_manifest(root: Path, params: tp.Dict[str, tp.Any]) -> None:
    """Refuse to mix tracks made with other parameters in `root`; record `params` there."""
    path = root / MANIFEST
    if path.exists():
        previous = json.loads(path.read_text())
        fixed = ['seed', 'seconds', 'samplerate']
        changed = [key for key in fixed if previous.get(key) != params[key]]
        changed += [key for key in ('tracks_train', 'tracks_test')
                    if previous.get(key, 0) > params[key]]
        if changed:
            detail = ', '.join(f'{key}={previous.get(key)} (asked {params[key]})'
                               for key in changed)
            raise ValueError(f"{root} holds a synthetic set made with {detail}. Delete the "
                             f"folder to make a new one, or write it elsewhere (dset.musdb=...).")
    elif root.exists() and any(root.iterdir()):
        if _has_tracks(root):
            raise ValueError(f"{root} holds a data set of its own (train/ or test/ with track "
                             f"folders), not a synthetic one: train on it with dset=musdb44 "
                             f"(`dora run dset=musdb44 dset.musdb={root}`).")
        raise ValueError(f"{root} exists and is not a synthetic set ({MANIFEST} is missing): "
                         f"choose an empty or new folder.")
    write_json(path, params)


def write_dataset(root: tp.Union[str, Path], tracks_train: int = DEFAULT_TRACKS_TRAIN,
                  tracks_test: int = DEFAULT_TRACKS_TEST, seconds: float = DEFAULT_SECONDS,
                  seed: int = DEFAULT_SEED, samplerate: int = DEFAULT_SAMPLERATE,
                  verbose: bool = True) -> Path:
    """Write `ROOT/{train,test}/synth_<split>_<i>/{mixture,drums,bass,other,vocals}.wav`.

    Tracks already complete (all files, right length and sample rate) are kept as they are.
    The parameters are recorded in `ROOT/synthetic.json`: asking for other parameters in the
    same folder is an error (adding tracks is allowed). Returns the root folder.
    """
    root = Path(root)
    # Several XPs of a grid may start at once on the same folder: one writes, the others wait.
    with locked(root):
        return _write_dataset(root, tracks_train, tracks_test, seconds, seed, samplerate,
                              verbose)


def _write_dataset(root: Path, tracks_train: int, tracks_test: int, seconds: float, seed: int,
                   samplerate: int, verbose: bool) -> Path:
    _check_manifest(root, {'seed': seed, 'seconds': seconds, 'samplerate': samplerate,
                           'tracks_train': tracks_train, 'tracks_test': tracks_test})
    length = int(round(seconds * samplerate))
    for split, count in (('train', tracks_train), ('test', tracks_test)):
        split_dir = root / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            name = track_name(split, index)
            folder = split_dir / name
            remove_stale_folders(split_dir, name)
            if _is_complete(folder, length, samplerate):
                if verbose:
                    print(f"[synthetic] {split} {index + 1}/{count} {name}: exists, kept",
                          flush=True)
                continue
            begin = time.time()
            stems = synthesize_track(track_rng(seed, split, index), seconds, samplerate)
            _write_track(folder, stems, samplerate)
            if verbose:
                print(f"[synthetic] {split} {index + 1}/{count} {name}: "
                      f"{time.time() - begin:.1f}s", flush=True)
    return root
