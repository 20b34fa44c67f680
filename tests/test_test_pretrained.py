"""tools.test_pretrained: evaluating an exported tiny XP gives the nSDR the solver logged."""
import json
import typing as tp
from pathlib import Path

import pytest
import torch

from separator.apply import apply_model
from separator.data.musdb import index_tracks
from separator.data.segments import WholeTracks
from separator.metrics import nsdr
from separator.pretrained import get_model
from tools import export, test_pretrained

from .conftest import SOURCES, history

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def released(tiny_xp) -> tp.Tuple[Path, str, Path]:
    cwd, sig = tiny_xp
    assert export.main([sig, '--xps', str(cwd / 'outputs' / 'xps'),
                        '-o', str(cwd / 'release')]) == 0
    return cwd, sig, cwd / 'release'


def test_matches_solver(released, tiny_data, tmp_path, capsys):
    cwd, sig, repo = released
    output = tmp_path / 'out' / 'results.json'
    assert test_pretrained.main(['--repo', str(repo), '-n', sig, '--musdb', str(tiny_data),
                                 '--max-tracks', '1', '--workers', '0', '-o',
                                 str(output)]) == 0
    printed = capsys.readouterr().out
    assert 'model nSDR' in printed and 'model cSDR (bss_eval)' in printed
    result = json.loads(output.read_text())
    assert result['sources'] == SOURCES
    assert len(result['tracks']) == 1
    (name, track), = result['tracks'].items()
    for key in ('nsdr', 'sdr', 'nsdr_mixture', 'nsdr_mixture_split', 'nsdr_silence'):
        assert set(track[key]) == set(SOURCES)
    summary = result['summary']
    for key in ('nsdr', 'sdr', 'nsdr_mixture', 'nsdr_silence'):
        assert key in summary and all(f'{key}_{s}' in summary for s in SOURCES)
    # Same nSDR as the solver's last test entry (same track, settings and seed).
    logged = history(cwd, sig)[-1]['test']
    for source in SOURCES:
        assert summary[f'nsdr_{source}'] == pytest.approx(logged[f'nsdr_{source}'], abs=1e-4)
        assert summary[f'nsdr_mixture_{source}'] == pytest.approx(
            logged[f'nsdr_mixture_{source}'], abs=1e-6)
    # And as nSDR computed directly on apply_model's output.
    model = get_model(sig, repo)
    tracks = index_tracks(Path(tiny_data) / 'test', SOURCES, 44100, 2)
    track_name, mix, references = WholeTracks(tracks[:1], SOURCES)[0]
    assert track_name == name
    with torch.inference_mode():
        expected = nsdr(references, apply_model(model, mix)).tolist()
    assert [track['nsdr'][s] for s in SOURCES] == pytest.approx(expected, abs=1e-4)


def test_errors(released, tmp_path, capsys):
    _cwd, sig, repo = released
    assert test_pretrained.main(['--repo', str(repo), '-n', sig, '--musdb',
                                 str(tmp_path / 'nothing')]) == 2
    err = capsys.readouterr().err
    assert 'No test set' in err and 'nothing' in err
    assert test_pretrained.main(['--repo', str(repo), '-n', 'absent', '--musdb',
                                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'absent' in err and sig in err


def test_sdr_impls_agree(released, tiny_data, tmp_path, capsys):
    """`--sdr-impl torch` (the default) and `--sdr-impl museval` (the reference) give the
    same per-track cSDR of a trained model within 0.01 dB; the JSON says which ran."""
    _cwd, sig, repo = released
    results = {}
    for impl in ('torch', 'museval'):
        output = tmp_path / f'{impl}.json'
        assert test_pretrained.main(['--repo', str(repo), '-n', sig, '--musdb', str(tiny_data),
                                     '--max-tracks', '1', '--workers', '0', '--sdr-impl', impl,
                                     '-o', str(output)]) == 0
        results[impl] = json.loads(output.read_text())
        assert results[impl]['sdr_impl'] == impl
    (torch_track,), (museval_track,) = (r['tracks'].values() for r in results.values())
    print({impl: r['summary']['sdr'] for impl, r in results.items()})
    for source in SOURCES:
        assert torch_track['sdr'][source] == pytest.approx(museval_track['sdr'][source],
                                                           abs=0.01), source
    with pytest.raises(SystemExit) as exited:
        test_pretrained.main(['--repo', str(repo), '-n', sig, '--sdr-impl', 'fast'])
    assert exited.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
