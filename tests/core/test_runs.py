"""RunDir: layout, atomic state, status on success / failure / interruption, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentlab.core.errors import ConfigError, RunDirError
from agentlab.core.runs import RunDir, atomic_write_json, atomic_write_text


def test_create_layout_and_completed(in_tmp: Path) -> None:
    with RunDir.create("demo", {"a": 1, "api_key": "sk-secret"}, name="x", seed=3) as run:
        run.event("step", i=1)
        run.save_results({"ok": True})
        run.save_report("# hi\n")
    assert run.path.parent == in_tmp / "runs" / "demo" and run.path.name.endswith("-x")
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 3 and info["ended"]
    assert "sk-secret" not in (run.path / "config.yaml").read_text()
    assert [e["kind"] for e in run.events()] == ["step"]
    assert {p.name for p in run.path.iterdir()} >= {"config.yaml", "run.json", "events.jsonl", "results.json",
                                                     "report.md"}


@pytest.mark.parametrize("host", [["-c"], ["pipe.py", "--fast"]])  # python -c "run_...(...)", a script
def test_run_json_argv_is_the_agentlab_command_line_or_null_from_python(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch, host: list[str]) -> None:
    """A Python API's run recorded the host process's sys.argv as the run's command (["-c"], ["pipe.py"])."""
    import sys

    from agentlab.cli import main
    from agentlab.core.entry import command_line

    monkeypatch.setattr(sys, "argv", [*host, "--key=sk-runjson-secret"])
    monkeypatch.setenv("SOME_API_KEY", "sk-runjson-secret")
    scrubbed = [*host, "--key=${SOME_API_KEY}"]
    with RunDir.create("demo", out="py") as run:
        pass
    info = json.loads((run.path / "run.json").read_text())
    assert info["argv"] is None and info["entry"] == "python" and info["process_argv"] == scrubbed
    with command_line(["agentlab", "demo", "--key=sk-runjson-secret"]), RunDir.create("demo", out="cli") as run:
        pass
    info = json.loads((run.path / "run.json").read_text())
    assert info["argv"] == ["agentlab", "demo", "--key=${SOME_API_KEY}"] and info["entry"] == "cli"
    assert "process_argv" not in info
    # the CLI says its command line, in-process too (the console script, python -m agentlab, the UI's runs)
    assert main(["llm-bench", "--demo", "--requests", "1", "--out", "bench"]) == 0
    info = json.loads((in_tmp / "bench" / "run.json").read_text())
    assert info["argv"] == ["agentlab", "llm-bench", "--demo", "--requests", "1", "--out", "bench"]


def test_failure_and_interrupt_status(in_tmp: Path) -> None:
    with pytest.raises(ValueError), RunDir.create("demo") as run:
        raise ValueError("boom")
    assert run.status == "failed" and run.info["error"] == "ValueError: boom"  # unexpected: its class says what
    with pytest.raises(ConfigError), RunDir.create("demo") as said:
        said.write_text("partial.txt", "kept")  # written: the run stays, failed
        raise ConfigError("models.yaml: model 'm' not found", hint="agentlab models list")
    assert said.info["error"] == "models.yaml: model 'm' not found"  # as the console said it (`pipeline show` too)
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo") as run2:
        raise KeyboardInterrupt
    assert run2.status == "interrupted"


def test_resume_and_latest(in_tmp: Path) -> None:
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo", out=in_tmp / "r1") as run:
        run.event("trial", n=0)
        raise KeyboardInterrupt
    with RunDir.create("demo") as newest:
        newest.event("trial", n=0)
    assert RunDir.latest("demo") == newest.path
    resumed = RunDir.open("demo", resume=str(in_tmp / "r1"))
    assert resumed.status == "running" and resumed.info["resumed"][0]["previous_status"] == "interrupted"
    resumed.event("trial", n=1)
    resumed.finish("completed")
    assert [e["n"] for e in resumed.events("trial")] == [0, 1]
    # a run that failed, resumed to completion: its run.json says no error; the stop it resumed from keeps its own
    with pytest.raises(ValueError), RunDir.create("demo", out=in_tmp / "r2"):
        raise ValueError("boom")
    again = RunDir.open("demo", resume=str(in_tmp / "r2"))
    again.finish("completed")
    assert "error" not in again.info and "boom" in again.info["resumed"][-1]["previous_error"]


