"""Micro-batches: a batch computed a few examples at a time gives the gradients of the whole
batch; on a CPU the solver picks what fits in memory."""
import pytest
import torch
from hydra import compose, initialize_config_dir

from separator import builders, memory

from .conftest import ROOT, TINY, final_state, run_dora, signature

pytestmark = pytest.mark.usefixtures('one_thread')


def test_micro_batches_train_as_the_whole_batch(tiny_data, tmp_path):
    """batch 5 computed 2 + 2 + 1 examples at a time ends with the weights of the whole
    batch, to float error (the sums are made in another order)."""
    args = TINY + [f'dset.musdb={tiny_data}', 'epochs=1', 'max_batches=3', 'batch_size=5',
                   'test.every=0', 'test.max_tracks=1']
    whole, parts = tmp_path / 'whole', tmp_path / 'parts'
    whole.mkdir()
    parts.mkdir()
    sig = signature(run_dora(['run', *args], whole))
    assert signature(run_dora(['run', *args, 'optim.micro_batch=2'], parts)) == sig
    expected, got = final_state(whole, sig), final_state(parts, sig)
    assert expected['micro_batch'] == 5 and got['micro_batch'] == 2
    with initialize_config_dir(str(ROOT / 'conf'), version_base='1.3'):
        cfg = compose('config', overrides=args)
    torch.manual_seed(cfg.seed)                  # as train_model: the initial weights
    start = builders.get_model(cfg).state_dict()
    moved = max((value - start[name]).abs().max().item()
                for name, value in expected['model'].items())
    apart = max((value - got['model'][name]).abs().max().item()
                for name, value in expected['model'].items())
    assert apart < 1e-5 and apart < 1e-3 * moved, (apart, moved)


def test_what_fits_in_memory(monkeypatch):
    model = torch.nn.Conv1d(2, 2, 3)
    example = torch.zeros(1, 2, 100)

    def step(sources):
        return model(sources.sum(1)).pow(2).mean()
    monkeypatch.setattr(memory, 'peak_growth_bytes', lambda run: (run(), 10 * 2 ** 20)[1])
    monkeypatch.setattr(memory, 'available_bytes', lambda: 1000 * 2 ** 20)
    # 0.7 x 1000 MB / 10 MB per example = 70; two processes share the memory: 35.
    assert memory.micro_batch_that_fits(model, example, 64, step) == 64
    assert memory.micro_batch_that_fits(model, example, 100, step) == 70
    assert memory.micro_batch_that_fits(model, example, 100, step, processes=2) == 35
    monkeypatch.setattr(memory, 'available_bytes', lambda: 5 * 2 ** 20)
    assert memory.micro_batch_that_fits(model, example, 100, step) == 1    # at least one
    assert all(param.grad is None for param in model.parameters())       # cleared after
    assert model.training


def test_peak_growth_is_measured():
    growth = memory.peak_growth_bytes(lambda: torch.ones(64, 2 ** 20).sum())   # 256 MB
    assert growth is not None and 200 * 2 ** 20 < growth < 400 * 2 ** 20
