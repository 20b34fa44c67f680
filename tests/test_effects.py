"""Tests of the aimless random effects chain (separator/data/effects.py) and its hook in the
training sets (separator/data/segments.py)."""
import hashlib
import math
import typing as tp

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal, stats
from torch.utils.data import DataLoader

from separator.data.effects import ORDER, Effects, generator, k_weighting, loudness
from separator.data.musdb import TrackInfo, index_tracks
from separator.data.repitch import Repitch
from separator.data.segments import RemixSegments, TrainSegments

from .conftest import SOURCES, write_track

SR = 44100
SEGMENT = 20011          # a prime number of frames (0.45 s)
SEED = 5

# aimless's cfg/mdx_a/hdemucs.yaml (github.com/aim-qmul/sdx23-aimless): the probability of
# every transform of its data and model `transforms` lists.
AIMLESS_MDX_A = {'eq': 0.3, 'distortion': 0.03, 'delay': 0.03, 'chorus': 0.03,
                 'phaser': 0.03, 'compressor': 0.3, 'reverb': 0.3, 'widener': 0.3,
                 'limiter': 0.3, 'volume': 0.3, 'loudness': 0.3, 'gain': 0.3,
                 'flip_sign': 0.3, 'swap_channels': 0.3, 'speed': 0.3, 'pitch': 0.3}


def only(name: str, **options: tp.Any) -> Effects:
    """A chain where effect `name` is always drawn and no other is."""
    probas = {f'{other}_proba': 0. for other in ORDER}
    probas[f'{name}_proba'] = 1.
    return Effects(**{**probas, **options})


def noise(stems: int = 4, seconds: float = 1.5, seed: int = 0, level: float = 0.1
          ) -> np.ndarray:
    """Stereo noise stems [S, 2, T] whose left and right differ."""
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal((stems, 2, int(seconds * SR)))).astype(np.float32)


def sine(hz: float, seconds: float, amplitude: float = 1., samplerate: int = SR
         ) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * samplerate))
                               / samplerate)).astype(np.float32)


