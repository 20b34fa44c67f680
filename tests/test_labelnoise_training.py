"""Training on SDX23-style label-noise data: injection on first use, clean pools, truncation."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separator.data.labelnoise import clean_flags, load_manifest
from separator.data.musdb import index_tracks
from separator.data.segments import RemixSegments

from .conftest import SOURCES, TINY, history, run_dora, signature, write_track


def test_remix_segments_draw_each_source_from_its_clean_pool(tmp_path):
    for index in range(3):
        write_track(tmp_path / f't{index}', seconds=1., seed=index, mixture=False)
    tracks = index_tracks(tmp_path, SOURCES, 44100, 2)
    clean = {source: {'t0', 't1', 't2'} for source in SOURCES}
    clean['vocals'] = {'t2'}
    clean['drums'] = {'t0', 't1'}
    dataset = RemixSegments(tracks, SOURCES, 22050, epoch_size=10, seed=0, clean=clean)
    stems = {t.name: {s: sf.read(t.files[s], dtype='float32')[0].T for s in SOURCES}
             for t in tracks}

    def origin(source, audio):
        return {name for name, track in stems.items()
                if any(np.array_equal(audio, track[source][:, o:o + 22050])
                       for o in range(0, 44100 - 22050 + 1, 1))}

    drums_from = set()
    for index in range(6):
        example = dataset[index].numpy()
        assert origin('vocals', example[3]) == {'t2'}
        drums_from |= origin('drums', example[0])
    assert drums_from <= {'t0', 't1'} and drums_from
    with pytest.raises(ValueError, match='No clean bass stem'):
        RemixSegments(tracks, SOURCES, 22050, 10, 0, dict(clean, bass=set()))


def test_labelnoise_xp_injects_then_trains_on_clean_pools(tiny_data, tmp_path):
    noisy = tmp_path / 'labelnoise'
    base = TINY + ['dset=sdx23_labelnoise', f'dset.musdb={tiny_data}', 'dset.generate=false',
                   f'dset.train_folder={noisy}', 'dset.noise_rate=0.3', 'dset.valid_count=0',
                   'epochs=1', 'max_batches=2', 'test.every=0']
    # 1. Pretraining on all noisy stems, with loss truncation; the set is injected first.
    sig = signature(run_dora(['run', *base, 'optim.loss_truncation=0.7'], tmp_path))
    manifest = load_manifest(noisy)
    assert manifest['rate'] == 0.3 and len(manifest['tracks']) == 4
    assert history(tmp_path, sig)[0]['train']['loss'] > 0
    # 2. Joint training on clean pools: here the ground truth stands in for the filter.
    lists = tmp_path / 'filtered'
    lists.mkdir()
    flags = clean_flags(manifest)
    for source in SOURCES:
        names = [uuid for uuid, stems in flags.items() if stems[source]]
        (lists / f'clean_{source}.txt').write_text('\n'.join(names) + '\n')
    result = run_dora(['run', *base, f'dset.clean_lists={lists}', f'continue_from={sig}'],
                      tmp_path)
    assert 'Clean stems per source' in result.stdout + result.stderr
    # A different noise seed in the same folder is refused with the fix.
    bad = run_dora(['run', *base, 'dset.noise_seed=3'], tmp_path, check=False)
    assert bad.returncode != 0 and 'was injected with rate=0.3, seed=0' in bad.stderr
    assert Path(noisy / 'manifest.json').exists()
