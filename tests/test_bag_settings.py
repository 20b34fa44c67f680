"""Per-model bag settings of aimless's CDX23 blend (`separator.pretrained`): `midside` for a
mono model (L, R, mid and side each separated alone, the bag then stereo), a mono model of a
stereo bag on each channel alone, and `wiener_sources` (the Wiener filter of a model on some
of its sources against the residual). Expected outputs are built from the models called
directly and from `wiener_filter` called by hand."""
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from separator.apply import apply_model
from separator.models.hdemucs import HDemucs
from separator.pretrained import BagOfModels, ModelLoadingError, apply_bag, get_model
from separator.separate import main as separator_main
from separator.states import atomic_save, serialize_model
from separator.wiener import wiener_filter

pytestmark = pytest.mark.usefixtures('one_thread')

SOURCES = ['speech', 'music', 'sfx']
SAMPLERATE = 44100


def tiny_mono(seed: int) -> HDemucs:
    """A small mono HDemucs (nonlinear: mid/side changes its output), random weights."""
    torch.manual_seed(seed)
    return HDemucs(SOURCES, audio_channels=1, channels=4, depth=4, nfft=256,
                   dconv_depth=1).eval()


def stereo_mix(frames: int = 8000, seed: int = 0) -> torch.Tensor:
    """[2, 2, frames]: two stereo songs whose channels differ (a real side)."""
    generator = torch.Generator().manual_seed(seed)
    left = 0.1 * torch.randn(2, frames, generator=generator)
    right = 0.5 * left + 0.1 * torch.randn(2, frames, generator=generator)
    return torch.stack([left, right], 1)


def on_channels(model: torch.nn.Module, mix: torch.Tensor) -> torch.Tensor:
    """`model` called directly on each channel of `mix` [B, C, T] alone: [B, S, C, T]."""
    return torch.cat([model(mix[:, index:index + 1]) for index in range(mix.shape[1])], 2)


def midside_by_hand(model: torch.nn.Module, mix: torch.Tensor) -> torch.Tensor:
    """The mono model called directly on L, R, mid (L+R)/2 and side (L-R)/2, recombined as
    `apply.apply_model` documents: L' = (est L + est M + est S) / 2, R' = (est R + est M -
    est S) / 2, since L = M + S and R = M - S."""
    left, right = mix[:, :1], mix[:, 1:]
    est_left, est_right = model(left), model(right)
    est_mid, est_side = model((left + right) / 2), model((left - right) / 2)
    return torch.cat([est_left + est_mid + est_side, est_right + est_mid - est_side], 2) / 2


def test_mono_model_with_midside_in_a_bag_is_mid_side_by_hand():
    model = tiny_mono(0)
    bag = BagOfModels([model], settings=[{'midside': True}])
    assert (bag.audio_channels, bag.mix_channels) == (1, 2)
    assert BagOfModels([model]).mix_channels == 1
    mix = stereo_mix()
    with torch.inference_mode():
        out = apply_bag(bag, mix, split=False)
        expected = midside_by_hand(model, mix)
        assert out.shape == (2, 3, 2, mix.shape[-1])
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        # Mid/side matters for this model: channel by channel is another output.
        assert (out - on_channels(model, mix)).abs().max() > 1e-4
        # Streamed in chunks with shifts, as the command runs it: the model's own mid/side.
        options = dict(segment=0.05, overlap=0.25, shifts=2)
        streamed = apply_bag(bag, mix, generator=torch.Generator().manual_seed(3), **options)
        direct = apply_model(model, mix, midside=True,
                             generator=torch.Generator().manual_seed(3), **options)
        torch.testing.assert_close(streamed, direct, atol=1e-6, rtol=1e-5)
        # A mono mixture (a mono test set) has no side: the model runs as is; mid/side
        # asked by the caller is still refused there.
        mono = mix[:, :1]
        torch.testing.assert_close(apply_bag(bag, mono, split=False), model(mono),
                                   atol=1e-6, rtol=1e-5)
        with pytest.raises(ValueError, match='stereo mixture'):
            apply_bag(bag, mono, midside=True)


def test_stereo_bag_of_mono_models_separates_each_channel_of_the_others_alone():
    """aimless's CDX blend: speech and sfx from the mid/side model, music from both."""
    with_midside, plain = tiny_mono(0), tiny_mono(1)
    bag = BagOfModels([with_midside, plain], weights=[[1, 1, 1], [0, 3, 0]],
                      settings=[{'midside': True}, {}])
    assert bag.mix_channels == 2
    mix = stereo_mix(seed=1)
    with torch.inference_mode():
        out = apply_bag(bag, mix, split=False)
        first, second = midside_by_hand(with_midside, mix), on_channels(plain, mix)
        expected = first.clone()
        expected[:, 1] = (first[:, 1] + 3 * second[:, 1]) / 4
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        # In chunks, with shifts: the channels go through the model as items of one batch.
        options = dict(segment=0.05, overlap=0.5, shifts=1)
        alone = BagOfModels([plain])
        batch, channels, frames = mix.shape
        direct = apply_model(plain, mix.reshape(batch * channels, 1, frames),
                             generator=torch.Generator().manual_seed(7), **options)
        torch.testing.assert_close(
            apply_bag(alone, mix, generator=torch.Generator().manual_seed(7), **options),
            direct.reshape(batch, channels, 3, frames).transpose(1, 2), atol=1e-6, rtol=1e-5)


