"""The table `dora grid NAME` prints: train / valid / test metrics of each XP."""
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
        out: tp.Dict[str, dict] = {'train': {'epoch': len(history)}, 'valid': {}, 'test': {}}
        for metrics in history:
            out['train'].update(loss=metrics['train'].get('loss'))
            out['valid'].update({key: metrics.get('valid', {}).get(key)
                                 for key in ('loss', 'best')})
            if metrics.get('test'):
                out['test'] = dict(metrics['test'])
        return out
