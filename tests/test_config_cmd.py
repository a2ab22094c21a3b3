"""`agentlab config` and the schema helpers it shares with Python callers: what a new user meets first."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest

from agentlab.cli import main


def one_line(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_load_schema_of_an_unknown_name_is_the_clis_usage_error(capsys: pytest.CaptureFixture) -> None:
    """`load_schema("nosuch")`, which the docs' From Python shows, raised a bare KeyError."""
    from agentlab.cli.commands import load_schema
    from agentlab.core.errors import UsageError

    with pytest.raises(UsageError, match="no config schema for 'nosuch'") as exc:
        load_schema("nosuch")
    assert exc.value.exit_code == 2 and "nas, compress" in (exc.value.hint or "")
    assert main(["config", "show", "nosuch"]) == 2
    assert f"error: no config schema for 'nosuch' hint: {exc.value.hint}" in one_line(capsys)


def test_config_text_is_what_config_show_prints_and_validates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The docs said `describe_model(NASConfig)` is what `config show nas` prints: it lacks the first line, so its
    saved output failed `config validate`. `config_text` is the CLI's own text."""
    from agentlab.cli.config_cmd import config_text

    assert main(["config", "show", "nas"]) == 0
    assert capsys.readouterr().out == config_text("nas") + "\n"
    saved = tmp_path / "nas.yaml"
    saved.write_text(config_text("nas"))
    assert main(["config", "validate", str(saved)]) == 0


def test_examples_refuse_before_writing_when_an_example_projects_folder_is_a_file(tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture) -> None:
    """examples/own_code a file: nothing is written, neither the configs nor the other projects."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "own_code").write_text("mine")
    assert main(["config", "examples", str(tmp_path)]) == 2
    err = one_line(capsys)
    assert f"error: {tmp_path / 'examples' / 'own_code'} exists and is not a folder; nothing was written" in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["examples", "own_code"]


def test_examples_refuse_before_writing_when_a_target_is_a_folder(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """configs/nas.yaml a folder: 12 configs were written, then exit 1 with a hint about disk space."""
    (tmp_path / "configs" / "nas.yaml").mkdir(parents=True)
    assert main(["config", "examples", str(tmp_path)]) == 2
    err = one_line(capsys)
    assert f"error: {tmp_path / 'configs' / 'nas.yaml'} exists and is not a file; nothing was written" in err, err
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == ["nas.yaml"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder where no file can be made")
def test_examples_where_nothing_can_be_written_is_exit_2(capsys: pytest.CaptureFixture) -> None:
    """`config examples /proc/x` was exit 1 with a hint about disk space."""
    assert main(["config", "examples", "/proc/x"]) == 2
    assert "error: /proc/x: cannot write in /proc (" in one_line(capsys)


def test_validate_an_empty_file_says_it_is_empty(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Without --command an empty file said "cannot tell which command this config is for"."""
    (in_tmp / "empty.yaml").write_text("")
    for args in ([], ["--command", "nas"]):
        assert main(["config", "validate", "empty.yaml", *args]) == 2
        said = one_line(capsys)
        assert "error: empty.yaml: the config file is empty (no keys, or only comments)" in said
        # FILE is required here: the hint offered "or give no file for the defaults"
        assert "prints every default)" in said and "give no file" not in said
    assert main(["nas", "-c", "empty.yaml"]) == 2  # -c may be left out: that hint stays
    assert "or give no file for the defaults" in one_line(capsys)
    (in_tmp / "plain.yaml").write_text("name: mine\n")  # keys but no first line: the schema is what is missing
    assert main(["config", "validate", "plain.yaml"]) == 2
    said = one_line(capsys)  # the hint's example named llm-bench, whatever the file held: now the commands
    assert "plain.yaml: cannot tell which command this config is for" in said
    assert "hint: pass --command CMD (nas, compress, llm-bench," in said and "`# agentlab CMD ...`" in said


