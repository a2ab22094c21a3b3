"""The Pipeline pages in Streamlit's AppTest, on a tiny GGUF model: a pipeline built on the Manual page and saved as
YAML that `agentlab config validate` accepts, then run through the CLI; a re-run from a stage on the History page (a
child session; the parent untouched); the Base page running the configured pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("streamlit")
pytest.importorskip("llama_cpp")

from streamlit.testing.v1 import AppTest  # noqa: E402
from ui_helpers import models_file  # noqa: E402

from agentlab.cli import main  # noqa: E402
from agentlab.pipeline.sessions import list_sessions  # noqa: E402


def page(name: str) -> AppTest:
    return AppTest.from_string(f"from agentlab.ui import pages\npages.{name}_page()\n", default_timeout=60).run()


def finish(at: AppTest, key: str) -> AppTest:
    """Wait for the job the page started, then draw the page again."""
    job = at.session_state[key]
    assert job.wait(180) == 0, job.output()
    return at.run()


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def build_two_stages(at: AppTest, models: Path) -> AppTest:
    at.text_input(key="manual_models").input(str(models)).run()
    at.text_input(key="manual_name").input("two-stage")
    at.text_input(key="m0_name").input("draft")
    at.selectbox(key="m0_model").select("a")
    at.text_input(key="m0_system").input("Be brief.")
    at.button(key="manual_add").click().run()
    at.text_input(key="m1_name").input("vote")
    at.radio(key="m1_type").set_value("multi").run()
    at.multiselect(key="m1_models").set_value(["a", "b"])
    at.selectbox(key="m1_agg").select("vote")
    at.text_area(key="m1_prompt").input("Question: {{ original }}\nDraft: {{ input }}")
    at.number_input(key="m1_max").set_value(4)
    return at.run()


def test_manual_pipeline_saved_validates_and_runs(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    models = models_file(in_tmp, tiny_model["gguf"])
    at = build_two_stages(page("manual"), models)
    assert not at.exception and not at.error
    at.text_input(key="manual_path").input(str(in_tmp / "manual.yaml"))
    at.button(key="manual_save").click().run()
    assert f"saved {in_tmp / 'manual.yaml'}" in texts(at, "success")
    saved = in_tmp / "manual.yaml"
    assert saved.read_text().startswith(f"# agentlab pipeline run --models {models} --pipeline {saved}")
    assert main(["config", "validate", str(saved)]) == 0
    assert yaml.safe_load(saved.read_text()) == {"name": "two-stage", "base_pipeline": {"stages": [
        {"name": "draft", "type": "single", "model": "a", "system": "Be brief."},
        {"name": "vote", "type": "multi", "models": ["a", "b"], "aggregation": "vote",
         "prompt": "Question: {{ original }}\nDraft: {{ input }}", "params": {"max_tokens": 4}}]}}
    at.button(key="manual_save").click().run()  # again: the file exists
    assert "manual.yaml: exists" in texts(at, "error")

    at.text_area(key="manual_input").input("What is 2 plus 2?")
    at.button(key="manual_run").click().run()
    at = finish(at, "job_manual")
    assert not at.exception and "completed" in texts(at, "success")
    (session,) = list_sessions()
    assert session["status"] == "completed" and session["pipeline"] == "two-stage" and session["stages"] == 2
    run = Path(session["path"])
    assert [json.loads(p.read_text())["stage"] for p in sorted((run / "steps").glob("*.json"))] == ["draft", "vote"]
    assert at.dataframe[-1].value["stage"].tolist() == ["draft", "vote"]
    assert (run / "final.txt").read_text().strip() in texts(at, "code")


def test_manual_page_says_what_is_wrong_and_saves_nothing(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    models = models_file(in_tmp, tiny_model["gguf"])
    at = build_two_stages(page("manual"), models)
    at.multiselect(key="m1_models").set_value(["a"]).run()
    assert texts(at, "error").startswith("base_pipeline.stages[1].models: a multi stage needs at least 2 models")
    assert at.button(key="manual_save").disabled and at.button(key="manual_run").disabled
    at.multiselect(key="m1_models").set_value(["a", "b"])
    at.text_input(key="m1_name").input("draft").run()
    assert "duplicate stage name 'draft'" in texts(at, "error")
    at.text_input(key="manual_models").input(str(in_tmp / "missing.yaml")).run()
    assert "missing.yaml: models file not found" in texts(at, "error")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def test_history_reruns_from_a_stage_into_a_child_session(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    models = models_file(in_tmp, tiny_model["gguf"])
    assert main(["pipeline", "run", "--models", str(models), "--stage", "one=a", "--stage", "two=a,b:vote",
                 "--input", "Say hi."]) == 0
    (parent,) = list_sessions()
    before = digest(Path(parent["path"]))
    at = page("history")
    assert not at.exception and list(at.dataframe[0].value["session"]) == [parent["id"]]
    assert at.selectbox(key="hist_from").options == ["one", "two"]
    at.selectbox(key="hist_from").select("two")
    at.text_area(key="hist_sets").input("base_pipeline.stages.1.params.max_tokens=3")
    at.button(key="hist_rerun").click().run()
    at = finish(at, "job_rerun")
    assert not at.exception and "completed" in texts(at, "success")
    child = next(s for s in list_sessions() if s["id"] != parent["id"])
    assert (child["parent"], child["from_stage"], child["status"]) == (parent["id"], "two", "completed")
    steps = [json.loads(p.read_text()) for p in sorted((Path(child["path"]) / "steps").glob("*.json"))]
    assert [(s["stage"], s["reused"]) for s in steps] == [("one", True), ("two", False)]
    assert steps[1]["outputs"][0]["params"]["max_tokens"] == 3
    assert digest(Path(parent["path"])) == before  # the parent is never written
    at.run()
    sessions = list(at.dataframe[0].value["session"])
    assert sessions == [parent["id"], f"    ↳ {child['id']}"]  # the re-run under its parent


def test_base_page_runs_the_configured_pipeline(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    (in_tmp / "configs").mkdir()
    models_file(in_tmp / "configs", tiny_model["gguf"])
    (in_tmp / "configs" / "pipeline.yaml").write_text(
        "name: base\nbase_pipeline:\n  stages:\n    - {name: first, model: a}\n    - {name: second, model: b}\n")
    at = page("base")
    assert not at.exception and list(at.dataframe[0].value["stage"]) == ["first", "second"]
    at.button(key="base_run").click().run()  # no input yet
    assert "type the pipeline's input first" in texts(at, "warning") and "job_base" not in at.session_state
    at.text_area(key="base_input").input("Hello.")
    at.button(key="base_run").click().run()
    at = finish(at, "job_base")
    (session,) = list_sessions()
    assert session["pipeline"] == "base" and session["stages"] == 2 and session["input"] == "Hello."
    (in_tmp / "configs" / "pipeline.yaml").write_text(
        "name: base\nbase_pipeline:\n  stages:\n  - {name: x, model: zz}\n")
    at = page("base")
    assert "configs/pipeline.yaml:4: base_pipeline.stages[0].model: unknown model 'zz'" in texts(at, "error")
    assert at.button(key="base_run").disabled