def test_a_bare_resume_finds_the_latest_run_made_with_out(in_tmp: Path) -> None:
    with RunDir.create("demo") as older:
        older.event("trial", n=0)
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo", out=in_tmp / "elsewhere" / "x") as run:
        run.event("trial", n=0)
        raise KeyboardInterrupt  # Ctrl-C on `--out elsewhere/x`: a bare --resume continues that one
    assert RunDir.latest("demo") == run.path
    assert older.path != run.path


NOTE_RUNS = """
import sys
from pathlib import Path
from agentlab.core.runs import _note_outside

for i in range(10):
    folder = Path(sys.argv[1]) / f"{sys.argv[2]}-{i}"
    folder.mkdir()
    _note_outside("demo", folder, sys.argv[3])
"""


def test_runs_made_with_out_at_once_are_all_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six processes noting their --out runs at the same time lose none (a read-modify-write without a lock lost
    the lines another process wrote in between: a bare --resume then missed that run)."""
    import subprocess
    import sys

    monkeypatch.setenv("AGENTLAB_CACHE", str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", NOTE_RUNS, str(tmp_path), f"p{n}", str(tmp_path / "runs")])
             for n in range(6)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    from agentlab.core.runs import _outside

    assert len(_outside("demo", tmp_path / "runs")) == 60


def test_resume_wrong_command_and_missing(in_tmp: Path) -> None:
    RunDir.create("demo", out=in_tmp / "r")
    with pytest.raises(RunDirError, match="is a run of 'demo', not of 'nas'") as info:
        RunDir.resume(in_tmp / "r", "nas")
    assert "--resume" not in (info.value.hint or "")  # not every command has one (llm-bench, serve, pipeline)
    with pytest.raises(RunDirError, match="empty: no such run folder"):  # it said "not a run folder (no run.json)"
        RunDir.resume(in_tmp / "empty", "demo")
    (in_tmp / "empty").mkdir()
    with pytest.raises(RunDirError, match="not a run folder"):
        RunDir.resume(in_tmp / "empty", "demo")
    with pytest.raises(RunDirError, match="no 'nas' run to resume") as info:
        RunDir.latest("nas")
    assert "runs/nas/<folder>" in (info.value.hint or "")  # the command's own folder, not 'runs/<command>'


def test_out_must_be_new_or_empty(in_tmp: Path) -> None:
    RunDir.create("demo", out=in_tmp / "r")
    with pytest.raises(RunDirError, match="not empty") as info:
        RunDir.create("demo", out=in_tmp / "r")
    assert "--resume" in (info.value.hint or "") and info.value.exit_code == 2
    with pytest.raises(RunDirError, match="not empty") as info:  # a command without --resume never suggests it
        RunDir.create("demo", out=in_tmp / "r", resumable=False)
    assert "--resume" not in (info.value.hint or "")
    (in_tmp / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        RunDir.create("demo", out=in_tmp / "file")


def test_atomic_write_keeps_old_file_when_serialisation_fails(in_tmp: Path) -> None:
    target = in_tmp / "state.json"
    atomic_write_json(target, {"v": 1})

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"v": Boom()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in in_tmp.iterdir() if p.name.startswith(".")] == []


def test_a_failed_atomic_write_names_the_file_asked_for(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error named the temporary file (`/proc/.x.jsonl.wk0g8eyi.tmp`), a name the user never gave."""
    (in_tmp / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as err:  # the rename over a folder fails
        atomic_write_text(in_tmp / "folder", "x")
    assert err.value.filename == str(in_tmp / "folder")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(in_tmp / ".x.json.abc.tmp"))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError) as err:
        atomic_write_text(in_tmp / "x.json", "x")
    assert err.value.filename == str(in_tmp / "x.json")
    assert [p.name for p in in_tmp.iterdir() if p.name.startswith(".")] == []


def test_events_skip_torn_last_line_and_scrub_secrets(in_tmp: Path) -> None:
    run = RunDir.create("demo", secrets=["sk-live-123"])
    run.event("llm_call", error="401 for key sk-live-123")
    with open(run.file("events.jsonl"), "a") as handle:
        handle.write('{"kind": "torn", "x": ')
    events = list(run.events())
    assert len(events) == 1 and "sk-live-123" not in json.dumps(events)
    assert "sk-live-123" not in run.file("events.jsonl").read_text()
    assert os.access(run.file("run.json"), os.R_OK)


# --------------------------------------------------------------------------- runs that never started, owners


