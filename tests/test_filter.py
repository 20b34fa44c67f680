"""The automatic label-noise filter: the statistics on hand-made estimates and with an oracle
model, the threshold chosen from the scores (`auto`), scoring against a manifest, and the
`tools.filter` command with a tiny trained XP."""
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from separator.data import labelnoise
from separator.data.labelnoise import inject, load_manifest
from separator.filtering import (FilterConfig, auto_threshold, evaluate, filter_folder,
                                 format_metrics, is_clean, ranking_auc, score_stem, stem_kind,
                                 stem_statistics, transform)

from .conftest import run_python

pytestmark = pytest.mark.usefixtures('one_thread')

pytest.importorskip('pedalboard')

SR = 44100
# Each source of the synthetic "band" world lives in its own band (Hz); tones are chosen so
# that +6 semitones (x1.41) keeps them inside their band.
BANDS = {'bass': (0, 300), 'drums': (300, 1200), 'other': (1200, 4800), 'vocals': (4800, SR)}
TONES = {'bass': (100., 150.), 'drums': (450., 700.), 'other': (1800., 2600.),
         'vocals': (6000., 8000.)}


class Oracle(nn.Module):
    """Routes every frequency band of its input to the source that owns it."""

    def __init__(self):
        super().__init__()
        self.sources = ['drums', 'bass', 'other', 'vocals']   # not labelnoise's order
        self.samplerate = SR
        self.segment = 30.
        self.audio_channels = 2

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(mix, dim=-1)
        freqs = torch.fft.rfftfreq(mix.shape[-1], 1 / self.samplerate)
        outs = []
        for source in self.sources:
            low, high = BANDS[source]
            mask = ((freqs >= low) & (freqs < high)).to(spec.dtype)
            outs.append(torch.fft.irfft(spec * mask, n=mix.shape[-1], dim=-1))
        return torch.stack(outs, dim=1)


def tone_stem(source: str, seconds: float, seed: int) -> np.ndarray:
    """[C, T] float32: the two tones of `source` with a random tremolo."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    audio = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in TONES[source])
    audio = audio * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    return (0.1 * np.stack([audio, audio * 0.8])).astype(np.float32)


def write_band_set(root: Path, tracks: int, seconds: float = 1.) -> Path:
    """A clean MUSDB-layout set (ROOT/train/<track>/<source>.wav) of band stems."""
    for index in range(tracks):
        folder = root / 'train' / f'track{index}'
        folder.mkdir(parents=True)
        for number, source in enumerate(BANDS):
            sf.write(folder / f'{source}.wav', tone_stem(source, seconds, 10 * index + number).T,
                     SR, subtype='FLOAT')
    return root


def test_transform_changes_pitch_and_length():
    audio = tone_stem('drums', 1., 0)
    out = transform(audio, SR, 6, 2.)
    assert out.shape[0] == 2 and abs(out.shape[1] - SR // 2) < SR // 20
    spectrum = np.abs(np.fft.rfft(out[0]))
    peak = np.fft.rfftfreq(out.shape[1], 1 / SR)[np.argmax(spectrum)]
    assert min(abs(peak - f * 2 ** 0.5) for f in TONES['drums']) < 20
    slow = transform(audio, SR, 0, 0.5)
    assert abs(slow.shape[1] - 2 * SR) < SR // 10


# --------------------------------------------------------------------------------------------
# The statistics on hand-made estimates: every expected value is worked out here by hand.
# --------------------------------------------------------------------------------------------

ORDER = ['drums', 'bass', 'other', 'vocals']
N, C = 1009, 2                      # samples (a prime) and channels of the estimates


def estimates_of(own: float, others: float, source: str = 'bass') -> torch.Tensor:
    """[4, C, N] float64: `own` everywhere in `source`'s output, `others` in the rest."""
    out = torch.full((len(ORDER), C, N), others, dtype=torch.float64)
    out[ORDER.index(source)] = own
    return out


def decide(stats: dict, statistic: str, threshold=None) -> bool:
    config = FilterConfig(statistic=statistic, threshold=threshold)
    return is_clean({**stats, 'silent': stats['empty'] and statistic == 'ccom'}, config,
                    config.threshold)


