"""curves.png of an XP, and `python -m tools.plot` overlaying several XPs."""
import json
import logging
import os
import typing as tp
from pathlib import Path

import pytest
from dora.link import Link
from PIL import Image

from separator import curves
from tools import plot

from .conftest import SOURCES, run_python

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
LRS = [1e-4, 2e-4, 3e-4, 1.5e-4, 1e-5, 1e-6]      # warmup then decay: more than a decade


def entry(epoch: int, tested: bool, lr: tp.Optional[float] = None) -> dict:
    """The history entry of epoch `epoch` (from 1) as `Solver.train` pushes it; every value
    is a simple function of the epoch, written out again where the tests check it."""
    train = {'loss': 1. / epoch, 'grad': 0.5}
    train.update({source: 1. / epoch + index for index, source in enumerate(SOURCES)})
    valid = {'loss': 2. / epoch, **{source: 0.1 for source in SOURCES}, 'best_of': 'main',
             'best': 2. / epoch}
    metrics: tp.Dict[str, tp.Any] = {}
    if lr is not None:
        metrics['lr'] = lr
    metrics.update(train=train, valid=valid)
    if tested:
        test = {'nsdr': 10. * epoch}
        test.update({f'nsdr_{source}': 10. * epoch + index
                     for index, source in enumerate(SOURCES)})
        # The trivial baselines `evaluate` adds: not curves of their own.
        test.update({'nsdr_mixture': -1., 'nsdr_mixture_split': -2., 'nsdr_silence': 0.})
        test.update({f'nsdr_mixture_{source}': -1. for source in SOURCES})
        metrics['test'] = test
    metrics['duration'] = 3.
    return metrics


def history(epochs: int = 6, every: int = 3, lr: bool = True) -> tp.List[dict]:
    return [entry(epoch, epoch % every == 0 or epoch == epochs,
                  LRS[epoch - 1] if lr else None) for epoch in range(1, epochs + 1)]


def lines(ax: tp.Any) -> tp.List[tp.Tuple[tp.List[float], tp.List[float]]]:
    return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]


