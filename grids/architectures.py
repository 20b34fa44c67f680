"""Every architecture at the size and budget of `variant=demo` (10 epochs of 160 one-second
examples on the synthetic set; the `make train` job until 2026-12, now `variant=quickstart`,
the tfc_tdf row below), side by side: the CPU-scale comparison of the models of the MDX/SDX
winners.

    dora grid architectures                 # on Slurm (the partition of your cluster)
    dora grid architectures --dry_run --init
    dora run variant=demo model=xumx xumx.hidden_size=64 ...   # one of them, locally: the
                                            # overrides of `dora info -f SIG`

Each model gets small hyper-parameters (0.4 to 7 M parameters: the band-split models' mask
MLPs are large, their compute is not); the attention and LSTM models a lower learning rate.
One run each on 2 CPU cores (test nSDR in dB on the 4 synthetic test songs, drums / bass /
other / vocals, mean; museval SDR mean; the trivial estimates: mixture -5.54, mixture / 4
0.68, silence 0):

    hdemucs       0.87 M  2.90 / 2.79 / 2.05 / 2.36  2.52  (2.23)   5 min (variant=demo)
    htdemucs      1.31 M  2.99 / 3.38 / 0.85 / 2.20  2.35  (2.42)   6 min
    tfc_tdf       0.38 M  5.61 / 5.30 / 4.46 / 4.75  5.03  (4.90)   5 min (variant=quickstart)
    xumx          1.17 M  4.03 / 2.60 / 1.66 / 2.71  2.75  (2.60)   6 min  (optim.loss=xumx)
    bsrnn         2.96 M  4.76 / 3.59 / 2.40 / 2.32  3.27  (3.20)   7 min

The two RoFormers were not run to the end: about 3 minutes an epoch here (their 62 and 32
bands' norms, Linears and mask MLPs run one after another), 30 minutes an XP. At this scale
the spectrogram U-Net (TFC-TDF) learns fastest, twice the nSDR of the hybrid Demucs models.
"""
from ._explorers import SeparatorExplorer

SMALL = {
    'hdemucs': {},   # variant=demo's own
    'htdemucs': {'htdemucs.channels': 16, 'htdemucs.nfft': 2048, 'htdemucs.dconv_comp': 4,
                 'htdemucs.bottom_channels': 64, 'htdemucs.t_layers': 2,
                 'htdemucs.t_heads': 4, 'optim.lr': 1e-3},
    'tfc_tdf': {'tfc_tdf.n_fft': 2048, 'tfc_tdf.hop_length': 512, 'tfc_tdf.dim_f': 1024,
                'tfc_tdf.num_channels': 16, 'tfc_tdf.growth': 16, 'tfc_tdf.num_scales': 3,
                'tfc_tdf.num_blocks_per_scale': 1},
    'xumx': {'xumx.nfft': 2048, 'xumx.hop_length': 512, 'xumx.hidden_size': 64,
             'xumx.lstm_layers': 2, 'optim.loss': 'xumx', 'optim.lr': 1e-3},
    'bsrnn': {'bsrnn.dim': 32, 'bsrnn.num_layers': 3, 'bsrnn.rnn_hidden': 64,
              'bsrnn.mask_mult': 2, 'bsrnn.hop_length': 512, 'optim.lr': 1e-3},
    'bs_roformer': {'bs_roformer.dim': 48, 'bs_roformer.depth': 2, 'bs_roformer.heads': 4,
                    'bs_roformer.dim_head': 16, 'bs_roformer.mask_mult': 2,
                    'bs_roformer.dropout': 0., 'bs_roformer.hop_length': 512,
                    'optim.loss': 'l1_mrstft', 'optim.lr': 1e-3},
    'mel_roformer': {'mel_roformer.dim': 48, 'mel_roformer.depth': 2, 'mel_roformer.heads': 4,
                     'mel_roformer.dim_head': 16, 'mel_roformer.mask_mult': 2,
                     'mel_roformer.dropout': 0., 'mel_roformer.hop_length': 512,
                     'mel_roformer.num_bands': 32, 'optim.loss': 'l1_mrstft',
                     'optim.lr': 1e-3},
}


@SeparatorExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, mem_per_gpu=16, time=120)
    launcher.bind_({'variant': 'demo'})
    for model, overrides in SMALL.items():
        launcher({'model': model, **overrides})