def test_ccom_and_purity_on_hand_made_estimates():
    stem = torch.zeros(C, N, dtype=torch.float64)
    # Own source 0.5, others 0.005: sum |x| = 0.5 * C * N and 0.005 * C * N, a ratio of 100:
    # 40 dB for ccom; the RMS levels are 0.5 and 0.005: 40 dB for purity too.
    stats = stem_statistics(estimates_of(0.5, 0.005), stem, ORDER, 'bass')
    assert stats['sum_abs_db']['bass'] == round(20 * math.log10(0.5 * C * N), 3)
    assert stats['sum_abs_db']['vocals'] == round(20 * math.log10(0.005 * C * N), 3)
    assert stats['levels_db']['bass'] == round(20 * math.log10(0.5), 3)
    assert stats['ccom'] == 40.0 and stats['purity'] == 40.0 and not stats['empty']
    assert decide(stats, 'ccom') and decide(stats, 'purity')
    # Exactly 20 dB (0.05 against 0.005): ccom keeps a stem only STRICTLY above its 20 dB,
    # purity keeps it at 20 dB (>=).
    at = stem_statistics(estimates_of(0.05, 0.005), stem, ORDER, 'bass')
    assert at['ccom'] == 20.0 and at['purity'] == 20.0
    assert not decide(at, 'ccom') and decide(at, 'purity')
    above = stem_statistics(estimates_of(0.0501, 0.005), stem, ORDER, 'bass')
    assert above['ccom'] == round(20 * math.log10(0.0501 / 0.005), 3) > 20
    assert decide(above, 'ccom')
    # The loudest OTHER source counts: one other at 0.05 (0 dB) spoils a 0.5 own source.
    spoilt = estimates_of(0.5, 0.005)
    spoilt[ORDER.index('other')] = 0.5
    assert stem_statistics(spoilt, stem, ORDER, 'bass')['ccom'] == 0.0
    # A sum of |x| and an RMS weigh quiet passages differently: own source 1.0 on K of the N
    # samples (silent elsewhere), others 0.001 throughout. ccom: 20 log10(K / N / 0.001);
    # purity: 20 log10(sqrt(K / N) / 0.001).
    K = 101
    burst = estimates_of(0., 0.001)
    burst[ORDER.index('bass'), :, :K] = 1.
    stats = stem_statistics(burst, stem, ORDER, 'bass')
    assert stats['ccom'] == round(20 * math.log10(K / N / 0.001), 3)        # 40.03 dB
    assert stats['purity'] == round(20 * math.log10(math.sqrt(K / N) / 0.001), 3)  # 50.0
    assert not decide(stats, 'ccom', threshold=45) and decide(stats, 'purity', threshold=45)


def test_ccom_every_output_at_or_below_minus_80_db_is_silent():
    stem = torch.zeros(C, N, dtype=torch.float64)
    # Every output's sum |x| is 1e-4 (each sample 1e-4 / (C * N)): exactly -80 dB, silent,
    # however far the own source would be above the others.
    quiet = 1e-4 / (C * N)
    stats = stem_statistics(estimates_of(quiet, quiet), stem, ORDER, 'bass')
    assert set(stats['sum_abs_db'].values()) == {-80.0} and stats['empty']
    stats = stem_statistics(estimates_of(quiet, 0.), stem, ORDER, 'bass')
    assert stats['sum_abs_db']['bass'] == -80.0 and stats['sum_abs_db']['drums'] == -200.0
    assert stats['empty'] and stats['ccom'] == 120.0 and not decide(stats, 'ccom')
    # purity does not drop quiet outputs: the same stem is clean there.
    assert decide(stats, 'purity')
    # One output 0.1 dB above -80 dB: not empty.
    stats = stem_statistics(estimates_of(quiet * 10 ** (0.1 / 20), quiet), stem, ORDER, 'bass')
    assert stats['sum_abs_db']['bass'] == -79.9 and not stats['empty']
    assert not decide(stats, 'ccom')                 # 0.1 dB apart: not clean either
    # All zero: every output at the -200 dB floor.
    stats = stem_statistics(estimates_of(0., 0.), stem, ORDER, 'bass')
    assert stats['empty'] and set(stats['sum_abs_db'].values()) == {-200.0}


class Mute(nn.Module):
    """Separates everything into silence."""

    def __init__(self):
        super().__init__()
        self.sources, self.samplerate, self.segment, self.audio_channels = ORDER, SR, 30., 2

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return torch.zeros(mix.shape[0], len(self.sources), *mix.shape[1:])


