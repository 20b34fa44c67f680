"""Model registry: maps the names used in configs to model classes."""
import typing as tp

from .bsrnn import BSRNN
from .d3unet import D3UNet
from .demucs import Demucs
from .demucs_split import DemucsSplit
from .hdemucs import HDemucs
from .htdemucs import HTDemucs
from .mixer import Mixer
from .roformer import BSRoFormer, MelRoFormer
from .scnet import SCNet
from .tfc_tdf import TFCTDFNet
from .tfc_tdf_v1 import ConvTDFNet
from .unet import UNet
from .xumx import XUMX

MODELS: tp.Dict[str, type] = {
    'demucs': Demucs,   # time-domain Demucs v3 (MDX21 Track A)
    'demucs_split': DemucsSplit,   # Demucs with one decoder per source (danna, MDX21)
    'd3unet': D3UNet,   # D3Net U-Net with local attention (danna, MDX21)
    'hdemucs': HDemucs,
    'htdemucs': HTDemucs,
    'tfc_tdf': TFCTDFNet,
    'tfc_tdf_v1': ConvTDFNet,  # KUIELab's MDX21 TFC-TDF U-Net (one model per source)
    'xumx': XUMX,   # xumx.bridge=false: Open-Unmix
    'bsrnn': BSRNN,
    'bs_roformer': BSRoFormer,
    'mel_roformer': MelRoFormer,
    'mixer': Mixer,
    'unet': UNet,   # Spleeter's U-Net
    'scnet': SCNet,
}


def get_model_class(name: str) -> type:
    """Return the model class registered as `name`."""
    try:
        return MODELS[name]
    except KeyError:
        known = ', '.join(sorted(MODELS))
        raise ValueError(f"Unknown model {name!r}, known models: {known}.") from None
