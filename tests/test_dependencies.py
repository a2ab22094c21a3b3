"""Every third-party package the code imports is declared in pyproject.toml (a dependency or an extra), and every
optional one maps to the extra that installs it, so a missing package is one line naming the pip command of that
extra, pinned to the installed agentlab (PyPI's `agentlab` is another project).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import agentlab
from agentlab.core.errors import OPTIONAL_PACKAGES, missing_package, pip_install

REPO = Path(__file__).resolve().parents[1]
# importable with no extra
CORE = {"typer", "rich", "yaml", "pydantic", "httpx", "certifi", "dotenv", "psutil", "tomlkit"}
GUARDED = {"uvloop"}  # imported under `except ImportError` with a fallback: never required


def _imports() -> set[str]:
    names: set[str] = set()
    for folder in ("agentlab", "cli"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("agentlab", "__future__", *GUARDED)}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    return names(project["dependencies"]), {k: names(v) for k, v in project["optional-dependencies"].items()}


def test_every_imported_package_is_declared() -> None:
    core, extras = _declared()
    declared = core | set().union(*extras.values())
    by_module = metadata.packages_distributions()
    missing = []
    for module in sorted(_imports()):
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} ({', '.join(sorted(dists))})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_core_imports_need_no_extra_and_optional_ones_name_their_extra() -> None:
    core, extras = _declared()
    by_module = metadata.packages_distributions()
    for module in sorted(_imports()):
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [module])}
        if dists & core:
            assert module in CORE, f"{module} is a core dependency but not listed in CORE"
            continue
        extra = OPTIONAL_PACKAGES.get(module)
        assert extra is not None, f"{module} is optional but OPTIONAL_PACKAGES does not name its extra"
        assert dists & extras[extra], f"{module}: OPTIONAL_PACKAGES says extra '{extra}', which does not install it"


# A command asking for `pip install 'agentlab[X]'`, unpinned: with -U, or where this agentlab is not installed, pip puts
# PyPI's unrelated `agentlab` (ServiceNow's AgentLab, 0.3.0-0.4.2, the same import name) in its place.
UNPINNED = re.compile(r"'agentlab\[[^\n]*?\]'")


def test_the_pip_hint_of_an_extra_pins_the_installed_agentlab() -> None:
    assert agentlab.__version__ != "0+unknown"  # the tests run on an installed (editable) agentlab
    assert pip_install("ml") == f"pip install 'agentlab[ml]=={agentlab.__version__}'"
    error = missing_package(ImportError("No module named 'optuna'", name="optuna"))
    assert error is not None and error.hint == pip_install("ml")


def test_the_pip_hint_from_a_checkout_that_is_not_installed_has_no_version_to_pin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `pip install 'agentlab[ui]==0+unknown'`, which no index has."""
    monkeypatch.setattr(agentlab, "__version__", "0+unknown")
    assert pip_install("ui") == "pip install -e '.[ui]' (from the checkout)"


def test_no_hint_names_an_extra_without_the_version() -> None:
    found = {}
    for folder in ("agentlab", "cli"):
        for path in (REPO / folder).rglob("*.py"):
            where = str(path.relative_to(REPO))
            lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                     if UNPINNED.search(line)]
            if lines:
                found[where] = lines
    assert not found, f"unpinned `pip install 'agentlab[X]'` (build it with errors.pip_install): {found}"