def test_latest_skips_runs_that_never_started(in_tmp: Path) -> None:
    with RunDir.create("demo", name="real") as real:
        real.event("trial", n=0)
    stub = RunDir.create("demo", {"a": 1}, name="stub")  # crashed before doing anything
    stub.finish("failed", error="boom")
    assert RunDir.latest("demo") == real.path


def test_bad_input_before_any_work_leaves_no_folder(in_tmp: Path) -> None:
    from agentlab.core.errors import InputError

    with pytest.raises(InputError), RunDir.create("demo", {"a": 1}) as run:
        raise InputError("data.csv: not UTF-8")
    assert not run.path.exists()
    (in_tmp / "mine").mkdir()  # an empty --out folder the user made stays
    with pytest.raises(InputError), RunDir.create("demo", {"a": 1}, out=in_tmp / "mine"):
        raise InputError("bad")
    assert (in_tmp / "mine").is_dir() and not any((in_tmp / "mine").iterdir())
    with pytest.raises(RuntimeError), RunDir.create("demo") as crashed:  # a runtime failure is kept, as failed
        raise RuntimeError("bug")
    assert crashed.status == "failed"


def test_resume_that_fails_before_work_restores_the_run(in_tmp: Path) -> None:
    with RunDir.create("demo", {"n": 1}, out=in_tmp / "r") as run:
        run.event("trial", n=0)
    before = {name: (in_tmp / "r" / name).read_bytes() for name in ("run.json", "config.yaml")}
    with pytest.raises(RunDirError), RunDir.open("demo", {"n": 2}, resume=str(in_tmp / "r")):
        raise RunDirError("data moved")
    assert {name: (in_tmp / "r" / name).read_bytes() for name in before} == before
    with pytest.raises(KeyboardInterrupt), RunDir.open("demo", {"n": 2}, resume=str(in_tmp / "r")) as again:
        again.event("trial", n=1)  # did work: the interruption is recorded
        raise KeyboardInterrupt
    assert again.status == "interrupted" and "n: 2" in (in_tmp / "r" / "config.yaml").read_text()


_OWNER = """
import sys, time
from agentlab.core.runs import RunDir
run = RunDir.create("demo", out=sys.argv[1])
run.event("trial", n=0)
print("ready", flush=True)
time.sleep(60)
"""


def test_second_owner_refused_and_dead_owner_is_interrupted(in_tmp: Path) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _OWNER, str(in_tmp / "r")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert RunDir(in_tmp / "r", "demo").status == "running"
        with pytest.raises(RunDirError, match=f"still running in process {proc.pid}") as info:
            RunDir.resume(in_tmp / "r", "demo")
        assert info.value.exit_code == 2
        with pytest.raises(RunDirError, match="no 'demo' run to resume"):  # a live run is not 'the latest to resume'
            RunDir.latest("demo", root=in_tmp)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    info_json = json.loads((in_tmp / "r" / "run.json").read_text())
    assert info_json["status"] == "running"  # nobody could write anything: SIGKILL
    assert RunDir(in_tmp / "r", "demo").status == "interrupted"
    resumed = RunDir.resume(in_tmp / "r", "demo")
    assert resumed.info["resumed"][-1]["previous_status"] == "interrupted"
    resumed.finish("completed")


