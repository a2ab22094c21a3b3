"""Every shell example that the docs (and the README) mark runnable is run, as doctest runs a docstring's examples.

A page marks a ```bash block runnable with the line `<!-- runnable -->` just above it (about a minute or less on
2 CPU cores, in the default test set) or `<!-- runnable: slow -->` (longer: `pytest -m slow`). The block runs as one
bash script with `set -e` in a fresh folder that holds `configs` and `examples` (the repository's) and sees the shared
data at `../shared/data`, the way a user runs the examples from a checkout; the shared data files (ETTh1.csv) are also
in the folder, as a user who followed the docs' download line has them (the examples download only a file that is
missing, and the tests run offline). A doc example that stopped working fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = re.compile(r"^<!-- runnable(?::\s*(slow))? -->\s*\n```(?:bash|sh|console)\s*\n(.*?)^```", re.M | re.S)


def runnable_blocks() -> list[tuple[str, str, bool]]:
    """(where, script, slow) for every marked block of docs/**/*.md and README.md."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for match in MARK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{page.relative_to(ROOT)}:{line}", match.group(2), match.group(1) == "slow"))
    return blocks


def _params() -> list[object]:
    return [pytest.param(script, id=where, marks=[pytest.mark.slow, pytest.mark.timeout(1200)] if slow else [])
            for where, script, slow in runnable_blocks()]


def test_the_docs_mark_examples_runnable() -> None:
    blocks = runnable_blocks()
    assert len(blocks) >= 10
    assert any(not slow for _, _, slow in blocks)


@pytest.mark.parametrize("script", _params())
def test_runnable_example(script: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    # the example projects, as a checkout has them (`nas -c examples/config_py/nas.yaml`); copied, not linked: a
    # search of one makes git worktrees of the repository it lies in
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    shared = next((d for d in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")
                   if d.is_dir()), None)  # beside the checkout (or beside a worktree's folder)
    if shared is not None:
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(shared)
        for data in shared.glob("*.csv"):
            (work / data.name).symlink_to(data)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "120", "AGENTLAB_DEBUG": "1"}
    env.pop("AGENTLAB_RUNS", None)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"exit {done.returncode}\n--- script\n{script}\n--- stdout\n{done.stdout[-3000:]}" \
                                 f"\n--- stderr\n{done.stderr[-5000:]}"
