"""End to end over real tiny GGUF models through llama.cpp: the example configs/pipeline.yaml (draft -> 3-model vote
-> final) with configs/models.yaml, the session files, a rerun served from the model cache, and the memory check
refusing a model set before anything loads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from agentlab.cli import main

pytest.importorskip("llama_cpp")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models_dir(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four distinct GGUF files (copies of the session's tiny model: four paths, so four loads)."""
    folder = tmp_path_factory.mktemp("pipeline-models")
    for name in ("tiny-a", "tiny-b", "tiny-c", "tiny-d", "tiny-e"):
        (folder / name).mkdir()
        shutil.copy(tiny_model["gguf"], folder / name / "model.gguf")
    return folder


def test_example_pipeline_on_tiny_ggufs(models_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    from agentlab.core.llm.providers.llama_cpp import load_count

    (in_tmp / "models").symlink_to(models_dir)  # configs/models.yaml: models_directory: models (the cwd's)
    before = load_count()
    code = main(["pipeline", "run", "--models", str(REPO / "configs/models.yaml"), "--pipeline",
                 str(REPO / "configs/pipeline.yaml"), "--input", "Name three uses of a paperclip.", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads(out)
    folder = in_tmp / "runs" / "pipeline" / results["run_id"]

    assert [(s["name"], s["type"], s["aggregation"]) for s in results["stages"]] == [
        ("draft", "single", None), ("vote", "multi", "vote"), ("final", "single", None)]
    assert all(s["completion_tokens"] > 0 for s in results["stages"])
    # drafter and finisher share tiny-a with the same load settings: the process-wide cache loads it once.
    assert load_count() - before == 4 == results["gguf_loads"]
    assert sorted(m["name"] for m in results["models_loaded"]) == ["drafter", "finisher", "voter-1", "voter-2",
                                                                   "voter-3"]
    assert all(m["estimate_bytes"] > 500_000 for m in results["models_loaded"])

    vote = json.loads((folder / "steps" / "02-vote.json").read_text())
    assert [o["model"] for o in vote["outputs"]] == ["voter-1", "voter-2", "voter-3"]
    assert sum(v["count"] for v in vote["aggregation"]["votes"]) == 3
    assert vote["outputs"][0]["params"]["max_tokens"] == 24 and vote["outputs"][0]["params"]["seed"] == 1
    assert all(0 < o["completion_tokens"] <= 24 for o in vote["outputs"])
    assert vote["outputs"][0]["provider_model"] == str((in_tmp / "models" / "tiny-b" / "model.gguf").resolve())
    final = json.loads((folder / "steps" / "03-final.json").read_text())
    assert final["input"].startswith("## draft\n") and "## vote\n" in final["input"]
    assert (folder / "final.txt").read_text().rstrip("\n") == results["final"].rstrip("\n")
    calls = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    calls = [c for c in calls if c["kind"] == "llm_call"]
    assert len(calls) == 5 and all(c["outcome"] == "ok" for c in calls)
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"

    # A rerun of the last stage in the same process: no new load, the draft and vote are reused.
    code = main(["pipeline", "rerun", results["run_id"], "--from", "final", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    child = json.loads(out)
    assert child["gguf_loads"] == 0 and [s["reused"] for s in child["stages"]] == [True, True, False]
    assert child["final"] == results["final"]  # the finisher is greedy (temperature 0) on the same input


def test_models_over_the_memory_budget_are_refused_before_loading(models_dir: Path, in_tmp: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    from agentlab.core.llm.providers.llama_cpp import load_count

    models = in_tmp / "models.yaml"
    models.write_text(f"models_directory: {models_dir}\nresources: {{memory_budget_gb: 0.001}}\n"
                      "defaults: {n_ctx: 512}\nmodels:\n  big: {file: tiny-e/model.gguf}\n"
                      "  other: {file: tiny-e/model.gguf, overrides: {n_ctx: 256}}\n")
    pipeline = in_tmp / "pipeline.yaml"
    pipeline.write_text("base_pipeline:\n  stages:\n    - {name: m, type: multi, models: [big, other], "
                        "aggregation: concat}\n")
    before = load_count()
    code = main(["pipeline", "run", "--models", str(models), "--pipeline", str(pipeline), "--input", "x"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and load_count() == before
    assert "big, other need" in err and "big: " in err
    assert "of RAM but only 891 KiB may be used, 85% of the budget of 1.02 MiB" in err


def test_a_run_refused_for_memory_is_a_session_to_rerun(models_dir: Path, in_tmp: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The refused session held only run.json and run.lock: `history` listed its input as `-`, and the `rerun` that
    `show` advised failed (exit 2, `config.yaml: missing: the session folder is incomplete or damaged`)."""
    (in_tmp / "models.yaml").write_text(f"models_directory: {models_dir}\nresources: {{memory_budget_gb: 0.001}}\n"
                                        "models:\n  big: {file: tiny-e/model.gguf, overrides: {n_ctx: 512}}\n")
    code = main(["pipeline", "run", "--models", "models.yaml", "--stage", "a=big", "-i", "hi", "--out",
                 "runs/pipeline/mem"])
    err = " ".join(capsys.readouterr().err.split())
    folder = in_tmp / "runs" / "pipeline" / "mem"
    # alone in its process "needs 6.42 MiB of RAM at n_ctx 512 but"; after another test left a model loaded, the
    # models together "need ... of RAM but": the budget's words are the same
    assert code == 1 and re.search(r"of RAM (at n_ctx 512 )?but only 891 KiB may be used", err), err
    assert {"config.yaml", "models.yaml", "input.txt", "session.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "steps").exists()
    assert main(["pipeline", "history", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["status"], listed["input"]) == ("mem", "failed", "hi")
    assert main(["pipeline", "show", "mem"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no stage finished: run it again (`agentlab pipeline rerun mem` reads its saved config" in err
    code = main(["pipeline", "rerun", "mem", "--set", "base_pipeline.stages.0.params.max_tokens=4", "--json"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and re.search(r"of RAM (at n_ctx 512 )?but only 891 KiB may be used", err), err  # the same check
    assert "missing" not in err
    child = next(p for p in folder.parent.iterdir() if p.name != "mem")
    assert "max_tokens: 4" in (child / "config.yaml").read_text()
    assert json.loads((child / "session.json").read_text())["parent_run_id"] == "mem"


def test_check_models_reads_metadata_only(models_dir: Path, in_tmp: Path) -> None:
    from agentlab.core.llm.providers.llama_cpp import load_count
    from agentlab.pipeline import check_models
    from agentlab.pipeline.config import ModelsConfig

    cfg = ModelsConfig.model_validate({
        "models_directory": str(models_dir), "defaults": {"n_ctx": 256},
        "models": {"ok": {"file": "tiny-a/model.gguf", "quantization": "f32"},
                   "mislabelled": {"file": "tiny-b/model.gguf", "quantization": "q8_0"},
                   "gone": {"file": "tiny-z/model.gguf", "required_for_base": False},
                   "cloud": {"routed": "gpt-4o-mini"}}})
    before = load_count()
    status = {s.name: s for s in check_models(cfg)}
    assert load_count() == before
    ok = status["ok"]
    assert ok.ok and ok.exists and ok.backend == "llama_cpp" and ok.quantization_found == "f32" and ok.fits is True
    assert ok.size_bytes == (models_dir / "tiny-a" / "model.gguf").stat().st_size
    assert ok.estimate.n_ctx == 256 and ok.estimate.total_bytes > ok.size_bytes
    bad = status["mislabelled"]
    assert not bad.ok and bad.quantization_mismatch and "declared q8_0 but the file is f32" in bad.note
    gone = status["gone"]
    assert gone.exists is False and not gone.required and "agentlab models make-tiny" in gone.note
    assert status["cloud"].backend == "routed" and status["cloud"].exists is None and status["cloud"].ok
    assert json.dumps([s.to_dict() for s in status.values()])  # JSON-ready for `models check --json`
    tight = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"memory_budget_gb": 0.0001})})
    assert check_models(tight)[0].fits is False and "needs" in check_models(tight)[0].note


def test_names_sharing_one_loaded_model_count_once(models_dir: Path, in_tmp: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # drafter and finisher of configs/models.yaml share a file and every load setting: the cache loads it once, so
    # the memory check must count it once too (a pipeline that fits must not be refused for a double count).
    from agentlab.core.llm import resources
    from agentlab.core.llm.providers.llama_cpp import load_count
    from agentlab.core.llm.resources import GIB, ResourceError
    from agentlab.pipeline.config import ModelsConfig
    from agentlab.pipeline.models import check_fits, estimate

    raw = {"models_directory": str(models_dir), "defaults": {"n_ctx": 512},
           "models": {"drafter": {"file": "tiny-a/model.gguf", "overrides": {"params": {"temperature": 0.2}}},
                      "finisher": {"file": "tiny-a/model.gguf", "overrides": {"params": {"temperature": 0.0}}},
                      "small-ctx": {"file": "tiny-a/model.gguf", "overrides": {"n_ctx": 256}}}}
    one = estimate(ModelsConfig.model_validate(raw), "drafter").ram_bytes
    raw["resources"] = {"memory_budget_gb": 1.2 * one / GIB, "safety_factor": 1.0}  # one copy fits, not more
    cfg = ModelsConfig.model_validate(raw)
    # Models that earlier tests left loaded (llama.cpp or transformers) count against a configured budget: this
    # budget is for these models alone.
    monkeypatch.setattr(resources, "_loaded", {})
    before = load_count()
    estimates = check_fits(cfg, ["drafter", "finisher"])
    assert [e.name for e in estimates] == ["drafter", "finisher"]  # still one estimate per name for the results
    with pytest.raises(ResourceError) as info:  # another n_ctx is another context: a second load, counted
        check_fits(cfg, ["drafter", "finisher", "small-ctx"])
    assert "drafter+finisher, small-ctx need" in " ".join(info.value.message.split())
    assert load_count() == before


def test_a_declared_quantization_the_file_lacks_is_warned_about(models_dir: Path, in_tmp: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """`models check` calls such a model not ready; `pipeline run` ran it without a word."""
    (in_tmp / "m.yaml").write_text(f"models_directory: {models_dir}\nmodels:\n"
                                   "  a: {file: tiny-a/model.gguf, quantization: q8_0}\n")
    assert main(["pipeline", "run", "--models", "m.yaml", "--stage", "x=a", "-i", "hi", "--set",
                 "base_pipeline.stages.0.params={max_tokens: 2}"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "model a: declared quantization q8_0 but the file is f32" in said
