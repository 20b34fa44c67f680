"""Every batch the loader yields trains: partial last batches (remix, loss truncation), and
epochs that do not divide by the number of DDP processes (every rank runs the same steps)."""
import pytest
import torch
from omegaconf import OmegaConf

from separator import augment
from separator.data.segments import EpochSampler
from separator.losses import kept_count, smallest_truncating_batch, truncation_mask

from .conftest import (ROOT, TINY, assert_same_xp, history, kill_after, run_dora, signature,
                       start_dora)

DDP = ['-d', '--ddp_workers', '2']
# The groups of remix with group_size 4, by hand: full groups of 4, the rest one group.
GROUPS = {1: [range(0, 1)],
          2: [range(0, 2)],
          3: [range(0, 3)],
          5: [range(0, 4), range(4, 5)],
          7: [range(0, 4), range(4, 7)],
          19: [range(0, 4), range(4, 8), range(8, 12), range(12, 16), range(16, 19)]}


def _origins(out: torch.Tensor, sources: torch.Tensor, source: int) -> list:
    """For each example of `out`, the example of `sources` its `source` stem comes from."""
    return [next(i for i in range(len(sources)) if torch.equal(stem, sources[i, source]))
            for stem in out[:, source]]


@pytest.mark.parametrize('batch', sorted(GROUPS))
def test_remix_any_batch_permutes_within_groups(batch):
    sources = torch.randn(batch, 4, 2, 16, generator=torch.Generator().manual_seed(batch))
    out = augment.remix(sources, torch.Generator().manual_seed(0), 1., 4)
    again = augment.remix(sources, torch.Generator().manual_seed(0), 1., 4)
    assert torch.equal(out, again)  # a function of the generator's seed
    origins = [_origins(out, sources, source) for source in range(4)]
    for group in GROUPS[batch]:
        for source in range(4):
            # Each source's stems of the group are those of the group, each once.
            assert sorted(origins[source][i] for i in group) == list(group), (group, source)
        moved = [i for i in group if any(origins[s][i] != i for s in range(4))]
        if len(group) == 1:
            assert moved == []  # alone, an example keeps its mix
        elif len(group) >= 3:  # by chance, 4 sources all stay with P = 1 / 3!^4 or 1 / 4!^4
            assert moved, f"group {group} was not remixed"


def test_remix_seeds_differ_and_augment_takes_any_batch():
    sources = torch.randn(19, 4, 2, 16)
    first = augment.remix(sources, torch.Generator().manual_seed(0), 1., 4)
    assert not torch.equal(first, augment.remix(sources, torch.Generator().manual_seed(1), 1., 4))
    # The whole chain with the default config (flip, scale and remix on) on every batch size.
    cfg = OmegaConf.load(ROOT / 'conf' / 'config.yaml').augment
    for batch in [1, 2, 3, 5, 7, 19]:
        out = augment.augment(sources[:batch], torch.Generator().manual_seed(0), cfg)
        assert out.shape == (batch, 4, 2, 16)


def test_truncation_on_small_batches_keeps_by_hand():
    # ceil(0.7 B) for B = 1..7: 0.7, 1.4, 2.1, 2.8, 3.5, 4.2, 4.9 -> 1, 2, 3, 3, 4, 5, 5.
    expected = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 5, 7: 5}
    for batch, keep in expected.items():
        assert kept_count(batch, 0.7) == keep
        losses = torch.rand(batch, 4, generator=torch.Generator().manual_seed(batch))
        mask = truncation_mask(losses, 0.7)
        assert mask.sum(0).tolist() == [keep] * 4
        # The kept ones are the smallest losses of each source.
        kept_max = torch.where(mask, losses, -1.).max(0).values
        dropped_min = torch.where(mask, 2., losses).min(0).values
        assert (kept_max < dropped_min).all()
    assert smallest_truncating_batch(0.7) == 4   # 4 keeps 3
    assert smallest_truncating_batch(0.9) == 10  # 9 keeps ceil(8.1) = 9, 10 keeps 9
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match=r'optim.loss_truncation=.* must be in \(0, 1\)'):
            kept_count(4, bad)


@pytest.mark.parametrize('world_size,length', [(2, 7), (3, 5), (5, 3)])  # ceil(13 / N)
def test_epoch_sampler_pads_every_rank_to_the_same_count(world_size, length):
    shards = []
    for rank in range(world_size):
        sampler = EpochSampler(13, rank, world_size, pad=True)
        sampler.set_epoch(3)
        shards.append(list(sampler))
        assert len(sampler) == length == len(shards[-1])
    everything = [index for shard in shards for index in shard]
    assert set(everything) == set(range(39, 52))  # global indices of epoch 3, all of them
    padding = length * world_size - 13
    # The padded positions repeat the first examples of the epoch, once each.
    repeated = sorted(index for index in set(everything) if everything.count(index) > 1)
    assert repeated == list(range(39, 39 + padding))
    # Unpadded (validation): the 13 examples exactly once, the ranks' counts may differ.
    plain = [index for rank in range(world_size) for index in EpochSampler(13, rank, world_size)]
    assert sorted(plain) == list(range(13))


def test_xp_with_partial_batches_and_remix_trains(tiny_data, tmp_path):
    # 7 examples by batches of 5: a batch of 5 (one group of 4 and one of 1), then one of 2.
    args = TINY + [f'dset.musdb={tiny_data}', 'dset.epoch_size=7', 'batch_size=5', 'epochs=2',
                   'augment.remix.proba=1', 'augment.remix.group_size=4', 'test.every=0',
                   'test.max_tracks=1']
    result = run_dora(['run', *args], tmp_path)
    sig = signature(result)
    assert len(history(tmp_path, sig)) == 2
    assert 'Train 2 | 2/2' in result.stdout + result.stderr


def test_ddp_uneven_epoch_with_truncation_trains_and_resumes_exactly(tiny_data, tmp_path):
    # 13 examples over 2 ranks of 2: padded to 7 per rank, 4 steps each, the last a batch of
    # 1, which truncation (0.7) keeps whole. Unpadded, rank 0 would run 4 steps and rank 1
    # 3. (With 11 examples both would run 3 steps, with no partial batch once padded.)
    args = TINY + [f'dset.musdb={tiny_data}', 'dset.epoch_size=13', 'batch_size=4',
                   'optim.loss_truncation=0.7', 'epochs=3', 'test.every=0',
                   'test.max_tracks=1']
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    straight.mkdir()
    killed.mkdir()
    result = run_dora(['run', *DDP, *args], straight)
    output = result.stdout + result.stderr
    sig = signature(result)
    assert len(history(straight, sig)) == 3
    assert 'Train 3 | 4/4' in output
    # Per-process batch 2 keeps ceil(1.4) = 2: said once, with the smallest batch that drops.
    warning = ('optim.loss_truncation=0.7 drops nothing in a batch of 2 per process (it keeps '
               'ceil(0.7 x 2) = 2)')
    assert output.count(warning) == 1, output[-3000:]
    assert 'per-process batch of at least 4 (batch_size=8 on 2 process(es))' in output
    kill_after(start_dora([*DDP, *args], killed), killed, sig, epochs_done=1, delay=0.5)
    assert len(history(killed, sig)) == 1  # killed during epoch 2
    run_dora(['run', '-d', '-f', sig], killed)
    assert_same_xp(straight, killed, sig)
