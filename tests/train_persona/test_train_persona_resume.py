"""`agentlab train-persona --resume` after a run stopped at a chosen point (in-process: the stop is a KeyboardInterrupt
raised where a kill would land, so each test is exact, not a race with a killed process): one stopped after its last
checkpoint trains nothing more, one stopped past a checkpoint reports the whole run, a data file changed since the run
started is refused."""

from __future__ import annotations

import importlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.core.train.callbacks import ProgressCallback

run_module = importlib.import_module("agentlab.train_persona.run")  # the package's `run` is the function

FAST = ["--bsz", "1", "--grad-accum", "1", "--set", "data.max_length=128", "--set", "train.threads=1"]


def train(tiny: Path, *args: str) -> int:
    return main(["train-persona", "--base-model", str(tiny), *FAST, *args])


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if e["kind"] == kind]


def after_logging(monkeypatch: pytest.MonkeyPatch, step: int, act: Callable[[], None]) -> None:
    """The next training calls ``act`` right after it logged ``step``; later ones run through."""
    original = ProgressCallback.on_log
    fired: list[int] = []

    def on_log(self: ProgressCallback, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        original(self, args, state, control, logs=logs, **kwargs)
        if state.global_step == step and logs and "loss" in logs and not fired:
            fired.append(step)
            act()

    monkeypatch.setattr(ProgressCallback, "on_log", on_log)


def stop_after_logging(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The next training stops (as a Ctrl-C that lands outside the trainer's handling would) after it logged
    ``step``."""
    def stop() -> None:
        raise KeyboardInterrupt

    after_logging(monkeypatch, step, stop)


def test_stopped_after_its_last_checkpoint_resumes_to_save_it_and_trains_nothing(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Stopped once checkpoint-3 (the whole budget) existed but before the adapter was written, the resume trained a
    fourth step (Trainer checks the budget only after a step): a checkpoint-4, 4 steps in results.json, the final
    loss of the extra batch. It saves the checkpoint's adapter instead, and records what the uninterrupted run does."""
    budget = ["--max-steps", "3", "--set", "train.save_steps=3"]
    assert train(tiny_model["hf"], *budget, "--out", "whole-adapter", "--run-dir", "whole") == 0
    whole = json.loads((in_tmp / "whole" / "results.json").read_text())
    save_adapter = run_module._save_adapter

    def killed(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(run_module, "_save_adapter", save_adapter)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_save_adapter", killed)
    assert train(tiny_model["hf"], *budget, "--out", "cut", "--run-dir", "run") == 130
    run = in_tmp / "run"
    assert (run / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file() and not (in_tmp / "cut").exists()
    capsys.readouterr()
    assert main(["train-persona", "--resume", str(run)]) == 0
    assert "checkpoint-3 holds the whole budget (3 steps): nothing to train" in capsys.readouterr().err
    assert [p.name for p in (run / "checkpoints").glob("checkpoint-*")] == ["checkpoint-3"]
    results = json.loads((run / "results.json").read_text())
    for key in ("steps", "tokens_seen", "first_loss", "final_loss", "train_loss"):
        assert results[key] == pytest.approx(whole[key]), key
    assert [e["step"] for e in events(run, "train_log") if "loss" in e] == [1, 2, 3]
    assert (in_tmp / "cut" / "adapter_model.safetensors").is_file()


def test_a_resume_reports_the_whole_run_and_marks_where_steps_were_trained_again(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped at step 3 after checkpoint-2, the resume trains step 3 again: results.json's train_loss was the mean
    of the resumed session's steps alone, and nothing in events.jsonl told the two step-3 entries apart. Now
    train_loss is the whole run's mean (as an uninterrupted run reports it) and a ``resume`` event names the
    checkpoint's step: of the train_log entries of one step, the last counts."""
    budget = ["--max-steps", "4", "--set", "train.save_steps=2"]
    assert train(tiny_model["hf"], *budget, "--run-dir", "whole") == 0
    whole = json.loads((in_tmp / "whole" / "results.json").read_text())
    stop_after_logging(monkeypatch, 3)
    assert train(tiny_model["hf"], *budget, "--run-dir", "run") == 130
    run = in_tmp / "run"
    assert main(["train-persona", "--resume", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    logged = [(e["step"], e["loss"]) for e in events(run, "train_log") if "loss" in e]
    assert [step for step, _ in logged] == [1, 2, 3, 3, 4]  # step 3 twice: once per session
    (resume,) = events(run, "resume")
    assert resume["step"] == 2 and resume["checkpoint"].endswith("checkpoint-2")
    last = dict(logged)  # the last entry of each step
    history = {e["step"]: e["loss"] for e in json.loads((run / "trainer_state.json").read_text())["log_history"]
               if "loss" in e}
    assert last == pytest.approx(history)
    assert results["train_loss"] == pytest.approx(sum(history.values()) / 4)
    assert results["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-3)
    assert results["steps"] == 4 and results["tokens_seen"] == whole["tokens_seen"]


def test_a_resume_refuses_a_data_file_changed_since_the_run_started(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """The same --data path with other content trained on the new content (two sha256s in events.jsonl, the adapter
    card naming the new one only). Refused before anything loads, as a changed setting is; the file put back, the
    resume goes on."""
    line = '{"messages": [{"role": "user", "content": "%s"}, {"role": "assistant", "content": "%s"}]}\n'
    data = in_tmp / "chats.jsonl"
    data.write_text(line % ("hi", "hello") + line % ("2 plus 2?", "4."))
    started = data.read_bytes()
    stop_after_logging(monkeypatch, 1)
    assert train(tiny_model["hf"], "--data", "chats.jsonl", "--max-steps", "3", "--set", "train.save_steps=1",
                 "--run-dir", "run") == 130
    run = in_tmp / "run"
    before = (run / "events.jsonl").read_bytes()
    data.write_text(line % ("hi", "ahoy") + line % ("2 plus 2?", "Arr, 4."))
    capsys.readouterr()
    assert main(["train-persona", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"the content of data.path {data}: sha256 " in err and "nothing was written" in err, err
    assert "put the file back" in err and "Loading" not in err and "Traceback" not in err
    assert (run / "events.jsonl").read_bytes() == before and not (run / "results.json").exists()
    data.write_bytes(started)
    assert main(["train-persona", "--resume", str(run)]) == 0
    assert {e["sha256"] for e in events(run, "data")} == {json.loads((run / "results.json").read_text())["data"]
                                                          ["sha256"]}


def test_a_finished_run_refuses_options_it_would_not_use_and_keeps_its_config(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """A resume of a finished run trained nothing (exit 0) yet rewrote config.yaml with --epochs, --force,
    train.save_steps, train.threads, a smaller --max-steps: config.yaml then disagreed with the adapter and report.md.
    Each is refused now (exit 2) with nothing written; the plain resume still says "nothing to train"."""
    assert train(tiny_model["hf"], "--max-steps", "2", "--set", "train.save_steps=2", "--run-dir", "run") == 0
    run = in_tmp / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    for option, says in ((["--epochs", "1"], "train.epochs 3.0 -> 1.0"), (["--force"], "force False -> True"),
                         (["--set", "train.save_steps=3"], "train.save_steps 2 -> 3"),
                         (["--set", "train.threads=2"], "train.threads 1 -> 2"),
                         (["--max-steps", "1"], "--max-steps 1 is below the 2 steps")):
        assert main(["train-persona", "--resume", str(run), *option]) == 2, option
        err = capsys.readouterr().err
        assert says in err and "nothing was written" in err and "Traceback" not in err, err
        assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}, option
    assert main(["train-persona", "--resume", str(run)]) == 0
    assert "this run already trained its 2 steps" in capsys.readouterr().err


def test_a_budget_below_the_newest_checkpoint_is_refused(in_tmp: Path, tiny_model: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """checkpoint-3 of a 5-step budget, resumed with --max-steps 2: it said "checkpoint-3 holds the whole budget",
    saved the 3-step adapter and exited 0 while report.md said "at most 2 steps". Refused, naming the checkpoint."""
    stop_after_logging(monkeypatch, 4)
    assert train(tiny_model["hf"], "--max-steps", "5", "--set", "train.save_steps=3", "--run-dir", "run") == 130
    run = in_tmp / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train-persona", "--resume", str(run), "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--max-steps 2 is below the 3 steps" in err and "checkpoint-3" in err and "base model" not in err, err
    assert before == {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train-persona", "--resume", str(run), "--max-steps", "3"]) == 0  # the checkpoint's own work
    assert json.loads((run / "results.json").read_text())["steps"] == 3
    assert "at most 3 steps" in (run / "report.md").read_text()


def test_an_evaluation_stopped_on_a_finished_run_is_what_resume_runs(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C during `--resume RUN --eval TASK` on a finished run said "continue with --resume RUN", but the resume
    was undone: run.json "completed", eval.tasks back to [], so the next --resume evaluated nothing."""
    assert train(tiny_model["hf"], "--max-steps", "2", "--set", "train.save_steps=2", "--run-dir", "run") == 0
    run = in_tmp / "run"
    evaluated: list[list[str]] = []

    def stopped(cfg: Any, *args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_evaluate", stopped)
    assert main(["train-persona", "--resume", str(run), "--eval", "agentlab_style_pirate"]) == 130
    assert f"continue with --resume {run}" in capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(run_module, "_evaluate", lambda cfg, *args: evaluated.append(cfg.eval.tasks))
    assert main(["train-persona", "--resume", str(run)]) == 0
    assert evaluated == [["agentlab_style_pirate"]]


def signal_after_logging(monkeypatch: pytest.MonkeyPatch, step: int, sig: int, times: int = 1) -> None:
    """The next training gets ``sig`` (``times`` times in a row: a second Ctrl-C) right after it logged ``step``."""
    def send() -> None:
        for _ in range(times):
            os.kill(os.getpid(), sig)

    after_logging(monkeypatch, step, send)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.usefixtures("terminal_ctrl_c")
def test_a_stop_saves_the_step_in_progress_so_the_resume_goes_on_from_the_next(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, sig: int) -> None:
    """Ctrl-C after step 2 with no checkpoint due before step 10 (the quick start's --max-steps 5 at the default
    train.save_steps): the resume started at step 1 without a word, and events.jsonl held steps 1 and 2 twice. Now
    the step in progress (step 3: the signal comes as step 2 is logged) ends with a checkpoint; the run is still
    `interrupted` (exit 130, the same resume hint)."""
    signal_after_logging(monkeypatch, 2, sig)
    assert train(tiny_model["hf"], "--max-steps", "4", "--run-dir", "run") == 130
    run = in_tmp / "run"
    err = capsys.readouterr().err
    assert "stopping at the end of this step, with a checkpoint" in err and "continue with --resume run" in err
    assert [p.name for p in (run / "checkpoints").glob("checkpoint-*")] == ["checkpoint-3"]
    assert [e["step"] for e in events(run, "checkpoint")] == [3]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert main(["train-persona", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "resuming from checkpoint-3" in err and "no checkpoint yet" not in err
    assert [e["step"] for e in events(run, "train_log") if "loss" in e] == [1, 2, 3, 4]  # no step trained twice
    assert json.loads((run / "results.json").read_text())["steps"] == 4


@pytest.mark.usefixtures("terminal_ctrl_c")
def test_a_second_ctrl_c_stops_at_once_and_the_resume_says_it_starts_from_step_0(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """A second Ctrl-C does not wait for the step's end: no checkpoint. The resume that finds none says so (it
    restarted from step 0 without a word)."""
    signal_after_logging(monkeypatch, 2, signal.SIGINT, times=2)
    assert train(tiny_model["hf"], "--max-steps", "3", "--run-dir", "run") == 130
    run = in_tmp / "run"
    assert not list((run / "checkpoints").glob("checkpoint-*")) and not events(run, "checkpoint")
    assert "continue with --resume run" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are back
    assert main(["train-persona", "--resume", str(run)]) == 0
    assert "no checkpoint yet: training starts again from step 0" in capsys.readouterr().err
    assert [e["step"] for e in events(run, "train_log") if "loss" in e] == [1, 2, 1, 2, 3]
