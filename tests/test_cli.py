"""The shell face: help texts, exit codes, import hygiene, config commands, and every YAML in configs/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentlab.cli import app, main
from agentlab.cli.commands import COMMANDS as TABLE
from agentlab.cli.config_cmd import CONFIG_MODELS, _command_of

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

COMMANDS = [c.name for c in TABLE]
# Commands of the design that are not built yet: they must not be registered.
UNBUILT = [c for c in ("compress", "debate", "evolve", "serve", "ui") if c not in COMMANDS]


def _all_help_paths() -> list[list[str]]:
    """Every command and subcommand of the app, as argv (from the click tree the table built)."""
    import typer

    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_help_lists_only_built_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    for unbuilt in UNBUILT:
        assert f" {unbuilt} " not in result.output


def test_the_table_and_the_app_agree() -> None:
    import typer

    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert registered == set(COMMANDS)


@pytest.mark.parametrize("args", _all_help_paths(), ids=lambda a: " ".join(a) or "agentlab")
def test_every_help_exits_zero(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output


def test_cli_import_does_not_import_torch() -> None:
    # agentlab's own imports sit at the top of its files: every module a command's run imports must stay light
    # (the HTTP-only commands serve and llm-bench above all), as must the model-loading package and the providers.
    code = ("import sys, agentlab.cli, agentlab.llm_bench, agentlab.nas, agentlab.pipeline, agentlab.core.llm.router, "
            "agentlab.core.tracking, agentlab.core.tracing, agentlab.train_persona.config, "
            "agentlab.core.llm.resources, agentlab.core.models.modelfiles, agentlab.core.llm.providers, "
            "agentlab.serve.run, agentlab.serve.app, agentlab.llm_bench.run, agentlab.pipeline.run, "
            "agentlab.core.llm.providers.hf, agentlab.core.llm.providers.llama_cpp, agentlab.core.models.load, "
            "agentlab.core.models.export, agentlab.core.models.adapters, agentlab.core.models.multilora, "
            "agentlab.core.models.gguf_export, agentlab.core.train.blend, agentlab.core.harness.lm, "
            "agentlab.debate.run, agentlab.eval.run, agentlab.evolve.run, agentlab.train_persona.run, "
            "agentlab.train_persona.export; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'optuna', 'matplotlib', 'llama_cpp', "
            "'lm_eval', 'langgraph', 'mlflow', 'opentelemetry') "
            "if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_console_help_in_subprocess() -> None:
    proc = subprocess.run([sys.executable, "-m", "agentlab.cli", "--help"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0 and "llm-bench" in proc.stdout


def test_config_validate_typo_exits_2_naming_file_line_field(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    bad = in_tmp / "llm.yaml"
    bad.write_text("# agentlab llm-bench -c llm.yaml\nproviders: {}\nmodels: {}\ntimout_s: 3\n")
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4: timout_s: unknown key (did you mean 'timeout_s'?)" in err.replace("\n", "")
    # a file not there: the hint `-c FILE` gives, with the command that writes the docs' example configs
    assert main(["config", "validate", "configs/nas.yaml"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "configs/nas.yaml: config file not found" in err and "`agentlab config examples .`" in err, err


def test_config_validate_wrong_type_and_missing_env(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    bad = in_tmp / "llm.yaml"
    bad.write_text("retries: many\n")
    assert main(["config", "validate", "--command", "llm", str(bad)]) == 2
    assert f"{bad}:1: retries:" in capsys.readouterr().err
    bad.write_text("providers:\n  p: {kind: openai, base_url: '${NOT_SET_ANYWHERE}'}\n")
    assert main(["config", "validate", "--command", "llm", str(bad)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"{bad}:2: providers.p.base_url: environment variable NOT_SET_ANYWHERE is not set" in err


@pytest.mark.parametrize("command", sorted(CONFIG_MODELS))
def test_config_show_is_valid_yaml_with_descriptions(command: str, capsys: pytest.CaptureFixture) -> None:
    import yaml

    from agentlab.cli.commands import load_schema as _model
    from agentlab.core.config import load_config

    assert main(["config", "show", command]) == 0
    out = capsys.readouterr().out
    assert out.count("\n# ") + out.count("\n  # ") >= 3  # descriptions as comments
    # the printed defaults validate as they are, and read as no file does: debate's `rule: vote` (what its empty
    # rule resolves to) made `-c shown.yaml --rounds 2` a refusal where no file debates under keep_round0
    shown = yaml.safe_load(out)
    assert load_config(None, _model(command), base=shown) == load_config(None, _model(command))
    rounds = {"rounds": 2} if command == "debate" else {}
    assert load_config(None, _model(command), base={**shown, **rounds}) == load_config(None, _model(command),
                                                                                      base=rounds)


@pytest.mark.parametrize("command", sorted(CONFIG_MODELS))
def test_saved_config_show_validates_without_naming_the_command(command: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", command]) == 0
    saved = tmp_path / "defaults.yaml"
    saved.write_text(capsys.readouterr().out)
    assert _command_of(saved) == command
    assert main(["config", "validate", str(saved)]) == 0
    # the first line is a command that reads such a file (`pipeline run --pipeline FILE`, not `pipeline -c FILE`)
    words = saved.read_text().splitlines()[0].split()[2:]
    if words[-1] == "FILE":
        *words, flag = words[:-1] if words[-2].startswith("-") else [*words[:-1], ""]
        capsys.readouterr()
        assert main([*words, "--help"]) == 0
        assert flag in capsys.readouterr().out


def test_help_paragraphs_are_unwrapped_but_lists_and_paragraphs_stay() -> None:
    """typer's rich help keeps a docstring's source line breaks inside every paragraph but the first: each help is
    unwrapped once, at registration, so `compress -h` reads in whole lines at any width."""
    from agentlab.cli.commands import unwrap

    text = "Title line.\n\n    Wrapped\n    at the source's width.\n\n    - one\n      goes on\n    - two"
    assert unwrap(text) == "Title line.\n\nWrapped at the source's width.\n\n- one goes on\n- two"
    kept = "Title.\n\n\b\nline one\nline two"  # click's \b: a paragraph kept as written
    assert unwrap(kept) == kept
    result = CliRunner().invoke(app, ["compress", "-h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "keeps the Pareto front and the best result that meets the objective's constraints" in result.output


def test_unknown_command_is_usage_error() -> None:
    assert main(["no-such-command"]) == 2


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_in_repo_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    command = _command_of(path)
    assert command in CONFIG_MODELS, f"{path.name} must open with '# agentlab <command> ...'"
    assert path.read_text().splitlines()[0].startswith(f"# agentlab {command}")
    monkeypatch.chdir(REPO)
    assert main(["config", "validate", str(path)]) == 0


def test_an_error_raised_while_handling_ctrl_c_exits_130_not_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentlab.cli as cli
    from agentlab.cli.common import console

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))

    def broken_by_interrupt(**kwargs: object) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("StorageInternalError: An exception is raised during the commit.") from None

    monkeypatch.setattr(cli, "app", broken_by_interrupt)
    assert main(["nas"]) == 130
    out = "\n".join(printed)
    assert "interrupted" in out and "internal error" not in out


@pytest.mark.parametrize("command, advice", [
    ("nas", "before a run folder was made: nothing to resume; run the command again"),
    # pipeline's own advice (rerun --from) speaks of its session: stopped before one was made, what nas says
    ("pipeline", "before a run folder was made: nothing to resume; run the command again"), ("serve", None)])
def test_ctrl_c_says_how_to_continue(command: str, advice: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command with --resume says so; pipeline has none, its rerun --from continues (it said only "interrupted")."""
    import agentlab.cli as cli
    from agentlab.cli.common import console

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))

    def interrupted(**kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    assert main([command]) == 130
    out = "\n".join(printed)
    assert "interrupted" in out
    assert (advice in out) if advice else out.strip() == "[yellow]interrupted[/]"


@pytest.mark.parametrize("args, advice", [
    (["compress", "--resume", "runs/my run"], "continue with --resume 'runs/my run'"),
    (["compress", "--resume=runs/r2"], "continue with --resume runs/r2"),
    (["nas", "--resume", "-v"], "continue with --resume"),  # bare: the latest run
])
def test_ctrl_c_before_a_resume_opened_its_run_names_it(args: list[str], advice: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the first seconds of `compress --resume runs/r2` (imports, checks) said "interrupted before a run
    folder was made: nothing to resume", of a run that was there, untouched, and resumable."""
    import agentlab.cli as cli
    from agentlab.cli.common import console

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))

    def interrupted(**kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    assert main(args) == 130
    assert printed[-1] == f"[yellow]interrupted[/] before the run was resumed (left as it was); {advice}"


def test_ctrl_c_names_the_run_folder_to_resume(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the run folder exists, Ctrl-C names it (a bare --resume picks the latest run, maybe another one)."""
    import agentlab.cli as cli
    from agentlab.cli.common import console
    from agentlab.core.runs import RunDir

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))

    def interrupted(**kwargs: object) -> int:
        with RunDir.create("nas", out=in_tmp / "r1"):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    assert main(["nas"]) == 130
    assert printed[-1] == f"[yellow]interrupted[/]; continue with --resume {in_tmp / 'r1'}"

    def resumed(**kwargs: object) -> int:  # a second call in the same process, on the same folder
        with RunDir.open("nas", resume=in_tmp / "r1"):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", resumed)
    assert main(["nas"]) == 130
    assert printed[-1] == f"[yellow]interrupted[/]; continue with --resume {in_tmp / 'r1'}"


def test_an_error_with_a_dotenv_that_cannot_be_read_is_still_one_line(in_tmp: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """Error lines are scrubbed of secrets, which reads .env: a .env that is not UTF-8 made the error a traceback."""
    (in_tmp / ".env").write_bytes(b"KEY=\xff\xfe\n")
    assert main(["eval", "nosuch.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_config_examples_writes_the_bundled_configs_and_keeps_the_users(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    repo = {p.name: p.read_bytes() for p in (REPO / "configs").glob("*.yaml")}
    assert main(["config", "examples", str(tmp_path)]) == 0
    written = {p.name: p.read_bytes() for p in (tmp_path / "configs").glob("*.yaml")}
    assert written == repo and "llm.local.yaml" in written  # every example, byte for byte
    # the example projects the docs run (`nas -c examples/own_code/nas.yaml`), as git tracks them (but .gitignore)
    tracked = subprocess.run(["git", "ls-files", "examples"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    projects = {p for p in tracked if p.endswith((".py", ".yaml", ".md")) and p != "examples/__init__.py"}
    assert {str(p.relative_to(tmp_path)) for p in (tmp_path / "examples").rglob("*") if p.is_file()} == projects
    assert all((tmp_path / p).read_bytes() == (REPO / p).read_bytes() for p in projects)
    assert "examples/own_code/train.py" in projects
    mine = tmp_path / "configs" / "nas.yaml"
    mine.write_text("# agentlab nas -c configs/nas.yaml\nmax_iterations: 2\n")
    (tmp_path / "configs" / "llm.yaml").unlink()
    capsys.readouterr()
    assert main(["config", "examples", str(tmp_path)]) == 0
    err = capsys.readouterr().err  # the console is stderr's: stdout stays for data
    # counted apart, as the first run counts what it wrote (it said "38 already there", configs and projects mixed)
    assert (f"wrote 1 example config(s) to {tmp_path / 'configs'}; already there as bundled: {len(repo) - 2} example "
            f"config(s) and {len(projects)} example project file(s)") in " ".join(err.split())
    assert "kept yours, which differ from the bundled ones: nas.yaml" in err
    assert mine.read_text().endswith("max_iterations: 2\n")  # the user's file is never overwritten
    (tmp_path / "file").write_text("x")
    assert main(["config", "examples", str(tmp_path / "file")]) == 2


def test_an_interrupt_swallowed_by_a_finalizer_is_delivered_again(tmp_path: Path) -> None:
    """A Ctrl-C landing inside a weakref callback or ``__del__`` was printed as "Exception ignored in: ...
    KeyboardInterrupt" and lost: `compress` went on to its last experiment and exited 0 (2 of 3 tries)."""
    script = tmp_path / "finalizer.py"
    # SIGINT's handler set first: a process started by a pytest-xdist worker inherits SIGINT ignored
    script.write_text("import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
                      "from agentlab.cli import keep_interrupts\nkeep_interrupts()\n"
                      "class Dies:\n    def __del__(self):\n        raise KeyboardInterrupt\n"
                      "Dies()\ntry:\n    for _ in range(500):\n        time.sleep(0.01)\n    print('lost')\n"
                      "except KeyboardInterrupt:\n    print('delivered')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "delivered" and "Exception ignored" not in done.stderr, done.stderr


def test_a_ctrl_c_while_python_shuts_down_exits_at_once_with_the_code_decided(tmp_path: Path) -> None:
    """A second Ctrl-C while Python's shutdown joined a llama.cpp worker thread (still in its step) raised in the join,
    and the shutdown freed the model under the thread: a segmentation fault (exit 139) after "interrupted" was said.
    After main() has returned, a signal now ends the process at once, with main's code (or 128 + the signal's)."""
    script = tmp_path / "shutdown.py"
    # a worker thread still busy when the main thread ends, as llama.cpp's is; the signal arrives during the join
    script.write_text("import os, signal, sys, threading, time\n"
                      "from agentlab.cli import _exit_at_once_on_signal\n"
                      "threading.Thread(target=time.sleep, args=(30,)).start()\n"
                      "_exit_at_once_on_signal(int(sys.argv[1]))\n"
                      "threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
                      "sys.exit(int(sys.argv[1]))\n")
    for code, expected in ((130, 130), (0, 130), (2, 2)):
        done = subprocess.run([sys.executable, str(script), str(code)], capture_output=True, text=True, timeout=60)
        assert done.returncode == expected and "Traceback" not in done.stderr, (code, done.returncode, done.stderr)


def test_ctrl_c_is_said_once_by_the_main_process_of_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun each process got the SIGINT and printed "interrupted; continue with --resume ...": one line
    per rank. The others (RANK > 0) now say nothing; the main one says it."""
    import agentlab.cli as cli
    from agentlab.cli.common import console

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))

    def interrupted(**kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # a stray RANK (a scheduler's) outside a launch: said
    assert main(["train-persona"]) == 130 and "interrupted" in printed[0]
    printed.clear()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train-persona"]) == 130 and printed == []
    monkeypatch.setenv("RANK", "0")
    assert main(["train-persona"]) == 130 and "interrupted" in printed[0]


def test_a_table_printed_to_a_file_keeps_its_figures(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`agentlab debate eval ... 2> log`: rich laid tables out in 80 columns when the output was no terminal, and cut
    every interval to "0.342-1…" and the headers to "accu…"."""
    from rich.table import Table

    from agentlab.cli.common import console

    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table()
    for name in ("method", "correct", "accuracy (90% interval)", "unparseable", "tokens"):
        table.add_column(name)
    table.add_row("debate of three adapters, last-round vote, two rounds", "12", "0.342-1.000", "0", "123,456")
    console.print(table)
    err = capsys.readouterr().err
    assert "0.342-1.000" in err and "accuracy (90% interval)" in err and "…" not in err
    monkeypatch.setenv("COLUMNS", "60")  # a width the user asked for is kept
    console.print(table)
    assert "…" in capsys.readouterr().err
    # read when printing, not frozen when the module is imported (a test that imported it under COLUMNS=80 made
    # every later one print at 80)
    code = ("import os; os.environ['COLUMNS'] = '80'; from agentlab.cli.common import console; "
            "del os.environ['COLUMNS']; print(console.width)")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip() == str(console.LOG_WIDTH)


def test_flags_show_no_value_type_in_help() -> None:
    """`--force <bool>`, `--json <bool>`, `-h <bool>` and `-v <int>` read as options that take a value."""
    for args in (["train-persona"], ["evolve", "worker"], []):
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output and "<int>" not in result.output.split("--verbose")[-1].split("\n")[0]
    shown = runner.invoke(app, ["train-persona", "--help"], env={"COLUMNS": "200"}).output
    assert "<int>" in shown.split("--max-steps")[1].split("\n")[0]  # an option that takes a value keeps its type


def test_an_edit_to_approve_shows_its_code_as_written(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The text an edit replaces was escaped for rich markup and printed with markup off: `cfg[lr]` read `cfg\\[lr]`."""
    import io

    from agentlab.cli.common import _new_texts

    monkeypatch.setattr("sys.stdin", io.StringIO("new = 1\n.\n"))
    edits = _new_texts({"args": {"edits": [{"path": "train.py", "old": "lr = cfg[lr]", "new": "x\n"}]}})
    assert edits[0]["new"] == "new = 1\n"
    err = capsys.readouterr()
    shown = err.out + err.err
    assert "lr = cfg[lr]" in shown and "\\[" not in shown


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_where_no_run_was_opened_speaks_of_no_run(tmp_path: Path) -> None:
    """`agentlab config show nas > /dev/full` said "the run stopped and is kept as interrupted" and "continue with
    --resume": no run exists; the write that failed is the output."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "agentlab.cli", "config", "show", "nas"], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: writing the output: no space left on device (ENOSPC)",
        "hint: send the output where there is room (or fix the disk), then run the command again"]


def test_a_full_disk_names_the_file_and_the_run_only_when_there_is_one() -> None:
    import errno

    from agentlab.core.errors import storage_error

    exc = OSError(errno.ENOSPC, "No space left on device", "out/examples/nas.yaml")
    alone = storage_error(exc, run=False)
    assert alone is not None and alone.message == "out/examples/nas.yaml: no space left on device (ENOSPC)"
    assert alone.hint == "free space there (or fix the disk), then run the command again"
    in_run = storage_error(exc)
    assert in_run is not None and "kept as interrupted" in in_run.message and "--resume" in (in_run.hint or "")


def test_a_nan_for_an_option_with_bounds_is_said_to_be_no_finite_number(capsys: pytest.CaptureFixture) -> None:
    """`--mut nan` said "Input should be less than or equal to 1": typer checks min/max with pydantic, and a NaN
    fails every bound."""
    assert main(["evolve", "blend", "--parents", "a", "b", "--child", "c", "--mut", "nan"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Invalid value for '--mut': Input should be a finite number" in err and "less than" not in err
    assert main(["evolve", "blend", "--parents", "a", "b", "--child", "c", "--mut", "2"]) == 2
    assert "Input should be less than or equal to 1" in capsys.readouterr().err  # a real bound keeps its words
