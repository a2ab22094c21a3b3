"""The release artefacts: a wheel and an sdist built from this checkout carry every file the commands read at run time,
and the wheel, installed into a fresh virtual environment outside the checkout (by uv and by pip), runs as a user
would run it. The build and the installs use the lock (uv.lock) for every dependency.

The content checks run in the fast set; the installs are `slow` (CI runs them: .ci/run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

# One pytest-xdist worker takes them all (`--dist loadgroup`): the wheel is built once, and two `uv build`s never
# write setuptools' egg-info into the checkout at the same time.
pytestmark = pytest.mark.xdist_group("dist")

REPO = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
# Read at run time by the commands (data, bundled tasks, templates), the example configs and the example projects the
# docs name: every file git tracks under these folders (but a dotfile such as examples/code_agent/.gitignore) must be
# in the wheel.
DATA_ROOTS = {"agentlab": "agentlab", "cli": "agentlab/cli", "configs": "agentlab/configs",
              "examples": "agentlab/examples"}
# What an sdist needs beyond the packages to rebuild the same wheel and reinstall from the lock.
SDIST_EXTRA = ["pyproject.toml", "setup.py", "uv.lock", "README.md", "CHANGELOG.md", "Makefile"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{tail}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, uv: str) -> Path:
    """`uv build`: the sdist, then the wheel built from the sdist (so the sdist is proven complete)."""
    out = tmp_path_factory.mktemp("dist")
    _run([uv, "build", "--quiet", "--out-dir", str(out), str(REPO)], cwd=REPO)
    return out


def _tracked(folder: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [line for line in listed.splitlines() if line]


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob(f"agentlab-{VERSION}-py3-none-any.whl")
    return wheel


def test_the_wheel_carries_every_file_the_commands_read(dist: Path) -> None:
    names = set(zipfile.ZipFile(_wheel(dist)).namelist())
    expected = []
    for folder, installed in DATA_ROOTS.items():
        for path in _tracked(folder):
            if "/tests/" in path or path.endswith(".pyc") or path.rsplit("/", 1)[-1].startswith("."):
                continue
            expected.append(installed + path[len(folder):])
    assert len(expected) > 200, "git ls-files found too few files: is this a git checkout?"
    missing = sorted(name for name in expected if name not in names)
    assert not missing, f"tracked files missing from the wheel: {missing}"
    # the data the commands read, by kind, so a pattern dropped from package-data fails by name
    for sample in ("agentlab/train_persona/data/", "agentlab/core/skilldata/", "agentlab/core/harness/bundled/",
                   "agentlab/compress/data/", "agentlab/configs/llm.local.yaml", "agentlab/cli/commands.py",
                   "agentlab/examples/own_code/train.py", "agentlab/examples/config_py/config.py"):
        assert any(name.startswith(sample) for name in names), f"the wheel has nothing under {sample}"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))], "the wheel carries dev folders"


def test_the_wheel_metadata_tells_the_truth(dist: Path) -> None:
    wheel = zipfile.ZipFile(_wheel(dist))
    meta = wheel.read(f"agentlab-{VERSION}.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.11" in meta  # the tests and the code read tomllib; the lock covers 3.11 and 3.12
    assert f"Version: {VERSION}" in meta
    entry = wheel.read(f"agentlab-{VERSION}.dist-info/entry_points.txt").decode()
    assert "agentlab = agentlab.start:run" in entry


def test_the_sdist_rebuilds_the_release(dist: Path) -> None:
    (sdist,) = dist.glob(f"agentlab-{VERSION}.tar.gz")
    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    packaged = [name for folder in ("cli", "configs", "examples") for name in _tracked(folder)
                if not name.rsplit("/", 1)[-1].startswith(".")]  # examples/code_agent/.gitignore: a checkout's
    missing = [name for name in SDIST_EXTRA + packaged if name not in names]
    assert not missing, f"missing from the sdist: {missing}"


def _lock_constraints(uv: str, tmp: Path, *extras: str) -> Path:
    """The lock's versions for these extras, as a constraints file for pip and uv pip."""
    out = tmp / "constraints.txt"
    cmd = [uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--format", "requirements.txt",
           "--output-file", str(out), *[arg for extra in extras for arg in ("--extra", extra)]]
    _run(cmd, cwd=REPO)
    return out


