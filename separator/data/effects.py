"""Random per-stem effects of the aimless team's SDX23 MDX-A recipe (`augment.effects`).

The aimless team (QMUL, github.com/aim-qmul/sdx23-aimless) won the label-noise leaderboard of
the SDX23 music demixing track with an HDemucs trained on random remixes of the clean stems,
each stem going through a chain of random effects. Their recipe is `cfg/mdx_a/hdemucs.yaml`
(the `cfg/hdemucs.yaml` their README's training notes pointed to, moved there when the
repository was published); the effects are in `data/augment.py`, speed and pitch in
`aimless/augment.py`. In chain order, each drawn independently per stem with its probability:

    effect              proba   parameters (U: uniform, logU: log-uniform)
    parametric EQ       0.3     low shelf logU 20-200 Hz, 3 peak bands logU 1-10 kHz, high
                                shelf logU 8-16 kHz; every gain U +-6 dB, every Q U 0.1-4
    distortion          0.03    drive U -20..12 dB
    delay               0.03    delay logU 0.1-1 s, feedback U 0.05-0.6, mix U 0-0.7
    chorus              0.03    rate U 0.25-4 Hz, depth U 0-0.6, centre delay U 5-10 ms,
                                feedback U 0.1-0.6, mix U 0.1-0.7
    phaser              0.03    rate U 0.25-5 Hz, depth U 0.1-0.6, centre 200 Hz, feedback
                                U 0.1-0.6, mix U 0.1-0.7
    compressor          0.3     threshold U -42..-6 dB, ratio U 1.5-4, attack U 1-50 ms,
                                release U 10-250 ms
    reverb              0.3     room size, damping, width U 0-1; wet U 0-0.7, dry 1 - wet
    stereo widener      0.3     width U 0-1: mid x 2 (1 - width), side x 2 width
    limiter             0.3     threshold U -32..-6 dB, release U 10-300 ms
    volume automation   0.3     1 to duration // 3 s segments (Dirichlet lengths, weights U
                                0-10), a gain ramp in dB per segment, ends U +-6 dB
    loudness normalise  0.3     to -32 LUFS (ITU-R BS.1770), gain clamped to -120..+40 dB
    gain                0.3     U 0.25-1.25
    flip sign           0.3
    swap channels       0.3
    speed               0.3     uniform among 90, 100, 110 % (resampling: pitch and tempo)
    pitch shift         0.3     uniform among the list -1, 1, 0, 1, 2 semitones (sic)

The mixture is the sum of the processed stems. In their last ~200 epochs every probability
was multiplied by 1.666 (README: "30% to 50% etc."): `proba_scale`. (Their repository's
`cfg/hdemucs.yaml` is an earlier run, `hdemucs_old.yaml` before the move: EQ 0.7,
compressor 0.5, widener 0.3, reverb 0.2, limiter and volume 0.1, delay 0.02, distortion,
chorus and phaser 0.01, loudness 1, no gain, flip or swap, speed and pitch 0.2, and no
random remix: set those probabilities to run it.)

Where we follow a different road (the recipe's facts stay the defaults):
- effects run through pedalboard (JUCE) on numpy, in the loader workers; the EQ's biquads
  are JUCE's, which are the audio-EQ-cookbook ones aimless computes for scipy's lfilter;
- the phaser's centre frequency: aimless's code draws `rand(min, min)`, so it trained with
  200 Hz always although its declared range is 200-600 Hz; our default (200, 200) is what
  it trained with;
- speed: torchaudio's `resample` from `samplerate` to `samplerate * speed // 100`, the
  resampler aimless used (on the GPU); a stem made shorter is zero-padded at its end, one
  made longer is cut, as theirs;
- pitch: aimless's phase vocoder and resampler (torch, the same values as theirs: STFT
  2048, hop 512), ~0.3 s per 11 s stereo stem on one core; `pitch_method: rubberband`
  uses Rubber Band instead (pedalboard's `time_stretch`, as `augment.repitch`: cleaner,
  ~5x slower); semitone 0 is left as it is (theirs ran the STFT anyway);
- speed and pitch ran on the GPU on the batch, after the others (their model's
  `transforms`), and drew per stem too: here they are the last two effects of the chain;
- loudness: ours is BS.1770-4 (K-weighting designed as libebur128's, exact at 48 kHz),
  aimless used pyloudnorm's meter, whose K-weighting reads 0.045 dB lower (-3.05 LKFS for
  BS.1770's -3.01 reference tone; 0.04-0.05 dB on music stems);
- their recipe has no mixture limiter (its `LimitAug` is in their MUSDB configs only): ours
  is off by default (`mix_limiter_proba`). On, it brings the mixture to a loudness drawn
  from a normal law (LimitAug's: mean -10.887, std 1.191 LUFS, the statistics of
  musdb-L), limits it (JUCE limiter, release U 30-200 ms) under `mix_limiter_ceiling_db`,
  and applies the mixture's gain envelope to every stem, so the stems still sum to the
  limited mixture. It runs last, so the ceiling holds for what the model sees (LimitAug then
  re-normalised to -14 LUFS, which can break any ceiling: we do not).

The draws of an example are a function of the generator given (`generator(seed, index)`:
a stream of its own). Every stem and effect gets one uniform for its decision and one seed
for its parameters, whatever is applied, so an effect's decision and parameters do not
depend on the other effects' probabilities: raising `proba_scale` keeps every effect drawn
at the lower scale, with the same parameters, and adds others.
"""
import dataclasses
import math
import typing as tp

