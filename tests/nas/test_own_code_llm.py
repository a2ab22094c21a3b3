"""The LLM planners on the user's own command (an `objective:` section): the agent on the example project with a
scripted model calling every tool (read_project, learning_curve, suggest, run_trial, try_config); read_project's
refusals; the chooser on a maximized metric picks as scripted and says so in the metric's words; `auto` chooses
llm with a live planner model; an agent that always runs candidate 0 is TPE trial for trial; the built-in
smollm2-135m runs the agent end to end (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_own_code import run_folders, write_project

from agentlab.cli import main
from agentlab.core.agent.runtime import Reply
from agentlab.core.llm.config import LLMConfig
from agentlab.core.runs import read_events
from agentlab.nas import run_nas_optimization
from agentlab.nas.config import NASConfig
from agentlab.nas.own_code_agent import READ_CHARS, command_kit, objective_facts, project_files, read_project
from agentlab.nas.script import script_of
from agentlab.testing.agents import ScriptAgent, SuggestAgent, scripted_llm
from agentlab.testing.server import Reply as ServerReply
from agentlab.testing.server import ScriptedServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "own_code"
PLANNER = "planner-m"
FORECASTER_WORDS = ("MSE", "forecast", "famil", "literature", "inspect_data")


def example_config(**search: Any) -> dict[str, Any]:
    """examples/own_code/nas.yaml run in its folder, on the script's synthetic lines (no --text-dir: fast, the same
    everywhere), with this interpreter (torch) as its python."""
    cfg = yaml.safe_load((EXAMPLE / "nas.yaml").read_text())
    cfg["objective"].update(cwd=str(EXAMPLE), command=f"{sys.executable} train.py --params {{params}}")
    cfg["search"].update(search)
    return cfg


class Recorder(ScriptAgent):
    """A ScriptAgent that also keeps the tool specs it was offered (their descriptions are text the model reads)."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]):
        super().__init__(calls)
        self.specs: list[dict[str, Any]] = []

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        self.specs = tools
        return super().step(messages, tools)


def tool_results(model: ScriptAgent) -> list[str]:
    """Each tool result the model saw, in order (the last message of a step after a call; the window the model
    sees drops early ones, so they are read step by step)."""
    return [str(step[-1]["content"]) for step in model.seen if step[-1].get("role") == "tool"]


def test_the_agent_on_the_example_project_uses_every_tool(in_tmp: Path) -> None:
    model = Recorder([("read_project", {}), ("read_project", {"path": "train.py"}),
                      ("read_project", {"path": "../../README.md"}), ("suggest", {}),
                      ("run_trial", {"candidate": 1, "reason": "a wider net"}), ("learning_curve", {"trial": 1}),
                      ("try_config", {"changes": {"lr": 0.01, "epochs": 2}, "reason": "a faster rate"})])
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=3, config=example_config(planner="agent"), out=out,
                                   llm=scripted_llm(model))
    runs = json.loads((out / "agent_state.json").read_text())["runs"]
    assert [r["planner"] for r in runs] == ["base", "agent", "agent"]
    assert runs[2]["params"]["lr"] == 0.01 and runs[2]["params"]["epochs"] == 2
    assert runs[2]["reasoning"] == "a faster rate"
    listing, script, escape, suggested, curve = tool_results(model)[:5]
    assert "train.py" in listing and "README.md" in listing and "nas.yaml" in listing
    assert script.startswith(f"train.py (cut: the first {READ_CHARS} of ") and "import torch" in script
    # read_project's schema offers the project's files alone: the router shows the model its error and asks again,
    # and the next call answers (the tool's own refusal behind it: the test below)
    assert "path: '../../README.md' is not one of ['', 'train.py', 'README.md', 'nas.yaml']" in escape
    assert "candidate 0:" in suggested and "candidate 3:" in suggested
    assert curve.startswith("run_0001 val_loss by step (lower is better): 1:") and "(complete)" in curve
    brief = "\n".join(str(m["content"]) for m in model.seen[0])
    assert "minimise val_loss, lower is better" in brief and "- lr: base 0.001, range 0.0003..0.3, log scale" in brief
    assert "params kept at their base: batch_size=256, seed=0" in brief
    told = brief + json.dumps(model.specs)
    assert not [w for w in FORECASTER_WORDS if w in told], "forecaster words shown for a command objective"
    assert "read_project" in [t["function"]["name"] for t in model.specs]
    block = results["agent"]
    assert block["trials_by_agent"] == 2 and block["tool_calls"] == 6 and block["rejected_calls"] == 0
    invalid = list(read_events(out, "invalid_tool_call"))
    assert len(invalid) == 1 and "'../../README.md'" in invalid[0]["error"]  # the escape, answered again
    report = (out / "report.md").read_text()
    assert "## The agent" in report and "| read_project |" in report and "| learning_curve |" in report
    assert "agent (agent-script)" in report