def _user_env(venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "AGENTLAB_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), NO_COLOR="1", COLUMNS="120",
               MPLBACKEND="Agg")
    return env


def _check_cli(venv: Path, cwd: Path, env: dict[str, str]) -> None:
    agentlab = str(venv / "bin" / "agentlab")
    assert _run([agentlab, "--version"], cwd, env).strip() == f"agentlab {VERSION}"
    assert "nas" in _run([agentlab, "--help"], cwd, env)
    assert "max_iterations" in _run([agentlab, "config", "show", "nas"], cwd, env)
    # the package imports from the venv, not from this checkout
    code = "import agentlab.cli, agentlab; print(agentlab.__file__)"
    where = _run([str(venv / "bin" / "python"), "-c", code], cwd, env)
    assert str(REPO) not in where and str(venv) in where, where


@pytest.mark.slow
def test_the_wheel_installed_by_uv_runs_a_search(dist: Path, tmp_path: Path, uv: str) -> None:
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=tmp_path)
    constraints = _lock_constraints(uv, tmp_path, "ml")
    _run([uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--constraint", str(constraints),
          f"{_wheel(dist)}[ml]"], cwd=tmp_path)
    env = _user_env(venv, tmp_path)
    _check_cli(venv, work, env)
    out = _run([str(venv / "bin" / "agentlab"), "nas", "--max-iterations", "1", "--json"], work, env)
    result = json.loads(out)
    assert result["trials"] == 1 and result["states"] == {"complete": 1}, out[-2000:]
    assert list((work / "runs" / "nas").glob("*/results.json")), "no run folder under the working directory"
    # the example configs the docs name, written out for a user who has no checkout
    _run([str(venv / "bin" / "agentlab"), "config", "examples"], work, env)
    assert (work / "configs" / "llm.local.yaml").read_text() == (REPO / "configs" / "llm.local.yaml").read_text()


@pytest.mark.slow
def test_the_wheel_installed_by_pip_runs(dist: Path, tmp_path: Path, uv: str) -> None:
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    # pip with the user's HOME (its cache) but not PYTHONPATH: a checkout there has an egg-info (uv build writes
    # one) that pip takes for agentlab installed, and then installs nothing
    pip_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=pip_env)
    constraints = _lock_constraints(uv, tmp_path)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--constraint", str(constraints),
          str(_wheel(dist))], cwd=tmp_path, env=pip_env)
    env = _user_env(venv, tmp_path)
    _check_cli(venv, work, env)
    # no extra installed: every command's config schema still loads (a command that runs names its missing extra)
    for command in ("compress", "train-persona", "debate", "evolve", "eval", "pipeline", "llm-bench", "serve", "llm"):
        assert "# agentlab" in _run([str(venv / "bin" / "agentlab"), "config", "show", command], work, env)
    done = subprocess.run([str(venv / "bin" / "agentlab"), "nas", "--max-iterations", "1"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and f"pip install 'agentlab[ml]=={VERSION}'" in done.stderr, done.stderr[-2000:]
    # then the extra it names, at the lock's versions: the search runs
    constraints = _lock_constraints(uv, tmp_path, "ml")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--constraint", str(constraints),
          f"{_wheel(dist)}[ml]"], cwd=tmp_path, env=pip_env)
    out = _run([str(venv / "bin" / "agentlab"), "nas", "--max-iterations", "1", "--json"], work, env)
    assert json.loads(out)["states"] == {"complete": 1}, out[-2000:]
