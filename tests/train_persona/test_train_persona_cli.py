"""`agentlab train-persona` through the CLI on a tiny local model: the adapter and its card, bad data stopped before
any model loads (nothing in --out touched), SIGKILL then --resume from the last checkpoint, export to GGUF."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.train_persona.config import SHIPPED_DATA

FAST = ["--bsz", "2", "--grad-accum", "1", "--set", "data.max_length=128"]


def train(tiny: Path, *args: str) -> int:
    return main(["train-persona", "--base-model", str(tiny), *FAST, *args])


def only_run(root: Path) -> Path:
    (run,) = (root / "runs" / "train-persona").iterdir()
    return run


def test_trains_an_adapter_peft_loads_and_that_changes_the_output(tiny_model: dict[str, Path], in_tmp: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert train(tiny_model["hf"], "--max-steps", "3", "--lr", "5e-3", "--out", "adapters/a") == 0
    adapter = in_tmp / "adapters" / "a"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in adapter.iterdir()}
    umask = os.umask(0)
    os.umask(umask)  # safetensors wrote the weights 0600 beside a 0644 config and card
    assert {p.name: p.stat().st_mode & 0o777 for p in adapter.iterdir()} == dict.fromkeys(
        (p.name for p in adapter.iterdir()), 0o666 & ~umask)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model["hf"]) and config["r"] == 16
    card = (adapter / "README.md").read_text()
    assert "sha256" in card and "sft_persona_a.jsonl" in card and "150 conversations" in card
    run = only_run(in_tmp)
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 3 and results["tokens_seen"] > 0 and (run / "loss.png").stat().st_size > 1000
    assert 0 < results["loss_tokens"]["loss_tokens"] < results["loss_tokens"]["tokens"]
    assert "loss tokens inside `[[...]]`" in (run / "report.md").read_text()
    # peak RSS beside the GPU figures, which on a CPU machine say "no GPU" (results.json, report.md), never a zero
    assert results["peak_rss_mb"] > 0 and results["gpu"] == "no GPU" and results["gpu_memory_mb"] is None
    assert results["gpu_power_w"] is None and "GPU: no GPU." in (run / "report.md").read_text()
    err = capsys.readouterr().err
    assert "; GPU: no GPU" in err and "changes nothing" not in err and results["changes_nothing"] is False
    base = AutoModelForCausalLM.from_pretrained(tiny_model["hf"])
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, str(adapter))(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize("line, says", [
    ("{not json", "invalid JSON"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}', "unknown role 'wizard'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}', "empty assistant turn"),
    ('{"messages": [{"role": "user", "content": "' + "word " * 200 + '"}, {"role": "assistant", "content": "b"}]}',
     "over max_length 128"),
], ids=["json", "role", "empty-answer", "too-long"])
def test_bad_data_stops_before_any_model_loads_and_out_is_untouched(
        line: str, says: str, in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    data = in_tmp / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
                    + line + "\n")
    (in_tmp / "out").mkdir()  # an adapter --force would replace
    (in_tmp / "out" / "adapter_config.json").write_text("{}")
    assert train(tiny_model["hf"], "--data", str(data), "--out", "out", "--force") == 2
    err = capsys.readouterr().err
    assert f"{data}:2: " in err and says in err and "Traceback" not in err
    assert "Loading weights" not in err and "base model" not in err  # no model was loaded
    assert [p.name for p in (in_tmp / "out").iterdir()] == ["adapter_config.json"] and not (in_tmp / "runs").exists()


def test_truncation_that_leaves_no_answer_stops_before_any_model_loads(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """data.truncate cutting every conversation before its answer: refused only after the model loaded, in a run
    folder left failed. A conversation whose answer survives the cut is enough to train."""
    data = in_tmp / "chat.jsonl"
    long = '{"messages": [{"role": "user", "content": "' + "word " * 200 + '"}, {"role": "assistant", "content": "b"}]}'
    data.write_text(long + "\n" + long + "\n")
    assert train(tiny_model["hf"], "--data", str(data), "--set", "data.truncate=true", "--max-steps", "1") == 2
    err = capsys.readouterr().err
    assert "no conversation keeps an assistant token within max_length 128" in err and "Traceback" not in err
    assert "Loading weights" not in err and not (in_tmp / "runs").exists()  # no model loaded, no run folder
    data.write_text(long + "\n" + '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", '
                    '"content": "b"}]}\n')
    assert train(tiny_model["hf"], "--data", str(data), "--set", "data.truncate=true", "--max-steps", "1") == 0


def test_existing_out_is_refused_without_force(in_tmp: Path, tiny_model: dict[str, Path],
                                                capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "out").mkdir()
    (in_tmp / "out" / "adapter_config.json").write_text("{}")
    assert train(tiny_model["hf"], "--out", "out") == 2
    assert "--force" in capsys.readouterr().err and (in_tmp / "out" / "adapter_config.json").read_text() == "{}"
    # the run folder is --run-dir here (--out is the adapter): an occupied one is named by its own option
    assert train(tiny_model["hf"], "--out", "new", "--run-dir", "out") == 2
    err = capsys.readouterr().err
    assert "--run-dir out: folder exists and is not empty" in err and "choose another --run-dir" in err


def test_force_replaces_an_adapter_only(in_tmp: Path, tiny_model: dict[str, Path],
                                        capsys: pytest.CaptureFixture) -> None:
    """--force replaces an adapter folder, never a data file, a folder of other files or the current folder: refused
    before anything loads, nothing touched."""
    (in_tmp / "notes").mkdir()
    (in_tmp / "notes" / "mine.txt").write_text("keep")
    (in_tmp / "data.jsonl").write_text("keep")
    for out, says in (("data.jsonl", "is a file, not an adapter folder"),
                      ("notes", "holds files but is not an adapter folder (no adapter_config.json)"),
                      (".", "is the current folder or holds it")):
        assert train(tiny_model["hf"], "--out", out, "--force") == 2
        err = capsys.readouterr().err
        assert f"--out {out}: {says}" in err and "--force replaces only an adapter" in err, err
        assert "Loading weights" not in err
    assert (in_tmp / "notes" / "mine.txt").read_text() == "keep" and (in_tmp / "data.jsonl").read_text() == "keep"
    assert sorted(p.name for p in in_tmp.iterdir()) == ["data.jsonl", "notes"]


def test_missing_base_model_names_what_was_tried(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train-persona", "--base-model", "no/such-model"]) == 2
    err = capsys.readouterr().err
    assert "no/such-model" in err and "tried" in err and "Traceback" not in err


def _damaged(tiny: Path, folder: Path, how: str) -> tuple[Path, Path]:
    """A damaged copy of the tiny model (the reference to give, the file to be named)."""
    if how == "gguf-cut":  # the first 20 KB of a GGUF: transformers failed deep in numpy (an internal error)
        folder.mkdir()
        (folder / "cut.gguf").write_bytes((tiny / "model.gguf").read_bytes()[:20_000])
        return folder / "cut.gguf", folder / "cut.gguf"
    if how == "bare-config":  # a folder holding only a config that names a model: a ValueError from the tokenizer
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "llama"}')
        return folder, folder
    shutil.copytree(tiny, folder, ignore=shutil.ignore_patterns("*.gguf"))
    if how in ("no-tokenizer", "no-weights"):  # "internal error: ValueError" / a run folder left "failed"
        (folder / ("tokenizer.json" if how == "no-tokenizer" else "model.safetensors")).unlink()
        return folder, folder
    if how == "tokenizer":  # a tokenizer.json transformers cannot build: an internal error too
        (folder / "tokenizer.json").write_text("{bad")
        return folder, folder
    if how == "config":  # transformers' message, with a hint about the disk and its permissions (exit 1)
        (folder / "config.json").write_text("{bad")
        return folder, folder / "config.json"
    if how in ("model-type", "model-type-list"):  # exit 1 in a run folder left "failed" / blamed on the tokenizer
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "llamaXX" if how == "model-type" else ["llama"]
        (folder / "config.json").write_text(json.dumps(config))
        return folder, folder / "config.json"
    weights = folder / "model.safetensors"  # found only when the weights loaded, in a run folder left "failed"
    weights.write_bytes(weights.read_bytes()[:100 if how == "weights-header" else 300_000])
    return folder, weights


@pytest.mark.parametrize("how, says", [
    ("gguf-cut", ""), ("config", ""), ("weights-header", ""), ("weights-cut", ""),
    ("no-tokenizer", ": no tokenizer (none of tokenizer.json"),
    ("no-weights", ": no weights (none of model.safetensors"),
    ("bare-config", ": no weights"), ("tokenizer", "its tokenizer could not be loaded from "),
    ("model-type", ': model_type "llamaXX" is not a model type transformers '),
    ("model-type-list", ': model_type ["llama"] is not a model type transformers '),
])
def test_a_damaged_base_model_is_named_before_a_run_folder_exists(
        how: str, says: str, in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    ref, named = _damaged(tiny_model["hf"], in_tmp / "damaged", how)
    assert train(ref, "--max-steps", "1") == 2
    err = capsys.readouterr().err
    expected = f"--base-model {ref}: its tokenizer could not be loaded from {named}" if how == "tokenizer" \
        else f"--base-model {ref}: {named}{says}"
    assert expected in err and "Traceback" not in err and "internal error" not in err, err
    assert "Loading weights" not in err and "base model" not in err and not (in_tmp / "runs").exists()


def test_unknown_lora_target_modules_stop_before_a_run_folder_exists(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """Checked on the model's modules built without weights: the run folder (config.yaml, run.json "failed") was
    made first, then the loaded model refused the name."""
    assert train(tiny_model["hf"], "--set", "lora.target_modules=[q_proj, nope_proj]") == 2
    err = capsys.readouterr().err
    assert "LoRA target_modules: 'nope_proj' names no module of the model" in err and "q_proj, up_proj" in err
    assert "base model" not in err and not (in_tmp / "runs").exists()


def test_resume_with_run_dir_names_run_dir(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """--out is the adapter folder here: the refusal named it although --run-dir was given."""
    assert main(["train-persona", "--resume", "--run-dir", "qq"]) == 2
    err = capsys.readouterr().err
    assert "--resume and --run-dir both given" in err and "--out" not in err


def test_a_relative_base_model_is_stored_absolute_so_export_works_from_anywhere(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """adapter_config.json held the base as typed (models/tiny): `export` from another folder could not find it."""
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "tiny").symlink_to(tiny_model["hf"])
    assert main(["train-persona", "--base-model", "models/tiny", *FAST, "--max-steps", "1", "--out", "a"]) == 0
    config = json.loads((in_tmp / "a" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(in_tmp / "models" / "tiny")
    (in_tmp / "elsewhere").mkdir()
    monkeypatch.chdir(in_tmp / "elsewhere")
    assert main(["train-persona", "export", str(in_tmp / "a"), "--gguf", "a.gguf"]) == 0
    assert (in_tmp / "elsewhere" / "a.gguf").stat().st_size


def test_sigkill_then_resume_continues_from_the_last_checkpoint(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    total = 40  # enough that a fast machine cannot finish between two looks at the checkpoints
    args = [sys.executable, "-m", "agentlab", "train-persona", "--base-model", str(tiny_model["hf"]), *FAST,
            "--max-steps", str(total), "--set", "train.save_steps=2", "--out", "adapters/a"]
    env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs")}
    proc = subprocess.Popen(args, cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill once a checkpoint past step 2 exists
            checkpoints = list(in_tmp.glob("runs/train-persona/*/checkpoints/checkpoint-*/trainer_state.json"))
            if any(int(p.parent.name.split("-")[1]) >= 4 for p in checkpoints):
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = only_run(in_tmp)
    assert not (in_tmp / "adapters" / "a").exists()  # never half-written
    assert main(["train-persona", "--resume", "--max-steps", str(total)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["resumed_from"] and int(results["resumed_from"].rsplit("-", 1)[1]) >= 4
    logged = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in logged if e["kind"] == "train_log" and "loss" in e]
    resumed_at = int(results["resumed_from"].rsplit("-", 1)[1])
    assert results["steps"] == total and steps[-1] == total and resumed_at + 1 in steps
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed"][0]["previous_status"] == "interrupted"
    assert (in_tmp / "adapters" / "a" / "adapter_model.safetensors").is_file()


def test_ctrl_c_checkpoints_the_step_in_progress_and_the_resume_goes_on_from_the_next(
        in_tmp: Path, tiny_model: dict[str, Path], terminal_ctrl_c: Callable[[], None]) -> None:
    """SIGINT from outside, as Ctrl-C sends it, before any checkpoint was due (train.save_steps 10): the resume
    started again at step 1. The step in progress now ends with a checkpoint, then the run stops as before."""
    args = [sys.executable, "-m", "agentlab", "train-persona", "--base-model", str(tiny_model["hf"]), *FAST,
            "--max-steps", "40", "--set", "train.threads=1", "--out", "adapters/a"]
    env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs")}
    proc = subprocess.Popen(args, cwd=in_tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=terminal_ctrl_c)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # Ctrl-C once step 2 is logged
            logged = [json.loads(line) for p in in_tmp.glob("runs/train-persona/*/events.jsonl")
                      for line in p.read_text().splitlines() if '"train_log"' in line and line.endswith("}")]
            if any(e.get("step", 0) >= 2 for e in logged):
                break
            assert proc.poll() is None, "training ended before it could be stopped"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = only_run(in_tmp)
    assert proc.returncode == 130 and f"interrupted; continue with --resume {run}" in " ".join(err.split()), err
    (checkpoint,) = (run / "checkpoints").glob("checkpoint-*")
    saved = int(checkpoint.name.split("-")[1])
    steps = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in steps if e["kind"] == "train_log" and "loss" in e] == list(range(1, saved + 1))
    assert main(["train-persona", "--resume", str(run), "--max-steps", str(saved + 1)]) == 0
    steps = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in steps if e["kind"] == "train_log" and "loss" in e] == list(range(1, saved + 2))


def test_resuming_a_finished_run_trains_nothing_and_a_larger_budget_trains_on(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """Trainer resumed from the final checkpoint took one step past the budget, rotated a checkpoint away, and the
    run's own adapter was refused as one that "appeared while training" (exit 2, a stray .partial folder)."""
    assert train(tiny_model["hf"], "--max-steps", "2", "--set", "train.save_steps=1", "--out", "adapters/a") == 0
    run = only_run(in_tmp)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.json"}
    capsys.readouterr()
    assert main(["train-persona", "--resume", str(run)]) == 0
    assert "this run already trained its 2 steps" in capsys.readouterr().err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.json"}
    assert after == before and not list((in_tmp / "adapters").glob(".*"))
    # what the checkpoints were trained with stays: a new rank, data or rate is refused before anything loads, and
    # the run is left as it was (its config.yaml said the new settings, and a new rank failed to load, exit 1)
    assert main(["train-persona", "--resume", str(run), "--max-steps", "3", "--data", "persona_c", "--lr", "0.05",
                 "--r", "4"]) == 2
    err = capsys.readouterr().err
    assert "this resume changes what the run's finished work was done with" in err and "Loading" not in err
    assert "lora.r 16 -> 4" in err and "train.learning_rate 0.001 -> 0.05" in err and "sft_persona_c.jsonl" in err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.json"}
    assert after == before
    assert main(["train-persona", "--resume", str(run), "--max-steps", "3"]) == 0  # a larger budget: on it goes
    assert json.loads((run / "results.json").read_text())["steps"] == 3
    # the whole run's steps and tokens, this session's seconds: said as such (read as tokens in 0 s)
    assert re.search(r"3 steps, .* tokens; this session \(from checkpoint-2\): \d+ s", capsys.readouterr().err)
    assert "| seconds (this session) |" in (run / "report.md").read_text()
    assert (in_tmp / "adapters" / "a" / "adapter_model.safetensors").is_file()
    assert not list((in_tmp / "adapters").glob(".*"))


