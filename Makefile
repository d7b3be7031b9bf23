# ctrflow developer commands. Both quick-start targets set themselves up on a fresh clone:
#   make run    end-to-end pipeline on the embedded default data (Prefect flow, ephemeral server)
#   make test   the test suite (what .ci/run calls)
# The virtualenv is (re)built whenever pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ctrflow-installed

# Offline-safe tool settings (shared/design/toolchain.md). flows/_env.py applies the same defaults
# for anyone calling the CLI or flows directly.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export GX_ANALYTICS_ENABLED := False
export DVC_NO_ANALYTICS := 1

.PHONY: setup run test test-kill lint bench-preprocess bench-inference bench-peers repro server server-stop deploy worker nightly-now clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/ctrflow run

test: $(STAMP)
	$(BIN)/python -m pytest

test-kill: $(STAMP)   ## the full kill -9 chain: a SIGKILL inside every stage, then a rerun (tests/test_kill_rerun.py)
	$(BIN)/python -m pytest -m killchain tests/test_kill_rerun.py

lint: $(STAMP)
	$(BIN)/ruff check .

repro: $(STAMP)   ## dvc repro holding the run lock (components/runlock.py) for the whole repro
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m components.runlock dvc repro

bench-preprocess: $(STAMP)
	$(BIN)/python benchmarks/preprocess.py

bench-inference: $(STAMP)   ## students vs teacher vs DeepCTR-Torch inference speed (installs the [bench] extra)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/inference.py

bench-peers: $(STAMP)   ## ctrflow vs DeepCTR-Torch 0.3.0 training (AUC, samples/s) on the shared data (installs the [bench] extra)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/peers.py

server: $(STAMP)   ## a real Prefect server + UI on http://127.0.0.1:4200 (for schedules and watching runs)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 --background
	$(BIN)/python -m flows.wait_for_server http://127.0.0.1:4200/api 180
	@echo "export PREFECT_API_URL=http://127.0.0.1:4200/api   # then: make run, or ctrflow serve"

server-stop: $(STAMP)
	$(BIN)/prefect server stop

# The nightly deployment (prefect.yaml) on the server above; a PREFECT_API_URL you exported wins.
API_URL ?= $(or $(PREFECT_API_URL),http://127.0.0.1:4200/api)
POOL    := ctrflow-local

deploy: $(STAMP)   ## the process work pool + `prefect deploy` of prefect.yaml (needs `make server`)
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect work-pool create $(POOL) --type process --overwrite
	cd $(CURDIR) && PWD=$(CURDIR) PREFECT_API_URL=$(API_URL) $(BIN)/prefect --no-prompt deploy --all

worker: $(STAMP)   ## a worker of the pool: runs each scheduled or triggered flow run (stop with Ctrl-C)
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect worker start --pool $(POOL)

nightly-now: $(STAMP)   ## a run of the nightly deployment now, instead of at 03:00 UTC (a worker runs it)
	PREFECT_API_URL=$(API_URL) $(BIN)/prefect deployment run ctrflow-pipeline/nightly

clean:
	rm -rf $(VENV) .prefect
