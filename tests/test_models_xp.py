"""Every architecture of the registry goes the whole way: a Dora XP trains it until it beats
silence and the mixture on the test track, the export packages it, and the `separator`
command separates a song with it."""
import math
import typing as tp

import numpy as np
import pytest
import soundfile as sf

from separator.models import MODELS

from .conftest import SOURCES, TINY, final_state, history, run_dora, run_python, signature

# Small hyper-parameters per model (the full-size ones are the defaults of conf/config.yaml).
TINY_MODELS = {
    'demucs': ['demucs.channels=8', 'demucs.depth=4', 'demucs.dconv_depth=1', 'svd.penalty=1e-4',
               'svd.min_size=0'],
    'd3unet': ['d3unet.n_fft=1024', 'd3unet.hop_length=512', 'd3unet.bins=256',
               'd3unet.layers=[2,2,2,2]', 'd3unet.growth=8', 'd3unet.attention_channels=32',
               'd3unet.attention_dim=16', 'd3unet.attention_heads=2', 'd3unet.dropout=0'],
    'demucs_split': ['demucs_split.channels=8', 'demucs_split.depth=4',
                     'demucs_split.lstm_layers=1'],
    'tfc_tdf': ['tfc_tdf.n_fft=1024', 'tfc_tdf.hop_length=256', 'tfc_tdf.dim_f=512',
                'tfc_tdf.num_channels=8', 'tfc_tdf.growth=8', 'tfc_tdf.num_scales=2',
                'tfc_tdf.num_blocks_per_scale=1'],
    'tfc_tdf_v1': ['tfc_tdf_v1.n_fft=1024', 'tfc_tdf_v1.hop_length=256',
                   'tfc_tdf_v1.dim_f=256', 'tfc_tdf_v1.num_blocks=5', 'tfc_tdf_v1.num_layers=1',
                   'tfc_tdf_v1.growth=8', 'tfc_tdf_v1.bottleneck_factor=4',
                   'optim.loss=mse'],   # MDX21's loss: MSE on the waveforms
    'xumx': ['xumx.nfft=1024', 'xumx.hop_length=256', 'xumx.hidden_size=16',
             'xumx.lstm_layers=1'],
    'bsrnn': ['bsrnn.dim=16', 'bsrnn.num_layers=1', 'bsrnn.rnn_hidden=16', 'bsrnn.mask_mult=1',
              'bsrnn.n_fft=1024', 'bsrnn.hop_length=256'],
    'bs_roformer': ['bs_roformer.dim=16', 'bs_roformer.depth=1', 'bs_roformer.heads=2',
                    'bs_roformer.dim_head=8', 'bs_roformer.mask_mult=1',
                    'bs_roformer.n_fft=1024', 'bs_roformer.hop_length=256',
                    'optim.loss=l1_mrstft'],
    'mel_roformer': ['mel_roformer.dim=16', 'mel_roformer.depth=1', 'mel_roformer.heads=2',
                     'mel_roformer.dim_head=8', 'mel_roformer.mask_mult=1',
                     'mel_roformer.n_fft=1024', 'mel_roformer.hop_length=256',
                     'mel_roformer.num_bands=16', 'optim.loss=l1_mrstft'],
    'scnet': ['scnet.dims=[4,8,16,16]', 'scnet.nfft=512', 'scnet.hop_size=128',
              'scnet.win_size=512', 'scnet.num_dplayer=2'],
    'unet': ['unet.n_fft=512', 'unet.hop_length=128', 'unet.bins=128', 'unet.frames=64',
             'unet.filters=[8,16,16,16]'],
}


# Training budget per model: the least (on 2 CPU cores) after which every source of the test
# track beats silence and the mixture (`assert_learned`); a high learning rate for few steps.
# The RoFormers' steps are the slowest (~5 s): 4 steps of one epoch.
BUDGETS = {
    'demucs': ['epochs=10', 'optim.lr=3e-3'],
    'demucs_split': ['epochs=6', 'optim.lr=1e-2'],
    'd3unet': ['epochs=4', 'optim.lr=3e-3'],
    'tfc_tdf': ['epochs=3', 'optim.lr=1e-2'],
    'tfc_tdf_v1': ['epochs=2', 'dset.epoch_size=192', 'optim.lr=1e-2'],
    'xumx': ['epochs=2', 'optim.lr=1e-2'],
    'bsrnn': ['epochs=1', 'optim.lr=1e-2'],
    'bs_roformer': ['epochs=1', 'max_batches=4', 'optim.lr=1e-2'],
    'mel_roformer': ['epochs=1', 'max_batches=4', 'optim.lr=1e-2'],
    'unet': ['epochs=2', 'optim.lr=1e-2'],
    'scnet': ['epochs=2', 'optim.lr=1e-2'],
}


def assert_learned(test: dict, sources: tp.Sequence[str]) -> None:
    """The test nSDR of a trained model beats the trivial estimates silence and the mixture,
    for every source and for their mean: a model that outputs zeros (0 dB, silence's score),
    the mixture, or what an untrained one does (about -0.2 dB here), fails."""
    for trivial in ('silence', 'mixture'):
        assert test['nsdr'] > test[f'nsdr_{trivial}'], (trivial, test)
        for source in sources:
            assert test[f'nsdr_{source}'] > test[f'nsdr_{trivial}_{source}'], (source, test)


# Models whose XPs are tested elsewhere: HDemucs (variant=tiny) and HTDemucs in test_xp.py,
# the Mixer (it blends trained XPs) in test_mixer.py.
TESTED_ELSEWHERE = {'hdemucs', 'htdemucs', 'mixer'}


def test_every_registered_model_is_covered():
    assert sorted(TINY_MODELS) == sorted(set(MODELS) - TESTED_ELSEWHERE) == sorted(BUDGETS)


@pytest.mark.parametrize('model', sorted(TINY_MODELS))
def test_model_trains_exports_and_separates(model, tiny_data, tmp_path):
    args = [*TINY, f'dset.musdb={tiny_data}', f'model={model}', *TINY_MODELS[model],
            *BUDGETS[model], 'test.every=0', 'test.max_tracks=1']
    sig = signature(run_dora(['run', *args], tmp_path))
    entry = history(tmp_path, sig)[-1]
    assert math.isfinite(entry['train']['loss']) and math.isfinite(entry['valid']['loss'])
    print(model, {key: round(value, 2) for key, value in entry['test'].items()})
    assert_learned(entry['test'], SOURCES)
    klass = MODELS[model]
    assert final_state(tmp_path, sig)['package']['klass'].endswith(klass.__name__)

    xps = tmp_path / 'outputs' / 'xps'
    export = run_python(['-m', 'tools.export', sig, '--xps', str(xps), '-o', 'release'],
                        tmp_path)
    assert export.returncode == 0, export.stderr
    song = (0.1 * np.random.default_rng(0).standard_normal((int(1.3 * 44100), 2))
            ).astype(np.float32)
    sf.write(tmp_path / 'song.wav', song, 44100)
    result = run_python(['-m', 'separator.separate', '--repo', 'release', '-n', sig,
                         '--shifts', '0', '-j', '1', 'song.wav'], tmp_path)
    assert result.returncode == 0, result.stderr
    for source in SOURCES:
        stem, rate = sf.read(tmp_path / 'separated' / sig / 'song' / f'{source}.wav')
        assert stem.shape == song.shape and rate == 44100
