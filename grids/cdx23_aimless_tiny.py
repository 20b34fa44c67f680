"""The aimless CDX-A lineage of grids/cdx23_aimless.py at tiny scale: both models, one short
epoch each, then the bag (the plumbing: the models learn little).

    python -m tools.lineage cdx23_aimless_tiny
    separator -n cdx23_aimless_tiny --repo release_models FILM.wav

`variant=aimless_cdx_tiny` reads a DnR-layout folder at data/dnr_tiny (mono
{tr,cv,tt}/<id>/{mix,speech,music,sfx}.wav; tests/test_aimless.py writes one of band-limited
noise, as tests/test_dnr.py does): there is no generator of a synthetic cinematic set yet.
"""
from ._explorers import lineage_explorer
from .cdx23_aimless import cdx23_aimless

SCALE = {'hdemucs': {'batch_size': 4}, 'bsrnn': {'batch_size': 4}}
LINEAGE = cdx23_aimless('cdx23_aimless_tiny', 'aimless_cdx_tiny', SCALE,
                        slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 1,
                               'mem_per_gpu': 2, 'time': 30})

explorer = lineage_explorer(LINEAGE)
