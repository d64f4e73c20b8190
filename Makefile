# One command to set up a fresh machine, one to test, one to demo.
# Every target is idempotent: a second `make setup` does nothing.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
KENLM_BINS := .venv/bin/lmplz .venv/bin/build_binary
APT_STAMP := .venv/.apt-ok

# Debian packages: KenLM build deps, text-to-speech voices for the synthetic corpus,
# sox for channel effects, wordnet for the offline text source, libsndfile for soundfile,
# tcmalloc for the `asr` command (asr/malloc.py: glibc's malloc grows and slows training),
# Chromium and its driver for the browser test of `asr serve`'s page, DejaVu fonts for OCR.
APT_PACKAGES := cmake build-essential libboost-program-options-dev libboost-system-dev \
	libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev \
	espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	sox wordnet-base libsndfile1 libtcmalloc-minimal4 \
	chromium chromium-driver fonts-dejavu-core

.PHONY: setup test test-fast test-cuda cuda-wheels demo demo-streaming bench lint format clean

setup: $(APT_STAMP) $(VENV_STAMP) $(KENLM_BINS)

$(APT_STAMP): Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@mkdir -p .venv && touch $@

.venv/bin/python:
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip

$(VENV_STAMP): pyproject.toml | .venv/bin/python $(APT_STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# KenLM's command-line tools (lmplz, build_binary) come from the same source package
# as the Python module; they are not in any wheel, so we build them with cmake.
$(KENLM_BINS) &: | .venv/bin/python $(APT_STAMP)
	@set -e; tmp=$$(mktemp -d); \
	$(PY) -m pip download -q --no-binary=kenlm --no-deps -d $$tmp kenlm==0.3.0; \
	tar -xzf $$tmp/kenlm-*.tar.gz -C $$tmp; \
	src=$$(find $$tmp -maxdepth 1 -type d -name 'kenlm*' | head -1); \
	cmake -S $$src -B $$tmp/build -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >/dev/null; \
	cmake --build $$tmp/build -j$$(nproc) --target lmplz build_binary >/dev/null; \
	cp $$tmp/build/bin/lmplz $$tmp/build/bin/build_binary .venv/bin/; \
	rm -rf $$tmp; echo "built .venv/bin/lmplz and .venv/bin/build_binary"

test: setup
	.venv/bin/ruff check asr tests tools
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# On a machine with a CUDA device: the tests marked cuda (skipped elsewhere), then
# our CTC loss against torch's on the card, CUDA graphs on and off (the budget for
# choosing between them is in conf/librispeech/ds2_1gpu.yaml, at ctc_impl).
# Everything only a CUDA GPU can confirm, with a summary table last (tools/cuda_check.py);
# without a GPU it says so and exits 0. No set-up: on a GPU machine that reaches no
# package registry, `make test-cuda PYTHON=python3` uses that machine's Python (with
# its PyTorch and Lightning), the source tree on the path and the wheels of
# `make cuda-wheels` in .whl/ for the rest.
PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
test-cuda:
	PYTHONPATH=$(CURDIR) $(PYTHON) tools/cuda_check.py

# What the CUDA checks need beyond torch, lightning and numpy, for a GPU machine
# without a registry: manylinux x86-64 wheels for Python 3.11-3.13, into .whl/.
CUDA_WHEELS := soundfile cffi pycparser soxr rapidfuzz pytest pytest-timeout iniconfig pluggy packaging
cuda-wheels: | .venv/bin/python
	@for v in 3.11 3.12 3.13; do \
	  $(PY) -m pip download -q --only-binary=:all: --no-deps -d .whl \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 --python-version $$v --implementation cp \
	    $(CUDA_WHEELS) || exit 1; \
	done; ls .whl

# The main job on the offline default: generate speech, train, evaluate on held-out
# voices; ends with the test WER/CER and leaves the model at exp/demo/model.ckpt.
demo: setup
	PYTHON=$(PY) bash recipes/synthetic/run.sh

# The streaming model (unidirectional, lookahead, global feature statistics) on the
# demo's corpus, manifests and LM in data/synthetic (made once: the stages already
# done are skipped); leaves exp/streaming/model.ckpt for `asr stream`.
demo-streaming: setup
	PYTHON=$(PY) bash recipes/synthetic/run.sh --config conf/synthetic/streaming.yaml \
		--exp exp/streaming

# The decoding bench needs a trained model and its data: `make demo` makes them.
BENCH_CKPT ?= exp/demo/model.ckpt
BENCH_MANIFEST ?= data/synthetic/test.jsonl
BENCH_LM ?= data/synthetic/lm.bin
BENCH_STAMP := .venv/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(VENV_STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: setup $(BENCH_STAMP)
	$(PY) tools/bench_ctc.py
	$(PY) tools/bench_rnn.py
	$(PY) tools/bench_decode.py --checkpoint $(BENCH_CKPT) --manifest $(BENCH_MANIFEST) \
		--lm $(BENCH_LM) --limit 200 --rounds 5

lint: setup
	.venv/bin/ruff check asr tests tools
	.venv/bin/ruff format --check asr tests tools

format: setup
	.venv/bin/ruff format asr tests tools
	.venv/bin/ruff check --fix asr tests tools

clean:
	rm -rf .venv .pytest_cache build *.egg-info
