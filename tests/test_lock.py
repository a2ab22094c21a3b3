"""uv.lock is the install: it matches pyproject.toml, and a change of a dependency without `make lock` is caught."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _check(uv: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([uv, "lock", "--check"], cwd=folder, capture_output=True, text=True, timeout=300)


def test_the_lock_matches_pyproject(uv: str) -> None:
    done = _check(uv, REPO)
    assert done.returncode == 0, f"uv.lock is stale: run `make lock` and commit it\n{done.stderr}"


def test_a_dependency_changed_without_make_lock_fails_the_check(tmp_path: Path, uv: str) -> None:
    for name in ("pyproject.toml", "setup.py", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert '"typer>=0.12"' in text
    pyproject.write_text(text.replace('"typer>=0.12"', '"typer>=0.12.1"'), encoding="utf-8")
    done = _check(uv, tmp_path)
    assert done.returncode != 0 and "needs to be updated" in done.stderr, done.stderr


def test_every_locked_package_has_a_hash() -> None:
    import tomllib

    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    unhashed = []
    for package in lock["package"]:
        if package.get("source", {}).get("editable") or package.get("source", {}).get("virtual"):
            continue  # the project itself
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        if not files or any("hash" not in f for f in files):
            unhashed.append(package["name"])
    assert not unhashed, f"locked without a hash: {unhashed}"
