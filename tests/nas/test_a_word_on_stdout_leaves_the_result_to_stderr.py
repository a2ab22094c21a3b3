"""A word for the metric on stdout (`resumed: val_loss=None`) failed the trial while the result came from stderr (a
script logging its epochs through `logging`, Lightning, tqdm): the final-word check read stdout's last line naming
the metric and stopped there. A stream fails the trial with a final word only when it gave the metric a number
before it; a stream of words alone leaves the result to the other one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentlab.cli import main

LOGGED = """\
import logging
logging.basicConfig(level=logging.INFO)
print("resumed: val_loss=None")
for epoch in range(1, 4):
    logging.info(f"epoch {epoch} val_loss: {1 / epoch:.4f}")
"""


def run(folder: Path, script: str, eval_script: str | None = None) -> tuple[int, dict]:
    (folder / "train.py").write_text(script)
    extra = ""
    if eval_script is not None:
        (folder / "evaluate.py").write_text(eval_script)
        extra = f"  eval_command: {sys.executable} evaluate.py\n"
    (folder / "nas.yaml").write_text(f"objective:\n  command: {sys.executable} train.py {{args}}\n"
                                     f"  metric: val_loss\n{extra}  params: {{x: 0.5}}\n"
                                     "search:\n  space:\n    x: {low: 0.0, high: 1.0}\n")
    out = folder / f"run{len(list(folder.glob('run*')))}"
    code = main(["nas", "-c", str(folder / "nas.yaml"), "-n", "1", "--out", str(out)])
    return code, json.loads((out / "results.json").read_text())


def test_a_word_on_stdout_with_numbers_on_stderr_is_a_result(in_tmp: Path) -> None:
    code, results = run(in_tmp, LOGGED)
    assert code == 0 and results["best"]["val_loss"] == pytest.approx(1 / 3, abs=1e-4), results


def test_an_eval_command_word_on_stdout_with_numbers_on_stderr_is_a_result(in_tmp: Path) -> None:
    code, results = run(in_tmp, "print('trained')\n", eval_script=LOGGED)
    assert code == 0 and results["best"]["val_loss"] == pytest.approx(1 / 3, abs=1e-4), results


def test_stderr_numbers_then_a_word_still_fail(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, results = run(in_tmp, LOGGED + "logging.info('val_loss: None')\n")
    assert code == 1 and results["states"] == {"failed": 1}, results
    assert "gives val_loss a value that is not a number" in " ".join(capsys.readouterr().err.split())


def test_words_alone_still_fail(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, results = run(in_tmp, "print('val_loss: None')\n")
    assert code == 1 and results["states"] == {"failed": 1}, results
    assert "stdout line 1 gives val_loss a value that is not a number" in " ".join(capsys.readouterr().err.split())
