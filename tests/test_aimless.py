"""The aimless team's SDX23 entries as lineages: MDX-A (grids/sdx23_aimless*.py: HDemucs on the
clean stems, negative SDR, random effects, two stages) and CDX-A (grids/cdx23_aimless*.py:
HDemucs + BandSplitRNN on Divide and Remaster, blended for music). The full scales' stages
and every stage's composed config, checked against their published recipe; the tiny scales
run end to end and their bags separate a song with `separator -n`."""
import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from hydra import compose, initialize_config_dir

from separator import builders
from separator.data.clean_lists import write_lists
from separator.lineage import From

from .conftest import run_dora, run_python, write_track, xp_folder
from .test_dnr import CONF, write_band_track
from .test_sdx23 import parse_table

JUDGE = ['pretrain_q0.7', 'pretrain_q0.5', 'pretrain_q0.3', 'filter1', 'joint', 'filter2']
STAGES = JUDGE + ['hdemucs', 'hdemucs_last']
PARENTS = {'pretrain_q0.5': ['pretrain_q0.7'], 'pretrain_q0.3': ['pretrain_q0.5'],
           'filter1': ['pretrain_q0.3'], 'joint': ['pretrain_q0.3', 'filter1'],
           'filter2': ['joint'], 'hdemucs': ['filter2'], 'hdemucs_last': ['filter2', 'hdemucs']}
# The effects chain of their cfg/mdx_a/hdemucs.yaml, in the order of their transforms
# (written here by hand from it): the probability of each.
MDX_A_EFFECTS = {'eq': 0.3, 'distortion': 0.03, 'delay': 0.03, 'chorus': 0.03,
                 'phaser': 0.03, 'compressor': 0.3, 'reverb': 0.3, 'widener': 0.3,
                 'limiter': 0.3, 'volume': 0.3, 'loudness': 0.3, 'gain': 0.3,
                 'flip_sign': 0.3, 'swap_channels': 0.3, 'speed': 0.3, 'pitch': 0.3}

# Each stage's XP, once composed: the fields the recipes are checked on.
COMPOSE = """
import json, sys
from importlib import import_module
from separator.lineage import resolve
from separator.train import main
out = {}
for grid in sys.argv[1:]:
    for item in resolve(import_module('grids.' + grid).LINEAGE, main):
        cfg = item.xp.cfg
        effects = cfg.augment.effects
        out.setdefault(grid, {})[item.stage.name] = dict(
            sig=item.sig, model=cfg.model, sources=list(cfg.dset.sources),
            channels=cfg.dset.channels, train_folder=cfg.dset.train_folder,
            judge=cfg.filter.model, parent=cfg.continue_from, clean=cfg.dset.clean_lists,
            loss=cfg.optim.loss, lr=cfg.optim.lr, accumulate=cfg.optim.accumulate,
            batch=cfg.batch_size, epochs=cfg.epochs, segment=cfg.dset.segment,
            epoch_size=cfg.dset.epoch_size,
            weights=None if cfg.weights is None else list(cfg.weights),
            valid_tracks=None if cfg.dset.valid_tracks is None else list(cfg.dset.valid_tracks),
            valid_on_train=cfg.dset.get('valid_on_train'), valid_split=cfg.dset.valid_split,
            extra_train=list(cfg.dset.extra_train), hdemucs_channels=cfg.hdemucs.channels,
            flip=cfg.augment.flip, scale=cfg.augment.scale.proba,
            remix=cfg.augment.remix.proba, repitch=cfg.augment.repitch.proba,
            proba_scale=effects.proba_scale,
            probas={key[:-len('_proba')]: value for key, value in effects.items()
                    if key.endswith('_proba')},
            speeds=list(effects.speeds), semitones=list(effects.semitones))
print(json.dumps(out))
"""


