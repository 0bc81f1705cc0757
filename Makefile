# qconvert: `make demo` installs everything and runs the main job; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.qconvert-installed
FIXTURE := tests/fixtures/tiny-qwen2
DEMO_DIR := build/demo

.PHONY: install llama-cpp demo test fuzz bench bench-quantize bench-gptq bench-awq bench-run bench-blockq peers asan-test fixture clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The CPU torch build first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(INSTALLED): $(PY) pyproject.toml setup.py $(wildcard native/*.c native/*.h)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,ray]'
	# Bytecode now, as a regular pip install writes it: with PYTHONDONTWRITEBYTECODE set, every
	# `qconvert quantize` would otherwise compile its modules again (13 ms of a 0.28 s run).
	$(PY) -m compileall -q qconvert
	touch $@

# llama.cpp tools from the llama-cpp-python sdist, built once and cached per version.
llama-cpp: $(PY)
	PYTHON=$(PY) bash scripts/build_llama_cpp.sh

install: $(INSTALLED) llama-cpp

# The bundled fixture's whole release (recipes/tiny-qwen2.toml): calibration, imatrix, GGUF types
# with and without it, GPTQ, AWQ, Ollama Modelfiles, evaluation and the report, under build/demo.
demo: install
	$(VENV)/bin/qconvert run recipes/tiny-qwen2.toml -o $(DEMO_DIR)

test: install
	$(PY) -m pytest -q --durations=30

# The readers' fuzz corpus at thousands of cases per input kind (the suite runs 300), with a CLI
# sample, then the README's table; another corpus with FUZZ_SEED=1, 2, ...
FUZZ_CASES ?= 3000
FUZZ_SEED ?= 0
fuzz: install
	QCONVERT_FUZZ_CASES=$(FUZZ_CASES) QCONVERT_FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest -q tests/fuzz/test_readers.py tests/fuzz/test_cli_sample.py
	$(PY) -m tests.fuzz.table build/fuzz

bench: bench-quantize bench-gptq bench-awq bench-run bench-blockq

# qconvert's quantizer against llama-quantize on this machine, on the bench model and a SmolLM2-shaped
# one: median times, peak RSS and their ratios for every type, and where the time goes.
bench-quantize: install
	$(PY) scripts/bench_quantize.py

# `qconvert run` on the fixture's matrix (recipes/tiny-qwen2-matrix.toml): the local executor against a
# local Ray instance with the same CPUs, per stage and for the whole run (Ray's overhead).
bench-run: install
	$(PY) scripts/bench_run.py

# GGUF files rounded with GPTQ inside the blocks (and the AWQ stack) against llama.cpp's imatrix route at
# the same types and sizes: KLD, same-top, perplexity on the fixtures; time and RSS on a SmolLM2 shape.
bench-blockq: install
	$(PY) scripts/bench_blockq.py

# GPTQModel and llm-compressor, each in its own venv (they pin other torch/transformers versions).
peers:
	PYTHON=$(PYTHON) bash scripts/peers/setup_peers.sh

# qconvert's GPTQ against GPTQModel and llm-compressor: seconds per layer, peak RSS, perplexity, KLD.
bench-gptq: install peers
	$(PY) scripts/bench_gptq.py

# qconvert's AWQ against llm-compressor's (patched to run on CPU); then the GGUF route with llama.cpp.
bench-awq: install peers
	$(PY) scripts/bench_awq.py

# The C quantizers under AddressSanitizer: a separate build of the extension, the kernel tests on it
# on every instruction-set path the CPU runs (tests/native, and the imatrix-weighted kernels against
# llama-quantize --imatrix), the file engine's (tests/quant/test_engine.py), and random calls into the
# binding (tests/fuzz/test_native_binding.py).
ASAN_DIR := build/asan
ASAN_TESTS := tests/native tests/quant/test_weighted_kernels.py tests/quant/test_engine.py tests/fuzz/test_native_binding.py tests/blockq/test_solve.py \
	tests/gptq/test_hessian.py
asan-test: install
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)/tests/quant $(ASAN_DIR)/tests/fuzz $(ASAN_DIR)/tests/blockq $(ASAN_DIR)/tests/gptq $(ASAN_DIR)/$(FIXTURE)
	CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" LDFLAGS="-fsanitize=address" \
		$(PY) setup.py -q build_ext --build-lib $(ASAN_DIR) --build-temp $(ASAN_DIR)/tmp
	cp -r qconvert/*.py qconvert/*/ $(ASAN_DIR)/qconvert/
	cp -r tests/__init__.py tests/conftest.py tests/variants.py tests/native $(ASAN_DIR)/tests/
	cp tests/quant/__init__.py tests/quant/legacy_imatrix.py tests/quant/test_weighted_kernels.py tests/quant/test_engine.py \
		tests/quant/random_models.py tests/quant/gguf_compare.py $(ASAN_DIR)/tests/quant/
	cp tests/fuzz/__init__.py tests/fuzz/test_native_binding.py $(ASAN_DIR)/tests/fuzz/
	cp tests/blockq/__init__.py tests/blockq/test_solve.py $(ASAN_DIR)/tests/blockq/
	cp tests/gptq/__init__.py tests/gptq/test_hessian.py $(ASAN_DIR)/tests/gptq/
	# The random Llama of the weighted-kernel tests borrows the fixture's tokenizer.
	cp $(FIXTURE)/tokenizer*.json $(ASAN_DIR)/$(FIXTURE)/
	# Run from the copy, so that `qconvert` resolves to it and not to the editable install.
	cd $(ASAN_DIR) && LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
		../../$(PY) -c "import qconvert._native as n, sys; sys.exit(0 if n.__file__.startswith('$(CURDIR)/$(ASAN_DIR)') else 'not the ASan build: ' + n.__file__)" && \
		LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
		../../$(PY) -m pytest -q $(ASAN_TESTS) -p no:cacheprovider

# Re-train the committed fixture model from the bundled text (minutes of CPU time).
fixture: $(INSTALLED)
	$(PY) scripts/make_fixture_model.py -o $(FIXTURE)
	$(PY) scripts/make_fixture_model.py --arch llama

clean:
	rm -rf build $(VENV) *.egg-info qconvert/_native*.so
