"""The automatic label-noise filter: statistics with an oracle model, scoring against a
manifest, and the `tools.filter` command with a tiny trained XP."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from separator.data import labelnoise
from separator.data.labelnoise import inject, load_manifest
from separator.filtering import (FilterConfig, evaluate, filter_folder, format_metrics,
                                 ranking_auc, score_stem, stem_kind, transform)

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
        for statistic in ('purity', 'sdr'):
            config = FilterConfig(statistic=statistic)
            scores[name, statistic] = score_stem(model, tmp_path / f'{name}.wav', source, config)
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
    loose = score_stem(model, tmp_path / 'bleed.wav', 'other', FilterConfig(threshold=3))
    assert loose['clean']
    loud = score_stem(model, tmp_path / 'quiet.wav', 'vocals', FilterConfig(silence_db=-150))
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
    for statistic in ('purity', 'sdr'):
        assert 0.5 < ranking_auc(result.scores, manifest, statistic) <= 1
    scores = json.loads((tmp_path / 'out' / 'scores.json').read_text())
    assert scores['config']['threshold'] == 20 and set(scores['tracks']) == set(truth)


def test_filter_cli(tiny_data, tiny_xp, tmp_path):
    cwd, sig = tiny_xp
    noisy = inject(tiny_data, tmp_path / 'noisy', rate=0.5, seed=0, verbose=False)
    out = tmp_path / 'filtered'
    result = run_python(['-m', 'tools.filter', sig, str(noisy), '-o', str(out), '--workers',
                         '1', '--xps', str(cwd / 'outputs' / 'xps'), '--manifest', str(noisy),
                         '--quiet', '--threshold', '0'], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for word in ('precision', 'recall', 'f1', 'overall', 'clean', 'vocals', 'AUC'):
        assert word in result.stdout, result.stdout
    scores = json.loads((out / 'scores.json').read_text())
    tracks = sorted(p.name for p in noisy.iterdir() if p.is_dir())
    assert sorted(scores['tracks']) == tracks
    for source in ('drums', 'bass', 'other', 'vocals'):
        listed = (out / f'clean_{source}.txt').read_text().split()
        assert set(listed) <= set(tracks)
        assert listed == sorted(t for t in tracks if scores['tracks'][t][source]['clean'])

    # Errors: unknown XP, missing folder.
    for args, message in ((['nosuchsig', str(noisy)], 'nosuchsig'),
                          ([sig, str(tmp_path / 'absent')], 'absent')):
        result = run_python(['-m', 'tools.filter', *args, '-o', str(tmp_path / 'x'),
                         '--xps', 'outputs/xps'], tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
