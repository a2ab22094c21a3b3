"""A final result line that gives the metric a word (`val_loss: None`) after per-epoch lines failed no trial: the
last epoch's value was taken as the result, while the docs say such a line is a failed trial. The last line naming
the metric is the result; a number after a word is still one.
A word for the metric on stdout (`resumed: val_loss=None`) while the epochs log to stderr (`logging`, Lightning,
tqdm) is no result: a stream fails the trial with a final word only when it gave the metric a number before it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentlab.cli import main

EPOCHS = """\
import sys
for epoch in range(1, 4):
    print(f"epoch {epoch}: val_loss={1 / epoch:.4f}", file=sys.STREAM)
"""


LOGGED = """\
import logging
logging.basicConfig(level=logging.INFO)
print("resumed: val_loss=None")
for epoch in range(1, 4):
    logging.info(f"epoch {epoch} val_loss: {1 / epoch:.4f}")
"""


def run(folder: Path, script: str, metric: str = "val_loss", eval_script: str | None = None) -> tuple[int, dict]:
    (folder / "train.py").write_text(script)
    extra = ""
    if eval_script is not None:
        (folder / "evaluate.py").write_text(eval_script)
        extra = f"  eval_command: {sys.executable} evaluate.py\n"
    (folder / "nas.yaml").write_text(f"objective:\n  command: {sys.executable} train.py {{args}}\n"
                                     f"  metric: {metric}\n{extra}  params: {{x: 0.5}}\n"
                                     "search:\n  space:\n    x: {low: 0.0, high: 1.0}\n")
    out = folder / f"run{len(list(folder.glob('run*')))}"  # a search of its own each time
    code = main(["nas", "-c", str(folder / "nas.yaml"), "-n", "1", "--out", str(out)])
    return code, json.loads((out / "results.json").read_text())


def said(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_word_after_epoch_lines_fails_the_trial(in_tmp: Path, capsys: pytest.CaptureFixture, stream: str) -> None:
    script = EPOCHS.replace("STREAM", stream) + "best = None\nprint(f'val_loss: {best}', file=sys.STREAM)\n".replace(
        "STREAM", stream)
    code, results = run(in_tmp, script)
    assert code == 1 and results["states"] == {"failed": 1}, results
    assert f"failed: no result: {stream} line 4 gives val_loss a value that is not a number: `val_loss: None`" \
        in said(capsys)


def test_a_keras_style_word_after_epoch_lines_fails_the_trial(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    script = ("for epoch in range(1, 6):\n    print(f'Epoch {epoch}/5 - loss: 0.5 - val_acc: {epoch / 10}')\n"
              "print('val_acc: high')\n")
    code, results = run(in_tmp, script, metric="val_acc")
    assert code == 1 and results["states"] == {"failed": 1}, results
    assert "stdout line 6 gives val_acc a value that is not a number: `val_acc: high`" in said(capsys)


def test_a_number_after_a_word_is_the_result(in_tmp: Path) -> None:
    """Only the last line naming the metric counts: a word before the epochs' lines (or before a final number) is
    no failure."""
    script = "print('val_loss: pending')\n" + EPOCHS.replace("STREAM", "stdout")
    code, results = run(in_tmp, script)
    assert code == 0 and results["best"]["val_loss"] == pytest.approx(1 / 3, abs=1e-4), results
    script = EPOCHS.replace("STREAM", "stdout") + "print('val_loss: unknown')\nprint('val_loss: 0.25')\n"
    code, results = run(in_tmp, script)
    assert code == 0 and results["best"]["val_loss"] == 0.25, results


def test_an_eval_command_giving_a_word_after_epoch_lines_fails(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, results = run(in_tmp, "print('trained')\n", eval_script=EPOCHS.replace("STREAM", "stdout")
                        + "print('val_loss: n/a')\n")
    assert code == 1 and results["states"] == {"failed": 1}, results
    assert "objective.eval_command: no result: stdout line 4 gives val_loss a value that is not a number" \
        in said(capsys)


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