def test_validate_warns_of_a_moved_key_as_the_command_does(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`config validate old.yaml --command compress` printed the moved keys' warning without "warning:"."""
    (in_tmp / "old.yaml").write_text("planner: tpe\n")
    assert main(["config", "validate", "old.yaml", "--command", "compress"]) == 0
    assert "warning: old.yaml: planner moved to search.planner" in one_line(capsys)


def test_validate_a_missing_file_does_not_offer_to_leave_it_out(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "validate", "nosuch.yaml"]) == 2
    said = one_line(capsys)
    assert "error: nosuch.yaml: config file not found" in said and "hint: check the path; `agentlab config " \
        "examples .` writes the example configs" in said and "leave that option out" not in said
    assert main(["nas", "-c", "nosuch.yaml"]) == 2  # -c may be left out: the hint says so
    assert "check the path, or leave that option out for the defaults" in one_line(capsys)


def test_validate_a_first_line_naming_no_command(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "foo.yaml").write_text("# agentlab foo -c FILE\nname: mine\n")
    assert main(["config", "validate", "foo.yaml"]) == 2
    assert "error: foo.yaml: cannot tell which command this config is for: line 1 names 'foo', which has no config " \
        "schema (schemas: nas, compress," in one_line(capsys)
    (in_tmp / "prose.yaml").write_text("# agentlab config for my forecasting runs\nname: mine\n")
    assert main(["config", "validate", "prose.yaml"]) == 2
    assert "line 1 names 'config', which has no config schema" in one_line(capsys)
    assert main(["config", "validate", "foo.yaml", "--command", "nas"]) == 0  # --command wins over the line


