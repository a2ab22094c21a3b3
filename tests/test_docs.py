"""The docs site: generated references match the code, the strict build catches broken links, every command and
benchmark has its page, every error class is in Troubleshooting, the README stays short, `agentlab --help` fits on a
screen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentlab.cli import docs as docsgen
from agentlab.cli.commands import COMMANDS, schemas

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_generated_references_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert docsgen.main(["--check"]) == 0, capsys.readouterr().err


def test_a_stale_reference_fails_and_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS / "reference", docs / "reference")
    page = docs / "reference" / "config" / "nas.md"
    page.write_text(page.read_text(encoding="utf-8").replace("forecast horizon", "forecast horizon (old)"))
    assert docsgen.main(["--docs", str(docs), "--check"]) == 1
    err = capsys.readouterr().err
    assert "reference/config/nas.md" in err and "make docs-ref" in err
    assert docsgen.main(["--docs", str(docs)]) == 0  # regenerating makes it current again
    assert docsgen.main(["--docs", str(docs), "--check"]) == 0


def test_config_reference_lists_every_field() -> None:
    text = (DOCS / "reference" / "config" / "nas.md").read_text(encoding="utf-8")
    for key in ("data.pred_len", "model.d_model", "search.planner", "train.learning_rate"):
        assert f"| `{key}` |" in text


def _mkdocs(config: Path) -> subprocess.CompletedProcess[str]:
    # Not -q: it raises mkdocs' log level past WARNING, and --strict counts only the warnings that are logged.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "--site-dir", str(config.parent / "site")], capture_output=True, text=True, timeout=240,
                          env=env)


def _site_copy(tmp_path: Path) -> Path:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    return tmp_path / "mkdocs.yml"


def test_strict_build_passes_and_a_broken_link_fails_it(tmp_path: Path) -> None:
    config = _site_copy(tmp_path)
    built = _mkdocs(config)
    assert built.returncode == 0, built.stderr[-3000:]
    page = tmp_path / "docs" / "commands" / "nas.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [the old page](no-such-page.md).\n", encoding="utf-8")
    broken = _mkdocs(config)
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stderr


def _nav_text() -> str:
    return (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_command_has_its_page(command: str) -> None:
    page = DOCS / "commands" / f"{command}.md"
    assert page.is_file(), f"docs/commands/{command}.md is missing"
    assert f"commands/{command}.md" in _nav_text()
    text = page.read_text(encoding="utf-8")
    if command in schemas():  # the generated reference of every field is on the page
        assert f'--8<-- "reference/config/{command}.md"' in text
    if command not in ("config", "models", "ui"):
        assert "## Measured results" in text


@pytest.mark.parametrize("script", sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")))
def test_every_benchmark_has_its_page(script: str) -> None:
    page = DOCS / "benchmarks" / f"{script}.md"
    assert page.is_file(), f"docs/benchmarks/{script}.md is missing"
    assert f"benchmarks/{script}.md" in _nav_text()
    assert f"{script}.md" in (DOCS / "benchmarks" / "index.md").read_text(encoding="utf-8")


def _error_classes() -> list[str]:
    import importlib
    import pkgutil

    import agentlab
    from agentlab.core.errors import AgentlabError, MissingPackage

    for module in pkgutil.walk_packages(agentlab.__path__, "agentlab."):
        if module.name.endswith("__main__") or module.name.startswith(("agentlab.ui.pages", "agentlab.ui.app",
                                                                         "agentlab.testing")):
            continue
        try:
            importlib.import_module(module.name)
        except (ImportError, MissingPackage):  # agentlab.integrations.* say which extra is missing
            continue
    found: list[str] = []
    queue = [AgentlabError]
    while queue:
        cls = queue.pop()
        found.append(cls.__name__)
        queue.extend(cls.__subclasses__())
    return sorted(set(found))


def test_troubleshooting_names_every_error_class() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    missing = [name for name in _error_classes() if f"`{name}`" not in text]
    assert not missing, f"docs/troubleshooting.md does not explain: {', '.join(missing)}"


def test_readme_is_short_and_links_the_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for command in COMMANDS:
        assert f"docs/commands/{command.name}.md" in text, f"README does not link {command.name}'s page"


def test_root_help_fits_on_one_screen() -> None:
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    out = subprocess.run([sys.executable, "-m", "agentlab", "--help"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert len(lines) <= 40, out.stdout
    for command in COMMANDS:  # one line each: the name and its first sentence, nothing wrapped under it
        row = next(i for i, line in enumerate(lines) if line.strip("│ ").startswith(command.name + " "))
        following = lines[row + 1].strip("│ ╰─╯")
        assert not following or following.split()[0] in {c.name for c in COMMANDS}, (command.name, lines[row + 1])


def _install_section() -> str:
    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    return text[text.index("## Install"):text.index("### Docker")]


def test_the_install_docs_name_the_pythons_the_lock_covers() -> None:
    """getting-started said "Python 3.11 or newer", but every pin of the lock carries python_full_version < '3.13':
    on 3.13 the constraints silently do not apply (torch 2.15 instead of 2.13)."""
    import tomllib

    environments = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["uv"]["environments"]
    assert all("python_version < '3.13'" in env for env in environments)
    install = " ".join(_install_section().split())
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for text in (install, readme):
        assert "3.11 or 3.12" in text and "or newer" not in text
    assert "python_full_version < '3.13'" in install and "3.13" in install


def test_the_install_docs_match_the_makefile_and_the_extras() -> None:
    """`make install`'s extras were given as all,smollm,dev (the Makefile's default has qwen too), and the list of
    extras left out qwen, demo, plot, crewai and dev: every extra of pyproject.toml is named, and the default."""
    import re
    import tomllib

    import agentlab

    install = _install_section()
    default = re.search(r"^EXTRAS \?= (\S+)", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert default is not None and f"`{default.group(1)}`" in install
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    listed = install[install.index("The extras are"):]
    assert not [name for name in extras if f"`{name}`" not in listed]
    wheel = f"dist/agentlab-{agentlab.__version__}-py3-none-any.whl"  # `uv build` writes it there
    [command] = [line for line in install.splitlines() if line.startswith("uv pip install ")]
    installed = re.search(re.escape(wheel) + r"\[([a-z,]+)\]", command)
    assert installed is not None, command
    [export] = [line for line in install.splitlines() if line.startswith("uv export ")]
    assert set(re.findall(r"--extra (\w+)", export)) == set(installed.group(1).split(",")) >= {"all", "smollm", "qwen"}
    assert "--excludes" in command and "echo llm > exclude.txt" in install  # the `llm` CLI the lock leaves out
    assert "CMAKE_ARGS=-DGGML_NATIVE=OFF" in install and "CMAKE_ARGS ?= -DGGML_NATIVE=OFF" in (
        ROOT / "Makefile").read_text(encoding="utf-8")
    # PyPI's agentlab is ServiceNow's AgentLab: never installed from there, an extra added pinned to this version
    assert "never `pip install agentlab` from PyPI" in " ".join(install.split())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for text in (install, readme):
        assert f"pip install 'agentlab[qwen]=={agentlab.__version__}'" in text
        assert not re.search(r"'agentlab\[[^\]]*\]'", text), "an unpinned `pip install 'agentlab[X]'`"
