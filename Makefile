# crossvis — set-up, demo, tests and the paper's tables.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
TABLES := table1 table2 table3 table6 table7 table8

.PHONY: install demo peer test test-slow clean $(TABLES)

# Creates the venv and installs the package editable with its dev extra; a no-op when done.
install: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Synthetic data → train a small CrossVIS on CPU → online evaluation → overlay video.
demo: install
	$(PY) -m crossvis.quickstart $(ARGS)

# The yardstick of issue 15: torchvision Mask R-CNN R-18-FPN from scratch, same data and budget in frames,
# scored by our metric, e.g. make peer ARGS="data.root=demo_output/data"
peer: install
	$(PY) scripts/peer_baseline.py $(ARGS)

# The fast suite (CI); the long end-to-end tests are marked slow.
test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# The paper's tables as Hydra multi-runs; ARGS adds overrides, e.g. a CPU smoke run:
#   make table6 ARGS="data=synthetic data.root=DIR model=cpu trainer.max_steps=20"
# Collect a finished sweep with: python -m crossvis.tables multirun/table6/<date>
$(TABLES): install
	$(PY) -m crossvis.train -m experiment=$@ $(ARGS)

clean:
	rm -rf outputs multirun demo_output
