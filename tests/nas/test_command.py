"""The user's own command as a search objective: params file, result line or metrics.json, step lines, failures."""

from __future__ import annotations

import json
import math
import shlex
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from agentlab.core.errors import UsageError
from agentlab.core.search.engine import new_study  # noqa: E402
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.loop import Pruned, SearchLoop, StopRules, TrialFailed
from agentlab.core.search.planners import OptunaPlanner
from agentlab.core.search.space import ParamSpec, SearchSpace
from agentlab.nas.command import CommandObjective, nested_params
from agentlab.nas.config import CommandObjectiveConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
PYTHON = shlex.quote(sys.executable)
BASE = {"x": 4.0, "optimizer": {"lr": 0.1, "name": "sgd"}}


def spec(command: str, metric: str = "loss", timeout_s: float | None = None) -> CommandObjectiveConfig:
    """The objective section of ``command``, its params ``BASE``."""
    return CommandObjectiveConfig(command=command, metric=metric, params=BASE, timeout_s=timeout_s)


def objective(tmp_path: Path, body: str, metric: str = "loss", timeout_s: float | None = None) -> CommandObjective:
    """A CommandObjective whose command is ``body``, a Python script that gets the params file as argv[1]."""
    script = tmp_path / "train.py"
    script.write_text("import json, os, sys, time\np = json.load(open(sys.argv[1]))\n" + textwrap.dedent(body))
    return CommandObjective(spec(f"{PYTHON} train.py {{params}}", metric, timeout_s), cwd=tmp_path,
                            trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}")


def never(step: int, value: float) -> bool:
    return False


def test_nested_params_update_nested_dicts_and_keep_the_base() -> None:
    out = nested_params(BASE, {"x": 1.0, "optimizer.lr": 0.01})
    assert out == {"x": 1.0, "optimizer": {"lr": 0.01, "name": "sgd"}}
    assert BASE["optimizer"] == {"lr": 0.1, "name": "sgd"}  # a copy


def test_params_file_env_cwd_and_the_last_result_line(tmp_path: Path) -> None:
    obj = objective(tmp_path, """
        print("epoch 1 done")
        print(json.dumps({"loss": 99.0}))  # an earlier result line: the last one counts
        print(json.dumps({"loss": p["optimizer"]["lr"] + p["x"], "dir": os.environ["AGENTLAB_TRIAL_DIR"],
                          "params": os.environ["AGENTLAB_PARAMS"], "cwd": os.getcwd(), "nested": {"a": 1}}))
        print("bye", file=sys.stderr)
    """)
    metrics = obj.run(3, {"x": 1.0, "optimizer.lr": 0.5}, never)
    folder = tmp_path / "run" / "trials" / "run_0003"
    assert json.loads((folder / "params.json").read_text()) == {"x": 1.0, "optimizer": {"lr": 0.5, "name": "sgd"}}
    assert metrics["value"] == metrics["loss"] == 1.5
    assert metrics["dir"] == str(folder) and metrics["params"] == str(folder / "params.json")
    assert metrics["cwd"] == str(tmp_path) and "nested" not in metrics and metrics["seconds"] > 0
    assert "epoch 1 done" in (folder / "stdout.log").read_text()
    assert (folder / "stderr.log").read_text() == "bye\n"


def test_metric_from_metrics_json_when_stdout_has_none(tmp_path: Path) -> None:
    obj = objective(tmp_path, """
        print(json.dumps({"step": 1, "loss": 5.0}))  # a step line is not a result
        json.dump({"loss": 0.25, "acc": 0.9}, open(os.path.join(os.environ["AGENTLAB_TRIAL_DIR"], "metrics.json"), "w"))
    """)
    metrics = obj.run(0, {}, never)
    assert metrics["value"] == 0.25 and metrics["acc"] == 0.9


def test_maximised_metric_is_the_value(tmp_path: Path) -> None:
    obj = objective(tmp_path, 'print(json.dumps({"loss": 1.0, "accuracy": 0.75}))', metric="accuracy")
    assert obj.run(0, {}, never)["value"] == 0.75


def test_step_lines_reach_the_pruner_and_a_stop_ends_the_child(tmp_path: Path,
                                                               pid_alive: Callable[[int], bool]) -> None:
    obj = objective(tmp_path, """
        open("child.pid", "w").write(str(os.getpid()))
        for step in range(1, 100):
            print(json.dumps({"step": step, "loss": 10.0 / step}), flush=True)
            time.sleep(0.05 if step < 3 else 30)
        print(json.dumps({"loss": 0.0}))
    """)
    seen: list[tuple[int, float]] = []

    def report(step: int, value: float) -> bool:
        seen.append((step, value))
        return step == 2

    start = time.monotonic()
    with pytest.raises(Pruned) as caught:
        obj.run(0, {}, report)
    assert time.monotonic() - start < 15
    assert seen == [(1, 10.0), (2, 5.0)] and caught.value.metrics == {"value": 5.0, "loss": 5.0, "step": 2}
    assert not pid_alive(int((tmp_path / "child.pid").read_text()))


