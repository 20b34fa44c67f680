"""Fine-tuning the way users do it: `optim.freeze` (name patterns that stop learning),
`optim.optim` rmsprop, and the step decay of the learning rate (SCNet's recipe)."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from separator import builders

from .conftest import ROOT, TINY, final_state, run_dora, signature


def config(*overrides: str):
    with initialize_config_dir(str(ROOT / 'conf'), version_base='1.3'):
        return compose('config', overrides=['variant=tiny', *overrides])


def test_frozen_weights_do_not_move_in_an_xp(tiny_data, tmp_path: Path):
    """The waveform encoder is frozen: after an epoch its weights are those the XP started with (the
    init of its seed, rebuilt here as `train_model` builds it), every other weight moved."""
    overrides = [f'dset.musdb={tiny_data}', 'epochs=1', "optim.freeze=['time_encoder.*']"]
    sig = signature(run_dora(['run', *TINY, *overrides], tmp_path))
    trained = final_state(tmp_path, sig)['model']
    cfg = config(*overrides)
    torch.manual_seed(cfg.seed)
    start = builders.get_model(cfg).state_dict()
    frozen = [name for name in start if name.startswith('time_encoder.')]
    learnt = [name for name in start if not name.startswith('time_encoder.')
              and start[name].is_floating_point() and 'running' not in name]
    assert frozen and learnt
    for name in frozen:
        assert torch.equal(trained[name], start[name]), name
    assert sum(not torch.equal(trained[name], start[name]) for name in learnt) > \
        len(learnt) // 2


def test_a_pattern_that_matches_nothing_names_itself():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    cfg = config("optim.freeze=['encoder.*']")
    with pytest.raises(ValueError, match=r"optim.freeze: 'encoder.\*' matches no parameter"):
        builders.get_optimizer(cfg, model)
    cfg = config("optim.freeze=['*']")
    with pytest.raises(ValueError, match="froze every parameter"):
        builders.get_optimizer(cfg, model)


def test_rmsprop_and_unknown_optimizers():
    model = torch.nn.Linear(2, 2)
    assert isinstance(builders.get_optimizer(config('optim.optim=rmsprop'), model),
                      torch.optim.RMSprop)
    with pytest.raises(ValueError, match='use adam, adamw, rmsprop'):
        builders.get_optimizer(config('optim.optim=sgdd'), model)


def test_step_decay_multiplies_the_rate_every_step_size_epochs():
    cfg = config('optim.lr_scheduler=step', 'optim.step_size=3', 'optim.step_gamma=0.5',
                 'optim.lr=1.0', 'epochs=10')
    optimizer = builders.get_optimizer(cfg, torch.nn.Linear(2, 2))
    scheduler = builders.get_scheduler(cfg, optimizer)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
