"""`agentlab eval` end to end on the tiny model: base and adapter side by side on a bundled task and a user task
(--include-path), lm-eval's own files in the run folder, paired differences, --resume keeps finished rows (and
refuses one scored with other settings, or damaged); an adapter that changes nothing and a task without data stop
before any folder exists (exit 2); an adapter that reaches lm-eval unapplied fails the run instead of giving the
base's numbers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("peft")

from eval_helpers import user_tasks  # noqa: E402

from agentlab.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def adapters(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from agentlab.core.train.tiny import make_tiny_adapter

    root = tmp_path_factory.mktemp("eval-adapters")
    return {"loud": make_tiny_adapter(tiny_model["hf"], root / "loud", seed=1, scale=0.3),
            "zero": make_tiny_adapter(tiny_model["hf"], root / "zero", seed=2, scale=0.0)}


def evaluate(tiny: Path, *args: str) -> int:
    return main(["eval", "--model", str(tiny), "--set", "device=cpu", "--limit", "3", "--batch-size", "4", *args])


def test_base_and_adapter_side_by_side_on_bundled_and_user_tasks(in_tmp: Path, tiny_model: dict[str, Path],
                                                                 adapters: dict[str, Path], one_torch_thread: None,
                                                                 capsys: pytest.CaptureFixture) -> None:
    folder = user_tasks(in_tmp)
    run = in_tmp / "run"
    assert evaluate(tiny_model["hf"], "--adapter", str(adapters["loud"]), "--tasks",
                    "agentlab_arithmetic_mc,my_sums", "--tasks", "agentlab_capitals", "--include-path",
                    folder.name, "--out", str(run)) == 0  # relative: config.yaml holds it absolute, as the rows do
    results = json.loads((run / "results.json").read_text())
    assert list(results["rows"]) == ["base", "loud"]
    keys = {(s["task"], s["metric"]) for s in results["rows"]["loud"]}
    assert {("agentlab_arithmetic_mc", "acc"), ("my_sums", "acc"), ("agentlab_capitals", "exact_match")} <= keys
    assert results["probe"]["loud"] > 1e-3
    assert set(results["applied"]["loud"]) == {"agentlab_arithmetic_mc", "my_sums", "agentlab_capitals"}
    assert all(change > 1e-6 for change in results["applied"]["loud"].values())
    paired = {(p["task"], p["metric"]): p for p in results["paired"]["loud"]}
    assert paired[("agentlab_arithmetic_mc", "acc")]["n"] == 3 and paired[("my_sums", "acc")]["n"] == 2
    for row in ("base", "loud"):  # lm-eval's own output, as its CLI writes it
        lm = json.loads((run / "lm-eval" / row / "results.json").read_text())
        assert lm["results"]["my_sums"]["acc,none"] in (0.0, 0.5, 1.0) and "configs" in lm
        samples = (run / "lm-eval" / row / "samples_agentlab_arithmetic_mc.jsonl").read_text().splitlines()
        assert len(samples) == 3 and "filtered_resps" in json.loads(samples[0])
    report = (run / "report.md").read_text()
    assert "| base |" in report and "| loud |" in report and "minus the base" in report
    assert (run / "scores.png").stat().st_size > 1000
    out = capsys.readouterr().err
    assert "loud - base on my_sums acc" in out
    for row in ("base", "loud"):  # each row's scores as it ends (a log shows them before the table)
        assert re.search(rf"^{row} \(\d+\.\d s\): agentlab_arithmetic_mc/acc \d\.\d{{3}} ± ", out, re.M), row

    # --resume keeps the finished rows: only the row whose results.json is gone is scored again
    (run / "lm-eval" / "loud" / "results.json").unlink()
    assert main(["eval", "--resume", str(run)]) == 0
    out = capsys.readouterr().err
    assert "base: scored earlier, kept" in out and re.search(r"^loud \(", out, re.M)
    assert not re.search(r"^base \(", out, re.M)
    rows = [e["row"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if e["kind"] == "row"]
    assert rows == ["base", "loud", "loud"]
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["rows"] == results["rows"]
    # every row's seconds, the kept ones too (the resumed session's alone lost the base's)
    assert set(resumed["seconds"]) == {"base", "loud"} and resumed["seconds"]["base"] == results["seconds"]["base"]
    assert main(["eval", "--resume", str(run)]) == 0  # keeps every row: the seconds they were scored in, not {}
    assert json.loads((run / "results.json").read_text())["seconds"] == resumed["seconds"]
    capsys.readouterr()

    # a resume that changes what the rows score is refused, never mixed into one table under the new setting, before
    # the model loads, and the run is left as it was (a plain --resume still goes on); a damaged row file is one line
    # naming it, exit 2
    config, record = (run / "config.yaml").read_text(), (run / "run.json").read_text()
    assert main(["eval", "--resume", str(run), "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert "the row base was scored with other settings than this resume asks (limit 3 -> 2)" in err
    assert "probe" not in err and "Loading" not in err
    assert (run / "config.yaml").read_text() == config and (run / "run.json").read_text() == record
    # --adapter on a resume replaces the list: a finished row it leaves out would vanish from the report
    assert main(["eval", "--resume", str(run), "--adapter", str(adapters["zero"])]) == 2
    err = capsys.readouterr().err
    assert "this resume's adapters leave out the finished row(s) loud" in err and "may add adapters" in err
    assert (run / "config.yaml").read_text() == config and (run / "run.json").read_text() == record
    # nor one not scored yet: the run ended "completed", config.yaml rewritten without it, exit 0
    (run / "lm-eval" / "loud" / "results.json").rename(run / "loud-results.json")
    assert main(["eval", "--resume", str(run), "--adapter", str(adapters["zero"])]) == 2
    err = capsys.readouterr().err
    assert f"this resume's adapters leave out {adapters['loud']} of the run's adapters (not scored yet)" in err
    assert "may add adapters" in err and "Traceback" not in err
    assert (run / "config.yaml").read_text() == config and (run / "run.json").read_text() == record
    (run / "loud-results.json").rename(run / "lm-eval" / "loud" / "results.json")
    kept = (run / "lm-eval" / "base" / "results.json").read_text()
    (run / "lm-eval" / "base" / "results.json").write_text('{"results": {}}')  # JSON, but not a row agentlab saved
    assert main(["eval", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'lm-eval' / 'base' / 'results.json'}: not a row this agentlab can keep" in err
    assert "delete the folder" in err
    # a row saved without its seconds (an older agentlab) takes them from its row event
    (run / "lm-eval" / "base" / "results.json").write_text(json.dumps(
        {k: v for k, v in json.loads(kept).items() if k != "agentlab_seconds"}))
    assert main(["eval", "--resume", str(run)]) == 0
    assert "base: scored earlier, kept" in capsys.readouterr().err
    assert json.loads((run / "results.json").read_text())["seconds"] == resumed["seconds"]
    (run / "lm-eval" / "base" / "results.json").write_text(kept)
    (run / "lm-eval" / "base" / "results.json").write_bytes(b"\xff\xfe")
    assert main(["eval", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'lm-eval' / 'base'}: a saved row cannot be read (UnicodeDecodeError" in err
    assert "internal error" not in err and "delete the folder" in err
    # a results.json that is a folder was "not scored yet": the model loaded, then saving the row failed (exit 1)
    (run / "lm-eval" / "base" / "results.json").unlink()
    (run / "lm-eval" / "base" / "results.json").mkdir()
    import agentlab.core.harness.lm as lm

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lm, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
        assert main(["eval", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'lm-eval' / 'base'}: a saved row cannot be read (IsADirectoryError" in err


def test_a_resume_whose_adapter_changed_on_disk_is_refused(in_tmp: Path, tiny_model: dict[str, Path],
                                                           adapters: dict[str, Path], one_torch_thread: None,
                                                           capsys: pytest.CaptureFixture) -> None:
    """The adapter folder trained again in place (the same path, other weights): the resume kept its row, scored with
    the old weights (the row's settings held the path alone), exit 0."""
    import shutil

    from agentlab.core.train.tiny import make_tiny_adapter

    other = make_tiny_adapter(tiny_model["hf"], in_tmp / "other", seed=3, scale=0.3)
    adapter = shutil.copytree(adapters["loud"], in_tmp / "persona")
    assert evaluate(tiny_model["hf"], "--adapter", str(adapter), "--out", "run") == 0
    before = {p: p.read_bytes() for p in (in_tmp / "run").rglob("*") if p.is_file()}
    shutil.rmtree(adapter)
    shutil.copytree(other, adapter)
    capsys.readouterr()
    assert main(["eval", "--resume", "run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"run: the row persona was scored with other weights of the adapter {adapter} (changed on disk" in err
    assert "put back the adapter" in err and "Traceback" not in err and "probe" not in err
    assert {p: p.read_bytes() for p in (in_tmp / "run").rglob("*") if p.is_file()} == before
    shutil.rmtree(adapter)
    shutil.copytree(adapters["loud"], adapter)  # put back: the row is kept
    assert main(["eval", "--resume", "run"]) == 0
    assert "persona: scored earlier, kept" in capsys.readouterr().err


def test_a_resume_from_another_folder_scores_the_model_the_run_started_with(
        in_tmp: Path, tiny_model: dict[str, Path], one_torch_thread: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """A model given by a relative path is kept absolute (config.yaml, the rows' settings): a resume from another
    folder loads it, not a model of the same name there, nor fails to find it."""
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "tiny").symlink_to(tiny_model["hf"])
    run = in_tmp / "run"
    assert main(["eval", "--model", "models/tiny", "--set", "device=cpu", "--limit", "2", "--tasks",
                 "agentlab_arithmetic_mc", "--out", str(run)]) == 0
    assert f"model: {in_tmp / 'models' / 'tiny'}\n" in (run / "config.yaml").read_text()
    # a run saved before models were kept absolute (config.yaml and the row hold models/tiny) resumes from its folder
    row = run / "lm-eval" / "base" / "results.json"
    saved = json.loads(row.read_text())
    saved["agentlab_settings"]["model"] = "models/tiny"
    row.write_text(json.dumps(saved))
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(in_tmp / "models"), "models"))
    capsys.readouterr()
    assert main(["eval", "--resume", str(run)]) == 0, capsys.readouterr().err
    assert "base: scored earlier, kept" in capsys.readouterr().err
    (run / "lm-eval" / "base" / "results.json").unlink()
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no models/tiny here
    capsys.readouterr()
    assert main(["eval", "--resume", str(run)]) == 0, capsys.readouterr().err
    (elsewhere / "models").mkdir()
    (elsewhere / "models" / "tiny").mkdir()  # another model of that name: the run's is still the one scored
    (run / "lm-eval" / "base" / "results.json").unlink()
    assert main(["eval", "--resume", str(run)]) == 0, capsys.readouterr().err


def test_an_adapter_that_changes_nothing_is_refused_before_any_folder(in_tmp: Path, tiny_model: dict[str, Path],
                                                                      adapters: dict[str, Path],
                                                                      capsys: pytest.CaptureFixture) -> None:
    assert evaluate(tiny_model["hf"], "--adapter", str(adapters["zero"])) == 2
    err = capsys.readouterr().err
    assert "changes nothing on the probe" in err and "zero" in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize(("field", "value", "said"), [
    ("r", "sixteen", 'adapter_config.json: r is "sixteen"; it must be a whole number above 0'),  # exit 1, torch's words
    ("peft_type", "ia3", "adapter_config.json: peft_type is 'ia3'; PEFT reads only \"IA3\""),  # KeyError, exit 1
    ("peft_type", "NOSUCH", "adapter_config.json: peft_type is 'NOSUCH'; the installed PEFT knows no such method")])
def test_an_adapter_config_eval_cannot_use_is_refused_before_the_model_loads(
        field: str, value: str, said: str, in_tmp: Path, tiny_model: dict[str, Path], adapters: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """train-persona export refused a non-LoRA adapter; eval loaded the model first, then failed or scored it."""
    import shutil

    import agentlab.core.harness.lm as lm

    adapter = in_tmp / "bad"
    shutil.copytree(adapters["loud"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, field: value}))
    monkeypatch.setattr(lm, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    assert evaluate(tiny_model["hf"], "--adapter", str(adapter)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert said in err and "internal error" not in err, err
    assert not (in_tmp / "runs").exists()


def _ia3_adapter(tiny: Path, folder: Path) -> Path:
    """An IA3 adapter (PEFT's other tuner method) on the tiny model, its scales moved off 1 so it changes logits."""
    import torch
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), IA3Config(
        task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]))
    with torch.no_grad():
        for _, weight in model.named_parameters():
            if weight.requires_grad:
                weight.add_(torch.randn_like(weight) * 0.5)
    model.save_pretrained(folder)
    return folder


def test_an_ia3_adapter_is_scored_as_a_lora_is(in_tmp: Path, tiny_model: dict[str, Path], adapters: dict[str, Path],
                                               one_torch_thread: None, capsys: pytest.CaptureFixture) -> None:
    """eval refused every non-LoRA adapter ("only LoRA adapters can be scored") though PeftModel loads, switches and
    disables an IA3 one like a LoRA; adapters of two PEFT methods, which PEFT will not put on one model, are refused
    before it loads (an exit 1 with PEFT's words once it had)."""
    ia3 = _ia3_adapter(tiny_model["hf"], in_tmp / "ia3")
    run = in_tmp / "run"
    assert evaluate(tiny_model["hf"], "--adapter", str(ia3), "--out", str(run)) == 0, capsys.readouterr().err
    results = json.loads((run / "results.json").read_text())
    assert list(results["rows"]) == ["base", "ia3"] and results["probe"]["ia3"] > 1e-3
    assert all(change > 1e-6 for change in results["applied"]["ia3"].values())
    capsys.readouterr()
    assert evaluate(tiny_model["hf"], "--adapter", str(adapters["loud"]), "--adapter", str(ia3),
                    "--out", str(in_tmp / "mixed")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (f"{ia3 / 'adapter_config.json'}: peft_type is 'IA3', but {adapters['loud']}'s is 'LORA': PEFT puts "
            "adapters of one method only on one model") in err, err
    assert not (in_tmp / "mixed").exists()


def test_a_task_without_data_is_one_line_exit_2(in_tmp: Path, tiny_model: dict[str, Path],
                                                capsys: pytest.CaptureFixture) -> None:
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").unlink()
    assert evaluate(tiny_model["hf"], "--tasks", "my_sums", "--include-path", str(folder)) == 2
    err = capsys.readouterr().err
    assert "task 'my_sums': its data file" in err and "not on disk" in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize(("damage", "said"), [
    ("truncated", "model.safetensors: not a readable safetensors file (truncated: "),
    ("config", "config.json:1: invalid JSON"),
    ("model_type", 'config.json: model_type "llamaXX" is not a model type transformers '),  # exit 1, "could not load"
    ("tokenizer", ": no tokenizer (none of tokenizer.json"),
    ("gguf", "model.gguf: not a readable GGUF file (truncated: "),
])
def test_a_damaged_model_is_refused_naming_the_file_before_any_folder(damage: str, said: str, in_tmp: Path,
                                                                     tiny_model: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Each was exit 1 with transformers' words ("Error while deserializing header: incomplete metadata", "Couldn't
    instantiate the backend tokenizer", and for a GGUF cut short "transformers could not convert this GGUF (cannot
    reshape array ...)" with a hint about unsupported architectures)."""
    import shutil

    model = in_tmp / "models" / "tiny"
    shutil.copytree(tiny_model["hf"], model)
    if damage == "truncated":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif damage == "config":
        (model / "config.json").write_text('{"model_type": ')
    elif damage == "model_type":
        (model / "config.json").write_text((model / "config.json").read_text().replace('"llama"', '"llamaXX"'))
    elif damage == "tokenizer":
        (model / "tokenizer.json").unlink()
    gguf = model / "model.gguf"
    if damage == "gguf":
        gguf.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 2])
    assert evaluate(gguf if damage == "gguf" else model) == 2
    err = capsys.readouterr().err
    assert said in err and "internal error" not in err and "could not convert" not in err, err
    assert "could not load" not in err and not (in_tmp / "runs").exists()


def _user_yaml(folder: Path, old: str, new: str) -> Path:
    """The user task of ``folder`` with ``old`` of its YAML replaced by ``new``."""
    yaml = folder / "my_task.yaml"
    text = yaml.read_text()
    assert old in text
    yaml.write_text(text.replace(old, new))
    return yaml


def test_an_unknown_metric_in_a_task_yaml_is_refused_before_any_folder(in_tmp: Path, tiny_model: dict[str, Path],
                                                                       capsys: pytest.CaptureFixture) -> None:
    """lm-eval logged "acccc not found in the evaluate library" and scored nothing: an empty row, exit 0."""
    yaml = _user_yaml(user_tasks(in_tmp), "metric: acc\n", "metric: acccc\n")
    assert evaluate(tiny_model["hf"], "--tasks", "my_sums", "--include-path", str(yaml.parent)) == 2
    err = capsys.readouterr().err
    assert f"task 'my_sums': {yaml}: metric_list names the metric 'acccc', which lm-eval does not know" in err
    assert "(nearest: acc" in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize(("task", "shots", "items", "usable"), [("my_sums", 5, 2, 1), ("my_sums", 2, 2, 1),
                                                                ("agentlab_capitals_mc", 33, 33, 32)])
def test_more_few_shot_examples_than_a_task_has_is_refused_before_any_folder(
        task: str, shots: int, items: int, usable: int, in_tmp: Path, tiny_model: dict[str, Path],
        capsys: pytest.CaptureFixture) -> None:
    """lm-eval failed mid-run: "internal error: ValueError: Sample larger than population", exit 1, a failed run.
    With no fewshot_split the examples come from the split being scored, so only its other items can be examples:
    `--num-fewshot 2` on two items ran, exit 0, each item's own answer in its prompt."""
    folder = user_tasks(in_tmp)
    assert evaluate(tiny_model["hf"], "--tasks", task, "--include-path", str(folder), "--num-fewshot",
                    str(shots)) == 2
    err = capsys.readouterr().err
    assert f"--num-fewshot {shots}: task '{task}' draws its few-shot examples from its split 'test', which has " \
           f"{items} item(s), less the item being scored" in err
    assert f"the largest usable --num-fewshot for '{task}' is {usable}" in err and "internal error" not in err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("extra", ["", "fewshot_split: test\n"])
def test_few_shot_examples_from_the_scored_split_leave_the_scored_item_out(
        extra: str, in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without fewshot_split lm-eval fell back to the scored split and never left the scored item out of its
    examples (1 shot of 2 items: the item's own answer in half the prompts); the task's fewshot_split now names
    that split, and lm-eval leaves it out."""
    from agentlab.core.harness.tasks import load_tasks, task_manager
    from agentlab.eval.checks import check_loaded

    yaml = _user_yaml(user_tasks(in_tmp), "test_split: test\n", "test_split: test\n" + extra)
    manager = task_manager([yaml.parent], names=["my_sums"])
    loaded = load_tasks(manager, ["my_sums"])
    with caplog.at_level("WARNING", logger="agentlab.eval.checks"):
        check_loaded(manager, loaded, 1)
    assert "has no fewshot_split" not in caplog.text
    task = next(iter(loaded["tasks"].values())) if isinstance(loaded["tasks"], dict) else loaded["tasks"][0]
    assert task.fewshot_cfg.split == task.config.test_split == "test"  # lm-eval's condition to leave it out
    docs = list(task.test_docs())
    for doc in docs * 5:
        assert doc not in task.sampler.sample(n=1, eval_doc=doc)


def test_a_task_yamls_own_num_fewshot_beyond_its_items_names_the_yaml(in_tmp: Path, tiny_model: dict[str, Path],
                                                                      capsys: pytest.CaptureFixture) -> None:
    yaml = _user_yaml(user_tasks(in_tmp), "test_split: test\n", "test_split: test\nnum_fewshot: 3\n")
    assert evaluate(tiny_model["hf"], "--tasks", "my_sums", "--include-path", str(yaml.parent)) == 2
    err = capsys.readouterr().err
    assert f"task 'my_sums': {yaml}: num_fewshot 3 is more than its split 'test' has (2 item(s), less the item " \
           "being scored)" in err
    assert "--num-fewshot 1 or less" in err and not (in_tmp / "runs").exists()


@pytest.mark.parametrize("broken", ["key", "directory"])
def test_a_task_yaml_error_names_the_yaml_not_the_data_file(broken: str, in_tmp: Path, tiny_model: dict[str, Path],
                                                            capsys: pytest.CaptureFixture) -> None:
    """An unknown key read "lm-eval could not make its items from DATA (TaskConfig.__init__() got an unexpected
    keyword argument ...)", a data file that is a directory "Unable to find DATA"."""
    folder = user_tasks(in_tmp)
    if broken == "key":
        yaml = _user_yaml(folder, "test_split: test\n", "test_split: test\nfrobnicate: 3\n")
        said = f"task 'my_sums': {yaml}: the key 'frobnicate' is not a task key lm-eval knows"
    else:
        yaml, data = folder / "my_task.yaml", folder / "data" / "sums.jsonl"
        data.unlink()
        data.mkdir()
        said = f"task 'my_sums': {yaml}: its data file {data} is a directory"
    assert evaluate(tiny_model["hf"], "--tasks", "my_sums", "--include-path", str(folder)) == 2
    err = capsys.readouterr().err
    assert said in err and "could not make its items" not in err and not (in_tmp / "runs").exists()


@pytest.mark.parametrize(("args", "said"), [
    (["eval", "--set", "tokenizer=smollm2-135m"],
     "--set tokenizer=smollm2-135m: tokenizer: applies only with base_url"),
    (["eval", "--set", "api_key_env=KEY"], "--set api_key_env=KEY: api_key_env: applies only with base_url"),
    (["eval", "--set", "api_key_env=sk-abc-123"], "--set api_key_env=...: api_key_env: applies only with base_url"),
    (["eval", "tasks", "--force"], "--force applies only with --export"),
    (["eval", "tasks", "--include-path", "my_tasks", "--export", "out"],
     "--export writes the bundled task YAMLs only, not the tasks of --include-path my_tasks"),
])
def test_an_option_that_does_nothing_here_is_refused(args: list[str], said: str, in_tmp: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """They were silently ignored (tokenizer without a server, --force without --export, the included tasks of an
    export)."""
    user_tasks(in_tmp)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert said in err and "hint:" in err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "out").exists()


def test_a_served_only_key_in_a_config_file_names_its_own_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`api_key_env` on line 2 was reported as `e8.yaml:1: (top level): ...`."""
    (in_tmp / "e8.yaml").write_text("model: models/tiny\napi_key_env: FOO\n")
    assert main(["eval", "-c", "e8.yaml"]) == 2
    assert "e8.yaml:2: api_key_env: applies only with base_url" in " ".join(capsys.readouterr().err.split())


def test_an_adapter_that_reaches_lm_eval_unapplied_fails_the_run(in_tmp: Path, tiny_model: dict[str, Path],
                                                                 adapters: dict[str, Path], one_torch_thread: None,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """What lm-eval's HFLM(pretrained=model, peft=...) does silently: every row is the base model."""
    import contextlib

    from agentlab.core.harness.lm import HarnessModel

    real = HarnessModel.active

    @contextlib.contextmanager
    def always_base(self: HarnessModel, adapter: str | None) -> Any:
        with real(self, None):
            yield

    monkeypatch.setattr(HarnessModel, "active", always_base)
    assert evaluate(tiny_model["hf"], "--adapter", str(adapters["loud"]), "--out", "run") == 1
    err = capsys.readouterr().err
    assert "adapter loud was not applied" in err and "not reported" in err
    assert not (in_tmp / "run" / "results.json").exists()
    assert json.loads((in_tmp / "run" / "run.json").read_text())["status"] == "failed"


def test_run_eval_from_python(in_tmp: Path, tiny_model: dict[str, Path], adapters: dict[str, Path],
                              one_torch_thread: None) -> None:
    from agentlab.eval import run_eval

    results = run_eval(str(tiny_model["hf"]), ["agentlab_units_mc"], [adapters["loud"]], limit=2, device="cpu",
                       out=in_tmp / "py")
    assert list(results["rows"]) == ["base", "loud"] and results["paired"]["loud"][0]["n"] == 2
    assert (in_tmp / "py" / "report.md").is_file()


@pytest.mark.parametrize("how", [["--backend", "lighteval"], ["--set", "backend=lighteval"]])
def test_backend_lighteval_is_refused_with_the_reason_and_the_peer_script(
        how: list[str], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", *how]) == 2
    err = capsys.readouterr().err
    [error] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "LightEval is not installed with agentlab" in error and "xxhash<4" in error
    [hint] = [line for line in err.splitlines() if line.startswith("hint:")]
    assert "benchmarks/peers/lighteval_vs_lmeval.py" in hint
    assert "Traceback" not in err and not (in_tmp / "runs").exists()  # refused before any folder or model load


def test_a_base_url_without_its_scheme_is_refused_as_such(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--base-url notaurl` reached httpx, and the hint said to start the server."""
    assert main(["eval", "--base-url", "127.0.0.1:8000/v1"]) == 2
    err = capsys.readouterr().err
    assert "base_url: '127.0.0.1:8000/v1' is no http:// or https:// URL" in err and "start the server" not in err
    assert not (in_tmp / "runs").exists()


def test_one_adapter_under_two_spellings_is_refused(in_tmp: Path) -> None:
    """`adapters/a` and `adapters/a/../a` were scored twice, as a and a-2."""
    from pydantic import ValidationError

    from agentlab.eval.config import EvalConfig

    with pytest.raises(ValidationError, match=r"adapter adapters/a/../a is given twice \(also as adapters/a\)"):
        EvalConfig.model_validate({"adapters": ["adapters/a", "adapters/a/../a"]})


def test_credentials_in_a_url_never_reach_the_console(in_tmp: Path, tiny_model: dict[str, Path],
                                                      capsys: pytest.CaptureFixture) -> None:
    """The error line echoed `--base-url http://user:PASSWORD@...` as given (every error line is scrubbed now)."""
    assert main(["eval", "--model", str(tiny_model["hf"]), "--base-url", "http://user:sk-SECRET1@127.0.0.1:9/v1"]) == 2
    err = capsys.readouterr().err
    assert "--base-url http://user:***@127.0.0.1:9/v1: no answer" in err and "sk-SECRET1" not in err


def test_a_server_that_returns_no_logprobs_is_refused_in_one_line(in_tmp: Path, tiny_model: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture,
                                                                   http_server: Callable[..., Any]) -> None:
    """A server answering /v1/completions with a chat body (no logprobs) was "internal error: KeyError", exit 1."""
    from http.server import BaseHTTPRequestHandler

    class Chat(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    url = f"{http_server(Chat).url}/v1"
    assert main(["eval", "--model", str(tiny_model["hf"]), "--base-url", url, "--limit", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{url}/completions returned no log-probabilities for '{tiny_model['hf']}'" in err, err
    assert "need /v1/completions with echo and logprobs" in err and "internal error" not in err
    assert not (in_tmp / "runs").exists()


def test_seed_moves_the_few_shot_examples(in_tmp: Path, tiny_model: dict[str, Path], one_torch_thread: None) -> None:
    """--set seed=N changed lm-eval's random_seed only: its few-shot seed stayed 1234, so the prompts were the same."""
    prompts = {}
    for seed in (0, 7):
        run = in_tmp / f"s{seed}"
        assert evaluate(tiny_model["hf"], "--tasks", "agentlab_capitals_mc", "--num-fewshot", "2", "--set",
                        f"seed={seed}", "--out", str(run)) == 0
        rows = (run / "lm-eval" / "base" / "samples_agentlab_capitals_mc.jsonl").read_text().splitlines()
        prompts[seed] = [json.loads(row)["arguments"] for row in rows]
        lm = json.loads((run / "lm-eval" / "base" / "results.json").read_text())
        assert lm["config"]["fewshot_seed"] == 1234 + seed
    assert prompts[0] != prompts[7]


def test_a_served_evaluation_moves_the_same_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """--base-url passed random_seed alone: its few-shot examples stayed those of seed 1234 (review)."""
    import lm_eval

    from agentlab.core.harness.evaluate import Settings
    from agentlab.eval.served import ServedModels

    asked: dict[str, object] = {}

    def fake(**kwargs: object) -> dict[str, object]:
        asked.update(kwargs)
        return {"results": {}}

    monkeypatch.setattr(lm_eval, "simple_evaluate", fake)
    served = ServedModels("http://127.0.0.1:1/v1", "base", "tok", lms={"base": object()})
    served.evaluate(None, ["t"], None, Settings(seed=7))  # type: ignore[arg-type]
    assert {k: asked[k] for k in ("random_seed", "numpy_random_seed", "torch_random_seed",
                                  "fewshot_random_seed")} == Settings(seed=7).seeds() == {
        "random_seed": 7, "numpy_random_seed": 1241, "torch_random_seed": 1241, "fewshot_random_seed": 1241}


def test_few_shot_examples_of_a_validation_only_task_are_counted_as_lm_eval_draws_them(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """A task with only a validation split: lm-eval reads fewshot_split None == test_split None as "the split being
    scored" and draws one example more, so `--num-fewshot 2` of 2 items failed mid-run ("Sample larger than
    population") once the check counted only a named fewshot_split."""
    yaml = _user_yaml(user_tasks(in_tmp), "test_split: test\n", "validation_split: test\n")
    assert evaluate(tiny_model["hf"], "--tasks", "my_sums", "--include-path", str(yaml.parent), "--num-fewshot",
                    "2") == 2
    err = capsys.readouterr().err
    assert "2 item(s), less the item being scored" in err and "the largest usable --num-fewshot for 'my_sums' is 1" \
        in err and "internal error" not in err
    assert not (in_tmp / "runs").exists()
