"""The Mixer (KUIELab-MDX-Net): a learnt linear blend of frozen separators."""
import numpy as np
import pytest
import soundfile as sf
import torch

from separator.models.hdemucs import HDemucs
from separator.models.mixer import Mixer
from separator.models.tfc_tdf import TFCTDFNet
from separator.states import atomic_save, load_model, safe_load, serialize_model

from .conftest import SOURCES, TINY, final_state, history, run_dora, run_python, signature

pytestmark = pytest.mark.usefixtures('one_thread')


def separators():
    torch.manual_seed(0)
    demucs = HDemucs(SOURCES, channels=4, depth=3, nfft=256, dconv_depth=1, dconv_lstm=0,
                     dconv_attn=0)
    tfc_tdf = TFCTDFNet(SOURCES, n_fft=512, hop_length=128, dim_f=256, num_channels=4,
                        growth=4, num_scales=2, num_blocks_per_scale=1)
    return [demucs.eval(), tfc_tdf.eval()]


def mixer_of(models):
    mixer = Mixer(SOURCES, separators=[serialize_model(m, state={}) for m in models])
    mixer.load_separators([m.state_dict() for m in models])
    return mixer


def test_starts_as_the_average_and_learns_only_the_blend():
    models = separators()
    mixer = mixer_of(models).train()
    assert all(not m.training for m in mixer.separators)  # frozen, also in train mode
    mix = torch.randn(2, 2, 3000)
    with torch.no_grad():
        average = sum(m(mix) for m in models) / len(models)
    out = mixer(mix)
    assert out.shape == (2, 4, 2, 3000) and torch.allclose(out, average, atol=1e-6)
    out.square().mean().backward()
    assert mixer.blend.weight.grad.abs().sum() > 0
    assert [p for p in mixer.parameters() if p.requires_grad] == [mixer.blend.weight]


def test_targets_start_each_source_from_its_own_separators():
    """mixer.targets (KUIELab: one model per source): a source starts as the estimate of the
    separators trained on it; a separator without target joins every source."""
    models = separators()
    packages = [serialize_model(m, state={}) for m in models]
    mix = torch.randn(1, 2, 3000)
    with torch.no_grad():
        first, second = (m(mix) for m in models)
        mixer = Mixer(SOURCES, separators=packages, targets=['drums', 'vocals'])
        mixer.load_separators([m.state_dict() for m in models])
        out = mixer.eval()(mix)
        # drums from the first, vocals from the second, bass and other from both (no one's).
        expected = torch.stack([first[:, 0], (first[:, 1] + second[:, 1]) / 2,
                                (first[:, 2] + second[:, 2]) / 2, second[:, 3]], 1)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        mixer = Mixer(SOURCES, separators=packages, targets=['drums', None])
        mixer.load_separators([m.state_dict() for m in models])
        expected = torch.stack([(first[:, 0] + second[:, 0]) / 2, second[:, 1], second[:, 2],
                                second[:, 3]], 1)
        torch.testing.assert_close(mixer.eval()(mix), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"mixer.targets=\['guitar', None\]"):
        Mixer(SOURCES, separators=packages, targets=['guitar', None])


def test_package_round_trip(tmp_path):
    mixer = mixer_of(separators()).eval()
    with torch.no_grad():
        mixer.blend.weight.add_(0.01 * torch.randn_like(mixer.blend.weight))
    atomic_save(serialize_model(mixer), tmp_path / 'mixer.th')
    loaded = load_model(safe_load(tmp_path / 'mixer.th')).eval()
    mix = torch.randn(1, 2, 2000)
    with torch.no_grad():
        assert torch.equal(mixer(mix), loaded(mix))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r'mixer.models=\[SIG'):
        Mixer(SOURCES)
    other = HDemucs(['vocals', 'accompaniment'], channels=4, depth=3, nfft=256, dconv_depth=1,
                    dconv_lstm=0, dconv_attn=0)
    with pytest.raises(ValueError, match='same sources'):
        Mixer(SOURCES, separators=[serialize_model(other, state={})])


def test_mixer_xp_blends_trained_xps(tiny_xp, tiny_data):
    """A Mixer XP over a trained XP: its separator holds that XP's best weights, unchanged by
    training; the blend learns; the export separates a song."""
    cwd, sig = tiny_xp
    args = [*TINY, f'dset.musdb={tiny_data}', 'model=mixer', f"mixer.models=['{sig}']",
            'epochs=1', 'max_batches=3', 'test.every=1', 'test.max_tracks=1', 'optim.lr=1e-2']
    mixer_sig = signature(run_dora(['run', *args], cwd))
    assert np.isfinite(history(cwd, mixer_sig)[0]['test']['nsdr'])
    state = final_state(cwd, mixer_sig)
    parent = final_state(cwd, sig)
    expected = parent['best_state'] or parent['model']
    for key, value in expected.items():
        assert torch.equal(state['model'][f'separators.0.{key}'], value), key
    start = torch.cat([torch.eye(8), torch.zeros(8, 2)], 1)[..., None]
    assert not torch.allclose(state['model']['blend.weight'], start)

    missing = run_dora(['run', *args[:-5], 'mixer.models=[deadbeef]'], cwd, check=False)
    assert missing.returncode != 0 and 'mixer.models: deadbeef' in missing.stderr

    xps = cwd / 'outputs' / 'xps'
    export = run_python(['-m', 'tools.export', mixer_sig, '--xps', str(xps), '-o',
                         'release_mixer'], cwd)
    assert export.returncode == 0, export.stderr
    song = (0.1 * np.random.default_rng(0).standard_normal((44100, 2))).astype(np.float32)
    sf.write(cwd / 'mixer_song.wav', song, 44100)
    result = run_python(['-m', 'separator.separate', '--repo', 'release_mixer', '-n',
                         mixer_sig, '--shifts', '0', '-j', '1', 'mixer_song.wav'], cwd)
    assert result.returncode == 0, result.stderr
    stem, _ = sf.read(cwd / 'separated' / mixer_sig / 'mixer_song' / 'vocals.wav')
    assert stem.shape == song.shape
