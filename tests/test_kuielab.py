"""KUIELab-MDX-Net's MDX21 lineage (grids/mdx21_kuielab.py): its declared stages, parents and
recipes at full scale, the tiny scale run end to end without Slurm (`python -m tools.lineage
mdx21_kuielab_tiny`), and its bag, which blends the Mixer with Demucs per source and runs
Demucs with its own inference settings, separating a song."""
import json

import pytest
import soundfile as sf
import torch
import yaml

from separator.apply import apply_model
from separator.lineage import From, Lineage, Stage
from separator.pretrained import apply_bag, get_model

from .conftest import SOURCES, final_state, run_dora, run_python, separate_with_bag
from .test_sdx23 import parse_table

pytestmark = pytest.mark.usefixtures('one_thread')

SEPARATORS = [f'tfc_tdf_{source}' for source in SOURCES]
STAGES = SEPARATORS + ['demucs', 'mixer']
# KUIELab's leaderboard A blend, TFC-TDF (here the Mixer) : Demucs per source
# (mdx-net-submission, leaderboard_A, predict_blend.py: b = [0.5, 0.5, 0.7, 0.9] for bass,
# drums, other, vocals), in the order of SOURCES.
MIXER_WEIGHTS = [5, 5, 7, 9]
DEMUCS_WEIGHTS = [5, 5, 3, 1]
# Their per-source ConvTDFNet configs (mdx-net, Leaderboard_A, configs/model/ and
# configs/experiment/multigpu_<source>.yaml): n_fft, lr, batch.
TFC_TDF = {'drums': (4096, 1e-4, 8), 'bass': (16384, 1e-4, 8), 'other': (8192, 1e-4, 8),
           'vocals': (6144, 2e-4, 16)}

COMPOSE = """
import json
from grids.mdx21_kuielab import LINEAGE
from separator.lineage import bag_config, resolve
from separator.train import main
stages = resolve(LINEAGE, main)
out = {}
for item in stages:
    cfg = item.xp.cfg
    out[item.stage.name] = dict(
        sig=item.sig, model=cfg.model, musdb=cfg.dset.musdb, sources=list(cfg.dset.sources),
        weights=None if cfg.weights is None else list(cfg.weights),
        samples=int(cfg.dset.segment * 44100), extra=list(cfg.dset.extra_train),
        repitch=cfg.augment.repitch.proba, epochs=cfg.epochs, batch=cfg.batch_size,
        optim=cfg.optim.optim, lr=cfg.optim.lr, loss=cfg.optim.loss, amp=cfg.optim.amp,
        parent=cfg.continue_from, mixer=list(cfg.mixer.models),
        targets=None if cfg.mixer.targets is None else list(cfg.mixer.targets),
        tfc=dict(cfg.tfc_tdf_v1), demucs=dict(cfg.demucs))
sources = list(stages[-1].xp.cfg.dset.sources)
print(json.dumps({'stages': out, 'bag': bag_config(LINEAGE, stages, sources)}))
"""


def test_a_list_of_stages_names_them_all_as_parents():
    """The Mixer's `mixer.models` is a list of `From`: each is a parent, declared before."""
    mixer = Stage('mixer', {'mixer.models': [From('a'), From('b'), From('a')]})
    assert mixer.parents == ['a', 'b']
    with pytest.raises(ValueError, match='mixer needs b, which must be declared before it'):
        Lineage('x', [Stage('a'), mixer])