import numpy as np

from .audio import fit_length

if tp.TYPE_CHECKING:   # torch, torchaudio and pedalboard are imported where they are used
    import torch

# Appended to (seed, index) to seed the generator of the effects: a stream of its own,
# distinct from the one that draws the track and offset and from the repitch one.
STREAM = 0xeffec75

# The effects in chain order; each has `<name>_proba` in `Effects`.
ORDER = ('eq', 'distortion', 'delay', 'chorus', 'phaser', 'compressor', 'reverb', 'widener',
         'limiter', 'volume', 'loudness', 'gain', 'flip_sign', 'swap_channels', 'speed',
         'pitch')

# Drawn with a probability: the effects of the stems, then the limiter of their mixture.
DRAWN = ORDER + ('mix_limiter',)

Range = tp.Tuple[float, float]
Params = tp.Dict[str, tp.Any]
Step = tp.Tuple[str, Params]


def generator(seed: int, index: int) -> np.random.Generator:
    """The generator of the effects of example `index` (global index) of an XP's `seed`."""
    return np.random.default_rng([seed, index, STREAM])


# ---------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4): K-weighting, 400 ms blocks every 100 ms, gates -70 LUFS and
# -10 LU relative.

def k_weighting(samplerate: float) -> np.ndarray:
    """The K-weighting filter at `samplerate` as second-order sections [2, 6].

    The analog prototypes of libebur128 (a high shelf of +4 dB above ~1.7 kHz, then a high
    pass at 38 Hz) through the bilinear transform: at 48 kHz they give the coefficients
    tabulated in BS.1770, and they hold at any other rate.
    """
    freq, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * freq / samplerate)
    high, band = 10 ** (gain_db / 20), 10 ** (gain_db / 20 * 0.4996667741545416)
    norm = 1 + k / q + k * k
    shelf = [(high + band * k / q + k * k) / norm, 2 * (k * k - high) / norm,
             (high - band * k / q + k * k) / norm, 1., 2 * (k * k - 1) / norm,
             (1 - k / q + k * k) / norm]
    freq, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * freq / samplerate)
    norm = 1 + k / q + k * k
    highpass = [1., -2., 1., 1., 2 * (k * k - 1) / norm, (1 - k / q + k * k) / norm]
    return np.array([shelf, highpass])


