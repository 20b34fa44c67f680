"""Progress lines with rate and ETA, through `logging` (readable in Slurm logs, unlike tqdm)."""
import logging
import time
import typing as tp


class Progress:
    """Wrap an iterable and log `updates` lines over it: position, rate, ETA and metrics.

    Call `update(**metrics)` inside the loop to show the latest metrics.
    """

    def __init__(self, logger: logging.Logger, iterable: tp.Iterable, name: str,
                 updates: int = 4, total: tp.Optional[int] = None):
        self.logger = logger
        self.iterable = iterable
        self.name = name
        self.total = total if total is not None else len(iterable)  # type: ignore
        self.every = max(1, self.total // max(updates, 1))
        self.metrics: tp.Dict[str, str] = {}

    def update(self, **metrics: float) -> None:
        self.metrics = {key: f'{value:.4f}' for key, value in metrics.items()}

    def __iter__(self) -> tp.Iterator:
        begin = time.time()
        index = 0
        for index, item in enumerate(self.iterable):
            yield item
            done = index + 1
            if done % self.every == 0 or done == self.total:
                elapsed = time.time() - begin
                rate = done / elapsed if elapsed > 0 else float('inf')
                eta = (self.total - done) / rate if rate > 0 else float('inf')
                infos = ' | '.join(f'{k} {v}' for k, v in self.metrics.items())
                self.logger.info(f'{self.name} | {done}/{self.total} | {rate:.2f} it/s | '
                                 f'ETA {eta:.0f}s' + (f' | {infos}' if infos else ''))
