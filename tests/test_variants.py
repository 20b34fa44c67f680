"""Every stored recipe (`conf/variant/*.yaml`) composes with the defaults and builds its model
at full size (on the meta device: no memory, no time)."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from separator import builders

CONF = Path(__file__).resolve().parent.parent / 'conf'
VARIANTS = sorted(path.stem for path in (CONF / 'variant').glob('*.yaml'))


@pytest.mark.parametrize('variant', VARIANTS)
def test_variant_composes_and_builds(variant):
    with initialize_config_dir(config_dir=str(CONF), version_base='1.3'):
        cfg = compose('config', overrides=[f'variant={variant}'])
    with torch.device('meta'):
        model = builders.get_model(cfg)
    assert model.sources == list(cfg.dset.sources)
    assert model.segment == cfg.dset.segment and sum(p.numel() for p in model.parameters())