def legend(ax: tp.Any) -> tp.List[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_one_xp_has_loss_nsdr_per_source_and_lr_panels():
    fig = curves.figure([('XP abc', history())])
    loss, nsdr, lr = fig.axes
    assert fig._suptitle.get_text() == 'XP abc'
    assert lines(loss) == [([1, 2, 3, 4, 5, 6], [1., 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6]),
                           ([1, 2, 3, 4, 5, 6], [2., 1., 2 / 3, 1 / 2, 2 / 5, 1 / 3])]
    assert legend(loss) == ['train', 'valid']
    # One line per source and the mean, at the tested epochs only; no baseline.
    assert lines(nsdr) == [([3, 6], [30., 60.]), ([3, 6], [31., 61.]), ([3, 6], [32., 62.]),
                           ([3, 6], [33., 63.]), ([3, 6], [30., 60.])]
    assert legend(nsdr) == SOURCES + ['mean']
    assert lines(lr) == [([1, 2, 3, 4, 5, 6], LRS)]
    # Both span more than a decade (lr: 3e-4 to 1e-6; loss: 2 to 1/6): log axes.
    assert lr.get_yscale() == 'log' and loss.get_yscale() == 'log'
    for ax in (loss, nsdr, lr):
        assert ax.get_title() and ax.get_ylabel()
    assert lr.get_xlabel() == 'epoch'


def test_a_history_without_test_nor_lr_has_notes_instead():
    fig = curves.figure([('XP abc', [entry(1, False), entry(2, False)])])
    loss, nsdr, lr = fig.axes
    assert len(loss.get_lines()) == 2 and loss.get_yscale() == 'linear'    # 2 to 1/2
    assert not nsdr.get_lines() and not lr.get_lines()
    assert [text.get_text() for text in nsdr.texts] == ['not tested yet (test.every)']
    assert [text.get_text() for text in lr.texts] == ['learning rate not recorded']


def test_filter_entries_are_not_epochs_and_nan_is_left_out():
    diverged = entry(2, False, 1e-4)
    diverged['train']['loss'] = float('nan')
    runs = [('XP f', [{'filter': {'kept': 3}}, diverged, entry(3, True, 1e-4)])]
    loss, nsdr, _lr = curves.figure(runs).axes
    assert lines(loss)[0] == ([3], [1 / 3])             # epoch 2's NaN: a gap
    assert lines(loss)[1] == ([2, 3], [1., 2 / 3])
    assert lines(nsdr)[-1] == ([3], [30.])


def test_several_xps_overlay_one_color_each():
    runs = [('aaa optim.lr=1e-3', history()), ('bbb optim.lr=default', history(4, 2))]
    fig = curves.figure(runs)
    loss, lr, mean, *per_source = fig.axes
    assert len(loss.get_lines()) == 4                    # train and valid of each
    assert [line.get_linestyle() for line in loss.get_lines()] == ['--', '-', '--', '-']
    assert lines(mean) == [([3, 6], [30., 60.]), ([2, 4], [20., 40.])]
    visible = [ax for ax in per_source if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [f'Test nSDR: {name}' for name in SOURCES]
    assert lines(visible[3]) == [([3, 6], [33., 63.]), ([2, 4], [23., 43.])]
    assert len(lr.get_lines()) == 2
    colors = {line.get_color() for line in mean.get_lines()}
    assert len(colors) == 2
    assert [text.get_text() for text in fig.legends[0].get_texts()] == [
        'aaa optim.lr=1e-3', 'bbb optim.lr=default']


def test_curves_png_is_written_whole_and_grows_with_content(tmp_path):
    sizes = []
    for epochs in (1, 6):
        folder = tmp_path / str(epochs)
        path = curves.write_curves(folder, history(epochs), 'abc')
        assert path == folder / 'curves.png'
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size == (800, 1000)
        assert os.listdir(folder) == ['curves.png']      # no temporary left
        sizes.append(path.stat().st_size)
    print("curves.png bytes, 1 epoch vs 6:", sizes)
    assert sizes[1] > sizes[0]


def test_a_failed_drawing_is_a_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with caplog.at_level(logging.WARNING):
        assert curves.update_curves(blocker, history(2), 'abc') is None
    assert str(blocker / 'curves.png') in caplog.text


def fake_xp(xps: Path, sig: str, argv: tp.List[str], entries: tp.List[dict]) -> Path:
    """An XP folder as `dora run` leaves it: .argv.json and history.json (Dora's Link)."""
    folder = xps / sig
    folder.mkdir(parents=True)
    with open(folder / '.argv.json', 'w') as fout:
        json.dump(argv, fout)
    Link(folder / 'history.json').update_history(entries)
    return folder


def test_labels_show_the_overrides_that_differ():
    argvs = [['variant=quickstart', 'optim.lr=1e-3'],
             ['variant=quickstart', 'continue_from=aaa', 'optim.lr=3e-4'], []]
    assert plot.labels(['aaa', 'bbb', 'ccc'], argvs) == [
        'aaa variant=quickstart optim.lr=1e-3 continue_from=default',
        'bbb variant=quickstart optim.lr=3e-4 continue_from=aaa',
        'ccc variant=default optim.lr=default continue_from=default']
    assert plot.labels(['aaa', 'bbb'], argvs[:2]) == [
        'aaa optim.lr=1e-3 continue_from=default', 'bbb optim.lr=3e-4 continue_from=aaa']
    assert plot.labels(['aaa'], argvs[:1]) == ['aaa variant=quickstart optim.lr=1e-3']


def test_plot_overlays_two_xps(tmp_path, capsys, monkeypatch):
    xps = tmp_path / 'outputs' / 'xps'
    fake_xp(xps, 'aaa', ['optim.lr=1e-3'], history())
    fake_xp(xps, 'bbb', ['optim.lr=3e-4', 'continue_from=aaa'], history(4, 2))
    drawn = {}
    figure = curves.figure

    def spy(runs, **kwargs):
        drawn['runs'] = runs
        return figure(runs, **kwargs)
    monkeypatch.setattr(plot, 'figure', spy)
    out = tmp_path / 'both.png'
    assert plot.main(['aaa', 'bbb', '-o', str(out), '--xps', str(xps)]) == 0
    assert [label for label, _ in drawn['runs']] == [
        'aaa optim.lr=1e-3 continue_from=default', 'bbb optim.lr=3e-4 continue_from=aaa']
    assert [len(entries) for _, entries in drawn['runs']] == [6, 4]
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert str(out) in capsys.readouterr().out


def test_plot_of_a_missing_xp_says_so_in_one_line(tmp_path):
    xps = tmp_path / 'outputs' / 'xps'
    fake_xp(xps, 'aaa', [], history(2))
    result = run_python(['-m', 'tools.plot', 'aaa', 'zzz', '--xps', str(xps)], tmp_path)
    print(result.stderr)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'zzz' in lines[0] and str(xps) in lines[0]
    assert not (tmp_path / 'curves.png').exists()


@pytest.mark.parametrize('content', ['{not json', '{"a": 1}'])
def test_plot_of_an_unreadable_history_names_it(tmp_path, capsys, content):
    xps = tmp_path / 'xps'
    folder = fake_xp(xps, 'aaa', [], [])
    (folder / 'history.json').write_text(content)
    assert plot.main(['aaa', '--xps', str(xps), '-o', str(tmp_path / 'x.png')]) == 1
    assert str(folder / 'history.json') in capsys.readouterr().err


def test_labels_leave_out_the_keys_that_do_not_make_an_xp():
    argvs = [['misc.num_workers=2', 'logging.wandb=true', 'epochs=2'],
             ['+logging.tensorboard=true', 'epochs=3']]
    exclude = ['misc.*', 'logging.*']
    assert plot.labels(['aaa', 'bbb'], argvs, exclude) == ['aaa epochs=2', 'bbb epochs=3']
    assert 'misc.*' in plot.signature_exclusions()      # read from conf/config.yaml


def test_plot_skips_a_filter_xp_with_a_note(tmp_path, capsys):
    xps = tmp_path / 'xps'
    fake_xp(xps, 'aaa', [], history(2))
    fake_xp(xps, 'fff', ['filter.model=aaa'], [{'filter': {'kept': 3}}])
    out = tmp_path / 'x.png'
    assert plot.main(['aaa', 'fff', '--xps', str(xps), '-o', str(out)]) == 0
    assert 'fff has no training epoch' in capsys.readouterr().err
    assert plot.main(['fff', '--xps', str(xps), '-o', str(tmp_path / 'y.png')]) == 1
    assert 'nothing to plot' in capsys.readouterr().err