@pytest.mark.parametrize(("body", "why"), [
    ("for i in range(20): print(f'err line {i}', file=sys.stderr)\nsys.exit(1)", "exit code 1"),
    ("for i in range(20): print(f'err line {i}', file=sys.stderr)\nprint(json.dumps({'acc': 1}))", "no result"),
    ("for i in range(20): print(f'err line {i}', file=sys.stderr)\nprint('{\"loss\": NaN}')", "not a finite number"),
    ("for i in range(20): print(f'err line {i}', file=sys.stderr, flush=True)\ntime.sleep(30)", "timed out after 1 s"),
], ids=["exit-1", "missing-metric", "nan", "timeout"])
def test_each_failure_is_a_failed_trial_with_the_stderr_tail(tmp_path: Path, body: str, why: str) -> None:
    obj = objective(tmp_path, body, timeout_s=1)
    start = time.monotonic()
    with pytest.raises(TrialFailed) as caught:
        obj.run(0, {}, never)
    reason = str(caught.value)
    assert why in reason and "err line 19" in reason and "err line 10" in reason and "err line 9\n" not in reason
    assert time.monotonic() - start < 10
    assert (tmp_path / "run" / "trials" / "run_0000" / "stderr.log").is_file()


def test_the_search_goes_on_past_failed_trials(tmp_path: Path) -> None:
    obj = objective(tmp_path, """
        if p["x"] != 4.0:
            print("boom", file=sys.stderr)
            sys.exit(3)
        print(json.dumps({"loss": 1.0}))
    """)
    space = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0)}, base={"x": 4.0})
    study = new_study(direction="minimize")
    loop = SearchLoop(study=study, space=space, base_params={"x": 4.0}, objective=obj, planner=OptunaPlanner("random"),
                      evaluator=HybridEvaluator(0.01), stop=StopRules(max_iterations=3), seed=0)
    outcome = loop.run()
    assert [r.state for r in outcome.records] == ["complete", "failed", "failed"]
    assert all(r.counted for r in outcome.records)
    assert outcome.records[1].reason.startswith("failed: exit code 3") and "boom" in outcome.records[1].reason
    assert outcome.best is not None and outcome.best.number == 0


def test_a_command_that_cannot_start_is_refused(tmp_path: Path) -> None:
    for command, words in (("no-such-program-46 {params}", "not found on PATH"),
                           ("./missing.sh {params}", "does not exist"), ("", "empty"), ("'unclosed", "split"),
                           # a script its interpreter cannot open: trial 0 failed in a new run folder, exit 1
                           (f"{PYTHON} -u nope.py {{args}}", r"nope.py does not exist \(looked in "),
                           ("bash sub/run.sh {params}", "sub/run.sh does not exist")):
        obj = CommandObjective(spec(command), cwd=tmp_path, trial_dir=lambda n: tmp_path)
        with pytest.raises(UsageError, match=words):
            obj.validate()
    with pytest.raises(UsageError) as err:  # no shell: `~` is a folder named so
        CommandObjective(spec(f"{PYTHON} ~/train.py"), cwd=tmp_path, trial_dir=lambda n: tmp_path).validate()
    assert "~ and $VARS are not expanded" in (err.value.hint or "")
    (tmp_path / "folder.py").mkdir()  # it passed every check, and trial 0 failed: "can't open file"
    with pytest.raises(UsageError, match=r"folder.py is a folder, not a script"):
        CommandObjective(spec(f"{PYTHON} folder.py {{args}}"), cwd=tmp_path, trial_dir=lambda n: tmp_path).validate()
    # Python refuses a script that is not UTF-8 and declares no encoding: it was "search.space.lr: ... no option
    # of train.py gives it a literal default", the cause unsaid
    (tmp_path / "latin.py").write_bytes(b"# caf\xe9\nimport argparse\n")
    with pytest.raises(UsageError, match=r"latin.py is not UTF-8 and declares no other encoding"):
        CommandObjective(spec(f"{PYTHON} latin.py {{args}}"), cwd=tmp_path, trial_dir=lambda n: tmp_path).validate()
    (tmp_path / "declared.py").write_bytes(b"# -*- coding: latin-1 -*-\n# caf\xe9\n")  # Python runs it
    CommandObjective(spec(f"{PYTHON} declared.py {{args}}"), cwd=tmp_path, trial_dir=lambda n: tmp_path
                     ).validate_program()
    (tmp_path / "plain.sh").write_text("echo hi\n")  # not executable
    with pytest.raises(UsageError, match="not an executable"):
        CommandObjective(spec("./plain.sh"), cwd=tmp_path, trial_dir=lambda n: tmp_path).validate()
    for fine in (f"{PYTHON} -c pass", f"{PYTHON} -m pkg.train", "bash plain.sh {params}", f"{PYTHON} {{script}}"):
        CommandObjective(spec(fine), cwd=tmp_path, trial_dir=lambda n: tmp_path).validate_program()


