"""The table `dora grid NAME` prints: train / valid / test metrics of each XP, and what a
filter XP (a stage of a lineage, `filter.model=SIG`) kept."""
import typing as tp

import treetable as tt
from dora import Explorer

SOURCES = ['drums', 'bass', 'other', 'vocals']


class SeparatorExplorer(Explorer):
    """Shows epochs, losses, and the last test nSDR (and museval SDR) per source."""

    def get_grid_metrics(self) -> tp.List[tp.Any]:
        return [
            tt.group('train', [tt.leaf('epoch'), tt.leaf('loss', '.4f')], align='>'),
            tt.group('valid', [tt.leaf('loss', '.4f'), tt.leaf('best', '.4f')], align='>'),
            tt.group('test', [tt.leaf('nsdr', '.2f')]
                     + [tt.leaf(f'nsdr_{source}', '.2f') for source in SOURCES]
                     + [tt.leaf('sdr', '.2f')], align='>'),
        ]

    def process_history(self, history: tp.List[dict]) -> dict:
        out: tp.Dict[str, dict] = {'train': {'epoch': len(history)}, 'valid': {}, 'test': {},
                                   'filter': {}}
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
            if metrics.get('test'):
                out['test'] = dict(metrics['test'])
        return out


class LineageExplorer(SeparatorExplorer):
    """For lineages (grids/sdx23*.py): also what each filter stage kept, and its F1 against
    the injected ground truth (clean stems; usable stems, see `filtering.evaluate`)."""

    def get_grid_metrics(self) -> tp.List[tp.Any]:
        return super().get_grid_metrics() + [
            tt.group('filter', [tt.leaf('kept'), tt.leaf('f1', '.3f'),
                                tt.leaf('f1_usable', '.3f')], align='>')]


def lineage_explorer(lineage: tp.Any) -> LineageExplorer:
    """The `explorer` of a grid that runs a lineage: prints its stages, submits the ready ones
    (`separator.lineage.submit`)."""
    def explore(launcher: tp.Any) -> None:
        from separator.lineage import submit
        from separator.train import main
        submit(launcher, lineage, main)
    return LineageExplorer(explore)