def test_silence_of_the_input_and_of_the_outputs(tmp_path):
    """ccom: the input is silent when its mean |x| is below -80 dBFS (the winner's); purity:
    when its RMS is below -60 dBFS. ccom also drops a stem whose outputs are all silent."""
    vocals = tone_stem('vocals', 1., 0)
    mean_abs = float(np.mean(np.abs(vocals)))
    for name, db in (('minus70', -70.), ('minus81', -81.)):
        sf.write(tmp_path / f'{name}.wav', (vocals * 10 ** (db / 20) / mean_abs).T, SR,
                 subtype='FLOAT')
    ccom = FilterConfig()
    assert ccom.statistic == 'ccom' and ccom.threshold == 20 and ccom.silence_db == -80
    result = score_stem(Oracle(), tmp_path / 'minus70.wav', 'vocals', ccom)
    assert result['level_db'] == pytest.approx(-70, abs=1e-3)
    assert not result['silent'] and result['clean'] and result['ccom'] > 40
    purity = score_stem(Oracle(), tmp_path / 'minus70.wav', 'vocals',
                        FilterConfig(statistic='purity'))
    assert purity['silent'] and not purity['clean'] and 'purity' not in purity
    assert -70 < purity['level_db'] < -60                    # RMS: a sine's is +0.9 dB
    quiet = score_stem(Oracle(), tmp_path / 'minus81.wav', 'vocals', ccom)
    assert quiet['silent'] and not quiet['clean'] and 'ccom' not in quiet
    # A model that outputs silence: empty, hence silent, under ccom; not under purity.
    mute = score_stem(Mute(), tmp_path / 'minus70.wav', 'vocals', ccom)
    assert mute['empty'] and mute['silent'] and not mute['clean']
    mute = score_stem(Mute(), tmp_path / 'minus70.wav', 'vocals', FilterConfig(
        statistic='purity', silence_db=-100))
    assert mute['empty'] and not mute['silent'] and not mute['clean'] and mute['purity'] == 0


def test_threshold_auto_is_the_valley_of_bimodal_scores(caplog):
    # Two groups of hand-made scores (24 around 30 dB, 12 around -15 dB): any threshold that
    # separates them lies in (-10, 22); the valley must.
    high = [22. + 16. * k / 23 for k in range(24)]
    low = [-20. + 10. * k / 11 for k in range(12)]
    threshold, choice = auto_threshold(high + low, 20.)
    assert max(low) < threshold < min(high) and choice['bimodal']
    assert choice['method'] == 'kde valley' and choice['stems'] == 36
    # Scores spread evenly (one flat mode), or too few: the default, with a warning.
    for values in ([k * 40. / 36 for k in range(37)], high[:5] + low[:2]):
        with caplog.at_level(logging.WARNING, logger='separator.filtering'):
            caplog.clear()
            threshold, choice = auto_threshold(values, 20.)
        assert threshold == 20. and not choice['bimodal']
        assert 'not bimodal' in caplog.text and "default threshold, 20 dB" in caplog.text
    # A few outliers are no second mode (each side of the valley needs 10% of the stems).
    threshold, choice = auto_threshold(high + [-40., -41.], 20.)
    assert threshold == 20. and not choice['bimodal']
    assert FilterConfig(threshold='auto').threshold == 'auto'
    with pytest.raises(ValueError, match='filter.threshold'):
        FilterConfig(threshold='loud')
    with pytest.raises(ValueError, match='filter_folder'):
        score_stem(Oracle(), 'unused.wav', 'bass', FilterConfig(threshold='auto'))