def test_read_project_reads_the_projects_text_files_and_refuses_the_rest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "train.py").write_text("print('x')\n" * 1000)
    (project / "README.md").write_text("# my project\n")
    (project / "config.yaml").write_text("lr: 0.1\n")
    (project / "weights.json").write_bytes(b"\x00\x01binary")
    (project / "notes.toml").write_bytes("caf\xe9".encode("latin-1"))
    (project / "data.csv").write_text("a,b\n")  # not a config file
    (tmp_path / "secret.yaml").write_text("key: 1\n")
    (project / "leak.yaml").symlink_to(tmp_path / "secret.yaml")
    cfg = NASConfig.model_validate({"objective": {"command": "python src/train.py --params {params}", "metric": "m",
                                                  "params": {"lr": 0.1}, "cwd": str(project)},
                                    "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}})
    objective = cfg.objective
    assert objective is not None and script_of(objective.command, project) == "src/train.py"
    files = project_files(objective)
    assert files == ["src/train.py", "README.md", "config.yaml", "notes.toml", "weights.json"]  # no link out

    def read(path: str) -> str:
        return read_project(objective, files, path)

    assert "src/train.py, README.md, config.yaml" in read("")
    assert read("README.md") == "README.md (13 characters):\n# my project\n"
    long = read("src/train.py")
    assert long.endswith(f"[cut at {READ_CHARS} characters]") and "the first 4000 of 11000 characters" in long
    for path in ("../secret.yaml", str(tmp_path / "secret.yaml"), "leak.yaml", "src/../../secret.yaml"):
        assert read(path).startswith(f"refused: {path} is outside the project folder"), path
    assert read("data.csv").startswith("refused: data.csv is not one of the project's readable files")
    assert read("weights.json") == "refused: weights.json is a binary file, not text"
    assert read("notes.toml") == "refused: notes.toml is not UTF-8 text"
    kit = command_kit(cfg)
    assert "maximise" not in kit.what and "minimise m, lower is better" in kit.what and kit.scope == "this project"


def test_read_project_offers_the_modules_the_script_imports_and_its_config_file(tmp_path: Path) -> None:
    """What the agent of a real project needs: train.py, the project's modules it imports (not installed
    packages), the config file it reads; never its data."""
    project = tmp_path / "project"
    (project / "model").mkdir(parents=True)
    (project / "conf").mkdir()
    (project / "train.py").write_text("import json, numpy\nimport config\nfrom model import net\nfrom utils import "
                                      "seed_all\n")
    (project / "config.py").write_text("training = {'lr': 0.1}\n")
    (project / "utils.py").write_text("import os\ndef seed_all(): pass\n")
    (project / "model" / "__init__.py").write_text("")
    (project / "model" / "net.py").write_text("from model import layers\n")
    (project / "model" / "layers.py").write_text("X = 1\n")
    (project / "conf" / "train.yaml").write_text("lr: 0.1\n")
    (project / "data.csv").write_text("a,b\n")
    cfg = NASConfig.model_validate({"objective": {"command": "python train.py", "metric": "m",
                                                  "config": "conf/train.yaml", "cwd": str(project)},
                                    "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}})
    assert cfg.objective is not None
    files = project_files(cfg.objective)
    assert files[:1] == ["train.py"] and "data.csv" not in files
    assert {"config.py", "model/__init__.py", "model/net.py", "model/layers.py", "utils.py",
            "conf/train.yaml"} <= set(files)
    assert "training" in read_project(cfg.objective, files, "config.py")


def test_read_project_offers_a_hydra_apps_config_folder(tmp_path: Path) -> None:
    """A Hydra app's `conf/` tree, named by `@hydra.main(config_path=..., config_name=...)` relative to the
    script's folder: the primary config first, then the groups' files; hidden files and secrets never."""
    project = tmp_path / "project"
    (project / "src" / "conf" / "model").mkdir(parents=True)
    (project / "src" / "conf" / ".hidden").mkdir()
    (project / "src" / "train.py").write_text(
        "import hydra\n@hydra.main(version_base=None, config_path='conf', config_name='train')\n"
        "def main(cfg):\n    print(cfg)\n")
    for name in ("train.yaml", "aaa.yaml", "model/poly.yaml", "model/linear.yml", ".hidden/x.yaml",
                 "api_key.yaml", "notes.txt"):
        (project / "src" / "conf" / name).write_text("lr: 0.1\n")
    cfg = NASConfig.model_validate({"objective": {"command": "python src/train.py {overrides}", "metric": "m",
                                                  "params": {"lr": 0.1}, "cwd": str(project)},
                                    "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}})
    assert cfg.objective is not None
    files = project_files(cfg.objective)
    assert files == ["src/train.py", "src/conf/train.yaml", "src/conf/aaa.yaml", "src/conf/model/linear.yml",
                     "src/conf/model/poly.yaml"]
    assert read_project(cfg.objective, files, "src/conf/model/poly.yaml").endswith("lr: 0.1\n")
    (project / "src" / "train.py").write_text("import hydra\n@hydra.main(config_path='../../elsewhere')\n"
                                              "def main(cfg): pass\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.yaml").write_text("a: 1\n")
    assert project_files(cfg.objective) == ["src/train.py"]  # a folder outside the project: not read


def test_the_brief_keeps_dotted_and_nested_params_apart_from_the_searched_ones() -> None:
    """A Hydra project's params are dotted (`model.degree`) beside a group (`model`): a searched one is never
    listed as kept at its base, and a nested one not searched is (before, both were judged by the first word)."""
    cfg = NASConfig.model_validate({"objective": {
        "command": "python t.py {overrides}", "metric": "m",
        "params": {"model": "linear", "model.degree": 2, "train.l2": 1.0, "seed": 0,
                   "train": {"epochs": 3, "opt": {"lr": 0.1, "momentum": 0.9}}, "head": {"a": 1}}},
        "search": {"space": {"model": {"choices": ["linear", "poly"]}, "model.degree": {"low": 1, "high": 9},
                             "train.l2": {"low": 0.001, "high": 1.0}, "train.opt.lr": {"low": 0.01, "high": 1.0},
                             "head": {"choices": [{"a": 1}, {"a": 2}]}}}})
    facts = objective_facts(cfg, [])
    assert "params kept at their base: seed=0, train.epochs=3, train.opt.momentum=0.9\n" in facts


def test_the_brief_states_the_base_the_project_itself_gives(tmp_path: Path) -> None:
    """No objective.params: the base of each searched key is the config file's value or the script's argparse
    default, as trial 0 runs it (the brief said `base None`)."""
    (tmp_path / "params.toml").write_text("[optim]\nlr = 0.01\n")
    (tmp_path / "train.py").write_text("import argparse\np = argparse.ArgumentParser()\n"
                                       "p.add_argument('--width', type=int, default=64)\n")
    space = {"optim.lr": {"low": 0.0001, "high": 0.1}}
    cfg = NASConfig.model_validate({"objective": {"command": "python train.py", "config": "params.toml",
                                                  "metric": "m", "cwd": str(tmp_path)}, "search": {"space": space}})
    assert "- optim.lr: base 0.01, range" in command_kit(cfg).facts()
    cfg = NASConfig.model_validate({"objective": {"command": "python train.py {args}", "metric": "m",
                                                  "cwd": str(tmp_path)},
                                    "search": {"space": {"width": {"choices": [32, 64, 128]}}}})
    assert "- width: base 64, range" in command_kit(cfg).facts()


def test_read_project_follows_python_m_and_relative_imports_and_hides_keys_in_code(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "train.py").write_text("from .utils import seed\nfrom . import settings\n")
    (project / "pkg" / "utils.py").write_text("def seed(): pass\n")
    (project / "pkg" / "settings.py").write_text('WANDB_API_KEY = "0123456789abcdef"\nLR = 0.1\n')
    cfg = NASConfig.model_validate({"objective": {"command": "python -m pkg.train", "metric": "m", "params": {"x": 1},
                                                  "cwd": str(project)},
                                    "search": {"space": {"x": {"low": 0, "high": 2}}}})
    assert cfg.objective is not None
    files = project_files(cfg.objective)
    assert files[0] == "pkg/train.py" and {"pkg/utils.py", "pkg/settings.py"} <= set(files)
    said = read_project(cfg.objective, files, "pkg/settings.py")
    assert "0123456789abcdef" not in said and 'WANDB_API_KEY = "[redacted]"' in said and "LR = 0.1" in said


def routing(base_url: str) -> dict[str, Any]:
    return {"providers": {"loop": {"kind": "openai", "base_url": base_url}},
            "models": {PLANNER: {"provider": "loop", "model": PLANNER}},
            "routes": {"planner": {"primary": [PLANNER]}}, "retries": 0, "timeout_s": 5}


def quick_project(folder: Path, **search: Any) -> dict[str, Any]:
    """test_own_code's pure-Python bowl as a config dict: accuracy, maximized (no torch, a fraction of a second a
    trial)."""
    config = yaml.safe_load(write_project(folder, metric="accuracy", direction="maximize").read_text())
    config["objective"]["cwd"] = str(folder / "project")
    config["search"].update(search)
    return config


def test_the_chooser_on_a_maximized_metric_picks_as_scripted(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, ServerReply(text=json.dumps({"choice": 2, "reasoning": "closer to x=1"})))
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=6, config=quick_project(in_tmp, planner="llm", llm_share=1.0,
                                                                           llm_adapt=False),
                                   out=out, llm=LLMConfig.model_validate(routing(srv.base_url)))
    runs = json.loads((out / "agent_state.json").read_text())["runs"]
    assert [r["origin"] for r in runs[1:]] == ["classical"] * 2 + ["picked"] * 3  # TPE's warm-up, then its picks
    assert [r["choice"] for r in runs[3:]] == [2, 2, 2]
    user = srv.requests[0]["messages"][1]["content"]
    assert user.startswith("Goal: the highest accuracy.") and "should raise accuracy" in user
    assert not [w for w in FORECASTER_WORDS if w in user]
    block = results["llm_contribution"]
    assert block["differed"] == 3 and "best_accuracy" in block["without_llm_picks"]
    assert results["best"]["accuracy"] == max(r["accuracy"] for r in runs if r["state"] == "complete")
    report = (out / "report.md").read_text()
    assert "## LLM contribution" in report and "closer to x=1" in report and "; accuracy " in report
    assert "higher is better" in report


def test_auto_chooses_the_llm_with_a_live_planner_model(in_tmp: Path, srv: ScriptedServer,
                                                        capsys: pytest.CaptureFixture) -> None:
    srv.default(PLANNER, ServerReply(text="OK"))
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump(routing(srv.base_url)))
    config = write_project(in_tmp)
    assert main(["nas", "-c", str(config), "--llm", "llm.yaml", "-n", "2", "--dry-run"]) == 0
    said = " ".join(capsys.readouterr().err.split())  # the dry run sends no probe: the answer decides, it says
    assert f"planner: auto (llm via route 'planner' ({PLANNER}) if the planner model answers" in said
    assert main(["nas", "-c", str(config), "--llm", "llm.yaml", "-n", "2"]) == 0
    assert f"planner: llm via route 'planner' ({PLANNER})" in capsys.readouterr().err
    assert srv.count(PLANNER) == 1  # the probe; trial 1 is a warm-up trial of TPE


@pytest.mark.parametrize("planner", ["llm", "agent"])
def test_llm_planners_without_a_planner_model_are_one_line(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                          planner: str) -> None:
    (in_tmp / "llm.yaml").write_text("{}\n")  # no model at all
    config = write_project(in_tmp)
    assert main(["nas", "-c", str(config), "--llm", "llm.yaml", "--planner", planner]) == 2
    err = capsys.readouterr().err
    assert f"--planner {planner} needs a planner model, and the routing config llm.yaml has none" in err
    assert "Traceback" not in err and run_folders(in_tmp) == []


@pytest.mark.parametrize("planner", ["llm", "agent"])
def test_a_planner_model_that_does_not_exist_is_refused_on_a_command(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                                     planner: str) -> None:
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
        "providers": {"local": {"kind": "llama_cpp"}}, "models": {"big": {"provider": "local", "model": "smollm2-1b7"}},
        "routes": {"planner": {"primary": ["big"]}}}))
    config = write_project(in_tmp)
    assert main(["nas", "-c", str(config), "--llm", "llm.yaml", "--planner", planner]) == 2
    err = capsys.readouterr().err
    assert "the planner model 'big' cannot be loaded: model 'smollm2-1b7' not found" in err
    assert "Traceback" not in err and run_folders(in_tmp) == []


def test_an_agent_that_always_runs_candidate_0_is_tpe_trial_for_trial_on_a_command(in_tmp: Path) -> None:
    for seed in (0, 1):
        tpe = run_nas_optimization(max_iterations=7, config=quick_project(in_tmp, planner="tpe", seed=seed),
                                   out=in_tmp / f"tpe{seed}")
        model = SuggestAgent()
        agent = run_nas_optimization(max_iterations=7, out=in_tmp / f"agent{seed}", llm=scripted_llm(model),
                                     config=quick_project(in_tmp, planner="agent", seed=seed, agent={
                                         "guard_patience": 2}))
        params = [[r["params"] for r in json.loads((in_tmp / f"{name}{seed}" / "agent_state.json").read_text())
                   ["runs"]] for name in ("tpe", "agent")]
        assert params[0] == params[1]
        assert (agent["best"]["run_id"], agent["best"]["accuracy"]) == (tpe["best"]["run_id"], tpe["best"]["accuracy"])
        block = agent["agent"]
        assert block["trials_by_agent"] + block["trials_by_guard"] == 6 and block["invalid_tool_calls"] == 0
        assert model.steps == 2 * block["trials_by_agent"]


def test_approve_edits_the_agents_trial_on_a_command(in_tmp: Path) -> None:
    from agentlab.core.agent.approval import describe
    from agentlab.core.config import load_config
    from agentlab.core.runs import run_in_folder
    from agentlab.nas.run import prepare, run

    asked: list[str] = []
    answers = iter([{"answer": "edit", "args": {"changes": {"x": 1.0}}}, {"answer": "yes"}])

    def approver(action: dict[str, Any]) -> dict[str, Any]:
        asked.append(describe(action))
        return next(answers)

    project = write_project(in_tmp, metric="accuracy", direction="maximize")
    cfg = load_config(project, NASConfig, ["search.planner=agent", "search.agent.approve=true",
                                           "search.max_iterations=3"])
    model = ScriptAgent([("try_config", {"changes": {"x": -2.0}, "reason": "far left"})])
    inputs = {**prepare(cfg, scripted_llm(model), config_file=project), "approver": approver}
    results, folder = run_in_folder("nas", cfg, run, inputs=inputs, out=in_tmp / "r")
    runs = json.loads((folder / "agent_state.json").read_text())["runs"]
    assert runs[1]["params"]["x"] == 1.0 and runs[1]["accuracy"] == 1.0  # the edit ran
    assert asked[0] == "the agent wants to run x=-2.0: model.width=16, x=-2\n  why: far left"
    assert results["best"]["run_id"] == "run_0001" and results["agent"]["trials_by_agent"] == 2


@pytest.mark.slow
def test_the_builtin_model_runs_the_agent_on_the_example(in_tmp: Path) -> None:
    """Three trials of examples/own_code with --planner agent on smollm2-135m (llama.cpp, in process)."""
    pytest.importorskip("llama_cpp")
    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump(example_config()))
    assert main(["nas", "-c", str(config), "--llm", str(REPO / "configs" / "llm.local.yaml"), "--planner", "agent",
                 "-n", "3", "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    assert results["trials"] == 3 and results["metric"] == "val_loss"
    block = results["agent"]
    assert "smollm2" in results["planner"]
    assert block["trials_by_agent"] + block["trials_by_guard"] == 2 and block["steps"] >= 2
    assert "## The agent" in (in_tmp / "run" / "report.md").read_text()


def test_read_project_never_lists_or_reads_files_named_for_secrets_and_scrubs_known_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner model may be a remote API: credentials.json, secrets.yaml, an auth config are not the project's
    readable files, and a secret environment variable's value is scrubbed from what is read."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789abcdef")
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print(1)\n")
    for name in ("credentials.json", "secrets.yaml", "auth.toml", "api_key.cfg", "service-account.json"):
        (project / name).write_text("{}\n")
    (project / "config.yaml").write_text("url: https://user:hunter22@example.org/db\ntoken: tok-0123456789abcdef\n")
    cfg = NASConfig.model_validate({"objective": {"command": "python train.py {params}", "metric": "m",
                                                  "params": {"lr": 0.1}, "cwd": str(project)},
                                    "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}})
    assert cfg.objective is not None
    files = project_files(cfg.objective)
    assert files == ["train.py", "config.yaml"]
    assert read_project(cfg.objective, files, "credentials.json").startswith("refused: credentials.json is not one")
    text = read_project(cfg.objective, files, "config.yaml")
    assert "tok-0123456789abcdef" not in text and "hunter22" not in text and "url:" in text


def test_the_console_says_whether_the_llm_was_asked_about_a_trial() -> None:
    """Every trial of the chooser read "(llm)", warm-up trials and trials the LLM never saw included."""
    from agentlab.core.search.records import TrialRecord
    from agentlab.nas.own_code import trial_line

    def line(**kw: Any) -> str:
        return trial_line(TrialRecord(number=3, state="complete", value=0.5, params={"x": 1}, planner="llm",
                                      changes={"x": 1}, **kw), "loss")

    # a warm-up trial the LLM was not asked about is the sampler's (it read "llm: sampler warm-up")
    assert line(origin="classical", warmup=True).startswith("run_0003 (tpe (warm-up)) x=1: loss 0.5")
    assert "(llm: picked candidate 1)" in line(origin="picked", choice=1, warmup=True)  # llm_warm_start: asked
    assert "(llm: not asked)" in line(origin="classical")
    assert "(llm: kept candidate 0)" in line(origin="kept", choice=0)
    assert "(llm: picked candidate 2)" in line(origin="picked", choice=2)
    assert "(tpe)" in trial_line(TrialRecord(number=1, state="complete", value=1.0, params={}, planner="tpe"), "m")


def test_each_agent_step_is_a_console_line(in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One line per model step (tool, arguments, seconds, tokens): a search never stands still for a model step
    without saying what the agent does."""
    import logging

    caplog.set_level(logging.INFO, logger="agentlab")
    run_nas_optimization(max_iterations=3, out=in_tmp / "a", llm=scripted_llm(SuggestAgent()),
                         config=quick_project(in_tmp, planner="agent"))
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("agent step ")]
    assert steps[0].startswith("agent step 1: suggest") and steps[1].startswith("agent step 2: run_trial {")
    assert len(steps) == 4 and all(s.endswith(" tokens)") for s in steps)