def test_validate_an_http_provider_base_url(in_tmp: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`base_url: not a url` validated, and llm-bench failed to connect; ${VAR} is checked once filled in."""
    bad = in_tmp / "llm.yaml"
    for kind in ("openai", "anthropic"):
        bad.write_text(f"# agentlab llm: routing\nproviders:\n  p:\n    kind: {kind}\n    base_url: not a url\n")
        assert main(["config", "validate", "llm.yaml"]) == 2
        assert "error: llm.yaml:5: providers.p.base_url: not an http(s) URL" in one_line(capsys)
    bad.write_text("# agentlab llm: routing\nproviders:\n  p: {kind: openai, base_url: '${MY_URL}'}\n")
    monkeypatch.setenv("MY_URL", "http://127.0.0.1:8080/v1")
    assert main(["config", "validate", "llm.yaml"]) == 0
    monkeypatch.setenv("MY_URL", "127.0.0.1:8080/v1")
    assert main(["config", "validate", "llm.yaml"]) == 2
    assert "error: llm.yaml:3: providers.p.base_url: not an http(s) URL" in one_line(capsys)


@pytest.mark.parametrize("codec, name", [("utf-16", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32", "UTF-32")])
def test_a_utf16_config_is_named_as_such(codec: str, name: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A UTF-16 file with its byte-order mark (Windows' "Unicode") was "binary data, not text"."""
    text = "# agentlab nas -c FILE\nname: mine\n"
    bom = codecs.BOM_UTF16_BE if codec == "utf-16-be" else b""
    (in_tmp / "u.yaml").write_bytes(bom + text.encode(codec))
    assert main(["config", "validate", "u.yaml"]) == 2
    err = one_line(capsys)
    assert "error: u.yaml:1: the config file is not UTF-8 text" in err
    assert f"it looks like {name} text" in err and f"iconv -f {name} -t UTF-8 u.yaml > utf8-copy" in err, err
    assert "binary" not in err


REPO = Path(__file__).resolve().parents[1]


def test_another_commands_config_is_one_line_naming_that_command(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A config of another command gave ~30 "unknown key" lines, out of line order; a genuine config with typos
    keeps a line per key, in the file's order."""
    models, routing = REPO / "configs" / "models.yaml", REPO / "configs" / "llm.local.yaml"
    assert main(["llm-bench", "-c", str(models)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 2, err  # the error and its hint
    said = " ".join(err.split())
    assert f"error: {models}: a config of `agentlab models check` (its line 1 says so), not of `agentlab llm-bench`" \
        in said and "(the first, line 12: models_directory: unknown key" in said
    assert "hint: give it to `agentlab models check`, or write a config for `agentlab llm-bench`" in said
    assert main(["config", "validate", str(routing), "--command", "models"]) == 2
    assert "a config of `agentlab llm-bench` (its line 1 says so), not of `agentlab models`" in one_line(capsys)
    assert main(["config", "validate", str(routing), "--command", "llm"]) == 0  # a routing config is --llm's file
    capsys.readouterr()
    (in_tmp / "typos.yaml").write_text("# agentlab llm-bench -c typos.yaml\nrotes: {}\nmodels:\n"
                                       "  a: {provider: p, modle: x}\nprovidrs: {}\n")
    assert main(["config", "validate", "typos.yaml"]) == 2
    err = capsys.readouterr().err
    assert re.findall(r"typos\.yaml:(\d+):", err) == ["2", "4", "4", "5"], err  # pydantic's order was 5, 4, 2
    assert err.startswith("error: typos.yaml:2: rotes: unknown key (did you mean 'routes'?)")


@pytest.mark.parametrize("command", ["compress", "debate", "eval", "evolve", "train-persona"])
@pytest.mark.parametrize(("name", "why"), [("n" * 101, "101 characters, more than 100"),
                                           (".hidden", "starts with '.' (a hidden folder)"), ("", "empty"),
                                           ("a/b", "holds '/' or '\\'")])
def test_validate_refuses_a_run_name_no_run_folder_takes(in_tmp: Path, capsys: pytest.CaptureFixture, command: str,
                                                         name: str, why: str) -> None:
    """`config validate FILE --set name=<101 characters>` said ok, then the command refused the name when it made
    the run folder (`run name ...: not usable in a folder name`): the schema checks the same rule."""
    file = in_tmp / "c.yaml"
    file.write_text(f"# agentlab {command} -c FILE\nname: ok-name\n")
    assert main(["config", "validate", str(file)]) == 0
    capsys.readouterr()
    assert main(["config", "validate", str(file), "--set", f"name={name}"]) == 2
    assert f"error: --set name={name}: name: not usable in a folder name: {why}" in one_line(capsys)
    file.write_text(f"# agentlab {command} -c FILE\nname: '{name}'\n")  # named by its line, as other fields are
    assert main(["config", "validate", str(file)]) == 2
    assert f"error: {file}:2: name: not usable in a folder name: {why}" in one_line(capsys)


def test_validate_an_empty_command_is_refused_and_help_lists_the_schemas(in_tmp: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """`--command ''` was ignored (the schema came from the file's first line, exit 0); the help of --command did not
    say which schemas there are (`config show`'s did)."""
    from agentlab.cli.config_cmd import CONFIG_MODELS

    (in_tmp / "nas.yaml").write_text("# agentlab nas -c FILE\nname: mine\n")
    assert main(["config", "validate", "nas.yaml", "--command", ""]) == 2
    err = one_line(capsys)
    assert "error: no config schema for ''" in err and f"choose one of: {', '.join(CONFIG_MODELS)}" in err
    assert main(["config", "validate", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert f"Schema to use, one of: {', '.join(CONFIG_MODELS)}" in help_text


def test_validate_refuses_a_fifo_in_one_line_instead_of_waiting_forever(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """`config validate fifo.yaml` (mkfifo) hung on the open, waiting for a writer; `-c` of every command too."""
    import os

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for argv in (["config", "validate", str(fifo)], ["config", "validate", "--command", "nas", str(fifo)],
                 ["nas", "-c", str(fifo), "--dry-run"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.splitlines() == [f"error: {fifo}: is a pipe (FIFO), not a regular file; expected a config file",
                                    "hint: save the content to a file and pass that file"], err


def test_examples_refuses_an_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    """`config examples ''` wrote into the current folder, as if FOLDER had been left out."""
    monkeypatch.chdir(tmp_path)
    assert main(["config", "examples", ""]) == 2
    assert ("error: Invalid value for 'folder': empty; give the folder to write into, or leave FOLDER out for the "
            "current folder") in one_line(capsys)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    assert main(["config", "examples", "afile"]) == 2  # a file is still refused by the parser
    assert "Invalid value for 'folder': Directory 'afile' is a file." in one_line(capsys)