def peak_hz(audio: np.ndarray) -> float:
    """The frequency of the largest FFT bin of 1 s of `audio` (1 Hz bins)."""
    window = audio[SR // 2:SR // 2 + SR]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    return float(np.fft.rfftfreq(len(window), 1 / SR)[np.argmax(spectrum)])


# --- loudness -------------------------------------------------------------------------------

def test_loudness_follows_bs1770() -> None:
    """The K-weighting at 48 kHz is BS.1770-4's table, and a 0 dBFS 997 Hz sine in one
    channel reads -3.01 LKFS (the Recommendation's own check), at 48 and 44.1 kHz."""
    shelf = [1.53512485958697, -2.69169618940638, 1.19839281085285,
             1., -1.69065929318241, 0.73248077421585]
    highpass = [1., -2., 1., 1., -1.99004745483398, 0.99007225036621]
    diff = np.abs(k_weighting(48000) - np.array([shelf, highpass])).max()
    print(f"K-weighting vs BS.1770 at 48 kHz: max abs diff {diff:.2e}")
    assert diff < 1e-10
    for rate in (48000, 44100):
        tone = sine(997, 5, samplerate=rate)
        level = loudness(np.stack([tone, np.zeros_like(tone)]), rate)
        print(f"0 dBFS 997 Hz in one channel at {rate} Hz: {level:.3f} LKFS")
        assert abs(level - -3.01) < 0.02
    quiet = np.stack([sine(997, 5, 0.1)] * 2)
    assert abs(loudness(quiet, SR) - -20) < 0.03            # both channels: +3 dB
    # The gates. Two 5 s tones around 5 s of silence: the 400 ms blocks every 100 ms are
    # 2 x 47 full blocks, 6 at the edges (3/4, 1/2, 1/4 full: above both gates), and silent
    # ones (under -70 LUFS: out). Around 5 s at -45 dB instead: above -70 but under the
    # relative gate (-10 LU), out too; without it the level would drop by ~3 dB.
    expected = loudness(quiet, SR) + 10 * math.log10((94 + 2 * 1.5) / (94 + 6))
    for gap in (np.zeros((2, 5 * SR), np.float32), np.stack([sine(997, 5, 10 ** (-45 / 20))] * 2)):
        level = loudness(np.concatenate([quiet, gap, quiet], -1), SR)
        assert abs(level - expected) < 0.01, level
    assert loudness(np.zeros((2, SR), np.float32), SR) == -math.inf


# --- every effect ---------------------------------------------------------------------------

FORCED = {'speed': {'speeds': [110]}, 'pitch': {'semitones': [2]},
          'widener': {'widener_width': [0.8, 1.0]}, 'gain': {'gain_range': [0.3, 0.8]}}


@pytest.mark.parametrize('name', ORDER)
def test_every_effect_runs(name: str) -> None:
    stems = noise()
    before = stems.copy()
    effects = only(name, **FORCED.get(name, {}))
    out = effects(stems, generator(SEED, 0))
    assert np.array_equal(stems, before), "the input must not be changed in place"
    assert out.shape == stems.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    for stem, source in zip(out, stems):
        assert np.abs(stem - source).max() > 1e-3, name


def _cookbook(kind: str, gain_db: float, hz: float, q: float) -> tp.Tuple[np.ndarray, ...]:
    """The audio EQ cookbook biquads (aimless's `biqaud`, for scipy's lfilter)."""
    a, w = 10 ** (gain_db / 40), 2 * np.pi * hz / SR
    alpha, cos, root = np.sin(w) / (2 * q), np.cos(w), np.sqrt(a)
    if kind == 'low':
        b = [a * ((a + 1) - (a - 1) * cos + 2 * root * alpha), 2 * a * ((a - 1) - (a + 1) * cos),
             a * ((a + 1) - (a - 1) * cos - 2 * root * alpha)]
        d = [(a + 1) + (a - 1) * cos + 2 * root * alpha, -2 * ((a - 1) + (a + 1) * cos),
             (a + 1) + (a - 1) * cos - 2 * root * alpha]
    elif kind == 'high':
        b = [a * ((a + 1) + (a - 1) * cos + 2 * root * alpha),
             -2 * a * ((a - 1) + (a + 1) * cos), a * ((a + 1) + (a - 1) * cos - 2 * root * alpha)]
        d = [(a + 1) - (a - 1) * cos + 2 * root * alpha, 2 * ((a - 1) - (a + 1) * cos),
             (a + 1) - (a - 1) * cos - 2 * root * alpha]
    else:
        b, d = [1 + alpha * a, -2 * cos, 1 - alpha * a], [1 + alpha / a, -2 * cos, 1 - alpha / a]
    return np.array(b), np.array(d)


def test_eq_is_aimless_parametric_eq() -> None:
    """The EQ drawn is the low shelf, peak bands and high shelf of aimless's parametric_eq
    (float64 lfilter of cookbook biquads); JUCE filters in float32: within 1e-3."""
    stems = noise(stems=1, seconds=1)
    effects = only('eq')
    plan = effects.draw(generator(SEED, 3), 1, stems.shape[-1])
    (name, params), = plan.stems[0]
    out = effects.apply(stems, plan)[0]
    reference = stems[0].astype(np.float64)
    sections = [('low', params['low_db'], params['low_hz'], params['low_q'])]
    sections += [('peak', *band) for band in zip(params['band_db'], params['band_hz'],
                                                 params['band_q'])]
    sections.append(('high', params['high_db'], params['high_hz'], params['high_q']))
    for section in sections:
        reference = signal.lfilter(*_cookbook(*section), reference)
    diff = np.abs(out - reference).max()
    print(f"EQ vs aimless's parametric_eq: max abs diff {diff:.2e} (peak {np.abs(out).max():.2f})")
    assert name == 'eq' and len(sections) == 5
    assert diff < 1e-3


def test_widener_speed_pitch_are_aimless() -> None:
    """The stereo widener, SpeedPerturb and RandomPitch of aimless, written as theirs (mid/side
    over sqrt 2; torchaudio's Resample; Spectrogram, TimeStretch, InverseSpectrogram and
    Resample), give the same audio."""
    from torchaudio.transforms import (InverseSpectrogram, Resample, Spectrogram,
                                       TimeStretch)

    stems = noise(stems=1, seconds=1)
    audio = torch.from_numpy(stems[0])
    plan = only('widener').draw(generator(SEED, 1), 1, stems.shape[-1])
    width = plan.stems[0][0][1]['width']
    mid, side = (audio[0] + audio[1]) / math.sqrt(2), (audio[0] - audio[1]) / math.sqrt(2)
    mid, side = mid * 2 * (1 - width), side * 2 * width
    reference = torch.stack([mid + side, mid - side]) / math.sqrt(2)
    diffs = {'widener': np.abs(only('widener').apply(stems, plan)[0] - reference.numpy()).max()}
    for speed in (90, 110):
        out = only('speed', speeds=[speed])(stems, generator(SEED, 1))[0]
        reference = Resample(SR, SR * speed // 100)(audio).numpy()
        frames = min(reference.shape[-1], stems.shape[-1])
        diffs[f'speed {speed}'] = np.abs(out[:, :frames] - reference[:, :frames]).max()
        assert not out[:, frames:].any()          # 90 %: shorter, zero-padded as theirs
    spectrogram = Spectrogram(n_fft=2048, hop_length=512, power=None)
    inverse, stretch = InverseSpectrogram(n_fft=2048, hop_length=512), TimeStretch(512, 1025)
    for semitones, ratio in ((-1, 94), (1, 106), (2, 112)):    # their even percentages
        out = only('pitch', semitones=[semitones])(stems, generator(SEED, 1))[0]
        rate = 100 / torch.tensor(ratio)
        reference = Resample(ratio, 100)(inverse(stretch(spectrogram(audio), rate))).numpy()
        frames = min(reference.shape[-1], stems.shape[-1])
        diffs[f'pitch {semitones}'] = np.abs(out[:, :frames] - reference[:, :frames]).max()
    print("vs aimless's transforms, max abs diff: "
          + ", ".join(f"{key} {value:.1e}" for key, value in diffs.items()))
    assert max(diffs.values()) <= 1e-5


@pytest.mark.parametrize('method', ['vocoder', 'rubberband'])
def test_pitch_and_speed_move_a_sine(method: str) -> None:
    tone = np.stack([np.stack([sine(441, 2)] * 2)])
    up = only('pitch', semitones=[12], pitch_method=method)(tone, generator(SEED, 0))
    assert peak_hz(up[0, 0]) == 882 and up.shape == tone.shape
    fast = only('speed', speeds=[90])(tone, generator(SEED, 0))     # 0.9 x the frames
    assert peak_hz(fast[0, 0]) == 490


def test_gains_and_levels() -> None:
    """Loudness normalisation reaches -32 LUFS (a 997 Hz stereo sine of amplitude a reads
    20 log10(a) LUFS); volume automation ramps from 0 dB; the stem limiter clips at 1."""
    tone = np.stack([np.stack([sine(997, 3, 0.5)] * 2)])
    out = only('loudness')(tone, generator(SEED, 0))
    assert abs(np.abs(out[0, 0, SR:2 * SR]).max() - 10 ** (-32 / 20)) < 1e-3 * 10 ** (-32 / 20)
    ones = np.ones((1, 2, 10 * SR), np.float32)
    effects = only('volume')
    plan = effects.draw(generator(SEED, 2), 1, ones.shape[-1])
    params = plan.stems[0][0][1]
    gains_db = 20 * np.log10(effects.apply(ones, plan)[0, 0].astype(np.float64))
    assert sum(params['lengths']) == ones.shape[-1] and 1 <= len(params['lengths']) <= 3
    assert abs(gains_db[0]) < 1e-5 and abs(gains_db[-1] - params['gains_db'][-1]) < 1e-4
    assert np.abs(np.diff(gains_db, 2)).max() < 0.1        # piecewise linear in dB
    loud = noise(stems=1, level=0.5)
    assert np.abs(only('limiter')(loud, generator(SEED, 0))).max() <= 1


# --- the mixture limiter --------------------------------------------------------------------

@pytest.mark.parametrize('ceiling_db', [0., -3.])
def test_mix_limiter_keeps_the_ceiling(ceiling_db: float) -> None:
    stems = noise(level=0.4)
    stems[:, :, SR // 2:SR] *= 4                       # a loud part
    effects = Effects(proba_scale=1.666, mix_limiter_proba=1,
                      mix_limiter_ceiling_db=ceiling_db)
    ceiling = 10 ** (ceiling_db / 20)
    for index in range(3):
        out = effects(stems, generator(SEED, index))
        assert effects.draw(generator(SEED, index), 4, stems.shape[-1]).mix is not None
        assert np.abs(out.sum(0)).max() <= ceiling
        assert torch.from_numpy(out).sum(0).abs().max().item() <= ceiling
        assert np.isfinite(out).all() and out.shape == stems.shape
    alone = only('flip_sign', flip_sign_proba=0, mix_limiter_proba=1,
                 mix_limiter_ceiling_db=ceiling_db)
    out = alone(stems, generator(SEED, 0))
    assert np.abs(out.sum(0)).max() <= ceiling < np.abs(stems.sum(0)).max()
    # one gain envelope for all the stems: same signs, same ratio to the input per frame
    ratio = out / np.where(stems == 0, 1, stems)
    assert np.all(ratio >= 0) and np.abs(ratio - ratio[:1]).max() < 1e-4 * ratio.max()


# --- draws ----------------------------------------------------------------------------------

def _counts(effects: Effects, examples: int) -> tp.Tuple[tp.Dict[str, int], tp.List[tp.Any]]:
    counts = dict.fromkeys(ORDER + ('mix_limiter',), 0)
    plans = []
    for index in range(examples):
        plan = effects.draw(generator(SEED, index), 4, 11 * SR)
        for steps in plan.stems:
            for name, _ in steps:
                counts[name] += 1
        counts['mix_limiter'] += plan.mix is not None
        plans.append(plan)
    return counts, plans


def test_defaults_are_aimless_mdx_a() -> None:
    effects = Effects()
    assert {name: effects.proba(name) for name in ORDER} == AIMLESS_MDX_A
    assert effects.proba('mix_limiter') == 0 and effects.speeds == (90, 100, 110)
    assert effects.semitones == (-1, 1, 0, 1, 2)


def test_frequencies_match_the_probabilities() -> None:
    """Over 2000 examples of 4 stems, each effect is drawn as often as its probability
    (x proba_scale) says: within the binomial law's 1e-6 quantiles (Bonferroni over all
    checks). At 1.666 every effect drawn at 1 is still drawn, with the same parameters."""
    examples, alpha = 2000, 1e-6 / 40
    base = Effects(mix_limiter_proba=0.1)
    scaled = Effects(mix_limiter_proba=0.1, proba_scale=1.666)
    results = {}
    for effects in (base, scaled):
        counts, plans = _counts(effects, examples)
        results[effects.proba_scale] = plans
        for name, count in counts.items():
            trials = examples * (1 if name == 'mix_limiter' else 4)
            proba = min(1, getattr(effects, f'{name}_proba') * effects.proba_scale)
            low = stats.binom.ppf(alpha / 2, trials, proba)
            high = stats.binom.isf(alpha / 2, trials, proba)
            assert low <= count <= high, (name, effects.proba_scale, count, low, high)
    for small, large in zip(results[1.], results[1.666]):
        for steps, more in zip(small.stems, large.stems):
            assert all(step in more for step in steps)
    # the choices within an effect: speed and semitones uniform over their lists
    picks = [params for plan in results[1.] for steps in plan.stems
             for name, params in steps if name == 'pitch']
    ones = sum(params['semitones'] == 1 for params in picks)
    low, high = (stats.binom.ppf(alpha / 2, len(picks), 0.4),
                 stats.binom.isf(alpha / 2, len(picks), 0.4))
    assert low <= ones <= high
    for plan in results[1.]:
        for steps in plan.stems:
            for name, params in steps:
                if name == 'compressor':
                    assert -42 <= params['threshold_db'] <= -6 and 1.5 <= params['ratio'] <= 4
                if name == 'eq':
                    assert 20 <= params['low_hz'] <= 200 and 8000 <= params['high_hz'] <= 16000
                    assert all(1000 <= hz <= 10000 for hz in params['band_hz'])


def test_scale_zero_is_no_effect() -> None:
    stems = noise()
    off = Effects(proba_scale=0, mix_limiter_proba=1)
    assert not off.active
    for index in range(20):
        assert off(stems, generator(SEED, index)) is stems


def test_bad_options_name_the_key() -> None:
    for options, key in [({'eq_proba': 1.5}, 'eq_proba'),
                         ({'delay_seconds': [0, 1]}, 'delay_seconds'),
                         ({'reverb_wet': [0.7, 0.1]}, 'reverb_wet'),
                         ({'speeds': []}, 'speeds'), ({'semitones': [0.5]}, 'semitones'),
                         ({'proba_scale': -1}, 'proba_scale'),
                         ({'pitch_method': 'sox'}, 'pitch_method')]:
        with pytest.raises(ValueError, match=f'augment.effects.{key}='):
            Effects(**options)
    with pytest.raises(ValueError, match='Unknown option augment.effects.reverb_wett: '):
        Effects.from_options({'proba_scale': 1, 'reverb_wett': [0, 1]}, SR)
    assert Effects.from_options({'proba_scale': 0, 'eq_proba': 0.5}, SR) is None
    built = Effects.from_options({'proba_scale': 1.666, 'speeds': [90, 110]}, 48000)
    assert built.samplerate == 48000 and built.proba('eq') == pytest.approx(0.4998)


# --- the hook in the training sets ----------------------------------------------------------

@pytest.fixture(scope='module')
def tracks(tmp_path_factory: pytest.TempPathFactory) -> tp.List[TrackInfo]:
    root = tmp_path_factory.mktemp('effects')
    for index in range(3):
        write_track(root / 'train' / f'track{index}', seconds=1.5, seed=index)
    return index_tracks(root / 'train', SOURCES, SR, 2)


def _today(tracks: tp.List[TrackInfo], index: int) -> np.ndarray:
    """TrainSegments's example without augmentation, read with soundfile."""
    rng = np.random.default_rng([SEED, index])
    lengths = np.array([track.length for track in tracks], dtype=np.float64)
    track = tracks[rng.choice(len(tracks), p=lengths / lengths.sum())]
    offset = int(rng.integers(0, max(track.length - SEGMENT, 0) + 1))
    stems = [sf.read(track.files[source], start=offset, frames=SEGMENT, dtype='float32',
                     always_2d=True)[0].T for source in SOURCES]
    return np.stack(stems)


def _digest(example: torch.Tensor) -> str:
    return hashlib.sha1(example.numpy().tobytes()).hexdigest()


def test_no_effect_drawn_is_bit_identical(tracks: tp.List[TrackInfo]) -> None:
    """The effects have their own stream: with proba_scale 0 every example is today's, and
    with effects on, an example with no effect drawn is the example without the chain (same
    track, offset and, in TrainSegments, repitch), the others differ."""
    count = 12
    off = TrainSegments(tracks, SOURCES, SEGMENT, count, SEED, effects=Effects(proba_scale=0))
    for index in range(count):
        assert np.array_equal(off[index].numpy(), _today(tracks, index))
    rare = Effects(proba_scale=0.05)
    clean = {source: {track.name for track in tracks} for source in SOURCES}
    repitch = Repitch(proba=0.3, max_pitch=1, quick=True)
    assert any(repitch.draw(SEED, index) for index in range(count))
    for kind in ('train', 'remix'):
        def build(effects: tp.Optional[Effects]) -> torch.utils.data.Dataset:
            if kind == 'train':
                return TrainSegments(tracks, SOURCES, SEGMENT, count, SEED, repitch, effects)
            return RemixSegments(tracks, SOURCES, SEGMENT, count, SEED, clean,
                                 effects=effects)
        plain, chained = build(None), build(rare)
        empty = [rare.draw(generator(SEED, i), 4, SEGMENT).empty for i in range(count)]
        assert 0 < sum(empty) < count
        for index in range(count):
            same = torch.equal(plain[index], chained[index])
            assert same == empty[index], (kind, index)


def test_same_index_same_output(tracks: tp.List[TrackInfo]) -> None:
    """Twice in this process, and through a loader of 2 workers in reverse order."""
    dataset = TrainSegments(tracks, SOURCES, SEGMENT, 6, SEED,
                            effects=Effects(proba_scale=2.5, mix_limiter_proba=0.5))
    digests = [_digest(dataset[index]) for index in range(6)]
    assert digests == [_digest(dataset[index]) for index in range(6)]
    assert len(set(digests)) == 6
    loader = DataLoader(dataset, batch_size=None, sampler=list(reversed(range(6))),
                        num_workers=2)
    assert [_digest(example) for example in loader] == digests[::-1]


def test_samplerate_mismatch_is_refused(tracks: tp.List[TrackInfo]) -> None:
    with pytest.raises(ValueError, match='Effects\\(samplerate=dset.samplerate\\)'):
        TrainSegments(tracks, SOURCES, SEGMENT, 4, SEED, effects=Effects(samplerate=48000))
