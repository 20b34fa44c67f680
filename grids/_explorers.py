"""The table `dora grid NAME` prints: train / valid / test metrics of each XP, and what a
filter XP (a stage of a lineage, `filter.model=SIG`) kept."""
import typing as tp

import treetable as tt
from dora import Explorer

SOURCES = ['drums', 'bass', 'other', 'vocals']


class SeparatorExplorer(Explorer):
    """Shows epochs, losses, and the last test nSDR (and museval SDR) per source, under headers
    a person can read (no abbreviation)."""

    def get_grid_metrics(self) -> tp.List[tp.Any]:
        return [
            tt.group('train', [tt.leaf('epochs'), tt.leaf('loss', '.4f')], align='>',
                     shorten=False),
            tt.group('valid', [tt.leaf('loss', '.4f'), tt.leaf('best', '.4f')], align='>',
                     shorten=False),
            tt.group('test nSDR (dB)', [tt.leaf('mean', '.2f')]
                     + [tt.leaf(source, '.2f') for source in SOURCES]
                     + [tt.leaf('museval', '.2f')], align='>', shorten=False),
        ]

    def process_history(self, history: tp.List[dict]) -> dict:
        out: tp.Dict[str, dict] = {'train': {'epochs': len(history)}, 'valid': {},
                                   'test nSDR (dB)': {}, 'filter': {}}
        for metrics in history:
            if 'filter' in metrics:
                entry = metrics['filter']
                out['filter'] = {'kept': f"{entry['kept']}/{entry['stems']}",
                                 'f1': entry.get('f1'),
                                 'f1_usable': entry.get('f1_usable')}
                out['train'] = {}
                continue
            out['train'].update(loss=metrics['train'].get('loss'))
            out['valid'].update({key: metrics.get('valid', {}).get(key)
                                 for key in ('loss', 'best')})
            test = metrics.get('test')
            if test:
                out['test nSDR (dB)'] = {'mean': test.get('nsdr'), 'museval': test.get('sdr'),
                                         **{source: test.get(f'nsdr_{source}')
                                            for source in SOURCES}}
        return out


class LineageExplorer(SeparatorExplorer):
    """For lineages (grids/sdx23*.py): also what each filter stage kept, and its F1 against
    the injected ground truth (clean stems; usable stems, see `filtering.evaluate`)."""

    def get_grid_metrics(self) -> tp.List[tp.Any]:
        return super().get_grid_metrics() + [
            tt.group('filter', [tt.leaf('kept'), tt.leaf('f1', '.3f'),
                                tt.leaf('f1_usable', '.3f')], align='>', shorten=False)]


def lineage_explorer(lineage: tp.Any) -> LineageExplorer:
    """The `explorer` of a grid that runs a lineage: prints its stages, submits the ready ones
    (`separator.lineage.submit`)."""
    def explore(launcher: tp.Any) -> None:
        from separator.lineage import submit
        from separator.train import main
        submit(launcher, lineage, main)
    return LineageExplorer(explore)
