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