def composed_stages(tmp_path: Path, *grids: str) -> dict:
    """grid -> stage -> the fields of COMPOSE, for every stage of each grid's LINEAGE."""
    result = run_python(['-c', COMPOSE, *grids], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mdx_full_scale_declares_its_stages_and_their_recipe(tmp_path):
    result = run_dora(['grid', 'sdx23_aimless', '--dry_run', '--init'], tmp_path)
    rows = parse_table(result.stdout)
    assert list(rows) == STAGES, result.stdout
    sigs = {name: row[0] for name, row in rows.items()}
    assert rows['pretrain_q0.7'][1] == 'ready'
    assert all(rows[name][1] == 'waiting' for name in STAGES[1:])
    for name, parents in PARENTS.items():
        assert rows[name][2] == [sigs[parent] for parent in parents], name
    assert 'Bag: drums <- hdemucs_last' in result.stdout

    configs = composed_stages(tmp_path, 'sdx23_aimless', 'sdx23')
    aimless, sdx23 = configs['sdx23_aimless'], configs['sdx23']
    assert {name: config['sig'] for name, config in aimless.items()} == sigs
    # The judge is the SDX23 lineage's filter2: the very same XPs, run once for both.
    for name in JUDGE:
        assert aimless[name] == sdx23[name], name
    argv = json.loads((xp_folder(tmp_path, sigs['pretrain_q0.7']) / '.argv.json').read_text())
    assert argv == ['variant=sdx23', 'optim.loss_truncation=0.7', 'epochs=500']

    first, last = aimless['hdemucs'], aimless['hdemucs_last']
    for config in (first, last):
        # HDemucs of 64 channels on the label-noise set, the clean stems of filter2 only,
        # negative SDR, 10 s chunks, 3 per GPU on 4 GPUs, 144 per clean song of their 44.
        assert (config['model'], config['hdemucs_channels']) == ('hdemucs', 64)
        assert config['train_folder'] == sdx23['joint']['train_folder']
        assert config['clean'] == sigs['filter2'] and config['judge'] is None
        assert (config['loss'], config['segment'], config['batch'], config['epoch_size']) \
            == ('neg_sdr', 10, 12, 6336)
        # No held-out song: validated on the training songs.
        assert config['valid_on_train'] is True
        # Their effects chain, its speeds and semitones; our own augmentations off.
        assert config['probas'] == {**MDX_A_EFFECTS, 'mix_limiter': 0}
        assert (config['speeds'], config['semitones']) == ([90, 100, 110], [-1, 1, 0, 1, 2])
        assert (config['flip'], config['scale'], config['remix'], config['repitch']) \
            == (False, 0, 0, 0)
    assert (first['parent'], first['epochs'], first['lr'], first['accumulate'],
            first['proba_scale']) == (None, 600, 3e-4, 4, 1)
    assert (last['parent'], last['epochs'], last['lr'], last['accumulate'],
            last['proba_scale']) == (sigs['hdemucs'], 200, 1e-4, 64, 1.666)


def test_mdx_lineage_from_a_clean_list_folder_and_its_errors():
    from grids.sdx23_aimless import LAST, sdx23_aimless
    lineage = sdx23_aimless('x', 'aimless', clean_lists='my_lists')
    assert [stage.name for stage in lineage.stages] == ['hdemucs', 'hdemucs_last']
    first, last = (stage.overrides for stage in lineage.stages)
    assert first == {'variant': 'aimless', 'dset.clean_lists': 'my_lists', 'epochs': 600}
    assert last == {'variant': 'aimless', 'dset.clean_lists': 'my_lists',
                    'continue_from': From('hdemucs'), 'epochs': 200, **LAST}
    with pytest.raises(ValueError, match='either judge=.* or clean_lists=FOLDER'):
        sdx23_aimless('x')
    from grids.sdx23_tiny import LINEAGE
    with pytest.raises(ValueError, match='has no stage filter9'):
        sdx23_aimless('x', judge=(LINEAGE, 'filter9'))


def test_mdx_tiny_lineage_runs_end_to_end_and_its_bag_separates(tmp_path):
    result = run_python(['-m', 'tools.lineage', 'sdx23_aimless_tiny'], tmp_path, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    rows = parse_table(output[output.rindex('Lineage sdx23_aimless_tiny: 4/4 stages done'):])
    assert list(rows) == ['noisy', 'filter1', 'hdemucs', 'hdemucs_last']
    sigs = {name: row[0] for name, row in rows.items()}

    def log(stage: str) -> str:
        return (xp_folder(tmp_path, sigs[stage]) / 'train.log').read_text()

    def argv(stage: str) -> list:
        return json.loads((xp_folder(tmp_path, sigs[stage]) / '.argv.json').read_text())

    assert f'Starting from the weights of XP {sigs["hdemucs"]}' in log('hdemucs_last')
    for stage in ('hdemucs', 'hdemucs_last'):
        # The clean stems of filter1; all 4 songs train (none held out).
        assert 'Clean stems per source' in log(stage)
        assert 'Data: 4 train' in log(stage)
    assert argv('hdemucs') == ['variant=aimless_tiny', f'dset.clean_lists="{sigs["filter1"]}"',
                               'epochs=1']
    assert argv('hdemucs_last') == [
        'variant=aimless_tiny', f'dset.clean_lists="{sigs["filter1"]}"',
        f'continue_from="{sigs["hdemucs"]}"', 'epochs=1', 'optim.lr=0.0001',
        'optim.accumulate=64', 'augment.effects.proba_scale=1.666']
    history = json.loads((xp_folder(tmp_path, sigs['hdemucs_last']) / 'history.json')
                         .read_text())
    assert len(history) == 1 and math.isfinite(history[0]['train']['loss'])

    bag = yaml.safe_load((tmp_path / 'release_models' / 'sdx23_aimless_tiny.yaml').read_text())
    assert bag['models'] == [sigs['hdemucs_last']] and bag['weights'] == [[1.] * 4]
    song = tmp_path / 'song'
    write_track(song, seconds=2)
    separated = run_python(['-m', 'separator.separate', '-n', 'sdx23_aimless_tiny', '--repo',
                            'release_models', '-o', 'separated', str(song / 'mixture.wav')],
                           tmp_path)
    assert separated.returncode == 0, separated.stdout + separated.stderr
    out = tmp_path / 'separated' / 'sdx23_aimless_tiny' / 'mixture'
    assert sorted(path.name for path in out.iterdir()) == [
        'bass.wav', 'drums.wav', 'other.wav', 'vocals.wav']


def test_mdx_validates_on_the_training_songs(tmp_path):
    """`dset.valid_on_train` (their README: "validation is done also on the training
    dataset"): no song is held out, the training songs validate; with clean lists, those
    whose stems are all clean (their hand-labelled songs)."""
    noisy = tmp_path / 'noisy'
    songs = ['song0', 'song1', 'song2', 'song3']
    for index, song in enumerate(songs):
        write_track(noisy / song, seconds=1, seed=index, mixture=False)
    write_track(tmp_path / 'musdb' / 'test' / 'song', seconds=1, seed=9)
    lists = tmp_path / 'lists'
    write_lists(lists, 'clean', {'drums': ['song0', 'song1', 'song2'], 'other': songs,
                                 'bass': ['song0', 'song1', 'song3'], 'vocals': songs})
    overrides = ['variant=aimless_tiny', f'dset.musdb={tmp_path / "musdb"}',
                 f'dset.train_folder={noisy}', 'dset.generate=false', 'dset.inject=false',
                 f'dset.metadata={tmp_path / "metadata"}']
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose('config', overrides=overrides)
        with_lists = compose('config', overrides=overrides + [f'dset.clean_lists={lists}'])
    train, valid, _ = builders.get_tracks(cfg.dset)
    assert [track.name for track in train] == [track.name for track in valid] == songs
    _, valid_set, _ = builders.get_datasets(with_lists)
    assert [track.name for track in valid_set.tracks] == ['song0', 'song1']


def write_dnr(root: Path) -> None:
    """A DnR-layout set of band-limited noise (tests/test_dnr.py): 3 tr, 1 cv, 1 tt songs."""
    for split, count in [('tr', 3), ('cv', 1), ('tt', 1)]:
        for index in range(count):
            write_band_track(root / split / f'{split}{index}', seconds=3,
                             seed=10 * len(split) + index)


def test_cdx_full_scale_declares_both_models_and_their_recipe(tmp_path):
    result = run_dora(['grid', 'cdx23_aimless', '--dry_run', '--init'], tmp_path)
    rows = parse_table(result.stdout)
    assert list(rows) == ['hdemucs', 'bsrnn'], result.stdout
    assert all(row[1:] == ('ready', []) for row in rows.values())
    sigs = {name: row[0] for name, row in rows.items()}
    assert ('Bag: speech <- hdemucs ({0}), music <- hdemucs ({0}) + bsrnn ({1}), '
            'sfx <- hdemucs ({0})'.format(sigs['hdemucs'], sigs['bsrnn'])) in result.stdout

    configs = composed_stages(tmp_path, 'cdx23_aimless')['cdx23_aimless']
    hdemucs, bsrnn = configs['hdemucs'], configs['bsrnn']
    for config in (hdemucs, bsrnn):
        # Mono DnR, trained on tr + cv, no validation; gain, sign flips and remixes as
        # theirs; of the effects chain, speed and pitch only.
        assert (config['sources'], config['channels']) == (['speech', 'music', 'sfx'], 1)
        assert (config['valid_split'], config['valid_tracks'], config['extra_train']) \
            == (None, [], ['cv'])
        assert (config['flip'], config['scale'], config['remix'], config['proba_scale']) \
            == (True, 1, 1, 1)
        assert {name for name, proba in config['probas'].items() if proba} \
            == {'speed', 'pitch'}
        assert (config['loss'], config['lr']) == ('neg_sdr', 3e-4)
    assert (hdemucs['model'], hdemucs['hdemucs_channels'], hdemucs['weights']) \
        == ('hdemucs', 64, None)
    assert (hdemucs['segment'], hdemucs['batch'], hdemucs['accumulate']) == (6, 3, 4)
    assert (hdemucs['probas']['speed'], hdemucs['probas']['pitch']) == (0.3, 0.3)
    assert hdemucs['speeds'] == list(range(50, 151, 10))
    assert hdemucs['semitones'] == [-7, -6, -5, -4, -3, -2, -1, 1, 0, 1, 2, 3, 4, 5, 6, 7]
    # BandSplitRNN: the loss on music only.
    assert (bsrnn['model'], bsrnn['weights']) == ('bsrnn', [0, 1, 0])
    assert (bsrnn['segment'], bsrnn['batch'], bsrnn['accumulate']) == (3, 16, 1)
    assert (bsrnn['probas']['speed'], bsrnn['probas']['pitch']) == (0.2, 0.2)
    assert (bsrnn['speeds'], bsrnn['semitones']) == ([90, 100, 110], [-1, 1, 0, 1, 2])


def test_cdx_tiny_lineage_runs_end_to_end_and_its_bag_blends_music(tmp_path):
    write_dnr(tmp_path / 'data' / 'dnr_tiny')
    result = run_python(['-m', 'tools.lineage', 'cdx23_aimless_tiny'], tmp_path, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    rows = parse_table(output[output.rindex('Lineage cdx23_aimless_tiny: 2/2 stages done'):])
    sigs = {name: row[0] for name, row in rows.items()}
    assert list(sigs) == ['hdemucs', 'bsrnn']
    for stage in sigs.values():    # tr and cv train, nothing validates
        assert 'Data: 4 train, 0 valid, 1 test tracks' in (xp_folder(tmp_path, stage) /
                                                           'train.log').read_text()
    bag = yaml.safe_load((tmp_path / 'release_models' / 'cdx23_aimless_tiny.yaml').read_text())
    assert bag['models'] == [sigs['hdemucs'], sigs['bsrnn']]
    assert bag['weights'] == [[1, 1, 1], [0, 1, 0]]
    # As aimless ran them: HDemucs on L, R, mid and side, BandSplitRNN's music filtered.
    assert bag['settings'] == [{'midside': True}, {'wiener': 1, 'wiener_sources': ['music']}]
    # A stereo film: the bag of mono models reads it and writes its stems in stereo.
    film = tmp_path / 'film'
    write_track(film, seconds=2, sources=['dialogue', 'score'])
    separated = run_python(['-m', 'separator.separate', '-n', 'cdx23_aimless_tiny', '--repo',
                            'release_models', '-o', 'separated', str(film / 'mixture.wav')],
                           tmp_path)
    assert separated.returncode == 0, separated.stdout + separated.stderr
    out = tmp_path / 'separated' / 'cdx23_aimless_tiny' / 'mixture'
    assert sorted(path.name for path in out.iterdir()) == ['music.wav', 'sfx.wav', 'speech.wav']
    assert sf.info(str(out / 'music.wav')).channels == 2
