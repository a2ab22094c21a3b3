"""The bundled lm-eval tasks and agentlab's task loading, without a model: the shipped files equal their generator,
data paths made absolute for bundled and --include-path tasks (from any working directory), one clear error for a
task whose data is not on disk or an unknown name, the export for lm-eval's own CLI, and the persona style checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from eval_helpers import USER_TASK, user_tasks  # noqa: E402

from agentlab.core.errors import InputError  # noqa: E402
from agentlab.core.harness import taskdata  # noqa: E402
from agentlab.core.harness.bundled import style_checks  # noqa: E402
from agentlab.core.harness.tasks import BUNDLED, export_tasks, list_tasks, load_tasks, task_manager  # noqa: E402


def test_shipped_task_files_equal_the_generator() -> None:
    for name, text in taskdata.files().items():
        assert (BUNDLED / name).read_text(encoding="utf-8") == text, f"regenerate: python -m {taskdata.__name__}"
    assert {p.name for p in BUNDLED.glob("*.yaml")} == {n for n in taskdata.files() if n.endswith(".yaml")}


def test_bundled_items_are_well_formed() -> None:
    for name in ("arithmetic", "capitals", "units"):
        rows = getattr(taskdata, name)()
        assert len({r["question"] for r in rows}) == len(rows)
        for row in rows:
            assert len(set(row["choices"])) == 4 and row["choices"][row["gold"]] == row["answer"]


def test_bundled_and_included_tasks_load_from_any_directory(in_tmp: Path) -> None:
    folder = user_tasks(in_tmp / "elsewhere")
    (in_tmp / "cwd").mkdir()
    import os

    os.chdir(in_tmp / "cwd")  # lm-eval alone would look for data/sums.jsonl here
    manager = task_manager([folder], names=["agentlab_capitals_mc", "my_sums"])
    loaded = load_tasks(manager, ["agentlab_capitals_mc", "my_sums", "agentlab_persona_style"])
    assert set(loaded["tasks"]) == {"agentlab_capitals_mc", "my_sums", "agentlab_style_terse",
                                    "agentlab_style_teacher", "agentlab_style_pirate"}
    assert len(loaded["tasks"]["my_sums"].eval_docs) == 2
    assert len(loaded["tasks"]["agentlab_capitals_mc"].eval_docs) == 33
    files = loaded["tasks"]["my_sums"].config.dataset_kwargs["data_files"]
    assert files == {"test": str(folder.resolve() / "data" / "sums.jsonl")}
    assert (folder / "my_task.yaml").read_text() == USER_TASK  # the YAML on disk is never changed


def test_a_task_whose_data_is_missing_is_one_clear_error(in_tmp: Path) -> None:
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").unlink()
    manager = task_manager([folder], names=["my_sums"])
    with pytest.raises(InputError) as caught:
        load_tasks(manager, ["my_sums"])
    assert "task 'my_sums'" in caught.value.message and "sums.jsonl is not on disk" in caught.value.message
    assert "never downloads" in (caught.value.hint or "")


@pytest.mark.parametrize("data, said", [
    (b"", "sums.jsonl is empty"), (b"\n\n", "sums.jsonl is empty"),
    (b'\xff\xfe{"q"\n', "sums.jsonl is not UTF-8 text"),
    (b'{"q": "1", "options": ["1"], "label": 0}\n{"q": \n', "sums.jsonl:2: not JSON (Expecting value)"),
    (b'[1, 2]\n', "sums.jsonl:1: not a JSON object")])
def test_a_local_data_file_that_is_not_json_lines_is_named_with_its_line(in_tmp: Path, data: bytes,
                                                                         said: str) -> None:
    """datasets said only "An error occurred while generating the dataset" (or StopIteration), and the hint was to
    fetch a hub dataset: the file and line, and what a line holds."""
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").write_bytes(data)
    manager = task_manager([folder], names=["my_sums"])
    with pytest.raises(InputError) as caught:
        load_tasks(manager, ["my_sums"])
    assert caught.value.message.startswith("task 'my_sums': ") and said in caught.value.message
    assert "one JSON object" in (caught.value.hint or "")


@pytest.mark.parametrize("row, said", [({"q": "2 + 2", "options": ["4", "5"], "label": 7}, "list index out of range")])
def test_items_that_do_not_fit_the_yaml_name_the_file_not_a_download(in_tmp: Path, row: dict, said: str) -> None:
    """The data is on disk: the hint was to fetch a hub dataset."""
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError) as caught:
        load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert caught.value.message.startswith("task 'my_sums': lm-eval could not make its items from ")
    assert "sums.jsonl" in caught.value.message and said in caught.value.message
    assert "doc_to_text" in (caught.value.hint or "") and "download" not in (caught.value.hint or "")


@pytest.mark.parametrize("rows, said", [
    ([{"q": "1 + 1", "options": ["2", "3"], "label": 0}, {"q": "2 + 2", "options": ["4", "5"]}],
     "sums.jsonl:2: the field 'label' its YAML's doc_to_target reads is missing"),  # was scored 0.000, exit 0
    ([{"q": "1 + 1", "options": ["2", "3"]}] * 2, "sums.jsonl:1: the field 'label' its YAML's doc_to_target reads "
     "is missing"),  # no line has it: lm-eval took 'label' as a literal target
    ([{"q": "1 + 1", "options": ["2", "3"], "label": None}],
     "sums.jsonl:1: the field 'label' its YAML's doc_to_target reads is null"),
    ([{"question": "2 + 2", "options": ["4", "5"], "label": 0}] * 2,
     "sums.jsonl: no line has the field 'q' its YAML's doc_to_text reads")])  # lm-eval's error named no file
def test_a_data_line_without_a_field_the_yaml_reads_is_named_with_its_line(in_tmp: Path, rows: list[dict],
                                                                           said: str) -> None:
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as caught:
        load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert caught.value.message.startswith("task 'my_sums': ") and caught.value.message.endswith(said)
    assert "give every line of the data" in (caught.value.hint or "")


def test_a_template_field_null_or_missing_on_some_lines_is_left_to_the_template(in_tmp: Path) -> None:
    """A Jinja template may test a field (``{% if context %}``), and datasets fills a key a line lacks with null:
    such lines were refused as 'is null'; only a field no line has is."""
    folder = user_tasks(in_tmp)
    yaml_file = folder / "my_task.yaml"
    yaml_file.write_text(yaml_file.read_text().replace('"{{q}} ="', '"{% if context %}{{context}} {% endif %}{{q}} ="'))
    rows = [{"context": "sums", "q": "1 + 1", "options": ["2", "3"], "label": 0},
            {"context": None, "q": "2 + 2", "options": ["4", "5"], "label": 0},
            {"q": "3 + 3", "options": ["6", "7"], "label": 0}]
    (folder / "data" / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])


def test_a_task_with_process_docs_is_not_checked_for_fields(in_tmp: Path) -> None:
    """process_docs may make the fields the templates read: the lines are not held to them."""
    from agentlab.core.harness.tasks import _fields_read

    assert _fields_read({"doc_to_text": "{{q}} =", "doc_to_target": "label", "process_docs": "x"}) == {}
    assert _fields_read({"doc_to_text": "{% for c in opts %}{{ c }}{% endfor %} {{ range(2) }}",
                         "doc_to_target": "0", "doc_to_choice": ["a", "b"]}) == {"opts": ("doc_to_text", False)}
    assert _fields_read({"doc_to_text": "{{label}}", "doc_to_target": "label"}) == {"label": ("doc_to_target", True)}


def test_a_split_the_data_lacks_is_named(in_tmp: Path) -> None:
    folder = user_tasks(in_tmp)
    yaml_file = folder / "my_task.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("test_split: test", "test_split: nosuch"))
    with pytest.raises(InputError) as caught:
        load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert caught.value.message == "task 'my_sums': the split 'nosuch' its YAML reads is not in its data (its " \
        "data_files name test)"


def test_a_data_line_holding_a_line_separator_inside_a_string_is_one_row(in_tmp: Path) -> None:
    """json.dumps(ensure_ascii=False) writes U+2028 raw; str.splitlines() would cut the line there."""
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").write_text(
        '{"q": "2 +\u2028 2", "options": ["4", "5"], "label": 0}\n', encoding="utf-8")
    loaded = load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert len(loaded["tasks"]["my_sums"].eval_docs) == 1


def test_an_unknown_task_names_the_nearest(in_tmp: Path) -> None:
    manager = task_manager(defaults=False)
    with pytest.raises(InputError) as caught:
        load_tasks(manager, ["agentlab_capital"])
    assert "agentlab_capitals" in caught.value.message
    with pytest.raises(InputError, match="not found"):
        task_manager([in_tmp / "no-such-folder"])


def test_list_and_export_for_lm_evals_own_cli(in_tmp: Path) -> None:
    names = {t.name: t for t in list_tasks()}
    assert names["agentlab_units_mc"].output_type == "multiple_choice"
    assert names["agentlab_persona_style"].kind == "tag"
    assert "exact match" in names["agentlab_arithmetic"].description
    written = export_tasks(in_tmp / "exported")
    assert (in_tmp / "exported" / "style_checks.py") in written
    text = (in_tmp / "exported" / "agentlab_units.yaml").read_text()
    assert f"test: {BUNDLED / 'units.jsonl'}" in text
    from lm_eval.tasks import TaskManager  # lm-eval alone, as its CLI does, on the exported copies

    plain = TaskManager(include_defaults=False, include_path=str(in_tmp / "exported"))
    loaded = plain.load(["agentlab_units", "agentlab_style_pirate"])
    assert len(loaded["tasks"]["agentlab_units"].eval_docs) == 100
    with pytest.raises(InputError, match="not empty"):
        export_tasks(in_tmp / "exported")
    (in_tmp / "a.yaml").write_text("a: 1\n")
    with pytest.raises(InputError, match="is a file, not a folder"):  # was "Not a directory", exit 1
        export_tasks(in_tmp / "a.yaml")
    with pytest.raises(InputError) as caught:  # was "No such file or directory", exit 1
        export_tasks(in_tmp / "a.yaml" / "sub")
    assert caught.value.message == f"--export {in_tmp / 'a.yaml' / 'sub'}: cannot write in {in_tmp / 'a.yaml'} " \
        "(not a folder); nothing was written"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_export_into_a_folder_that_cannot_be_made_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`eval tasks --export /proc/x` was exit 1 (root passes os.access there)."""
    from agentlab.cli import main

    assert main(["eval", "tasks", "--export", "/proc/x"]) == 2
    assert "error: --export /proc/x: cannot write in /proc (" in capsys.readouterr().err


