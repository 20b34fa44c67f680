"""TensorBoard and W&B logs of an XP: written, readable back, continued on resume."""
import json
import struct
import sys
import time
import typing as tp
from pathlib import Path

import pytest

from separator import distrib
from separator.experiment_log import ExperimentLog, flatten

CONFIG = {'optim': {'lr': 3e-4}, 'epochs': 4}


class FakeXP:
    """What the log reads of a Dora XP."""

    def __init__(self, folder: Path, sig: str = 'abcd1234'):
        self.folder = folder
        self.sig = sig
        self.argv = ['optim.lr=3e-4']


def entry(epoch: int, tested: bool = False, shift: float = 0.) -> dict:
    metrics = {'lr': 1e-3 / epoch,
               'train': {'loss': 1. / epoch + shift, 'grad': 0.5, 'vocals': 2. / epoch},
               'valid': {'loss': 3. / epoch, 'best_of': 'main', 'best': 3. / epoch}}
    if tested:
        metrics['test'] = {'nsdr': 5. * epoch, 'nsdr_vocals': 6. * epoch}
    metrics['duration'] = 7.
    return metrics


def test_flatten_keeps_numbers_with_their_stage():
    assert flatten(entry(2, tested=True)) == {
        'lr': 5e-4, 'train/loss': 0.5, 'train/grad': 0.5, 'train/vocals': 1.,
        'valid/loss': 1.5, 'valid/best': 1.5, 'test/nsdr': 10., 'test/nsdr_vocals': 12.,
        'duration': 7.}


