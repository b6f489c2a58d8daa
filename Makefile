# defectforge: `make demo` and `make test` each build .venv on first use (pip only:
# torch 2.14.1 / torchvision 0.29.1 come from the local wheels) and reuse it afterwards.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-installed
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[test,diffusion,yolox,studio,dist,search]"
	$(BIN)/python -m pip install -q --no-deps yolox-datamint==0.3.1
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/defectforge demo --out $(DEMO_OUT)

# test files run side by side, one process per logical CPU, at most 4 (pytest-xdist; one file stays in one process, so its
# module fixtures, e.g. a Ray cluster, are built once); PYTEST_ARGS="-n 0" runs them one after another
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n logical --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

bench: bench-data bench-metrics bench-exdd bench-scale bench-synth2d bench-diffusion bench-synth3d bench-detect3d bench-studio
	$(BIN)/python bench/collect.py

# bench-NAME runs bench/bench_NAME.py (each writes docs/bench/NAME.md)
bench-%: $(STAMP)
	$(BIN)/python bench/bench_$*.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build dist src/*.egg-info