def test_export_through_the_cli(in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert train(tiny_model["hf"], "--max-steps", "1", "--out", "a") == 0
    # one step: the warm-up's learning rate of 0 left every lora_B at its zeros, without a word
    assert "warning: every lora_B of the adapter is still zero after 1 step: the adapter changes nothing" in \
        " ".join(capsys.readouterr().err.split())
    assert json.loads((only_run(in_tmp) / "results.json").read_text())["changes_nothing"] is True
    assert "**The adapter changes nothing**" in (only_run(in_tmp) / "report.md").read_text()
    assert main(["train-persona", "export", "a", "--gguf", "a.gguf", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gguf"].endswith("a.gguf") and (in_tmp / "a.gguf").stat().st_size
    assert main(["train-persona", "export", "a", "--gguf", "a.gguf"]) == 2  # exists: --force to replace
    assert main(["train-persona", "export", "missing", "--gguf", "b.gguf"]) == 2
    capsys.readouterr()
    assert main(["train-persona", "export", "a", "--gguf", "out/n/"]) == 2  # wrote a file named n
    assert "error: out/n/: ends with '/', a folder; the export writes one GGUF file" in capsys.readouterr().err
    assert not (in_tmp / "out").exists()


@pytest.mark.parametrize("gguf, said", [("", "error: --gguf is empty; give a file path"),  # was ".: is a folder"
                                         ("out/n/.", "error: out/n/.: ends with '.', a folder")])  # was out/n
def test_export_refuses_a_gguf_path_that_names_no_file(gguf: str, said: str, in_tmp: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["train-persona", "export", "a", "--gguf", gguf]) == 2
    assert said in capsys.readouterr().err
    assert not list(in_tmp.iterdir())


def test_default_data_is_the_shipped_persona() -> None:
    from agentlab.train_persona.config import TrainPersonaConfig

    assert TrainPersonaConfig().data.path == SHIPPED_DATA / "sft_persona_a.jsonl"


def _torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "agentlab.cli", "train-persona", *args]
    env = {**os.environ, "AGENTLAB_RUNS": str(cwd / "runs"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_two_processes_train_in_one_run_folder_and_only_the_main_one_writes(
        in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    """What `accelerate launch` / `torchrun` do with one process per GPU, here two CPU processes over gloo."""
    done = _torchrun(in_tmp, "--base-model", str(tiny_model["hf"]), *FAST, "--max-steps", "4",
                     "--set", "train.save_steps=2", "--out", "adapters/a")
    assert done.returncode == 0, done.stderr[-3000:]
    run = only_run(in_tmp)  # one folder, not one per process
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 4 and (run / "checkpoints" / "checkpoint-4").is_dir()
    logged = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if e["kind"] == "train_log" and "loss" in e] == [1, 2, 3, 4]  # main only
    assert (in_tmp / "adapters" / "a" / "adapter_model.safetensors").is_file()
    assert done.stderr.count("adapter:") == 1 and done.stderr.count("base model") == 1  # the other one is silent
    assert "Traceback" not in done.stderr


def test_two_processes_with_bad_data_stop_with_one_error(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    (in_tmp / "bad.jsonl").write_text("{not json\n")
    done = _torchrun(in_tmp, "--base-model", str(tiny_model["hf"]), "--data", "bad.jsonl")
    assert done.returncode != 0 and done.stderr.count("error: bad.jsonl:1: invalid JSON") == 1
    assert "exitcode  : 2" in done.stderr and not (in_tmp / "runs").exists()  # the launcher's report: the main one


def test_shipped_persona_names_stand_for_their_data(in_tmp: Path) -> None:
    from agentlab.train_persona.config import SHIPPED_DATA, TrainPersonaConfig

    for name in ("persona_a", "persona_b", "persona_c"):
        assert TrainPersonaConfig(data={"path": name}).data.path == SHIPPED_DATA / f"sft_{name}.jsonl"
    (in_tmp / "persona_b").write_text("")  # a file of that name here wins: it is what the user named
    assert TrainPersonaConfig(data={"path": "persona_b"}).data.path == Path("persona_b")


@pytest.mark.parametrize("out, run_dir, says", [
    ("rd", "rd", "is the run folder"), ("rd", "rd/inner", "holds the run folder"),
    ("rd/checkpoints", "rd", "is the run folder's own checkpoints")])
def test_out_overlapping_the_run_folder_is_refused_before_anything_loads(
        out: str, run_dir: str, says: str, in_tmp: Path, tiny_model: dict[str, Path],
        capsys: pytest.CaptureFixture) -> None:
    """--out rd --run-dir rd trained the whole run, then failed "--out rd: appeared while training" with the hint to
    move the adapter into place by hand (over the run folder); --resume failed the same way every time."""
    assert train(tiny_model["hf"], "--max-steps", "1", "--out", out, "--run-dir", run_dir) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: {says} (--run-dir {run_dir})" in err and "nothing was written" in err, err
    assert "base model" not in err and "Traceback" not in err and not (in_tmp / "rd").exists()


def test_a_resume_whose_out_is_its_run_folder_is_refused(in_tmp: Path, tiny_model: dict[str, Path],
                                                         capsys: pytest.CaptureFixture) -> None:
    """A run made so before the check existed (here: its config.yaml says so) is refused before anything loads."""
    assert train(tiny_model["hf"], "--max-steps", "2", "--set", "train.save_steps=1", "--out", "a",
                 "--run-dir", "rd") == 0
    config = in_tmp / "rd" / "config.yaml"
    config.write_text(config.read_text().replace(f"out: {in_tmp / 'a'}", f"out: {in_tmp / 'rd'}"))
    shutil.rmtree(in_tmp / "rd" / "checkpoints" / "checkpoint-2")
    (in_tmp / "rd" / "results.json").unlink()  # stopped before its end: the resume would train and save
    before = {p: p.read_bytes() for p in (in_tmp / "rd").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train-persona", "--resume", "rd"]) == 2
    err = capsys.readouterr().err
    assert f"--out {in_tmp / 'rd'}: is the run folder (--resume rd)" in err and "start a new run" in err, err
    assert "base model" not in err and before == {p: p.read_bytes() for p in (in_tmp / "rd").rglob("*") if p.is_file()}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_out_that_cannot_be_written_is_refused_before_anything_loads_and_a_resume_may_move_it(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """--out /proc/x made the run folder, trained, then failed on /proc/.x.partial (exit 1); --resume failed the
    same way every time, and a resume with another --out was refused as a changed setting."""
    assert train(tiny_model["hf"], "--max-steps", "1", "--out", "/proc/agentlab-test") == 2
    err = capsys.readouterr().err
    assert "--out /proc/agentlab-test: cannot write in /proc" in err and "nothing was written" in err, err
    assert "base model" not in err and not (in_tmp / "runs").exists()
    # a run made so before the check (its config.yaml says so) that stopped before saving its adapter
    assert train(tiny_model["hf"], "--max-steps", "2", "--set", "train.save_steps=1", "--out", "a",
                 "--run-dir", "rd") == 0
    config = in_tmp / "rd" / "config.yaml"
    config.write_text(config.read_text().replace(f"out: {in_tmp / 'a'}", "out: /proc/agentlab-test"))
    (in_tmp / "rd" / "results.json").unlink()
    shutil.rmtree(in_tmp / "a")
    capsys.readouterr()
    assert main(["train-persona", "--resume", "rd"]) == 2
    err = capsys.readouterr().err
    assert "--out /proc/agentlab-test: cannot write in /proc" in err and "resume with --out DIR" in err, err
    (in_tmp / "taken").mkdir()
    (in_tmp / "taken" / "notes.txt").write_text("keep")
    assert main(["train-persona", "--resume", "rd", "--out", "taken"]) == 2  # a new --out is checked as a new run's
    assert "--out taken: holds files but is not an adapter folder" in capsys.readouterr().err
    assert main(["train-persona", "--resume", "rd", "--out", "b"]) == 0
    assert (in_tmp / "b" / "adapter_model.safetensors").is_file()
    assert json.loads((in_tmp / "rd" / "results.json").read_text())["adapter"] == str(in_tmp / "b")
    assert "out: " + str(in_tmp / "b") in config.read_text()
