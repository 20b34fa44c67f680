"""CPU threads: the cores split between processes, at most those other work leaves idle."""
import torch

from separator import threads


def test_default_threads_share_the_idle_cores(monkeypatch):
    monkeypatch.setattr(threads, 'available_cores', lambda: 16)
    monkeypatch.setattr(threads, 'busy_cores', lambda: 0.)
    assert threads.default_threads() == 16
    assert threads.default_threads(processes=3) == 5          # 16 // 3
    monkeypatch.setattr(threads, 'busy_cores', lambda: 12.4)  # other work on 12 cores
    assert threads.default_threads() == 4
    monkeypatch.setattr(threads, 'available_cores', lambda: 2)
    monkeypatch.setattr(threads, 'busy_cores', lambda: 1.6)
    assert threads.default_threads() == 1
    monkeypatch.setattr(threads, 'busy_cores', lambda: 7.)
    assert threads.default_threads(processes=2) == 1          # never below 1


def test_explicit_count_then_environment_win(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, 'available_cores', lambda: 7)
        monkeypatch.setattr(threads, 'busy_cores', lambda: 0.)
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
        assert threads.set_threads(None, processes=2) == 3
        assert torch.get_num_threads() == 3
        assert threads.set_threads(2) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv('OMP_NUM_THREADS', '1')
        assert threads.set_threads(None) == torch.get_num_threads() == 2   # left as set
    finally:
        torch.set_num_threads(before)