def test_secrets_from_variables_never_reach_the_run_folder(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-abcdef123456")
    config = {"base_url": "http://user:sk-or-v1-abcdef123456@127.0.0.1:59999/v1",
              "other": "http://bob:hunter2pw@host/v1?api_key=literal-key-99&x=1", "headers": {"X-Trace": "ok"}}
    run = RunDir.create("demo", config)
    run.event("llm_call", error="401 for sk-or-v1-abcdef123456")
    written = "".join(p.read_text() for p in run.path.iterdir() if p.is_file() and p.suffix != ".lock")
    assert "sk-or-v1-abcdef123456" not in written and "hunter2pw" not in written and "literal-key-99" not in written
    assert "http://user:${OPENROUTER_API_KEY}@127.0.0.1:59999/v1" in written  # re-runnable: the variable is named
    assert "x=1" in written and "X-Trace: ok" in written


def test_a_hidden_secret_is_refused_in_a_config_to_run_with_and_kept_for_a_resume(in_tmp: Path) -> None:
    """load_config refuses a *** credential in a config to run with (it would be sent as the key), at the line of a
    key with a dot in its name; a resume's own config.yaml is compared as saved (refusing it made every such run
    impossible to resume); *** in a URL parameter that is no credential (`?page=***`) is text."""
    from agentlab.core.config import load_config
    from agentlab.core.llm.config import LLMConfig

    path = in_tmp / "llm.yaml"
    path.write_text("providers:\n  p.1:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n"
                    "    headers:\n      X-Title: a\n      X-Auth-Key: '***'\nmodels: {}\n")
    with pytest.raises(ConfigError, match=r"llm.yaml:7: providers.p.1.headers.X-Auth-Key: holds \*\*\*"):
        load_config(path, LLMConfig, refuse_redacted=True)
    assert load_config(path, LLMConfig).providers["p.1"].headers["X-Auth-Key"] == "***"  # as saved, for a resume
    path.write_text("providers:\n  p:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1?page=***\nmodels: {}\n")
    assert load_config(path, LLMConfig, refuse_redacted=True).providers["p"].base_url.endswith("?page=***")
    path.write_text("providers:\n  p:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1?api_key=***\n"
                    "models: {}\n")
    with pytest.raises(ConfigError, match=r"llm.yaml:4: providers.p.base_url: holds \*\*\*"):
        load_config(path, LLMConfig, refuse_redacted=True)


def test_a_saved_routing_config_holding_a_hidden_secret_is_refused_on_resume(in_tmp: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume without --llm reads the first run's llm.yaml: a key read from a secret variable comes back from it;
    one written as *** (in a field, a header or a URL) would be sent as the credential, so loading it is one line
    naming the field, and the next step."""
    from agentlab.core.errors import ConfigError
    from agentlab.core.llm.config import LLMConfig, load_llm_config
    from agentlab.core.runs import routing_config

    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-abcdef123456")
    provider = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                "headers": {"Authorization": "Bearer sk-or-v1-abcdef123456", "X-Title": "agentlab"}}
    llm = LLMConfig.model_validate({"providers": {"p": provider}, "models": {"m": {"provider": "p", "model": "m"}}})
    run = RunDir.create("demo")
    run.save_llm_config(llm)
    saved = routing_config(None, run.path)
    assert saved is not None and "sk-or" not in saved.read_text()
    assert load_llm_config(saved).providers["p"].headers["Authorization"] == "Bearer sk-or-v1-abcdef123456"
    for field, changed in [("providers.p.headers.X-Auth-Key", {"headers": {"X-Auth-Key": "literal-abcdef"}}),
                           ("providers.p.base_url", {"base_url": "http://u:pw-abcdef@127.0.0.1:9/v1"})]:
        run.save_llm_config(LLMConfig.model_validate({"providers": {"p": {**provider, **changed}}, "models": {}}))
        with pytest.raises(ConfigError, match=rf"llm.yaml:\d+: {field}: holds \*\*\*, a credential a run folder"
                           ) as err:
            load_llm_config(routing_config(None, run.path))
        assert "give the config you wrote (for --llm, the routing config)" in (err.value.hint or "")
    prose = LLMConfig.model_validate({"providers": {"p": provider}, "models": {"m": {
        "provider": "p", "model": "m", "params": {"stop": ["***"]}}}})  # *** outside a credential: no secret
    run.save_llm_config(prose)
    assert load_llm_config(routing_config(None, run.path)).models["m"].params["stop"] == ["***"]
    assert routing_config(None, in_tmp) is None and routing_config(None, None) is None
    assert routing_config("mine.yaml", run.path) == "mine.yaml"  # --llm wins, and so does --set llm= (compress)
    assert routing_config(None, run.path, ["seed=1", " llm = other.yaml"]) is None


def test_config_snapshot_paths_are_absolute(in_tmp: Path) -> None:
    from agentlab.core.config import load_config
    from agentlab.nas.config import NASConfig

    cfg = load_config(None, NASConfig, ["data.path=data/x.csv"])
    run = RunDir.create("demo", cfg)
    assert f"path: {in_tmp / 'data' / 'x.csv'}" in run.file("config.yaml").read_text()
    assert str(cfg.data.path) == "data/x.csv"  # the live config is untouched


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "bell\x07", ""])
def test_run_name_must_be_a_plain_folder_name(in_tmp: Path, name: str) -> None:
    with pytest.raises(RunDirError, match="not usable in a folder name"):
        RunDir.create("demo", name=name)
    assert not (in_tmp / "runs").exists()


def test_deferred_interrupts_hold_ctrl_c_and_sigterm_until_the_block_ends() -> None:
    import os
    import signal

    from agentlab.core.files import deferred_interrupts

    def to_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = {sig: signal.signal(sig, to_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}  # as the CLI sets
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            done = []
            with pytest.raises(KeyboardInterrupt), deferred_interrupts():
                os.kill(os.getpid(), sig)
                done.append("the block ran to its end")
            assert done
            assert signal.getsignal(sig) is to_interrupt
        with deferred_interrupts():  # nothing caught: nothing raised
            pass
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_an_error_raised_while_an_interrupt_is_handled_counts_as_the_interruption(in_tmp: Path) -> None:
    """A storage write broken by Ctrl-C fails in the handler: the run is interrupted (resumable), not failed."""
    from agentlab.core.runs import caused_by_interrupt

    with pytest.raises(RuntimeError), RunDir.create("demo") as run:
        run.event("trial", n=0)
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("An exception is raised during the commit.") from None  # context kept, as Optuna's
    assert run.status == "interrupted"
    assert not caused_by_interrupt(ValueError("plain")) and not caused_by_interrupt(None)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path) -> None:
    """mkstemp's private 0600 was kept by the renamed file: reports, results and exported GGUFs other users (or a
    worker running as another user) could not read."""
    import os
    import stat

    from agentlab.core.runs import atomic_write_bytes

    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
        os.umask(0o022)
        atomic_write_bytes(tmp_path / "b.json", b"{}")
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o644
        os.chmod(tmp_path / "b.json", 0o600)  # a file replaced keeps its own mode, as open("w") would
        atomic_write_bytes(tmp_path / "b.json", b"[]")
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_hint_names_a_folder_with_spaces_as_one_shell_word(in_tmp: Path) -> None:
    """`pass --resume runs b/x to continue`: pasted, the shell read two words."""
    from agentlab.core.runs import check_out_folder

    folder = in_tmp / "runs b" / "x"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text('{"command": "nas"}')
    with pytest.raises(RunDirError) as caught:
        check_out_folder("nas", folder)
    assert f"pass --resume '{folder}' to continue that run" in (caught.value.hint or "")


def test_a_folder_given_as_a_file_is_named_with_its_article(in_tmp: Path) -> None:
    """`adir: is a directory, expected a evaluation text`."""
    from agentlab.core.errors import InputError
    from agentlab.core.files import read_text

    (in_tmp / "adir").mkdir()
    for what, said in (("evaluation text", "expected an evaluation text"), ("data file", "expected a data file")):
        with pytest.raises(InputError, match=said):
            read_text(in_tmp / "adir", what)


def test_a_bare_resume_while_the_latest_run_goes_on_says_so(in_tmp: Path) -> None:
    """`compress --resume` while the latest run was running resumed an older, finished one, silently."""
    import signal
    import subprocess
    import sys

    with RunDir.create("demo", out=in_tmp / "demo" / "older") as older:
        older.event("trial", n=0)
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, str(in_tmp / "demo" / "newer")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(RunDirError, match=f"{in_tmp / 'demo' / 'newer'}: is still running in process {proc.pid}"):
            RunDir.latest("demo", root=in_tmp)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert RunDir.latest("demo", root=in_tmp) == in_tmp / "demo" / "newer"  # killed: the latest, to resume


def test_every_resume_of_a_folder_without_its_config_yaml_says_the_folder_is_incomplete(in_tmp: Path) -> None:
    """run_nas_optimization(resume=) and run_evolution(resume=) said "config file not found" with the hint to leave
    a config option out; the CLI and run_compression each had their own check (one in resume_target now)."""
    from agentlab.core.runs import resume_target
    from agentlab.evolve import run_evolution
    from agentlab.nas.run import run_nas_optimization

    calls = {"nas": lambda folder: run_nas_optimization(resume=folder),
             "evolve": lambda folder: run_evolution(resume=folder),
             "demo": lambda folder: resume_target("demo", "")}  # a bare --resume: the latest run
    for command, call in calls.items():
        with pytest.raises(KeyboardInterrupt), RunDir.create(command, out=in_tmp / command) as run:
            run.event("trial", n=0)  # started: what a bare --resume looks for
            raise KeyboardInterrupt
        assert not (in_tmp / command / "config.yaml").exists()
        with pytest.raises(RunDirError) as info:
            call(in_tmp / command)
        assert info.value.message == f"{in_tmp / command / 'config.yaml'} is missing: the run folder is incomplete"
        option = "--resume" if command == "demo" else "resume="
        assert info.value.hint == f"restore it from a copy, or start a new run (without {option})"