def test_full_scale_declares_the_separators_demucs_the_mixer_and_the_bag(tmp_path):
    result = run_dora(['grid', 'mdx21_kuielab', '--dry_run', '--init'], tmp_path)
    rows = parse_table(result.stdout)
    assert list(rows) == STAGES, result.stdout
    sigs = {name: row[0] for name, row in rows.items()}
    assert len(set(sigs.values())) == len(STAGES)
    for name in SEPARATORS + ['demucs']:
        assert rows[name][1:] == ('ready', []), name
    assert rows['mixer'][1:] == ('waiting', [sigs[name] for name in SEPARATORS])

    composed = run_python(['-c', COMPOSE], tmp_path)
    assert composed.returncode == 0, composed.stderr[-3000:]
    declared = json.loads(composed.stdout.strip().splitlines()[-1])
    configs = declared['stages']
    assert {name: config['sig'] for name, config in configs.items()} == sigs
    for name, config in configs.items():     # every stage on MUSDB18-HQ, the four sources
        assert config['musdb'] == '/path/to/musdb18hq' and config['sources'] == SOURCES, name
        assert config['parent'] is None, name    # nothing is fine-tuned
    # Phase 1: one TFC-TDF v1 per source, trained on that source only, on 261120-sample
    # chunks (256 frames of hop 1024, 2048 bins kept), RMSprop + MSE in fp16, 3000 epochs,
    # with the 24 offline pitch / tempo copies and no online repitch.
    for index, source in enumerate(SOURCES):
        config = configs[f'tfc_tdf_{source}']
        n_fft, lr, batch = TFC_TDF[source]
        assert config['model'] == 'tfc_tdf_v1', source
        assert config['weights'] == [int(i == index) for i in range(4)], source
        assert config['tfc']['n_fft'] == n_fft and config['tfc']['dim_f'] == 2048, source
        assert config['tfc']['hop_length'] == 1024 and config['samples'] == 261120, source
        assert (config['optim'], config['lr'], config['batch']) == ('rmsprop', lr, batch)
        assert (config['loss'], config['amp'], config['epochs']) == ('mse', 'fp16', 3000)
        assert config['extra'] == ['train_p=*'] and config['repitch'] == 0, source
        assert config['mixer'] == [], source
    # Demucs v2 (64 channels, BLSTM, decoder context 3, ReLU, no DConv, no GroupNorm), by
    # Demucs's v2 defaults: Adam 3e-4, L1, batch 64, 180 epochs of 10 s, repitch 0.2.
    demucs = configs['demucs']
    assert demucs['model'] == 'demucs' and demucs['weights'] is None
    assert {key: demucs['demucs'][key] for key in (
        'channels', 'depth', 'lstm_layers', 'context', 'gelu', 'dconv_mode', 'glu', 'rewrite',
        'normalize')} == dict(channels=64, depth=6, lstm_layers=2, context=3, gelu=False,
                              dconv_mode=0, glu=True, rewrite=True, normalize=True)
    assert demucs['demucs']['norm_starts'] >= demucs['demucs']['depth']
    assert (demucs['optim'], demucs['lr'], demucs['loss'], demucs['batch']) == \
        ('adam', 3e-4, 'l1', 64)
    assert (demucs['epochs'], demucs['samples'], demucs['repitch']) == (180, 441000, 0.2)
    assert demucs['extra'] == [] and demucs['mixer'] == []
    # Phase 2: the Mixer over the four frozen TFC-TDFs (their signatures), all sources,
    # RMSprop lr 3e-3 + MSE, 10 epochs of batch 16, on the same chunks and copies.
    mixer = configs['mixer']
    assert mixer['model'] == 'mixer' and mixer['weights'] is None
    assert mixer['mixer'] == [sigs[name] for name in SEPARATORS]
    assert mixer['targets'] == [name.split('_')[-1] for name in SEPARATORS]
    assert (mixer['optim'], mixer['lr'], mixer['loss']) == ('rmsprop', 3e-3, 'mse')
    assert (mixer['epochs'], mixer['batch'], mixer['samples']) == (10, 16, 261120)
    assert mixer['extra'] == ['train_p=*'] and mixer['repitch'] == 0
    # The bag: the Mixer and Demucs per source 5:5, 5:5, 7:3, 9:1; Demucs with overlap 0.5
    # and no shifts, the Mixer without shifts.
    assert declared['bag'] == {
        'models': [sigs['mixer'], sigs['demucs']],
        'weights': [MIXER_WEIGHTS, DEMUCS_WEIGHTS],
        'settings': [{'shifts': 0}, {'overlap': 0.5, 'shifts': 0}]}


def test_tiny_lineage_runs_end_to_end_and_its_bag_blends_per_source(tmp_path):
    result = run_python(['-m', 'tools.lineage', 'mdx21_kuielab_tiny'], tmp_path, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    rows = parse_table(output[output.rindex('Lineage mdx21_kuielab_tiny: 6/6 stages done'):])
    assert list(rows) == STAGES and all(row[1] == 'done' for row in rows.values())
    sigs = {name: row[0] for name, row in rows.items()}
    # The Mixer holds the best weights of the four TFC-TDF XPs, frozen, in SOURCES order.
    mixer_state = final_state(tmp_path, sigs['mixer'])['model']
    for index, name in enumerate(SEPARATORS):
        checkpoint = final_state(tmp_path, sigs[name])
        for key, value in (checkpoint['best_state'] or checkpoint['model']).items():
            assert torch.equal(mixer_state[f'separators.{index}.{key}'], value), (name, key)

    repo = tmp_path / 'release_models'
    bag = yaml.safe_load((repo / 'mdx21_kuielab_tiny.yaml').read_text())
    assert bag == {'models': [sigs['mixer'], sigs['demucs']],
                   'weights': [MIXER_WEIGHTS, DEMUCS_WEIGHTS],
                   'settings': [{'shifts': 0}, {'overlap': 0.5, 'shifts': 0}]}

    mixture = separate_with_bag(tmp_path, 'mdx21_kuielab_tiny')

    # The bag's estimate of each source is (w x Mixer + (10 - w) x Demucs) / 10, Demucs run
    # with overlap 0.5 (which changes its estimates) and no shifts.
    audio, _ = sf.read(mixture, dtype='float32')
    mix = torch.from_numpy(audio.T.copy())
    with torch.no_grad():
        blended = apply_bag(get_model('mdx21_kuielab_tiny', repo), mix)
        by_mixer = apply_model(get_model(sigs['mixer'], repo), mix)
        demucs = get_model(sigs['demucs'], repo)
        by_demucs = apply_model(demucs, mix, overlap=0.5)
        assert not torch.allclose(apply_model(demucs, mix, overlap=0.25), by_demucs)
    for index, (mine, theirs) in enumerate(zip(MIXER_WEIGHTS, DEMUCS_WEIGHTS)):
        expected = (mine * by_mixer[index] + theirs * by_demucs[index]) / 10
        assert torch.allclose(blended[index], expected, atol=1e-6), SOURCES[index]