def loudness(audio: np.ndarray, samplerate: float) -> float:
    """Integrated loudness of `audio` [C, T] in LUFS (-inf when every block is gated out).

    Blocks of 4 steps of round(0.1 x samplerate) frames (400 ms, 75 % overlap); the frames
    after the last whole step are left out, and a signal shorter than a block is one block.
    Every channel weighs 1 (mono, stereo).
    """
    from scipy.signal import sosfilt

    audio = np.asarray(audio, dtype=np.float32)
    weighted = sosfilt(k_weighting(samplerate).astype(np.float32), audio, axis=-1)
    step = round(0.1 * samplerate)
    steps = weighted.shape[-1] // step
    if steps < 4:
        energy = np.square(weighted).mean(-1, dtype=np.float64).sum(keepdims=True)
    else:
        squares = np.square(weighted[:, :steps * step]).reshape(len(weighted), steps, step)
        per_step = np.concatenate([[0.], np.cumsum(squares.sum(-1, dtype=np.float64).sum(0))])
        energy = (per_step[4:] - per_step[:-4]) / (4 * step)          # [blocks]
    with np.errstate(divide='ignore'):
        levels = -0.691 + 10 * np.log10(energy)
    kept = levels > -70
    if not kept.any():
        return -math.inf
    relative = -0.691 + 10 * math.log10(energy[kept].mean()) - 10
    kept &= levels > relative
    return -0.691 + 10 * math.log10(energy[kept].mean())


# ---------------------------------------------------------------------------------------
# The effects: `apply_<name>(audio [C, T] float32, params, samplerate) -> [C, T]`.

def _board(plugins: tp.Sequence[tp.Any], audio: np.ndarray, samplerate: float) -> np.ndarray:
    import pedalboard   # imported here: only the XPs with effects need it

    return pedalboard.Pedalboard(list(plugins))(np.ascontiguousarray(audio), samplerate)