def test_statistic_with_oracle(tmp_path):
    model = Oracle()
    stems = {source: tone_stem(source, 1., index) for index, source in enumerate(BANDS)}
    cases = {
        'clean': ('bass', stems['bass']),
        'swapped': ('bass', stems['vocals']),
        'bleed': ('other', stems['other'] + 10 ** (-6 / 20) * stems['drums']),
        'silent': ('drums', np.zeros_like(stems['drums'])),
        'quiet': ('vocals', 1e-4 * stems['vocals']),      # about -100 dBFS: silent
    }
    scores = {}
    for name, (source, audio) in cases.items():
        sf.write(tmp_path / f'{name}.wav', audio.T, SR, subtype='FLOAT')
        for statistic in ('ccom', 'purity', 'sdr'):
            config = FilterConfig(statistic=statistic)
            scores[name, statistic] = score_stem(model, tmp_path / f'{name}.wav', source, config)
    for name, (decision, low, high) in {'clean': (True, 30, np.inf),
                                        'swapped': (False, -np.inf, -20),
                                        'bleed': (False, 0, 12)}.items():
        assert scores[name, 'ccom']['clean'] == decision
        assert low < scores[name, 'ccom']['ccom'] < high, scores[name, 'ccom']
    assert scores['silent', 'ccom']['silent'] and scores['quiet', 'ccom']['silent']
    clean = scores['clean', 'purity']
    assert clean['clean'] and not clean['silent'] and clean['purity'] > 30
    assert clean['levels_db']['bass'] == max(clean['levels_db'].values())
    assert scores['clean', 'sdr']['clean'] and scores['clean', 'sdr']['sdr'] > 15
    swapped = scores['swapped', 'purity']
    assert not swapped['clean'] and swapped['purity'] < -20
    assert not scores['swapped', 'sdr']['clean'] and scores['swapped', 'sdr']['sdr'] < 1
    bleed = scores['bleed', 'purity']
    assert not bleed['clean'] and 0 < bleed['purity'] < 12      # about 6 dB + tone levels
    assert not scores['bleed', 'sdr']['clean']
    for name in ('silent', 'quiet'):
        assert scores[name, 'purity']['silent'] and not scores[name, 'purity']['clean']
        assert 'purity' not in scores[name, 'purity']
    # The threshold and the silence level are configurable.
    for statistic in ('ccom', 'purity'):
        loose = score_stem(model, tmp_path / 'bleed.wav', 'other',
                           FilterConfig(statistic=statistic, threshold=3))
        assert loose['clean']
        loud = score_stem(model, tmp_path / 'quiet.wav', 'vocals',
                          FilterConfig(statistic=statistic, silence_db=-150))
        assert not loud['silent'] and loud['clean']
    with pytest.raises(ValueError, match='purity'):
        FilterConfig(statistic='nope')


def test_evaluate_on_injected_set(tmp_path):
    noisy = inject(write_band_set(tmp_path / 'clean', 4), tmp_path / 'noisy', rate=0.5,
                   seed=1, verbose=False)
    manifest = load_manifest(noisy)
    truth = {track: {source: stem['clean'] for source, stem in entry['stems'].items()}
             for track, entry in manifest['tracks'].items()}
    n_clean = sum(v for flags in truth.values() for v in flags.values())
    n_stems = 4 * len(truth)
    assert 0 < n_clean < n_stems

    perfect = evaluate(truth, manifest)
    assert perfect['overall']['precision'] == perfect['overall']['recall'] == 1
    assert perfect['overall']['f1'] == 1 and perfect['missing'] == 0
    assert all(m['recall'] == 1 for m in perfect['kinds'].values())

    everything = evaluate({t: {s: True for s in f} for t, f in truth.items()}, manifest)
    assert everything['overall']['precision'] == pytest.approx(n_clean / n_stems)
    assert everything['overall']['recall'] == 1
    assert everything['kinds']['clean']['recall'] == 1
    assert all(m['recall'] == 0 for k, m in everything['kinds'].items() if k != 'clean')
    assert sum(m['count'] for m in everything['kinds'].values()) == n_stems
    # usable: also the stems that still teach their source (shifted, same source elsewhere...)
    n_usable = sum(labelnoise.teaches_its_source(stem, source)
                   for entry in manifest['tracks'].values()
                   for source, stem in entry['stems'].items())
    assert n_clean < n_usable < n_stems
    assert everything['usable']['precision'] == pytest.approx(n_usable / n_stems)
    assert everything['usable']['recall'] == 1 and perfect['usable']['recall'] < 1

    # One clean stem dropped, one corrupted stem kept, one stem missing.
    decisions = {t: dict(f) for t, f in truth.items()}
    (t0, s0), (t1, s1) = [next((t, s) for t, f in truth.items() for s, c in f.items()
                               if c == want) for want in (True, False)]
    decisions[t0][s0] = False
    decisions[t1][s1] = True
    missing_track = next(t for t in truth if t not in (t0, t1))
    del decisions[missing_track]['vocals']
    metrics = evaluate(decisions, manifest)
    kept_clean = n_clean - 1 - truth[missing_track]['vocals']
    assert metrics['overall']['precision'] == pytest.approx(kept_clean / (kept_clean + 1))
    assert metrics['overall']['recall'] == pytest.approx(kept_clean / (kept_clean + 1))
    assert metrics['missing'] == 1
    kind = stem_kind(manifest['tracks'][t1]['stems'][s1], s1)
    assert metrics['kinds'][kind]['detected'] == metrics['kinds'][kind]['count'] - 1
    table = format_metrics(metrics)
    assert 'overall' in table and kind in table and 'precision' in table

    # The oracle filter on the band set: swaps and whole silences are caught, clean stems
    # kept (a same-source excerpt of another track or a time shift is, by design, not seen).
    result = filter_folder(Oracle(), noisy, tmp_path / 'out', FilterConfig(), progress=False)
    metrics = evaluate(result.decisions(), manifest)
    assert metrics['kinds']['clean']['recall'] == 1
    assert metrics['overall']['precision'] > n_clean / n_stems
    for kind in ('swap', 'silence_whole'):
        if kind in metrics['kinds']:
            assert metrics['kinds'][kind]['recall'] == 1, metrics
    for source in BANDS:
        listed = (tmp_path / 'out' / f'clean_{source}.txt').read_text().split()
        assert listed == result.clean_tracks(source)
        kept_noisy = [manifest['tracks'][t]['stems'][source] for t in listed
                      if not truth[t][source]]
        assert all(labelnoise.teaches_its_source(stem, source) for stem in kept_noisy), \
            kept_noisy
    assert metrics['usable']['precision'] == 1 and metrics['usable']['f1'] > \
        metrics['overall']['f1']
    for statistic in ('ccom', 'purity', 'sdr'):
        assert 0.5 < ranking_auc(result.scores, manifest, statistic) <= 1
    scores = json.loads((tmp_path / 'out' / 'scores.json').read_text())
    assert scores['config']['threshold'] == 20 and set(scores['tracks']) == set(truth)
    assert scores['config']['statistic'] == 'ccom' and scores['threshold'] == 20
    assert scores['threshold_choice'] == {'method': 'given'}

    # The threshold chosen from the scores alone: the oracle's are bimodal (pure stems far
    # above, swapped stems of another band far below): the valley keeps every clean stem and
    # drops every swap.
    auto = filter_folder(Oracle(), noisy, tmp_path / 'auto', FilterConfig(threshold='auto'),
                         progress=False)
    assert auto.threshold_choice['bimodal'], auto.threshold_choice
    metrics = evaluate(auto.decisions(), manifest)
    assert metrics['kinds']['clean']['recall'] == 1 and metrics['kinds']['swap']['recall'] == 1
    scores = json.loads((tmp_path / 'auto' / 'scores.json').read_text())
    assert scores['config']['threshold'] == 'auto' and scores['threshold'] == auto.threshold


