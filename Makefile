# gantune: set-up, tests, demo and benchmarks. Every target installs first, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.gantune-installed
# CPU threads for tests and demo (these machines have 2 cores)
export OMP_NUM_THREADS ?= 2

.PHONY: install test test-all demo demo-model bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch + torchvision pinned: on the project machines pip takes these from local files
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	# synthetic training faces (a 64x64 DCGAN); its declared wandb/matplotlib are not needed
	$(BIN)/python -m pip install -q --no-deps gan-face-generate
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q -m "not slow and not real_weights"

test-all: install
	$(BIN)/python -m pytest -q -m "not real_weights"

demo: install
	$(BIN)/python -m gantune.demo --out out/demo

# Train the built-in demo-faces model from nothing (hours on CPU; resumes where it stopped) and publish its files
# into gantune/data/demo-faces + weights.toml. The exact commands: python -m gantune.demo_model recipe
demo-model: install
	$(BIN)/python -m gantune.demo_model train

bench: install
	$(BIN)/python -m gantune.bench

lint: install
	$(BIN)/python -m compileall -q gantune tests
	$(BIN)/python -m pyflakes gantune tests

clean:
	rm -rf $(VENV) out .pytest_cache
