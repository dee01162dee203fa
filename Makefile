# Stoix: `make train` installs everything and trains the default agent; `make test` runs the
# fast test suite. Both work on a fresh machine with only Python 3.11 and pip.
PYTHON ?= python3
VENV_PY := .venv/bin/python
# uv is bootstrapped with pip when it is not on PATH, then run as a module.
UV := $(shell command -v uv >/dev/null 2>&1 && echo uv || echo "$(PYTHON) -m uv")

.PHONY: install train test test-slow test-learning benchmark benchmark-sebulba benchmark-adapters plot results lint clean

install: .venv/.installed

.venv/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode
	$(VENV_PY) -m compileall -q stoix tests launcher.py >/dev/null
	@touch $@

train: install
	$(VENV_PY) stoix/systems/ppo/anakin/ff_ppo.py

# --dist worksteal: an idle worker takes queued tests from the busy one, so the long environment
# configs do not leave one core idle at the end (full suite 705 s -> 579 s on 2 cores).
test: install
	$(VENV_PY) -m pytest -n 2 --dist worksteal -q --durations=20

test-slow: install
	$(VENV_PY) -m pytest -n 2 --dist worksteal -q -m slow

test-learning: install
	$(VENV_PY) -m pytest -m learning -p no:xdist -q -s

benchmark: install
	$(VENV_PY) -m stoix.benchmarks.anakin

benchmark-sebulba: install
	$(VENV_PY) -m stoix.benchmarks.sebulba

# Each JAX suite's own stepping beside the same task through Stoix's wrappers: make benchmark-adapters SUITES=gymnax,jumanji
SUITES ?= gymnax,jumanji,brax,xminigrid,navix,craftax,popgym_arcade
benchmark-adapters: install
	$(VENV_PY) -m stoix.benchmarks.adapters --suites $(SUITES)

# Aggregate plots and tables of the JSON logs: make plot RESULTS=results/json PLOTS=plots
RESULTS ?= results/json
PLOTS ?= plots
plot: install
	$(VENV_PY) -m stoix.plot $(RESULTS) --out $(PLOTS)

# Train every results row on SEEDS seeds and rewrite docs/results.md and docs/images/ (hours
# on a CPU): make results SEEDS=5 ONLY=ff_ppo,ff_dqn
SEEDS ?= 5
ONLY ?=
results: install
	$(VENV_PY) -m stoix.results --seeds $(SEEDS) --only "$(ONLY)"

lint: install
	$(VENV_PY) -m ruff check stoix tests launcher.py

clean:
	rm -rf .venv results outputs multirun .pytest_cache
