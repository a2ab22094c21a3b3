"""`agentlab nas` on the user's own command (an `objective:` section): every classical planner end to end, resume,
refusals before any trial (exit 2), and no child process left behind when agentlab is killed. The LLM planners on a
command: test_own_code_llm.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main

REPO = Path(__file__).resolve().parents[2]
# A user's "training script" in pure Python: a quadratic bowl with step lines, fast and with no torch.
SCRIPT = """\
import json, sys
p = json.load(open(sys.argv[1]))
x, w = p["x"], p["model"]["width"]
for step in range(1, 3):
    print(json.dumps({"step": step, "loss": (x - 1) ** 2 + w / 100 + 2 - step}), flush=True)
print(json.dumps({"loss": (x - 1) ** 2 + w / 100, "accuracy": 1 / (1 + (x - 1) ** 2)}))
"""
# Sleeps, after writing its pid where the test can read it.
# (Each trial runs in its own workspace: the pid goes beside nas.yaml, the user's project folder, by absolute path.)
SLEEPER = ("import os, sys, time\nopen(os.path.join(os.environ['PROJECT'], 'child.pid'), 'w').write(str(os.getpid()))"
           "\ntime.sleep(120)\n")


def write_project(folder: Path, script: str = SCRIPT, **objective: Any) -> Path:
    """A project folder with train.py and nas.yaml (the objective's keys overridable); returns the YAML's path."""
    project = folder / "project"
    project.mkdir(exist_ok=True)
    (project / "train.py").write_text(script)
    config = {"objective": {"command": f"{sys.executable} train.py {{params}}", "metric": "loss",
                            "direction": "minimize", "params": {"x": 4.0, "model": {"width": 16}}, **objective},
              "search": {"pruner": "none", "space": {"x": {"low": -5.0, "high": 5.0},
                                                     "model.width": {"choices": [8, 16, 32]}}}}
    path = project / "nas.yaml"
    path.write_text("# agentlab nas -c nas.yaml\n" + yaml.safe_dump(config))
    return path


def run_folders(root: Path) -> list[Path]:
    return sorted((root / "runs" / "nas").glob("*")) if (root / "runs" / "nas").is_dir() else []


@pytest.mark.parametrize("planner", ["tpe", "random", "cmaes"])
def test_every_classical_planner_searches_the_command(in_tmp: Path, planner: str) -> None:
    config = write_project(in_tmp)
    assert main(["nas", "-c", str(config), "--max-iterations", "4", "--planner", planner]) == 0
    (run,) = run_folders(in_tmp)
    results = json.loads((run / "results.json").read_text())
    assert results["trials"] == 4 and results["metric"] == "loss" and results["states"].get("complete", 0) >= 2
    assert results["base"]["params"] == {"x": 4.0, "model.width": 16} and results["base"]["loss"] == 9.16
    assert results["best"]["loss"] <= 9.16 and "accuracy" in results["best"]["metrics"]
    assert f"planner: {planner}" in results["planner"]
    params = json.loads((run / "trials" / "run_0000" / "params.json").read_text())
    assert params == {"x": 4.0, "model": {"width": 16}}
    assert (run / "trials" / "run_0003" / "stdout.log").is_file()
    assert "| loss |" in (run / "report.md").read_text()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["objective"]["cwd"] == str(config.parent)  # the YAML's folder, kept for --resume


def test_a_relative_out_folder_still_gives_the_command_its_params_file(in_tmp: Path) -> None:
    config = write_project(in_tmp)  # the command runs in project/, the run folder is ./run: the paths are absolute
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random", "--out", "run"]) == 0
    assert json.loads((in_tmp / "run" / "results.json").read_text())["states"] == {"complete": 2}


def test_maximize_and_resume_keeps_the_finished_trials(in_tmp: Path) -> None:
    config = write_project(in_tmp, metric="accuracy", direction="maximize")
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) == 0
    (run,) = run_folders(in_tmp)
    before = json.loads((run / "agent_state.json").read_text())["runs"]
    assert main(["nas", "--resume", str(run), "--max-iterations", "4"]) == 0
    after = json.loads((run / "agent_state.json").read_text())["runs"]
    assert len(after) == 4 and [(r["params"], r["accuracy"]) for r in after[:2]] == [
        (r["params"], r["accuracy"]) for r in before]
    results = json.loads((run / "results.json").read_text())
    assert results["direction"] == "maximize" and results["ran_here"] == 2
    assert results["best"]["accuracy"] == max(r["accuracy"] for r in after if r["state"] == "complete")


@pytest.mark.parametrize(("change", "words"), [
    ({"command": "no-such-program-46 train.py {params}"}, "not found on PATH"),
    ({"params": {"x": 4.0}}, "search.space.model.width: not a key of objective.params"),
    ({"direction": "up"}, "objective.direction"),
    ({"metric": ""}, "objective.metric: the metric's name"),  # it ran, read any `: number` line, stored ""
], ids=["no-program", "space-key-not-in-params", "bad-direction", "empty-metric"])
def test_refused_before_any_trial(in_tmp: Path, capsys: pytest.CaptureFixture, change: dict[str, Any],
                                  words: str) -> None:
    config = write_project(in_tmp, **change)
    assert main(["nas", "-c", str(config), "--max-iterations", "2"]) == 2
    out = capsys.readouterr().err
    assert words in " ".join(out.split())
    assert run_folders(in_tmp) == []


def test_config_errors_name_the_yaml_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_project(in_tmp)
    text = config.read_text().replace("model.width:", "model.depth:")
    config.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "model.depth" in row)
    assert main(["nas", "-c", str(config)]) == 2
    assert f"nas.yaml:{line}: search.space.model.depth: not a key of objective.params" in capsys.readouterr().err


def test_a_placeholder_of_a_key_no_params_give_says_only_args_reads_the_defaults(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--lr={lr}` with lr searched and `default=0.1` in the script said only "not a key of objective.params", as if
    a placeholder read the script's default as {args} does."""
    script = "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', type=float, default=0.1)\n" \
             "print('loss', p.parse_args().lr)\n"
    config = write_project(in_tmp, script=script)
    config.write_text("objective:\n  command: " + f"{sys.executable} train.py --lr={{lr}}"
                      + "\n  metric: loss\nsearch:\n  space:\n    lr: {low: 0.01, high: 1.0}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert f"{config}:6: search.space.lr: not a key of objective.params, and only {{args}} reads the script's own " \
        "defaults, not a {lr} placeholder (use {args}, or add lr to objective.params" in said


def test_an_error_found_after_validation_names_the_yaml_line_or_the_set(in_tmp: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """A searched key the script has no option for ({args}) is found after the config validated: the error named
    the field alone, not the file and line (nor the --set) that gave it."""
    script = "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', type=float, default=0.1)\n" \
             "print('loss', p.parse_args().lr)\n"
    config = write_project(in_tmp, script=script, command=f"{sys.executable} train.py {{args}}", params={})
    config.write_text("# agentlab nas -c nas.yaml\nobjective:\n  command: " + f"{sys.executable} train.py {{args}}"
                      + "\n  metric: loss\nsearch:\n  space:\n    lr: {low: 0.01, high: 1.0}\n"
                      "    lrr: {low: 0.01, high: 1.0}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    assert "error: " + f"{config}:8: search.space.lrr: not a key of objective.params" in capsys.readouterr().err
    assert main(["nas", "-c", str(config), "--dry-run", "--set", "search.space.lrr.high=2.0"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "error: --set search.space.lrr.high=2.0: search.space.lrr: not a key of objective.params" in said


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_the_command_dies_with_agentlab(in_tmp: Path, sig: signal.Signals, pid_alive: Callable[[int], bool]) -> None:
    config = write_project(in_tmp, script=SLEEPER)
    env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs"), "PROJECT": str(config.parent)}
    with open(in_tmp / "agentlab.log", "wb") as log:
        agentlab = subprocess.Popen([sys.executable, "-m", "agentlab.cli", "nas", "-c", str(config), "-n", "2"],
                                    cwd=in_tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    pid_file = config.parent / "child.pid"
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            assert agentlab.poll() is None, (in_tmp / "agentlab.log").read_text()
            time.sleep(0.1)
        child = int(pid_file.read_text())
        assert pid_alive(child)
        agentlab.send_signal(sig)
        code = agentlab.wait(timeout=20)
        deadline = time.monotonic() + 5
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child), "the training command outlived agentlab"
        assert code == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    finally:
        if agentlab.poll() is None:
            agentlab.kill()
        if pid_file.is_file() and pid_file.read_text() and pid_alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*/nas.yaml")), ids=lambda p: p.parent.name)
def test_example_configs_validate_and_say_how_to_run(path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# agentlab nas -c {path.relative_to(REPO)}")
    monkeypatch.chdir(REPO)
    assert main(["config", "validate", str(path)]) == 0
    capsys.readouterr()
    assert main(["nas", "-c", str(path), "--dry-run"]) == 0
    base = re.search(r"trial 0 \(the base\): (.*)", capsys.readouterr().err)
    assert base is not None and "None" not in base.group(1)  # every searched key's start, from wherever it comes
    if path.parent.name == "argparse_text":  # no objective.params: the script's own defaults
        assert base.group(1) == "lr=0.01, features=16, scale=1, alpha=0.01"


@pytest.mark.parametrize(("name", "metric"), [("config_py", "val_loss"), ("argparse_text", "val_rmse")])
def test_the_example_projects_of_other_shapes_search_as_they_are(in_tmp: Path, name: str, metric: str) -> None:
    """A config.py project printing text, an argparse script printing text: searched without a line changed, the
    example's files untouched (each trial runs in a worktree of this repository, or a copy)."""
    folder = REPO / "examples" / name
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "agentlab.cli", "nas", "-c", str(folder / "nas.yaml"), "-n", "3"],
                          cwd=in_tmp, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = run_folders(in_tmp)
    results = json.loads((run / "results.json").read_text())
    assert results["states"].get("complete", 0) >= 1 and results["best"][metric] > 0
    assert (run / "best" / "command.txt").is_file()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    # the run's branch is gone when it ends (only its own: other tests' runs may hold theirs at this moment)
    (branch,) = re.findall(r"\(branch (agentlab/\S+)\)", done.stdout + done.stderr)
    listed = subprocess.run(["git", "branch", "--list", branch], cwd=REPO, capture_output=True, text=True, check=True)
    assert listed.stdout == ""


@pytest.mark.slow
def test_the_example_project_trains_for_real(in_tmp: Path) -> None:
    pytest.importorskip("torch")
    config = REPO / "examples" / "own_code" / "nas.yaml"
    env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "agentlab.cli", "nas", "-c", str(config), "-n", "2"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = run_folders(in_tmp)
    results = json.loads((run / "results.json").read_text())
    assert results["states"] == {"complete": 2} and 0 < results["best"]["val_loss"] < 2


@pytest.mark.parametrize("planner", ["tpe", "cmaes", "random"])
def test_a_warm_start_runs_the_users_configs_right_after_the_base(in_tmp: Path, planner: str) -> None:
    config = write_project(in_tmp)
    data = yaml.safe_load(config.read_text())
    data["search"]["warm_start"] = [{"x": 1.0}, {"x": 1.0}, {"x": 0.5, "model.width": 8}]  # a repeat is skipped
    config.write_text(yaml.safe_dump(data))
    assert main(["nas", "-c", str(config), "--planner", planner, "-n", "5", "--out", "run"]) == 0
    runs = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    assert [r["planner"] for r in runs] == ["base", "leads", "leads", planner, planner]
    assert runs[1]["params"] == {"x": 1.0, "model.width": 16} and runs[2]["params"] == {"x": 0.5, "model.width": 8}
    assert main(["nas", "--resume", "run", "-n", "6"]) == 0  # resumed: the leads are not run again
    runs = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    assert [r["planner"] for r in runs].count("leads") == 2 and len(runs) == 6


@pytest.mark.parametrize(("warm", "message"), [
    (True, "search.warm_start: true means the literature's forecaster leads"),
    ([{"x": 9.0}], "search.warm_start[0]: x"),
    ([{"nosuch": 1}], "search.warm_start[0]:"),
])
def test_a_bad_warm_start_is_refused_before_any_trial(in_tmp: Path, capsys: pytest.CaptureFixture, warm: Any,
                                                      message: str) -> None:
    config = write_project(in_tmp)
    data = yaml.safe_load(config.read_text())
    data["search"]["warm_start"] = warm
    config.write_text(yaml.safe_dump(data))
    assert main(["nas", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and run_folders(in_tmp) == []


@pytest.mark.parametrize(("warm", "line"), [
    ("  warm_start: [{x: 1.0},\n    {x: 9.0}]\n", 22),  # the entry's own line, not the line of `search:`
    ("  warm_start:\n  - {x: 1.0}\n  - {nosuch: 1}\n", 23),  # an unknown key, the block-list form
    ("  warm_start:\n  - x: 1.0\n    model.width: 99\n", 23),  # the bad key's line inside its entry
])
def test_a_bad_warm_start_entry_names_its_own_line(in_tmp: Path, capsys: pytest.CaptureFixture, warm: str,
                                                   line: int) -> None:
    """A bad entry said `nas.yaml:6: search.warm_start[1]: ...`, line 6 being `search:` (the index not looked up)."""
    config = write_project(in_tmp)
    text = config.read_text()
    assert len(text.splitlines()) == 20 and text.splitlines()[9] == "search:"  # the entries start on line 21
    config.write_text(text + warm)
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{config}:{line}: search.warm_start[" in err and "Traceback" not in err, err


# Fails (exit 3) unless x is near the base's 4.0: most of the space fails.
PICKY = """\
import json, sys
p = json.load(open(sys.argv[1]))
if abs(p["x"] - 4.0) > 0.5:
    sys.exit(3)
print(json.dumps({"loss": (p["x"] - 1) ** 2}))
"""


@pytest.mark.parametrize("planner", ["tpe", "random", "cmaes"])
def test_a_failed_config_is_not_proposed_again(in_tmp: Path, planner: str) -> None:
    """A config the command failed on is tried, counted, and never drawn again: the sampler's copy of the study
    holds it as a bad trial (Optuna's samplers skip failed trials, so the same draw came back every time)."""
    config = write_project(in_tmp, PICKY)
    assert main(["nas", "-c", str(config), "-n", "6", "--planner", planner, "--out", "run"]) == 0
    runs = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    keys = [json.dumps(r["params"], sort_keys=True) for r in runs]
    assert len(runs) == 6 and len(set(keys)) == 6, keys
    assert sum(r["state"] == "failed" for r in runs) >= 2


@pytest.mark.parametrize("planner", ["random", "tpe"])
def test_the_same_seed_draws_the_same_trials_in_a_run_folder_given_relative(in_tmp: Path, planner: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A run folder given as `--out run` held its study as an absolute path the loop did not see inside it, so it
    seeded its sampler as a worker of a shared study would (with the process id): every run drew other trials."""
    from agentlab.core.search import records

    config = write_project(in_tmp)
    drawn = []
    for out in ("a", "b"):
        monkeypatch.setattr(records, "worker_id", lambda out=out: f"host:{out}")  # two processes
        assert main(["nas", "-c", str(config), "-n", "4", "--planner", planner, "--out", out]) == 0
        drawn.append([r["params"] for r in json.loads((in_tmp / out / "agent_state.json").read_text())["runs"]])
    assert drawn[0] == drawn[1] and len({json.dumps(p, sort_keys=True) for p in drawn[0]}) == 4


def test_a_failed_base_config_stops_the_search_at_once(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_project(in_tmp, "import sys\nprint('no such column: lr', file=sys.stderr)\nsys.exit(3)\n")
    assert main(["nas", "-c", str(config), "-n", "4", "--out", "run"]) == 1
    err = capsys.readouterr().err
    assert "the base config (run_0000, the reference of every trial) failed: exit code 3" in err
    assert "run_0000 (base) base params: failed, " in err and "; stderr: no such column: lr" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (in_tmp / "run" / "trials").iterdir()) == ["run_0000"]  # not run 4 times
    results = json.loads((in_tmp / "run" / "results.json").read_text())  # written all the same, with the reason
    assert results["best"] is None and results["states"] == {"failed": 1}
    report = (in_tmp / "run" / "report.md").read_text()
    assert "no trial succeeded" in report and "no such column: lr" in report
    assert "| model.width=16, x=4 | - | - |" in report and "None" not in report  # no value: "-", not None


def test_nas_predict_on_a_search_of_your_own_command_says_what_it_is(in_tmp: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    config = write_project(in_tmp)
    assert main(["nas", "-c", str(config), "-n", "2", "--out", "run"]) == 0
    (in_tmp / "x.csv").write_text("date,a\n2020-01-01,1\n")
    assert main(["nas", "predict", "run", "--data", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert "this search ran your own command" in err and "no checkpoint" not in err and "Traceback" not in err
    (in_tmp / "f").mkdir()
    failing = write_project(in_tmp / "f", "import sys\nsys.exit(1)\n")
    assert main(["nas", "-c", str(failing), "-n", "2", "--out", "bad"]) == 1
    capsys.readouterr()
    assert main(["nas", "predict", "bad", "--data", "x.csv"]) == 2
    assert "--resume" not in capsys.readouterr().err


def test_an_empty_objective_section_is_refused_not_taken_for_the_forecaster(in_tmp: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "nas.yaml").write_text("search:\n  max_iterations: 2\nobjective:\n#  command: python train.py\n")
    assert main(["nas", "-c", "nas.yaml"]) == 2
    err = capsys.readouterr().err
    assert "nas.yaml:3: objective: is empty" in err and "Traceback" not in err and run_folders(in_tmp) == []