def test_a_space_key_the_params_lack_is_refused(tmp_path: Path) -> None:
    obj = CommandObjective(spec(f"{PYTHON} -c pass"), cwd=tmp_path, trial_dir=lambda n: tmp_path,
                           space_keys=("x", "optimizer.lr", "optimizer.momentum"))
    with pytest.raises(UsageError, match=r"search\.space\.optimizer\.momentum: not a key of objective\.params"):
        obj.validate()
    # a typo is named with the key it is close to: a param's or the script's own option's
    (tmp_path / "train.py").write_text("import argparse\np = argparse.ArgumentParser()\n"
                                       "p.add_argument('--hidden', type=int)\n")
    obj = CommandObjective(spec(f"{PYTHON} train.py {{args}}"), cwd=tmp_path, trial_dir=lambda n: tmp_path,
                           space_keys=("x", "hiden"))
    with pytest.raises(UsageError, match=r"search\.space\.hiden: not a key .* \(did you mean hidden\?\)$"):
        obj.validate()


def test_a_placeholder_close_to_a_param_but_naming_none_is_warned_about(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """`--lr={lrr}` reached the command as written (the searched lr never did) without a word; a warning now, not a
    refusal: `model-{epoch}.pt` is close to an `epochs` param without being a typo."""
    obj = CommandObjective(spec(f"{PYTHON} -c pass --lr={{optimizer.lrr}}"), cwd=tmp_path,
                           trial_dir=lambda n: tmp_path, space_keys=("optimizer.lr",))
    obj.validate()
    assert "{optimizer.lrr} names no param, so it reaches the command as written (did you mean {optimizer.lr}?)" \
        in caplog.text
    caplog.clear()
    for fine in ("--lr={optimizer.lr}", "--home=${HOME}", "--fmt={unrelated_words}"):  # a param, a shell variable,
        CommandObjective(spec(f"{PYTHON} -c pass {fine}"), cwd=tmp_path,  # braces far from any param
                         trial_dir=lambda n: tmp_path, space_keys=("optimizer.lr",)).validate()
    assert "names no param" not in caplog.text


def test_a_command_that_passes_no_params_is_warned_about_before_any_trial(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--dry-run` said "config ok" of a command with no placeholder and no objective.config; the warning that it
    probably ignores the search's values came only after trials with the same metric. A warning: the script may
    read the file AGENTLAB_PARAMS names."""
    import agentlab.nas.command as command_module

    monkeypatch.setattr(command_module, "_WARNED", set())  # said once a process: other tests may have said it
    CommandObjective(spec(f"{PYTHON} -c pass"), cwd=tmp_path, trial_dir=lambda n: tmp_path,
                     space_keys=("x",)).validate()
    assert "objective.command passes no params ({args}, {overrides}, {params} or {key})" in caplog.text
    caplog.clear()
    for passes in ("{params}", "--x={x}"):
        CommandObjective(spec(f"{PYTHON} -c pass {passes}"), cwd=tmp_path, trial_dir=lambda n: tmp_path,
                         space_keys=("x",)).validate()
    assert "passes no params" not in caplog.text


def test_a_param_the_script_has_no_option_for_is_warned_about_once(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """objective.params.lrr with `{args}`: --dry-run said "config ok" and trial 0 failed (argparse: "unrecognized
    arguments: --lrr=0.1"). A warning, not a refusal: options added in a loop are not seen in the source."""
    (tmp_path / "train.py").write_text("import argparse\np = argparse.ArgumentParser()\n"
                                       "p.add_argument('--lr', type=float, default=0.1)\n"
                                       "p.add_argument('--batch-size', type=int, default=8)\np.parse_args()\n")
    params = {"lrr": 0.1, "batch_size": 4, "model.depth": 2}  # a dest by its option's name; a namespace: not seen
    for _ in range(2):
        CommandObjective(CommandObjectiveConfig(command=f"{PYTHON} train.py {{args}}", metric="loss", params=params),
                         cwd=tmp_path,
                         trial_dir=lambda n: tmp_path, space_keys=("lr",)).validate()
    said = [r.getMessage() for r in caplog.records if "no option for it" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("objective.params.lrr: train.py has no option for it")
    assert "(it has --batch-size, --lr)" in said[0] and said[0].endswith("(did you mean lr?)")


def test_check_finds_params_that_are_no_json(tmp_path: Path) -> None:
    obj = CommandObjective(spec(f"{PYTHON} -c pass"), cwd=tmp_path, trial_dir=lambda n: tmp_path)
    assert obj.check({"x": 1.0}) == []
    assert obj.check({"x": math.inf}) and obj.check({"x": object()})


def test_the_child_runs_in_its_own_process_group(tmp_path: Path) -> None:
    obj = objective(tmp_path, 'print(json.dumps({"loss": float(os.getpgid(0) == os.getpid())}))')
    assert obj.run(0, {}, never)["value"] == 1.0