def test_filter_cli(tiny_data, tiny_xp, tmp_path):
    cwd, sig = tiny_xp
    noisy = inject(tiny_data, tmp_path / 'noisy', rate=0.5, seed=0, verbose=False)
    out = tmp_path / 'filtered'
    result = run_python(['-m', 'tools.filter', sig, str(noisy), '-o', str(out), '--workers',
                         '1', '--xps', str(cwd / 'outputs' / 'xps'), '--manifest', str(noisy),
                         '--quiet', '--threshold', 'auto'], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for word in ('precision', 'recall', 'f1', 'overall', 'clean', 'vocals', 'AUC', 'ccom'):
        assert word in result.stdout, result.stdout
    scores = json.loads((out / 'scores.json').read_text())
    assert scores['config']['statistic'] == 'ccom' and scores['config']['threshold'] == 'auto'
    line = next(line for line in result.stdout.splitlines() if line.startswith('Threshold:'))
    assert line.startswith(f"Threshold: ccom > {scores['threshold']:g} dB (auto: "), line
    if not scores['threshold_choice']['bimodal']:       # a model trained for 2 batches
        assert 'not bimodal' in result.stderr and scores['threshold'] == 20
    tracks = sorted(p.name for p in noisy.iterdir() if p.is_dir())
    assert sorted(scores['tracks']) == tracks
    for source in ('drums', 'bass', 'other', 'vocals'):
        listed = (out / f'clean_{source}.txt').read_text().split()
        assert set(listed) <= set(tracks)
        assert listed == sorted(t for t in tracks if scores['tracks'][t][source]['clean'])

    # Errors: unknown XP, missing folder, a threshold neither dB nor auto.
    for args, message in ((['nosuchsig', str(noisy)], 'nosuchsig'),
                          ([sig, str(tmp_path / 'absent')], 'absent'),
                          ([sig, str(noisy), '--threshold', 'loud'], "'loud' is neither dB")):
        result = run_python(['-m', 'tools.filter', *args, '-o', str(tmp_path / 'x'),
                         '--xps', 'outputs/xps'], tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