def test_wiener_sources_filter_only_those_against_the_residual():
    model = tiny_mono(1)
    bag = BagOfModels([model], settings=[{'wiener': 1, 'wiener_sources': ['sfx', 'music']}])
    generator = torch.Generator().manual_seed(2)
    mix = 0.1 * torch.randn(1, 1, 8000, generator=generator)
    with torch.inference_mode():
        out = apply_bag(bag, mix, split=False)
        raw = model(mix)
        speech, music, sfx = raw.unbind(1)
        residual = mix - music - sfx
        filtered = wiener_filter(mix, torch.stack([sfx, music, residual], 1), 1)
        torch.testing.assert_close(out[:, 0], speech, atol=0, rtol=0)   # left as it is
        torch.testing.assert_close(out[:, 2], filtered[:, 0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[:, 1], filtered[:, 1], atol=1e-6, rtol=1e-5)
        assert (out[:, 1] - music).abs().max() > 1e-3   # the filter changed music
        # Not the filter of all sources (BandSplitRNN's speech and sfx are untrained).
        everything = wiener_filter(mix, raw, 1)
        assert (out[:, 1] - everything[:, 1]).abs().max() > 1e-4


def test_the_cdx_blend_midside_and_filtered_music():
    """HDemucs with mid/side, BandSplitRNN's music filtered against the residual of the
    stereo mixture (each channel separated alone), music averaged."""
    hdemucs, bsrnn = tiny_mono(0), tiny_mono(1)
    bag = BagOfModels([hdemucs, bsrnn], weights=[[1, 1, 1], [0, 1, 0]],
                      settings=[{'midside': True}, {'wiener': 1, 'wiener_sources': ['music']}])
    mix = stereo_mix(seed=4)
    with torch.inference_mode():
        first = midside_by_hand(hdemucs, mix)
        music = on_channels(bsrnn, mix)[:, 1]
        filtered = wiener_filter(mix, torch.stack([music, mix - music], 1), 1)[:, 0]
        expected = first.clone()
        expected[:, 1] = (first[:, 1] + filtered) / 2
        torch.testing.assert_close(apply_bag(bag, mix, split=False), expected,
                                   atol=1e-6, rtol=1e-5)


def write_repo(folder: Path, bags: tp.Mapping[str, dict]) -> Path:
    """A repository with two tiny mono models, `a` and `b`, and the bags `bags`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in [('a', 0), ('b', 1)]:
        atomic_save(serialize_model(tiny_mono(seed)), folder / f'{name}.th')
    for name, config in bags.items():
        (folder / f'{name}.yaml').write_text(yaml.safe_dump(config))
    return folder


def test_bad_settings_name_the_key_and_the_fix(tmp_path):
    sources = r"distinct sources among \['speech', 'music', 'sfx'\], e.g. wiener_sources: " \
              r"\[sfx\], got "
    wrong = {'unknown': (['musik'], sources + r"\['musik'\]"),
             'empty': ([], sources + r"\[\]"),
             'twice': (['music', 'music'], sources + r"\['music', 'music'\]"),
             'string': ('music', sources + "'music'"),
             'number': ([1], sources + r"\[1\]")}
    bags = {name: {'models': ['a', 'b'],
                   'settings': [{}, {'wiener': 1, 'wiener_sources': value}]}
            for name, (value, _) in wrong.items()}
    bags['off'] = {'models': ['a', 'b'], 'settings': [{}, {'wiener_sources': ['music']}]}
    repo = write_repo(tmp_path / 'repo', bags)
    for name, (_, message) in wrong.items():
        with pytest.raises(ModelLoadingError, match=f"{name}.yaml: Bag settings of model 1: "
                           f"wiener_sources must be a non-empty list of {message}") as error:
            get_model(name, repo)
        assert '\n' not in str(error.value)
    with pytest.raises(ModelLoadingError, match=r"off.yaml: Bag settings of model 1: "
                       r"wiener_sources needs the filter on: add wiener: 1 .*got wiener: 0"):
        get_model('off', repo)


def test_separator_writes_stereo_stems_for_a_bag_with_a_mono_midside_model(tmp_path, capsys):
    config = {'models': ['a', 'b'], 'weights': [[1, 1, 1], [0, 1, 0]],
              'settings': [{'midside': True}, {'wiener': 1, 'wiener_sources': ['music']}]}
    repo = write_repo(tmp_path / 'repo', {'cdx': config})
    bag = get_model('cdx', repo)
    assert bag.settings == config['settings'] and bag.mix_channels == 2
    mix = stereo_mix(frames=6000, seed=5)[0]
    sf.write(tmp_path / 'film.wav', mix.numpy().T, SAMPLERATE, subtype='FLOAT')
    code = separator_main(['-n', 'cdx', '--repo', str(repo), '-o', str(tmp_path / 'out'),
                           '--float32', '--clip-mode', 'none', '--shifts', '0', '-j', '1',
                           str(tmp_path / 'film.wav')])
    assert code == 0, capsys.readouterr().err
    with torch.inference_mode():
        expected = apply_bag(bag, mix)
    for index, source in enumerate(SOURCES):
        stem, rate = sf.read(tmp_path / 'out' / 'cdx' / 'film' / f'{source}.wav',
                             dtype='float32')
        assert (stem.shape, rate) == ((mix.shape[-1], 2), SAMPLERATE)
        np.testing.assert_allclose(stem.T, expected[index].numpy(), atol=1e-5)
