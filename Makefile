# crossvis — set-up, demo, tests and the paper's tables.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
TABLES := table1 table2 table3 table6 table7 table8

help: ## this list
	@grep -E '^[^ :#]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^\$$\(TABLES\)/table1..8/' | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

.PHONY: help install demo bench peer test test-slow lint clean pretrain-coco $(TABLES)

# Creates the venv and installs the package editable with its dev extra; a no-op when done.
install: $(STAMP) ## create .venv and install the package (editable, dev extra)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Synthetic data → train a small CrossVIS on CPU → online evaluation → overlay video.
demo: install ## synthetic data -> train on CPU -> evaluate -> overlay video (ARGS=overrides)
	$(PY) -m crossvis.cli.quickstart $(ARGS)

# Speed in the paper's Table-5 layout (model-only and end-to-end FPS, stages, memory) on this
# machine; ARGS adds overrides, e.g. ARGS="device=cuda input.frames=200 rounds=3" on a GPU.
bench: install ## speed in the paper's Table-5 layout on this machine
	$(PY) -m crossvis.cli.benchmark 'compare=[maskrcnn,condinst]' $(ARGS)

# A yardstick: torchvision Mask R-CNN R-18-FPN from scratch, same data and budget in frames,
# scored by our metric, e.g. make peer ARGS="data.root=demo_output/data"
peer: install ## the yardstick: torchvision Mask R-CNN R-18-FPN, same data and budget
	$(PY) -m crossvis.baselines.peer $(ARGS)

# The fast suite (CI); the long end-to-end tests are marked slow.
test: install ## the fast test suite (what CI runs)
	$(PY) -m pytest -q

test-slow: install ## the long end-to-end tests (marked slow)
	$(PY) -m pytest -q -m slow

# ruff (settings in pyproject.toml): lint rules, then the formatter's check; `ruff format` fixes the latter.
lint: install ## ruff check and ruff format --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The paper's tables as Hydra multi-runs into SWEEP_DIR (default multirun/tableN/<date>; a
# hydra.sweep.dir= in ARGS counts as SWEEP_DIR), then collected into the paper's layout (local AP on
# the held-out training videos; OFFICIAL=scores.csv adds the server's scores). Runs resume from their
# checkpoints (resume=auto): the same command with the same SWEEP_DIR goes on after an interruption.
# A failed run does not stop the others; its cell says why. ARGS adds overrides, e.g. a CPU smoke run:
#   make table6 ARGS="data=synthetic data.root=DIR model=cpu model/backbone=regnetx_002 model.init_from=null trainer.max_steps=20"
NOW       := $(shell date +%Y-%m-%d_%H-%M-%S)
SWEEP_DIR ?=
OFFICIAL  ?=
sweep_dir  = $(or $(patsubst hydra.sweep.dir=%,%,$(filter hydra.sweep.dir=%,$(ARGS))),$(SWEEP_DIR),multirun/$@/$(NOW))
$(TABLES): install ## make table1 ... table8: a paper table as a Hydra sweep, collected
	$(PY) -m crossvis.cli.train -m experiment=$@ hydra.sweep.dir=$(sweep_dir) resume=auto $(filter-out hydra.sweep.dir=%,$(ARGS)); \
	status=$$?; $(PY) -m crossvis.cli.tables $(sweep_dir) --csv $(sweep_dir)/$@.csv $(if $(OFFICIAL),--official $(OFFICIAL)) \
		&& exit $$status

# Stage 1: CondInst on COCO (AdelaiDet MS R-50 1x), evaluated with COCO mask / box AP, e.g.
#   make pretrain-coco ARGS="data.root=datasets/coco trainer.devices=4"
pretrain-coco: install ## stage 1: CondInst on COCO (AdelaiDet MS R-50 1x)
	$(PY) -m crossvis.cli.train experiment=coco_condinst $(ARGS)

clean: ## remove outputs, multirun and demo_output
	rm -rf outputs multirun demo_output