# ---------------------------------------------------------------- TensorBoard
def scalars(folder: Path) -> tp.Tuple[tp.Any, tp.Dict[str, tp.List[tp.Tuple[int, float]]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return events, {tag: [(event.step, event.value) for event in events.Scalars(tag)]
                    for tag in events.Tags()['scalars']}


def test_off_by_default_and_on_other_ranks(tmp_path, monkeypatch):
    for section in (None, {}, {'tensorboard': False, 'wandb': False}):
        log = ExperimentLog(section, FakeXP(tmp_path), CONFIG)
        log.log_epoch(1, entry(1))
        log.close()
        assert not log.enabled
    monkeypatch.setattr(distrib, 'rank', 1)
    log = ExperimentLog({'tensorboard': True, 'wandb': True}, FakeXP(tmp_path), CONFIG)
    log.log_epoch(1, entry(1))
    log.close()
    assert not log.enabled
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_event_file_reads_back(tmp_path):
    with ExperimentLog({'tensorboard': True}, FakeXP(tmp_path), CONFIG) as log:
        log.log_epoch(1, entry(1))
        log.log_epoch(2, entry(2, tested=True))
    events, values = scalars(tmp_path / 'tensorboard')
    assert values['train/loss'] == [(1, 1.), (2, 0.5)]
    assert values['valid/loss'] == [(1, 3.), (2, 1.5)]
    assert values['lr'] == [(1, pytest.approx(1e-3)), (2, pytest.approx(5e-4))]
    assert values['test/nsdr_vocals'] == [(2, 12.)]
    assert 'valid/best_of' not in values
    text = events.Tensors('config/text_summary')[0].tensor_proto.string_val[0].decode()
    assert 'lr: 0.0003' in text and 'abcd1234' in text


def test_tensorboard_resume_continues_and_purges_orphaned_epochs(tmp_path):
    """Killed after logging epoch 3 but before its checkpoint: the resumed XP replays epoch 3
    (here with other values, to tell them apart) in the same folder; TensorBoard shows the
    replay only."""
    xp = FakeXP(tmp_path)
    with ExperimentLog({'tensorboard': True}, xp, CONFIG) as log:
        for epoch in (1, 2, 3):
            log.log_epoch(epoch, entry(epoch))
    with ExperimentLog({'tensorboard': True}, xp, CONFIG, [entry(1), entry(2)]) as log:
        log.log_epoch(3, entry(3, shift=10.))
        log.log_epoch(4, entry(4))
    assert [path.name for path in tmp_path.iterdir()] == ['tensorboard']
    _events, values = scalars(tmp_path / 'tensorboard')
    assert values['train/loss'] == [(1, 1.), (2, 0.5), (3, pytest.approx(10 + 1 / 3)),
                                    (4, 0.25)]


def test_tensorboard_turned_on_halfway_gets_the_history_first(tmp_path):
    with ExperimentLog({'tensorboard': True}, FakeXP(tmp_path), CONFIG,
                       [entry(1), entry(2)]) as log:
        log.log_epoch(3, entry(3))
    _events, values = scalars(tmp_path / 'tensorboard')
    assert [step for step, _ in values['train/loss']] == [1, 2, 3]


@pytest.mark.parametrize('module, key', [('torch.utils.tensorboard', 'tensorboard'),
                                         ('wandb', 'wandb')])
def test_a_missing_package_is_one_clear_error(tmp_path, monkeypatch, module, key):
    monkeypatch.setitem(sys.modules, module, None)     # `import` raises ImportError
    with pytest.raises(ValueError) as error:
        ExperimentLog({key: True}, FakeXP(tmp_path), CONFIG)
    message = str(error.value)
    print(message)
    assert f'pip install {key}' in message and f'logging.{key}=false' in message
    assert '\n' not in message


# ---------------------------------------------------------------- W&B
def wandb_records(path: Path) -> tp.List[tp.Any]:
    """The protobuf records of an offline W&B run file (a LevelDB log: 32 KiB blocks of
    chunks, each with a 7-byte header: CRC, length, type), after its 7-byte file header."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b':W&B'
    block, position, chunks, records = 32768, 7, [], []
    while position + 7 <= len(data):
        left = block - position % block
        _crc, length, kind = struct.unpack('<IHB', data[position:position + 7])
        if left < 7 or (kind == 0 and length == 0):     # padding up to the next block
            position += left
            continue
        chunks.append(data[position + 7:position + 7 + length])
        position += 7 + length
        if kind in (1, 4):                               # a full record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b''.join(chunks))
            records.append(record)
            chunks = []
    return records


def finished_records(path: Path, timeout: float = 60.) -> tp.List[tp.Any]:
    """The records of a run file once W&B's own process has written them all, up to the
    `exit` record (`run.finish()` can return before that)."""
    begin = time.time()
    while True:
        records = wandb_records(path)
        if any(record.WhichOneof('record_type') == 'exit' for record in records):
            return records
        assert time.time() - begin < timeout, f"{path}: no exit record after {timeout} s"
        time.sleep(0.2)


def wandb_runs(folder: Path, run_id: str) -> tp.List[tp.Tuple[tp.Any, tp.Dict[int, dict]]]:
    """Per offline run folder of `run_id` (one per start of the XP), in the order they
    started: its run record and its history {step: {key: value}}."""
    segments = []
    for path in folder.glob(f'wandb/offline-run-*-{run_id}/run-{run_id}.wandb'):
        run, steps = None, {}
        for record in finished_records(path):
            kind = record.WhichOneof('record_type')
            if kind == 'run':
                run = record.run
            elif kind == 'history':
                items = {item.key or '/'.join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                steps[items['_step']] = items
        segments.append((run, steps))
    return sorted(segments, key=lambda segment: segment[0].start_time.ToNanoseconds())


def test_wandb_offline_run_and_resume_with_the_same_id(tmp_path):
    xp = FakeXP(tmp_path)
    section = {'wandb': True, 'wandb_project': 'tests', 'wandb_entity': None,
               'wandb_mode': 'offline'}
    with ExperimentLog(section, xp, CONFIG) as log:
        run_id = log.run.id
        log.log_epoch(1, entry(1))
        log.log_epoch(2, entry(2, tested=True))
    assert run_id.startswith('abcd1234-')
    assert (tmp_path / '.wandb_run_id').read_text().strip() == run_id
    time.sleep(1.1)     # offline run folders are named to the second
    # Resumed after 2 epochs: the same run continues.
    with ExperimentLog(section, xp, CONFIG, [entry(1), entry(2, tested=True)]) as log:
        assert log.run.id == run_id
        log.log_epoch(3, entry(3))
    segments = wandb_runs(tmp_path, run_id)
    assert len(segments) == 2
    for run, _steps in segments:
        assert (run.run_id, run.display_name, run.project) == (run_id, 'abcd1234', 'tests')
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config['optim'] == {'lr': 3e-4} and config['xp']['argv'] == ['optim.lr=3e-4']
    # Each offline start holds the whole history so far (a killed XP's last epochs can be
    # lost in W&B's process: the resumed run logs them again from the history).
    assert [sorted(steps) for _run, steps in segments] == [[1, 2], [1, 2, 3]]
    steps = segments[1][1]
    assert steps[2]['train/loss'] == 0.5 and steps[2]['test/nsdr_vocals'] == 12.
    assert steps[3]['valid/loss'] == 1. and 'test/nsdr' not in steps[3]
    # Started over from epoch 1 (checkpoint removed): a new run.
    with ExperimentLog(section, xp, CONFIG, []) as log:
        assert log.run.id != run_id


def test_wandb_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"logging.wandb_mode='cloud'.*offline"):
        ExperimentLog({'wandb': True, 'wandb_mode': 'cloud'}, FakeXP(tmp_path), CONFIG)