def apply_eq(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import HighShelfFilter, LowShelfFilter, PeakFilter

    top = 0.45 * samplerate   # a cutoff past Nyquist makes no filter (16 kHz at 22.05 kHz)
    plugins = [LowShelfFilter(min(params['low_hz'], top), params['low_db'], params['low_q'])]
    plugins += [PeakFilter(min(hz, top), db, q)
                for hz, db, q in zip(params['band_hz'], params['band_db'], params['band_q'])]
    plugins.append(HighShelfFilter(min(params['high_hz'], top), params['high_db'],
                                   params['high_q']))
    return _board(plugins, audio, samplerate)


def apply_distortion(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import Distortion
    return _board([Distortion(**params)], audio, samplerate)


def apply_delay(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import Delay
    return _board([Delay(**params)], audio, samplerate)


def apply_chorus(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import Chorus
    return _board([Chorus(**params)], audio, samplerate)


def apply_phaser(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import Phaser
    return _board([Phaser(**params)], audio, samplerate)


def apply_compressor(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import Compressor
    return _board([Compressor(**params)], audio, samplerate)


def apply_reverb(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    from pedalboard import Reverb
    return _board([Reverb(**params)], audio, samplerate)


def apply_limiter(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    """JUCE's limiter: it adds -threshold dB of make-up gain and clips at 0 dBFS, so a stem
    comes out 6 to 32 dB louder, with its peaks at 1 (as aimless trained)."""
    from pedalboard import Limiter
    return _board([Limiter(**params)], audio, samplerate)


def apply_widener(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    """Mid x 2 (1 - width), side x 2 width (width 0.5: unchanged); mono stays as it is."""
    if audio.shape[0] != 2:
        return audio
    mid, side = audio[0] + audio[1], audio[0] - audio[1]
    mid, side = mid * (1 - params['width']), side * params['width']
    return np.stack([mid + side, mid - side]).astype(np.float32)


def apply_volume(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    """Gain ramps in dB, segment after segment, from 0 dB to each segment's end gain."""
    starts = [0.] + list(params['gains_db'][:-1])
    ramps = [np.linspace(start, end, length, dtype=np.float64) for start, end, length
             in zip(starts, params['gains_db'], params['lengths'])]
    gains_db = fit_length(np.concatenate(ramps), audio.shape[-1])
    return (audio * 10 ** (gains_db / 20)).astype(np.float32)


def apply_loudness(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    """To `target` LUFS, the gain clamped to -120..+40 dB: a stem whose blocks are all under
    -70 LUFS (-inf) gets +40 dB, as in aimless."""
    delta = params['target'] - loudness(audio, samplerate)
    return (audio * 10 ** (min(max(delta, -120.), 40.) / 20)).astype(np.float32)


def apply_gain(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    return (audio * np.float32(params['gain'])).astype(np.float32)


def apply_flip_sign(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    return -audio


def apply_swap_channels(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    return audio[::-1].copy() if audio.shape[0] == 2 else audio


def apply_speed(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    """Resample to `samplerate * speed // 100` Hz, played at `samplerate` (aimless's
    SpeedPerturb: 90 makes it 10 % shorter), then zero-pad or cut to the input length."""
    import torch
    from torchaudio.functional import resample

    target = int(samplerate) * params['speed'] // 100
    if target == int(samplerate):
        return audio
    out = resample(torch.from_numpy(np.ascontiguousarray(audio)), int(samplerate), target)
    return fit_length(out.numpy(), audio.shape[-1])


def vocoder_rates(semitones: int) -> tp.Tuple[int, float]:
    """aimless's RandomPitch resampling ratio (percent) for `semitones`, 100 x 2^(s / 12)
    truncated then made even (+1 if odd), and its stretch rate 100 / ratio, computed with
    torch's float32 operations as theirs (torch's 100 / 112 is 1 ulp off numpy's)."""
    import torch

    rate = 2 ** (-torch.tensor(float(semitones)) / 12)
    ratio = int((rate.reciprocal() * 100).long())
    ratio += ratio % 2
    return ratio, float(100 / torch.tensor(ratio))


def phase_vocoder(spec: 'torch.Tensor', rate: float, advance: 'torch.Tensor'
                  ) -> 'torch.Tensor':
    """torchaudio's `functional.phase_vocoder` (the same values), twice as fast: the angles
    and magnitudes of the input frames are computed once, not once per output frame pair."""
    import torch

    steps = torch.arange(0, spec.size(-1), rate, dtype=advance.dtype)
    alphas = steps % 1.0
    index = steps.long()
    padded = torch.nn.functional.pad(spec, [0, 2])
    angle, magnitude = padded.angle(), padded.abs()
    phase = angle[..., index + 1] - angle[..., index] - advance
    phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi)) + advance
    phase = torch.cumsum(torch.cat([angle[..., :1], phase[..., :-1]], -1), -1)
    magnitude = alphas * magnitude[..., index + 1] + (1 - alphas) * magnitude[..., index]
    return torch.polar(magnitude, phase)


def vocoder_pitch(audio: np.ndarray, semitones: int, n_fft: int = 2048,
                  hop: int = 512) -> np.ndarray:
    """aimless's RandomPitch on `audio` [C, T]: a phase-vocoder time stretch by
    100 / ratio (STFT 2048, hop 512, Hann), then resampling from `ratio` to 100: about
    `semitones` higher, about as long (zero-padded or cut to T)."""
    import torch
    from torchaudio.functional import resample

    if audio.shape[-1] <= n_fft // 2:
        raise ValueError(f"Cannot pitch-shift {audio.shape[-1]} frames with the phase vocoder: "
                         f"it needs more than {n_fft // 2} (raise dset.segment).")
    ratio, rate = vocoder_rates(semitones)
    window = torch.hann_window(n_fft)
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(audio)), n_fft, hop,
                      window=window, center=True, pad_mode='reflect', return_complex=True)
    if rate != 1:
        advance = torch.linspace(0, math.pi * hop, n_fft // 2 + 1)[..., None]
        spec = phase_vocoder(spec, rate, advance)
    out = resample(torch.istft(spec, n_fft, hop, window=window), ratio, 100)
    return fit_length(out.numpy(), audio.shape[-1])


def apply_pitch(audio: np.ndarray, params: Params, samplerate: float) -> np.ndarray:
    """Pitch shift by `semitones`, same length: aimless's phase vocoder (`vocoder`) or
    Rubber Band (`rubberband`, its high quality mode: see repitch.py); 0: left as it is.
    (Rubber Band's quick mode is no faster than the vocoder here, and off by 1 % at low
    pitches: 441 Hz an octave up comes out at 890 Hz.)"""
    from .repitch import repitch

    if params['semitones'] == 0:
        return audio
    if params['method'] == 'vocoder':
        return vocoder_pitch(audio, params['semitones'])
    out = repitch(audio, samplerate, params['semitones'], 0)
    return fit_length(out, audio.shape[-1])


PITCH_METHODS = ('vocoder', 'rubberband')


APPLY: tp.Dict[str, tp.Callable[[np.ndarray, Params, float], np.ndarray]] = {
    name: globals()[f'apply_{name}'] for name in ORDER}


# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """What an example gets: per stem, its (effect, parameters) in chain order; and the
    mixture limiter's parameters (None: not drawn)."""
    stems: tp.List[tp.List[Step]]
    mix: tp.Optional[Params] = None

    @property
    def empty(self) -> bool:
        return self.mix is None and not any(self.stems)


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _log_uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


# The effects whose parameters are all uniform: {parameter of the plugin: option's range}.
UNIFORM_PARAMS = {
    'distortion': {'drive_db': 'distortion_drive_db'},
    'chorus': {key: f'chorus_{key}' for key in
               ('rate_hz', 'depth', 'centre_delay_ms', 'feedback', 'mix')},
    'phaser': {'rate_hz': 'phaser_rate_hz', 'depth': 'phaser_depth',
               'centre_frequency_hz': 'phaser_centre_hz', 'feedback': 'phaser_feedback',
               'mix': 'phaser_mix'},
    'compressor': {key: f'compressor_{key}' for key in
                   ('threshold_db', 'ratio', 'attack_ms', 'release_ms')},
    'widener': {'width': 'widener_width'},
    'limiter': {'threshold_db': 'limiter_threshold_db', 'release_ms': 'limiter_release_ms'},
    'gain': {'gain': 'gain_range'}}

# Ranges drawn log-uniformly (they must be > 0); every other range is uniform.
LOG_RANGES = ('eq_low_hz', 'eq_band_hz', 'eq_high_hz', 'delay_seconds')


@dataclasses.dataclass
class Effects:
    """The random effects chain (see the module's docstring); defaults: aimless's MDX-A.

    `proba_scale` multiplies every probability (capped at 1): 0 turns the chain off,
    1.666 is their last stage. `__call__(stems [S, C, T], rng)` returns the stems processed.
    """
    samplerate: float = 44100
    proba_scale: float = 1.
    eq_proba: float = 0.3
    eq_gain_db: Range = (-6., 6.)
    eq_q: Range = (0.1, 4.)
    eq_low_hz: Range = (20., 200.)
    eq_bands: int = 3
    eq_band_hz: Range = (1000., 10000.)
    eq_high_hz: Range = (8000., 16000.)
    distortion_proba: float = 0.03
    distortion_drive_db: Range = (-20., 12.)
    delay_proba: float = 0.03
    delay_seconds: Range = (0.1, 1.)
    delay_feedback: Range = (0.05, 0.6)
    delay_mix: Range = (0., 0.7)
    chorus_proba: float = 0.03
    chorus_rate_hz: Range = (0.25, 4.)
    chorus_depth: Range = (0., 0.6)
    chorus_centre_delay_ms: Range = (5., 10.)
    chorus_feedback: Range = (0.1, 0.6)
    chorus_mix: Range = (0.1, 0.7)
    phaser_proba: float = 0.03
    phaser_rate_hz: Range = (0.25, 5.)
    phaser_depth: Range = (0.1, 0.6)
    phaser_centre_hz: Range = (200., 200.)
    phaser_feedback: Range = (0.1, 0.6)
    phaser_mix: Range = (0.1, 0.7)
    compressor_proba: float = 0.3
    compressor_threshold_db: Range = (-42., -6.)
    compressor_ratio: Range = (1.5, 4.)
    compressor_attack_ms: Range = (1., 50.)
    compressor_release_ms: Range = (10., 250.)
    reverb_proba: float = 0.3
    reverb_room_size: Range = (0., 1.)
    reverb_damping: Range = (0., 1.)
    reverb_wet: Range = (0., 0.7)
    reverb_width: Range = (0., 1.)
    widener_proba: float = 0.3
    widener_width: Range = (0., 1.)
    limiter_proba: float = 0.3
    limiter_threshold_db: Range = (-32., -6.)
    limiter_release_ms: Range = (10., 300.)
    volume_proba: float = 0.3
    volume_gain_db: Range = (-6., 6.)
    volume_segment_seconds: float = 3.
    loudness_proba: float = 0.3
    loudness_target_lufs: float = -32.
    gain_proba: float = 0.3
    gain_range: Range = (0.25, 1.25)
    flip_sign_proba: float = 0.3
    swap_channels_proba: float = 0.3
    speed_proba: float = 0.3
    speeds: tp.Sequence[int] = (90, 100, 110)
    pitch_proba: float = 0.3
    semitones: tp.Sequence[int] = (-1, 1, 0, 1, 2)
    pitch_method: str = 'vocoder'
    mix_limiter_proba: float = 0.
    mix_limiter_lufs: Range = (-10.887, 1.191)
    mix_limiter_release_ms: Range = (30., 200.)
    mix_limiter_ceiling_db: float = 0.

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.type is Range and field.name != 'mix_limiter_lufs':
                setattr(self, field.name, self._range(field.name, getattr(self, field.name)))
        self.mix_limiter_lufs = self._pair('mix_limiter_lufs', self.mix_limiter_lufs)
        self.speeds = self._whole(
            'speeds', self.speeds, lambda v: v > 0, 'percentages > 0, e.g. [90, 100, 110]')
        self.semitones = self._whole(
            'semitones', self.semitones, lambda v: True, 'semitones, e.g. [-1, 1, 0, 1, 2]')
        checks = [(f'{name}_proba', getattr(self, f'{name}_proba'), 'a probability in [0, 1]',
                   lambda v: 0 <= v <= 1) for name in DRAWN]
        checks += [('proba_scale', self.proba_scale, 'a number >= 0', lambda v: v >= 0),
                   ('samplerate', self.samplerate, 'a rate > 0 (Hz)', lambda v: v > 0),
                   ('eq_bands', self.eq_bands, 'a whole number >= 0',
                    lambda v: float(v).is_integer() and v >= 0),
                   ('volume_segment_seconds', self.volume_segment_seconds, 'seconds > 0',
                    lambda v: v > 0),
                   ('mix_limiter_lufs', self.mix_limiter_lufs, '[mean, std] with std >= 0',
                    lambda v: v[1] >= 0)]
        checks += [(key, getattr(self, key), 'a range of numbers > 0',
                    lambda v: v[0] > 0) for key in LOG_RANGES]
        for key, value, want, good in checks:
            if not (np.all(np.isfinite(value)) and good(value)):
                raise ValueError(f"augment.effects.{key}={value} is invalid: it must be {want}.")
        self.eq_bands = int(self.eq_bands)
        if self.pitch_method not in PITCH_METHODS:
            raise ValueError(f"augment.effects.pitch_method={self.pitch_method!r} is invalid: "
                             f"it must be one of {', '.join(PITCH_METHODS)}.")

    @classmethod
    def from_options(cls, options: tp.Mapping[str, tp.Any], samplerate: float
                     ) -> tp.Optional['Effects']:
        """The chain of the `augment.effects` section (a plain dict), None when it is off
        (`proba_scale` 0 or every probability 0)."""
        known = {field.name for field in dataclasses.fields(cls)} - {'samplerate'}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"Unknown option augment.effects.{unknown[0]}: the options are "
                             f"{', '.join(sorted(known))} (see separator/data/effects.py).")
        effects = cls(samplerate=samplerate, **options)
        return effects if effects.active else None

    @staticmethod
    def _pair(key: str, value: tp.Any) -> tp.Tuple[float, float]:
        try:
            first, second = (float(v) for v in value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"augment.effects.{key}={value} is invalid: it must be a pair "
                             f"of numbers, e.g. [-6, 6].") from error
        return first, second

    @classmethod
    def _range(cls, key: str, value: tp.Any) -> Range:
        low, high = cls._pair(key, value)
        if not low <= high:
            raise ValueError(f"augment.effects.{key}={value} is invalid: it must be a range "
                             f"[low, high] with low <= high.")
        return low, high

    @staticmethod
    def _whole(key: str, value: tp.Any, good: tp.Callable[[int], bool],
               want: str) -> tp.Tuple[int, ...]:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError):
            values = []
        if not values or not all(v.is_integer() and good(v) for v in values):
            raise ValueError(f"augment.effects.{key}={value} is invalid: it must be a "
                             f"non-empty list of whole {want}.")
        return tuple(int(v) for v in values)

    def proba(self, name: str) -> float:
        """The probability of effect `name` (or 'mix_limiter') after `proba_scale`."""
        return min(1., getattr(self, f'{name}_proba') * self.proba_scale)

    @property
    def active(self) -> bool:
        """Whether any effect can be drawn (False: the chain is off)."""
        return any(self.proba(name) > 0 for name in DRAWN)

    # --- draws ---------------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, stems: int, frames: int) -> Plan:
        """The plan of an example of `stems` stems of `frames` frames."""
        decisions = rng.random((stems, len(ORDER)))
        seeds = rng.integers(0, 2 ** 63, size=(stems, len(ORDER)))
        mix_decision, mix_seed = rng.random(), int(rng.integers(0, 2 ** 63))
        probas = np.array([self.proba(name) for name in ORDER])
        plan = Plan([[] for _ in range(stems)])
        for stem, column in zip(*np.nonzero(decisions < probas)):   # row by row, in order
            params = self._params(ORDER[column], np.random.default_rng(seeds[stem, column]),
                                  frames)
            plan.stems[stem].append((ORDER[column], params))
        if mix_decision < self.proba('mix_limiter'):
            mix_rng = np.random.default_rng(mix_seed)
            plan.mix = {'lufs': float(mix_rng.normal(*self.mix_limiter_lufs)),
                        'release_ms': _uniform(mix_rng, self.mix_limiter_release_ms)}
        return plan

    def _params(self, name: str, rng: np.random.Generator, frames: int) -> Params:
        """The parameters of effect `name`, drawn from its own `rng`."""
        def uniform(key: str) -> float:
            return _uniform(rng, getattr(self, key))

        def pick(values: tp.Sequence[int]) -> int:
            return values[int(rng.integers(len(values)))]

        if name == 'eq':
            return self._eq_params(rng)
        if name == 'volume':
            return self._volume_params(rng, frames)
        if name == 'delay':
            return {'delay_seconds': _log_uniform(rng, self.delay_seconds),
                    'feedback': uniform('delay_feedback'), 'mix': uniform('delay_mix')}
        if name == 'reverb':
            wet = uniform('reverb_wet')
            return {'room_size': uniform('reverb_room_size'),
                    'damping': uniform('reverb_damping'), 'wet_level': wet,
                    'dry_level': 1 - wet, 'width': uniform('reverb_width')}
        if name in UNIFORM_PARAMS:
            return {param: uniform(key) for param, key in UNIFORM_PARAMS[name].items()}
        if name == 'loudness':
            return {'target': self.loudness_target_lufs}
        if name == 'speed':
            return {'speed': pick(self.speeds)}
        if name == 'pitch':
            return {'semitones': pick(self.semitones), 'method': self.pitch_method}
        return {}   # flip_sign, swap_channels

    def _eq_params(self, rng: np.random.Generator) -> Params:
        """Low shelf, `eq_bands` peak bands, high shelf: a gain, a cutoff and a Q each."""
        def band(hz: Range) -> tp.Tuple[float, float, float]:
            return (_uniform(rng, self.eq_gain_db), _log_uniform(rng, hz),
                    _uniform(rng, self.eq_q))

        params: Params = dict(zip(('low_db', 'low_hz', 'low_q'), band(self.eq_low_hz)))
        params.update(zip(('high_db', 'high_hz', 'high_q'), band(self.eq_high_hz)))
        bands = [band(self.eq_band_hz) for _ in range(self.eq_bands)]
        params.update({'band_db': [b[0] for b in bands], 'band_hz': [b[1] for b in bands],
                       'band_q': [b[2] for b in bands]})
        return params

    def _volume_params(self, rng: np.random.Generator, frames: int) -> Params:
        """aimless's RandomVolumeAutomation: 1 to duration // segment_seconds segments whose
        lengths are a Dirichlet draw (weights U 0-10), each ending at a gain U in range."""
        most = max(1, int(frames / self.samplerate // self.volume_segment_seconds))
        count = int(rng.integers(1, most + 1))
        weights = np.maximum(rng.uniform(0, 10, count), 1e-3)   # Dirichlet needs > 0
        lengths = np.maximum((frames * rng.dirichlet(weights)).astype(np.int64), 1)
        excess = int(lengths.sum()) - frames    # their fix of the rounding, as they wrote it
        if excess < 0:
            lengths[-1] -= excess
        elif excess > 0:
            longer = np.flatnonzero(lengths > excess + 1)
            if len(longer):
                lengths[longer[0]] -= excess
        gains = [_uniform(rng, self.volume_gain_db) for _ in range(count)]
        return {'lengths': [int(n) for n in lengths], 'gains_db': gains}

    # --- processing ----------------------------------------------------------------------

    def apply(self, stems: np.ndarray, plan: Plan) -> np.ndarray:
        """Process `stems` [S, C, T] as `plan` says: float32 [S, C, T]. An empty plan returns
        `stems` itself."""
        if plan.empty:
            return stems
        frames = stems.shape[-1]
        out = []
        for audio, steps in zip(stems, plan.stems):
            for name, params in steps:
                audio = APPLY[name](np.asarray(audio, dtype=np.float32), params,
                                    self.samplerate)
            out.append(fit_length(np.asarray(audio, dtype=np.float32), frames))
        processed = np.stack(out)
        if plan.mix is not None:
            processed = self._limit_mix(processed, plan.mix)
        return np.ascontiguousarray(processed, dtype=np.float32)

    @property
    def ceiling(self) -> float:
        """The mixture limiter's ceiling, linear (|sum of the stems| stays under it)."""
        return 10 ** (self.mix_limiter_ceiling_db / 20)

    def _limit_mix(self, stems: np.ndarray, params: Params) -> np.ndarray:
        """Bring the mixture to `lufs`, limit it under the ceiling, and give every stem the
        mixture's gain envelope (LimitAug's |limited| / (|mix| + 1e-8)): the stems sum to
        the limited mixture, a hair under it."""
        mix = stems.astype(np.float64).sum(0)
        level = loudness(mix, self.samplerate)
        gain_db = params['lufs'] - level if math.isfinite(level) else 0.
        from pedalboard import Limiter
        limiter = Limiter(threshold_db=self.mix_limiter_ceiling_db,
                          release_ms=params['release_ms'])
        driven = (mix * 10 ** (gain_db / 20)).astype(np.float32)
        # JUCE's limiter adds -threshold dB and clips at 0 dBFS: scaled back under the
        # ceiling; 1e-5 of margin for the float32 rounding of the stems and of their sum.
        limited = _board([limiter], driven, self.samplerate).astype(np.float64)
        limited *= self.ceiling * (1 - 1e-5)
        envelope = np.abs(limited) / (np.abs(mix) + 1e-8)
        return (stems * envelope[None]).astype(np.float32)

    def __call__(self, stems: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw a plan from `rng` and apply it to `stems` [S, C, T]."""
        return self.apply(stems, self.draw(rng, stems.shape[0], stems.shape[-1]))