def test_a_task_yaml_lm_eval_cannot_read_is_named(in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    """lm-eval's index skips a YAML it cannot read without a word (its task is then "unknown"): each one in an
    --include-path folder is a warning naming it."""
    folder = user_tasks(in_tmp)
    (folder / "broken.yaml").write_bytes(b"task: [unclosed\n")
    (folder / "latin.yaml").write_bytes("task: caf\xe9\n".encode("latin-1"))
    with caplog.at_level("WARNING"):
        names = {t.name for t in list_tasks([folder])}
    assert "my_sums" in names
    warned = [r.getMessage() for r in caplog.records if "not a readable task YAML" in r.getMessage()]
    assert [m.split(":")[0] for m in warned] == [str(folder.resolve() / "broken.yaml"),
                                                 str(folder.resolve() / "latin.yaml")]


@pytest.mark.parametrize("line, said", [
    ("test_split: [1, 2]", "test_split is [1, 2], not text (a split name of the data)"),
    ("training_split: {a: 1}", "training_split is {\"a\": 1}, not text"),
    ("num_fewshot: two", "num_fewshot is \"two\", not a whole number, 0 or more"),
    ("metric_list: acc", "metric_list is \"acc\", not a list of mappings, each with a metric key"),
    ("output_type: choice", "output_type is \"choice\", not loglikelihood or loglikelihood_rolling or "),
    ("target_delimiter: [1]", "target_delimiter is [1], not text"),
    ("dataset_kwargs: [1]", "dataset_kwargs is [1], not a mapping"),
])
def test_a_task_yaml_key_of_the_wrong_type_names_the_yaml_and_the_key(in_tmp: Path, line: str, said: str) -> None:
    """test_split: [1, 2] was "internal error: TypeError: unhashable type: 'list'" (exit 1); other keys failed inside
    lm-eval with its words ("'>' not supported between instances of 'str' and 'int'"), or were ignored."""
    folder = user_tasks(in_tmp)
    yaml_file = folder / "my_task.yaml"
    key = line.split(":")[0]
    kept = [row for row in USER_TASK.split("\n") if not row.startswith(f"{key}:")]
    if key in ("metric_list", "dataset_kwargs"):  # drop the key's indented lines too
        text = USER_TASK.split(f"{key}:")[0] + USER_TASK.split(f"{key}:")[1].split("\n", 1)[1].lstrip(" -\n")
        kept = [row for row in text.split("\n") if not row.startswith(("  ", "    "))]
    yaml_file.write_text("\n".join(kept) + f"\n{line}\n")
    with pytest.raises(InputError) as caught:
        load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert caught.value.message == f"task 'my_sums': {yaml_file.resolve()}: {said}" or \
        caught.value.message.startswith(f"task 'my_sums': {yaml_file.resolve()}: {said}"), caught.value.message
    assert f"{key} takes" in (caught.value.hint or "")


def test_a_task_name_lm_evals_index_cannot_take_is_refused_at_once(in_tmp: Path) -> None:
    """task: 3 broke lm-eval's index for every task ("'<' not supported between instances of 'int' and 'str'")."""
    folder = user_tasks(in_tmp)
    (folder / "other.yaml").write_text("task: 3\ndataset_path: json\n")
    with pytest.raises(InputError) as caught:
        task_manager([folder], names=["my_sums"])
    assert caught.value.message.startswith(f"{(folder / 'other.yaml').resolve()}: task is 3, not text")


@pytest.mark.parametrize("broken, why", [
    ("latin", "not UTF-8 text (byte "), ("yaml", "not valid YAML: "), ("empty", "empty: no task keys")])
def test_an_unreadable_task_yaml_is_named_when_its_task_is_asked(in_tmp: Path, broken: str, why: str) -> None:
    """lm-eval's index skips the YAML: a warning, ~15 s reading lm-eval's own tasks, then "task 'my_sums' is not
    known to lm-eval here (nearest: meqsum)". A file whose task: line names the task is named at once, without
    lm-eval's own index; one that names none (empty) is named in the error about the unknown task."""
    folder = user_tasks(in_tmp)
    yaml_file = folder / "my_task.yaml"
    if broken == "latin":
        yaml_file.write_bytes(USER_TASK.replace("{{q}} =", "{{q}} = caf\xe9").encode("latin-1"))
    elif broken == "yaml":
        yaml_file.write_text(USER_TASK.replace("output_type: multiple_choice", "output_type: [multiple_choice"))
    else:
        yaml_file.write_text("")
    manager = task_manager([folder], names=["my_sums"], defaults=None if broken != "empty" else False)
    assert "hellaswag" not in manager.task_index  # lm-eval's own ~15,000 YAMLs not read
    with pytest.raises(InputError) as caught:
        load_tasks(manager, ["my_sums"])
    path = yaml_file.resolve()
    if broken == "empty":
        assert caught.value.message.startswith("task 'my_sums' is not known to lm-eval here")
        assert f"; {path} was skipped, not a readable task YAML ({why})" in caught.value.message
    else:
        assert caught.value.message.startswith(f"task 'my_sums': {path} is not a readable task YAML ({why}")
    assert "\n" not in caught.value.message and "fix" in (caught.value.hint or "")


def test_a_user_task_named_like_a_bundled_one_is_refused(in_tmp: Path) -> None:
    """It replaced the bundled task: its 2 items were scored and reported under the bundled name, exit 0."""
    folder = user_tasks(in_tmp)
    yaml_file = folder / "my_task.yaml"
    yaml_file.write_text(USER_TASK.replace("task: my_sums", "task: agentlab_arithmetic_mc"))
    (folder / "mine.yaml").write_text(USER_TASK.replace("task: my_sums", "task: my_own"))
    manager = task_manager([folder], names=["agentlab_arithmetic_mc"])
    for asked in ("agentlab_arithmetic_mc", "agentlab_mc"):  # by name, or through the bundled tag that holds it
        with pytest.raises(InputError) as caught:
            load_tasks(manager, [asked])
        assert caught.value.message == f"task 'agentlab_arithmetic_mc': {yaml_file.resolve()}: its task takes the " \
            f"name of the bundled task of {BUNDLED / 'agentlab_arithmetic_mc.yaml'}, which it would replace in the " \
            "scores and the report"
        assert "rename the task in that YAML (task: my_arithmetic_mc)" in (caught.value.hint or "")
    assert len(load_tasks(manager, ["my_own", "agentlab_units_mc"])["tasks"]["my_own"].eval_docs) == 2


@pytest.mark.parametrize("check, reply, style, correct", [
    ("terse", "76.", 1, 1), ("terse", "The answer is 76.", 0, 1), ("terse", "77", 1, 0),
    ("teacher", "26 plus 50 is 76.\nAnswer: 76", 1, 1), ("teacher", "76", 0, 1),
    ("pirate", "Arr, that be 76, matey!", 1, 1), ("pirate", "It is 760.", 0, 0),
])
def test_style_checks(check: str, reply: str, style: int, correct: int) -> None:
    assert getattr(style_checks, check)({"answer": "76"}, [reply]) == {"style": style, "correct": correct}


@pytest.mark.slow
def test_lm_evals_own_task_without_its_data_is_one_clear_error(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hellaswag's data comes from the hub, which is off: one line naming the task and what to do (~20 s: lm-eval's
    own task index is read)."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(in_tmp / "empty-cache"))
    manager = task_manager(names=["hellaswag"])
    with pytest.raises(InputError) as caught:
        load_tasks(manager, ["hellaswag"])
    assert caught.value.message.startswith("task 'hellaswag': lm-eval could not load its data offline")
    assert "fetch the hub dataset once" in (caught.value.hint or "")


def test_reading_a_tasks_data_draws_no_bar(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    """datasets' "Generating test split: 0 examples [00:00, ? examples/s]" came over compress's agent lines."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(in_tmp / "fresh-cache"))  # the split generated, not read back
    datasets.enable_progress_bars()
    folder = user_tasks(in_tmp)
    loaded = load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert loaded["tasks"]["my_sums"].eval_docs
    assert "Generating" not in capfd.readouterr().err and datasets.is_progress_bar_enabled()


@pytest.mark.parametrize("template, prompt", [
    ("{{ context | default('') }}{{q}} =", "2 + 2 ="),
    ("{% if hint is defined %}{{hint}} {% endif %}{{q}} =", "2 + 2 ="),
    ("{% if hint is undefined %}Q: {% endif %}{{q}} =", "Q: 2 + 2 ="),
    ("{{ hint | d('Q: ') }}{{q}} =", "Q: 2 + 2 =")])
def test_a_template_field_guarded_by_default_or_is_defined_may_be_on_no_line(in_tmp: Path, template: str,
                                                                             prompt: str) -> None:
    """lm-eval renders such a template for data without the field: it was refused as 'no line has the field'."""
    folder = user_tasks(in_tmp)
    (folder / "my_task.yaml").write_text(USER_TASK.replace('"{{q}} ="', json.dumps(template)))
    task = load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])["tasks"]["my_sums"]
    assert task.doc_to_text(task.eval_docs[0]) == prompt


@pytest.mark.parametrize("template", ["{{hint}}{{q}} =", "{% if hint %}{{hint}}{% endif %}{{q}} =",
                                      "{{ hint.text | default('') }}{{q}} ="])
def test_an_unguarded_template_field_on_no_line_is_still_refused(in_tmp: Path, template: str) -> None:
    folder = user_tasks(in_tmp)
    (folder / "my_task.yaml").write_text(USER_TASK.replace('"{{q}} ="', json.dumps(template)))
    with pytest.raises(InputError) as caught:
        load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    assert caught.value.message.endswith("sums.jsonl: no line has the field 'hint' its YAML's doc_to_text reads")


def test_exported_copies_say_what_they_are(in_tmp: Path) -> None:
    """The copies kept the bundled files' header: "edit that (the generator), not this", data_files "relative to this
    file" (they are absolute in the copy) and "use the copies `eval tasks --export DIR` writes" (this is one)."""
    export_tasks(in_tmp / "exported")
    yamls = sorted((in_tmp / "exported").glob("*.yaml"))
    assert len(yamls) == len(list(BUNDLED.glob("agentlab_*.yaml"))) > 0
    for path in yamls:
        text = path.read_text()
        assert text.startswith("# A copy of a bundled agentlab task, written by `agentlab eval tasks --export`"), path
        assert "absolute paths into the agentlab" in text
        assert "edit that, not this" not in text and "relative to this file" not in text, path
        body = (BUNDLED / path.name).read_text().split("\n", 3)[3]  # the bundled file past its 3 header lines
        assert text.split("\n", 3)[3].split("dataset_kwargs")[0] == body.split("dataset_kwargs")[0]
    assert "edit that, not this" in (BUNDLED / yamls[0].name).read_text()  # the bundled files keep theirs


def test_tasks_refuses_an_empty_folder_name(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`eval tasks --export '' --force` wrote into the current folder; `--include-path ''` indexed all of it."""
    from agentlab.cli import main

    (in_tmp / "mine.txt").write_text("mine")
    for args in (["--export", "", "--force"], ["--include-path", ""], ["--include-path", ".", "--include-path", ""]):
        assert main(["eval", "tasks", *args]) == 2, args
        err = " ".join(capsys.readouterr().err.split())
        assert "error: Invalid value for '--" in err and "': empty; give a folder path" in err, err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["mine.txt"]


def test_ctrl_c_during_tasks_says_run_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval tasks` makes no run folder: "interrupted before a run folder was made: nothing to resume" was beside the
    point; and a --include-path that is not UTF-8 was refused with "agentlab keeps its arguments in the run
    folder"."""
    import agentlab.cli as cli
    from agentlab.cli import main
    from agentlab.cli.commands import continue_with
    from agentlab.cli.common import console

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
    real = cli.app

    def interrupted(**kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    assert main(["eval", "tasks"]) == 130
    assert "\n".join(printed).strip() == "[yellow]interrupted[/]; run the command again"
    assert continue_with("eval") == "continue with --resume"  # the evaluation itself keeps its advice
    monkeypatch.setattr(cli, "app", real)
    printed.clear()
    assert main(["eval", "tasks", "--include-path", "n\udce9e"]) == 2
    said = " ".join(" ".join(printed).split())
    assert "--include-path: not UTF-8 text (byte 0xe9 at character 2)" in said and "run folder" not in said, said
    printed.clear()
    assert main(["eval", "--include-path", "n\udce9e"]) == 2  # the evaluation keeps its arguments in its run folder
    assert "keeps its arguments in the run folder" in " ".join(" ".join(printed).split())
