"""danna's MDX21 lineage of grids/mdx21_danna.py at tiny scale: its three models and the bag
run on a CPU in a few minutes (the plumbing: the models learn little).

    python -m tools.lineage mdx21_danna_tiny       # locally, stage by stage, then the bag
    dora grid mdx21_danna_tiny --dry_run --init    # the stages and their signatures

`variant=danna_tiny` (variant=tiny's data, one epoch); each stage gets its recipe's switches
(X-UMX through the Wiener filter with xumx_mwf, the U-Net with xumx_mwf, Demucs with
accumulated batches) at tiny sizes.
"""
from ._explorers import lineage_explorer
from .mdx21_danna import danna

MODELS = {
    'xumx': {'model': 'xumx', 'optim.loss': 'xumx_mwf', 'xumx.train_wiener_iterations': 1,
             'xumx.nfft': 1024, 'xumx.hop_length': 256, 'xumx.hidden_size': 16,
             'xumx.lstm_layers': 1},
    'unet': {'model': 'd3unet', 'optim.loss': 'xumx_mwf', 'd3unet.n_fft': 1024,
             'd3unet.hop_length': 512, 'd3unet.bins': 256, 'd3unet.layers': [2, 2],
             'd3unet.growth': 4, 'd3unet.attention_channels': 8, 'd3unet.attention_dim': 8,
             'd3unet.attention_heads': 2, 'd3unet.dropout': 0},
    'demucs': {'model': 'demucs_split', 'optim.accumulate': 2, 'demucs_split.channels': 8,
               'demucs_split.depth': 4, 'demucs_split.lstm_layers': 1},
}
LINEAGE = danna('mdx21_danna_tiny', {stage: 'danna_tiny' for stage in MODELS}, models=MODELS,
                slurm={'partition': 'local', 'gpus': 0, 'cpus_per_task': 1, 'mem_per_gpu': 2,
                       'time': 30}, xumx_weights=None)

explorer = lineage_explorer(LINEAGE)
