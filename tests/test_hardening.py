"""Issue 9's defects, through the real CLI: bad input is one line and exit 2, never a traceback or a half-made run
folder; resumes work from anywhere and never damage a run; hints only name options that exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentlab import __version__
from agentlab.cli import main

REPO = Path(__file__).resolve().parents[1]
BINARY = bytes(range(256)) * 4  # not UTF-8, with NUL bytes
TINY_NAS = {
    "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
    "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
    "train": {"epochs": 1, "max_train_batches": 2},
    "search": {"planner": "tpe", "pruner": "none", "space": {"model.n_heads": {"choices": [1, 2]}}},
}


def one_error(capsys: pytest.CaptureFixture, *parts: str) -> str:
    """The captured stderr: exactly one `error:` line, containing every part, and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for part in parts:
        assert part in err.replace("\n", ""), err
    return err


def tiny_nas(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text("# agentlab nas -c tiny.yaml\n" + yaml.safe_dump(TINY_NAS))
    return path


# --------------------------------------------------------------------------- 1. input that is not UTF-8


@pytest.mark.parametrize("args", [
    ["config", "validate", "{bad}"],
    ["nas", "-c", "{bad}"],
    ["llm-bench", "-c", "{bad}"],
    ["nas", "--llm", "{bad}", "--dry-run"],
    ["pipeline", "run", "--models", "{bad}", "--stage", "a=x", "--input", "hi"],
    ["pipeline", "run", "--stage", "a=x", "--input-file", "{bad}"],
    ["models", "check", "{bad}"],
], ids=lambda a: " ".join(a[:2]))
def test_file_that_is_not_utf8_is_one_line_exit_2(args: list[str], in_tmp: Path, capsys: pytest.CaptureFixture
                                                 ) -> None:
    bad = in_tmp / "bad.bin"
    bad.write_bytes(BINARY)
    (in_tmp / "models.yaml").write_text("models:\n  x: {file: x.gguf}\n")
    argv = [a.replace("{bad}", str(bad)) for a in args]
    if "--models" not in argv and argv[:2] == ["pipeline", "run"]:
        argv[2:2] = ["--models", str(in_tmp / "models.yaml")]
    assert main(argv) == 2
    one_error(capsys, str(bad), "not UTF-8")
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("content", [b"", b"- a\n- b\n", b"just text", b"a: [1, 2\n", b"\xef\xbb\xbfname: 3\n",
                                     b"!!python/object:os.system ls\n", b"a: &x [*x]\n"],
                         ids=["empty", "list", "scalar", "unclosed", "bom-wrong-type", "python-tag", "anchor"])
def test_malformed_yaml_configs(content: bytes, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    path = in_tmp / "c.yaml"
    path.write_bytes(content)
    code = main(["nas", "-c", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    assert code == 2, err  # an empty file too: given on purpose, it is never taken for the defaults
    if content == b"":
        assert "the config file is empty" in err


def test_a_latin1_file_is_told_apart_from_binary_data(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    path = in_tmp / "c.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["nas", "-c", str(path), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not UTF-8 text (byte 0xe9" in err and "another encoding (Latin-1 / Windows-1252?)" in err
    assert "binary" not in err


@pytest.mark.parametrize(("args", "says"), [
    (["nas", "--out", "runs/x\udcff", "-n", "1"], "--out: not UTF-8 text (byte 0xff at character 7)"),
    (["nas", "--out=runs/x\udcff", "-n", "1"], "--out: not UTF-8 text (byte 0xff at character 7)"),
    (["debate", "--topic", "caf\udce9 7*8?", "--dry-run"], "--topic: not UTF-8 text (byte 0xe9 at character 4)"),
    (["pipeline", "rerun", "caf\udce9"], "SESSION: not UTF-8 text (byte 0xe9 at character 4)"),
])
def test_a_command_line_byte_that_is_not_utf8_is_one_line_exit_2(args: list[str], says: str, in_tmp: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # `$(printf 'x\xff')`: nas made the folder, then failed writing the path into it (an internal error, exit 1)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and "internal error" not in err
    assert not (in_tmp / "runs").exists()


def test_a_file_name_that_is_not_utf8_is_read_where_no_run_folder_is_written(in_tmp: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    name = os.fsdecode(b"caf\xe9.yaml")  # a Latin-1 file name, as Linux allows
    (in_tmp / name).write_text("# agentlab nas -c FILE\nname: x\n")
    assert main(["config", "validate", name]) == 0, capsys.readouterr().err


def test_internal_errors_are_one_line_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import importlib

    nas_run = importlib.import_module("agentlab.nas.run")  # the package's `run` attribute is the function

    def boom(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(nas_run, "prepare", boom)
    assert main(["nas", "--dry-run"]) == 1
    one_error(capsys, "internal error: TypeError: a bug", "AGENTLAB_DEBUG=1")


# --------------------------------------------------------------------------- 5, 9. usage errors: exit 2, no folder


@pytest.mark.parametrize("args, says", [
    (["nas", "--data", "missing.csv"], "missing.csv"),
    (["nas", "-c", "missing.yaml"], "missing.yaml: config file not found"),
    (["nas", "--planner", "llm", "--llm", "empty.yaml"], "--planner llm needs a planner model"),
    (["nas", "--set", "model.n_heads=7"], "model.n_heads: must divide model.d_model"),
    (["nas", "--resume"], "no 'nas' run to resume"),
    (["nas", "--resume", "nowhere"], "nowhere: no such run folder"),
    (["llm-bench", "-c", "llm.yaml", "-m", "nosuch"], "--model nosuch: bench.models: unknown model(s) nosuch"),
    (["llm-bench", "-c", "llm.yaml", "--route", "nosuch"], "bench.route: unknown route 'nosuch'"),
    (["llm-bench", "-c", "empty.yaml"], "no models configured"),
    (["compress", "--objective", ""], "--objective '': objective: no goal"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_errors_exit_2_and_write_nothing(args: list[str], says: str, in_tmp: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "empty.yaml").write_text("{}\n")
    (in_tmp / "llm.yaml").write_text("providers:\n  p: {kind: scripted}\nmodels:\n  m: {provider: p, model: m}\n")
    assert main(args) == 2
    one_error(capsys, says)
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("args, says, usage", [
    (["nas", "apply"], "Missing argument 'run': A finished `agentlab nas` run of your own command",
     "usage: agentlab nas apply [OPTIONS] {run}; see `agentlab nas apply -h`"),
    (["compress", "--bogus"], "No such option: --bogus", "see `agentlab compress -h`"),
    (["nas", "--planner", "nope"], "Invalid value for '--planner': 'nope' is not one of 'auto'",
     "see `agentlab nas -h`"),
    (["no-such-command"], "No such command 'no-such-command'.", "see `agentlab -h`"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_click_usage_errors_are_one_line_and_a_hint(args: list[str], says: str, usage: str, in_tmp: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """click's own errors (a missing argument, an unknown option or command, a bad value) read as agentlab's: one
    `error:` line without click's box or pydantic's "Value error, ", and the usage and help in the hint."""
    assert main(args) == 2
    err = one_error(capsys, says)
    hint = [line for line in err.splitlines() if line.startswith("hint:")]
    assert len(err.splitlines()) == 2 and len(hint) == 1 and usage in hint[0], err
    assert "Value error" not in err and "╭" not in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("args", [[], ["config"], ["models"]], ids=lambda v: " ".join(["agentlab", *v]))
def test_a_group_without_its_subcommand_prints_its_help_and_no_error(args: list[str],
                                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2  # click's own exit code for a group given nothing
    captured = capsys.readouterr()
    assert "Usage: agentlab" in captured.out + captured.err and "error:" not in captured.out + captured.err


def test_out_existing_folder_hints_resume_only_where_it_exists(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    taken = in_tmp / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    (in_tmp / "llm.yaml").write_text("providers:\n  p: {kind: scripted}\nmodels:\n  m: {provider: p, model: m}\n")
    assert main(["nas", "-c", str(tiny_nas(in_tmp)), "--out", str(taken)]) == 2
    # no run of ours: nothing to resume ("pass --resume taken to continue that run" was offered for any folder)
    assert "--resume" not in one_error(capsys, "folder exists and is not empty", "choose another --out")
    run = in_tmp / "a-run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    assert main(["nas", "-c", str(tiny_nas(in_tmp)), "--out", str(run)]) == 2
    assert "--resume" not in one_error(capsys, "folder exists and is not empty")  # a run of no command
    (run / "run.json").write_text('{"command": "eval"}')
    assert main(["nas", "-c", str(tiny_nas(in_tmp)), "--out", str(run)]) == 2
    assert "--resume" not in one_error(capsys, "folder exists and is not empty")  # another command's run
    (run / "run.json").write_text('{"command": "nas"}')
    assert main(["nas", "-c", str(tiny_nas(in_tmp)), "--out", str(run)]) == 2
    assert "--resume" in one_error(capsys, "folder exists and is not empty")
    assert main(["llm-bench", "-c", "llm.yaml", "--out", str(taken)]) == 2
    err = one_error(capsys, "folder exists and is not empty", "or drop --out for a new folder")
    assert "--resume" not in err and err.startswith("error:"), err  # no blank line of an unstarted progress bar
    assert main(["pipeline", "run", "--models", "llm.yaml", "--stage", "a=m", "--input", "x", "--out", str(taken)]) == 2
    assert "--resume" not in capsys.readouterr().err
    assert (taken / "mine.txt").read_text() == "keep me" and len(list(taken.iterdir())) == 1
    # refused before anything starts: the demo's server ("demo: benchmarking ... at") and nas's data read
    assert main(["llm-bench", "--demo", "--out", str(taken)]) == 2
    captured = capsys.readouterr()
    assert "demo:" not in captured.out + captured.err and "folder exists and is not empty" in captured.err
    assert main(["nas", "--data", "missing.csv", "--out", str(taken)]) == 2
    one_error(capsys, "folder exists and is not empty")


def test_resume_with_config_or_out_is_usage_error(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["nas", "--resume", "x", "-c", str(tiny_nas(in_tmp))]) == 2
    one_error(capsys, "--resume and -c/--config both given")
    assert main(["nas", "--resume", "x", "--out", "y"]) == 2
    one_error(capsys, "--resume and --out both given")


# --------------------------------------------------------------------------- 5, 6. resume


def test_bare_resume_skips_failed_stub_and_works_from_another_directory(
        in_tmp: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "data").mkdir()
    _write_csv(in_tmp / "data" / "ett.csv")
    config = tiny_nas(in_tmp)
    assert main(["nas", "-c", str(config), "--data", "data/ett.csv", "--max-iterations", "1"]) == 0
    (run,) = (in_tmp / "runs" / "nas").iterdir()
    assert main(["nas", "-c", str(config), "--data", "data/missing.csv"]) == 2  # no stub for a bare --resume to find
    capsys.readouterr()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)  # runs/ is $AGENTLAB_RUNS: the same bare --resume from another directory
    assert main(["nas", "--resume", "--max-iterations", "2"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and len(info["resumed"]) == 1
    assert len(json.loads((run / "agent_state.json").read_text())["runs"]) == 2


def _write_csv(path: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    lines = ["date,HUFL,OT"]
    for t in range(500):
        lines.append(f"2016-07-{1 + t // 24:02d} {t % 24:02d}:00:00,{np.sin(t / 5) + rng.normal() * 0.1:.4f},"
                     f"{np.cos(t / 7):.4f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_failed_resume_leaves_the_run_as_it_was(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    data = _write_csv(in_tmp / "ett.csv")
    assert main(["nas", "-c", str(tiny_nas(in_tmp)), "--data", str(data), "--max-iterations", "1"]) == 0
    (run,) = (in_tmp / "runs" / "nas").iterdir()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    data.rename(in_tmp / "moved.csv")  # the data went away: the resume fails before doing anything
    assert main(["nas", "--resume", str(run), "--max-iterations", "2"]) == 2
    one_error(capsys, str(data))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_of_a_run_without_its_config_yaml_says_the_folder_is_incomplete(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """It said "config file not found" with the hint to leave a config option out, which the user never gave."""
    data = _write_csv(in_tmp / "ett.csv")
    assert main(["nas", "-c", str(tiny_nas(in_tmp)), "--data", str(data), "--max-iterations", "1"]) == 0
    (run,) = (in_tmp / "runs" / "nas").iterdir()
    (run / "config.yaml").unlink()
    assert main(["nas", "--resume", str(run), "--max-iterations", "2"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert f"{run / 'config.yaml'} is missing: the run folder is incomplete" in said and "leave" not in said


# --------------------------------------------------------------------------- 7. secrets


def test_key_inside_a_url_never_reaches_the_run_folder(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-secret-4242")
    config = in_tmp / "llm.yaml"
    config.write_text("providers:\n  p: {kind: openai, base_url: 'http://user:${OPENROUTER_API_KEY}@127.0.0.1:9/v1'}\n"
                      "models:\n  m: {provider: p, model: m}\n")
    assert main(["llm-bench", "-c", str(config), "--requests", "1", "--concurrency", "1", "--out", "r"]) == 1
    for path in (in_tmp / "r").iterdir():
        if path.is_file():
            assert "sk-or-secret-4242" not in path.read_text(errors="replace"), path.name
    assert "user:${OPENROUTER_API_KEY}@" in (in_tmp / "r" / "config.yaml").read_text()


# --------------------------------------------------------------------------- 11, 13, 16


def test_dry_run_json_prints_json(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["nas", "--dry-run", "--max-iterations", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_iterations"] == 2 and report["data"]["train"] > 0 and report["planner"] in ("tpe", "llm")
    assert not (in_tmp / "runs").exists()


def test_llm_bench_config_yaml_repeats_the_run(in_tmp: Path) -> None:
    (in_tmp / "llm.yaml").write_text("providers:\n  p: {kind: scripted}\nmodels:\n  m: {provider: p, model: m}\n"
                                     "  n: {provider: p, model: n}\n")
    assert main(["llm-bench", "-c", "llm.yaml", "-m", "n", "--requests", "3", "--concurrency", "2", "--prompt",
                 "a: b", "--out", "first"]) == 0
    saved = yaml.safe_load((in_tmp / "first" / "config.yaml").read_text())
    assert saved["bench"] == {"models": ["n"], "concurrency": [2], "requests": 3, "prompt": "a: b", "max_tokens": 64,
                              "route": None, "stream": True, "tools": True}
    assert main(["llm-bench", "-c", "first/config.yaml", "--out", "again"]) == 0
    again = json.loads((in_tmp / "again" / "results.json").read_text())
    assert [m["name"] for m in again["models"]] == ["n"] and again["models"][0]["requests"] == 3


def test_python_dash_m_agentlab() -> None:
    proc = subprocess.run([sys.executable, "-m", "agentlab", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "nas" in proc.stdout


def test_missing_optional_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, in_tmp: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    import builtins

    real_import = builtins.__import__

    def no_optuna(name: str, *args: object, **kwargs: object) -> object:
        if name == "optuna" or name.startswith("optuna."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    monkeypatch.delitem(sys.modules, "optuna", raising=False)
    assert main(["nas", "--max-iterations", "1", "--set", "train.epochs=1"]) == 2
    one_error(capsys, "optional package 'optuna'", f"pip install 'agentlab[ml]=={__version__}'")
    assert not (in_tmp / "runs").exists(), "a run folder was made before the missing package was found"


_KILLED_SESSION = """
import sys, time
from agentlab.core.runs import RunDir
run = RunDir.create("pipeline", out=sys.argv[1])
run.write_json("session.json", {"input": "q", "parent_run_id": None})
print("ready", flush=True)
time.sleep(60)
"""


def test_killed_pipeline_session_shows_interrupted(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    import signal

    folder = in_tmp / "runs" / "pipeline" / "20260101-000000-pipeline"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SESSION, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert main(["pipeline", "history", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "running"  # alive: really running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["pipeline", "history", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "interrupted"
    assert main(["pipeline", "show", folder.name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "interrupted"


def test_resume_of_a_live_nas_run_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    from agentlab.core.runs import RunDir

    with RunDir.create("nas", {"name": "live"}, out=in_tmp / "live") as live:  # owned here, as by a running search
        live.event("trial", n=0)
        assert main(["nas", "--resume", str(in_tmp / "live")]) == 2
        one_error(capsys, "is still running in process")
        assert live.status == "running"


def test_a_reader_gone_while_an_error_is_said_exits_141(in_tmp: Path) -> None:
    """The reader left before the error line: the ReaderGone raised while printing it escaped main() (exit 1 from
    the shell, an exception for in-process callers)."""
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "config", "show", "nosuchcommand"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=in_tmp)
    assert proc.stderr is not None
    proc.stderr.close()  # before the process, still importing, writes anything
    assert proc.wait(timeout=120) == 141


def test_a_plain_interrupt_said_to_come_for_another_reason_is_recorded_so(in_tmp: Path) -> None:
    """A progress bar's thread whose reader left sends SIGINT to the main thread: run.json said Ctrl-C."""
    from agentlab.core.runs import RunDir, interrupted_by

    interrupted_by("interrupted (the output's reader went away: a closed pipe)")
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo", out=in_tmp / "r") as run:
        raise KeyboardInterrupt
    assert run.info["error"] == "interrupted (the output's reader went away: a closed pipe)"
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo", out=in_tmp / "s") as later:
        raise KeyboardInterrupt  # said once: the next is Ctrl-C's
    assert later.info["error"] == "interrupted (Ctrl-C or SIGTERM)"


def test_a_reader_that_goes_away_interrupts_the_run_for_resume(in_tmp: Path) -> None:
    """`agentlab debate ... 2>&1 | head -2`: rich's broken-pipe exit recorded the run failed with "SystemExit: 1"."""
    (in_tmp / "llm.yaml").write_text('providers:\n  s: {kind: scripted, replies: ["Answer: 11\\nConfidence: 80%"], '
                                     'latency_s: 0.3}\nmodels:\n  a: {provider: s, model: a}\n'
                                     '  b: {provider: s, model: b}\n')
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "debate", "--topic", "What is 5 plus 6?", "--llm",
                             "llm.yaml", "--set", "agents=[{model: a}, {model: b}]", "--rounds", "3", "--out", "d"],
                            stderr=subprocess.PIPE, cwd=in_tmp)
    assert proc.stderr is not None
    proc.stderr.readline()  # "run folder: d"
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141  # as a process SIGPIPE killed: no Ctrl-C's 130
    info = json.loads((in_tmp / "d" / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert info["error"] == "interrupted (the output's reader went away: a closed pipe)"
    assert main(["debate", "--resume", "d"]) == 0


def test_a_taken_out_under_a_launch_lets_the_other_processes_go(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """The main process of torchrun refused an occupied --run-dir before it could tell the others: they waited in
    the process group's set-up for 30 minutes (and ignored SIGTERM)."""
    import agentlab.core.train.dist as dist

    told: list[object] = []
    monkeypatch.setattr(dist, "share", lambda value=None: told.append(value))
    monkeypatch.setattr(dist, "leave", lambda: told.append("left"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    (in_tmp / "taken").mkdir()
    (in_tmp / "taken" / "mine.txt").write_text("keep me")
    assert main(["train-persona", "--run-dir", "taken"]) == 2
    one_error(capsys, "--run-dir taken: folder exists and is not empty")
    assert told == [None, "left"]  # the others are told there is no run, and go
