# make demo | make test | make bench — each does its own set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.trustlab-installed
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

# llama.cpp's OpenAI-compatible server for the real-server tests (specs/safety.md section 9), built from source with
# portable flags: the native build emits instructions some virtual CPUs advertise but trap on. pip's wheel cache
# ignores CMAKE_ARGS, hence --no-cache-dir. 6-12 minutes once on 2 cores; later runs reuse the installed package.
LLAMACPP_VERSION := 0.3.36
LLAMACPP_STAMP := $(VENV)/.llamacpp-$(LLAMACPP_VERSION)
LLAMACPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DLLAVA_BUILD=OFF

.PHONY: setup llamacpp gguf-converter demo-model chromium demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,net]'
	$(PIP) install --no-deps -r requirements-data.txt
	touch $(STAMP)

llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): $(STAMP)
	$(PY) -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$(LLAMACPP_VERSION)')" 2>/dev/null || \
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	$(PIP) install --no-cache-dir 'llama-cpp-python[server]==$(LLAMACPP_VERSION)'
	touch $@

# llama.cpp's HF-to-GGUF converter (convert_hf_to_gguf.py, conversion/, gguf-py/), which the wheel does not ship,
# unpacked from the same llama-cpp-python sdist for the fingerprint lab's GGUF theft path (trustlab.models.gguf).
GGUF_CONVERTER := $(VENV)/share/llama.cpp-$(LLAMACPP_VERSION)
GGUF_SRC := llama_cpp_python-$(LLAMACPP_VERSION)/vendor/llama.cpp

gguf-converter: $(GGUF_CONVERTER)/conversion/__init__.py

$(GGUF_CONVERTER)/conversion/__init__.py: $(STAMP)
	rm -rf $(GGUF_CONVERTER).tmp && mkdir -p $(GGUF_CONVERTER).tmp
	$(PIP) download --no-deps --no-binary :all: 'llama-cpp-python==$(LLAMACPP_VERSION)' -d $(GGUF_CONVERTER).tmp
	tar xzf $(GGUF_CONVERTER).tmp/llama_cpp_python-$(LLAMACPP_VERSION).tar.gz -C $(GGUF_CONVERTER).tmp \
	  --strip-components=3 $(addprefix $(GGUF_SRC)/,convert_hf_to_gguf.py conversion gguf-py)
	rm -f $(GGUF_CONVERTER).tmp/*.tar.gz && rm -rf $(GGUF_CONVERTER) && mv $(GGUF_CONVERTER).tmp $(GGUF_CONVERTER)

# The safety demo's stand-in model (requirements-data.txt installs its six weight-only wheels): assembled once into
# $$TRUSTLAB_CACHE and SHA-256 checked (trustlab.models.demo_gguf); a wrong digest stops here with one line.
demo-model: setup
	$(VENV)/bin/trustlab models prepare qwen2.5-coder-0.5b-instruct

# Debian's Chromium for the report page's real-browser test (tests/test_report_browser.py). apt needs root (or
# passwordless sudo); without either the test skips and says why.
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || (command -v sudo >/dev/null && sudo -n true 2>/dev/null && echo "sudo -n apt-get"))

chromium:
	@test -x /usr/bin/chromium || { [ -n "$(APT)" ] && \
	  { $(APT) install -y -q chromium >/dev/null 2>&1 || { $(APT) update -q >/dev/null 2>&1 && \
	    $(APT) install -y -q chromium >/dev/null 2>&1; }; } ; } || \
	  echo "note: could not install Debian chromium (needs root); the browser test will skip"

demo: setup llamacpp demo-model
	$(VENV)/bin/trustlab demo --out runs/demo

test: setup llamacpp gguf-converter demo-model chromium
	$(PY) -m pytest -q

BENCHES := benchmarks/cli_startup.py benchmarks/vfl_overhead.py benchmarks/certify/bench_smoothing.py \
	benchmarks/certify/bench_bounds.py benchmarks/certify/bench_adaptive.py benchmarks/certify/bench_autocast.py \
	benchmarks/safety/bench_generation.py benchmarks/safety/bench_openai.py benchmarks/safety/bench_metrics.py \
	benchmarks/safety/bench_judges.py benchmarks/fingerprint/bench_verify.py benchmarks/fingerprint/bench_embed.py \
	benchmarks/vfl/bench_dropin.py

bench: setup
	for f in $(BENCHES); do echo "== $$f" && $(PY) "$$f" || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
