"""separator.malloc: a CPU training step stops page-faulting its freed activations anew."""
import platform
import subprocess
import sys
import textwrap

import pytest

GLIBC_ONLY = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason="glibc's malloc only")

PROBE = textwrap.dedent("""
    import resource, sys, torch
    from separator.malloc import keep_freed_memory
    tuned = keep_freed_memory() if sys.argv[1] == 'keep' else False
    def step():   # what a training step does with one large activation: allocate, fill, free
        x = torch.empty(16 * 2 ** 20)   # 64 MiB
        x.fill_(1.)
        del x
    for _ in range(10):   # glibc settles within a few steps
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def faults(mode: str):
    out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == 'True', int(out[1])


@GLIBC_ONLY
def test_freed_memory_is_reused_without_page_faults():
    """Ten steps of a 64 MiB activation (after ten to settle): 16384 pages each fault in anew
    by default (glibc mmaps and unmaps it every time); kept, the heap serves them from memory
    already mapped."""
    tuned, kept = faults('keep')
    untuned, default = faults('default')
    assert tuned and not untuned
    assert default > 10 * 16384 * 0.9, default   # every step faulted its 16384 pages
    assert kept < default / 20, (kept, default)


PEAK = textwrap.dedent("""
    import torch
    from separator.malloc import keep_freed_memory
    from separator.memory import peak_growth_bytes
    assert keep_freed_memory()
    for _ in range(10):   # 256 MiB, freed: malloc keeps its pages (settled, as above)
        torch.ones(64, 2 ** 20).sum()
    print(peak_growth_bytes(lambda: torch.ones(64, 2 ** 20).sum()))
""")


@GLIBC_ONLY
def test_peak_growth_counts_memory_that_malloc_kept():
    """The micro-batch search measures a step by the growth of the resident peak: a 256 MiB
    allocation that reuses the pages malloc kept from a freed one still counts 256 MiB."""
    out = subprocess.run([sys.executable, '-c', PEAK], capture_output=True, text=True,
                         check=True).stdout
    assert 200 * 2 ** 20 < int(out) < 400 * 2 ** 20, out
