"""A full disk under a run: one line naming the path (exit 1, no traceback), run.json `interrupted`, no torn file
left behind, and `--resume` with the same budget finishes every trial.

The run folder is on a real small tmpfs (``mount -t tmpfs``: root only; skipped otherwise). The disk is filled at a
chosen point of the run (the write of the checkpoint, a plot, the state file, the study's SQLite commit) by a filler
file grown until the kernel says ENOSPC; the write that follows then fails for real.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main

pytest.importorskip("optuna")


class SmallDisk:
    """A tmpfs of ``size`` mounted at ``root``; ``fill()`` takes every free byte, ``free()`` gives them back."""

    def __init__(self, root: Path):
        self.root, self.filler = root, root / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as handle:
            for chunk in (1 << 16, 4096, 1):
                with contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * chunk)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "small"
    root.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(root)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill_at(monkeypatch: pytest.MonkeyPatch, disk: SmallDisk, name: str, nth: int, after: bool = False) -> None:
    """Fill the disk when the ``nth`` atomic write of a file called ``name`` starts (``after``: once it landed)."""
    seen = {"n": 0}
    real_mkstemp, real_replace = tempfile.mkstemp, os.replace

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] == nth

    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        if not after and str(kwargs.get("prefix", "")).startswith(f".{name}.") and hit():
            disk.fill()
        return real_mkstemp(*args, **kwargs)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        if after and Path(dst).name == name and hit():
            disk.fill()

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "replace", replace)


def assert_nothing_torn(run: Path) -> None:
    """Every file of the run folder whole: JSON parses, PNGs end with IEND, checkpoints load, no temp file left."""
    from safetensors import safe_open

    for path in run.rglob("*"):
        if not path.is_file():
            continue
        assert not path.name.endswith(".tmp"), f"{path}: a temp file left behind"
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".png":
            assert path.read_bytes()[-8:-4] == b"IEND", f"{path}: a truncated PNG"
        elif path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                list(handle.keys())


def one_error_line(err: str, *says: str) -> None:
    text = " ".join(err.split())
    assert "Traceback" not in err and "internal error" not in text
    assert text.count("error:") == 1, err
    for s in says:
        assert s in text, err


NAS = {"data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
       "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
       "train": {"epochs": 1, "max_train_batches": 3},
       "search": {"planner": "tpe", "pruner": "none",
                  "space": {"model.d_model": {"choices": [16, 32]}, "model.n_heads": {"choices": [1, 2]},
                            "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}}}


@pytest.mark.parametrize("point, name, nth, after, path", [
    ("checkpoint", "best_model.safetensors", 2, False, "best_model.safetensors"),
    # predictions.json: a trial's last file, then the study commit (the 2nd and 3rd: the naive references', made
    # after trial 0; a full disk there stops the run too, not a warning and a reference left out)
    ("study", "predictions.json", 4, True, "study.db"),
    ("naive", "predictions.json", 2, True, "naive_seasonal"),
    ("state", "agent_state.json", 2, False, "agent_state.json"),
    ("plot", "optimization_history.png", 1, False, "optimization_history.png"),
])
def test_nas_full_disk_stops_with_one_line_and_resume_finishes(point: str, name: str, nth: int, after: bool,
                                                               path: str, disk: SmallDisk, in_tmp: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    import yaml

    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump(NAS))
    run = disk.root / "RUN"
    args = ["nas", "-c", "tiny.yaml", "--max-iterations", "3", "--out", str(run)]
    with monkeypatch.context() as patch:
        fill_at(patch, disk, name, nth, after)
        code = main(args)
    disk.free()
    err = capsys.readouterr().err
    one_error_line(err, path, "no space left on device (ENOSPC)", "--resume")
    assert "goes without it" not in err  # a full disk is no reason to leave a naive reference out
    assert code == 1
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and "ENOSPC" in info["error"]
    assert_nothing_torn(run)

    assert main(["nas", "--resume", str(run), "--max-iterations", "3"]) == 0
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    runs = json.loads((run / "agent_state.json").read_text())["runs"]
    counted = [r for r in runs if r["counted"]]
    assert len(counted) == 3 and all(r["state"] == "complete" for r in counted), runs
    assert all(r["state"] == "interrupted" for r in runs if not r["counted"])
    if point in ("checkpoint", "study"):  # the trial the disk stopped went back to the queue whole (its number and
        # params) and ran again once: no second record of it, no trial more than the budget
        assert [r["trial"] for r in runs] == [0, 1, 2], runs
    assert_nothing_torn(run)


def fill_on_call(monkeypatch: pytest.MonkeyPatch, disk: SmallDisk, module: Any, attr: str, nth: int) -> None:
    real: Callable[..., Any] = getattr(module, attr)
    seen = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        seen["n"] += 1
        if seen["n"] == nth:
            disk.fill()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, attr, wrapped)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("point", ["checkpoint", "state", "log", "plot"])
def test_compress_full_disk_stops_with_one_line_and_resume_finishes(point: str, disk: SmallDisk, in_tmp: Path,
                                                                   tiny_model: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("codecarbon")
    import importlib

    import torch

    compress_run = importlib.import_module("agentlab.compress.run")  # the module (the package's `run` is a function)

    run = disk.root / "RUN"
    small = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
             "measure.new_tokens=4", "measure.repeats=1", "task_questions=3"]
    args = ["compress", "--model", str(tiny_model["hf"]), "--objective", "maximize speedup with <2% accuracy loss",
            "--max-iterations", "1", "--planner", "random", "--set", f"workspace={disk.root / 'ws'}",
            *[x for s in small for x in ("--set", s)]]
    with monkeypatch.context() as patch:
        if point == "checkpoint":
            fill_on_call(patch, disk, torch, "save", 1)  # the base measurement's weights
        elif point == "log":  # experiments.jsonl, rewritten after each trial: the first experiment's write
            fill_on_call(patch, disk, compress_run, "atomic_write_text", 2)
        else:
            fill_at(patch, disk, {"state": "best.json", "plot": "pareto.png"}[point], 1)
        code = main([*args, "--out", str(run)])
    disk.free()
    err = capsys.readouterr().err
    one_error_line(err, "no space left on device (ENOSPC)", "--resume")
    assert code == 1
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and "ENOSPC" in info["error"]
    assert_nothing_torn(run)
    state = run / "experiments.jsonl"  # none yet when the base measurement was stopped
    states = [json.loads(line).get("state") for line in (state.read_text().splitlines() if state.is_file() else [])]
    assert "failed" not in states  # the disk's refusal is no failed experiment

    assert main(["compress", "--resume", str(run)]) == 0
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    results = json.loads((run / "results.json").read_text())
    assert len(results["experiments"]) == 2 and results["counts"]["experiments"] == 1
    assert_nothing_torn(run)


def test_run_json_records_the_end_on_a_full_disk(disk: SmallDisk) -> None:
    """run.json keeps a reserve of blank space: with not one byte free its status is still written, in place."""
    from agentlab.core.runs import RunDir

    run = RunDir.create("nas", {"a": 1}, out=disk.root / "R")
    disk.fill()
    with pytest.raises(OSError) as caught, run:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(disk.root / "R" / "x.bin"))
    assert caught.value.errno == errno.ENOSPC
    info = json.loads((disk.root / "R" / "run.json").read_text())
    assert info["status"] == "interrupted" and "x.bin: no space left on device" in info["error"]
    disk.free()
