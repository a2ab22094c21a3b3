"""`agentlab eval --resume` of a row whose samples were deleted or emptied since it was scored: kept, the row dropped
out of the applied check and the paired comparison without a word (results.json's ``"applied": {"a": {}}``); it is
scored again, saying so. The applied check never passes with nothing compared. A resumed run whose own config.yaml
is damaged says the run folder is damaged, not a -c file's hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("peft")

from agentlab.cli import main  # noqa: E402
from agentlab.core.errors import AgentlabError  # noqa: E402
from agentlab.core.harness import check_applied  # noqa: E402
from agentlab.core.harness.evaluate import missing_samples  # noqa: E402

TASK = "agentlab_arithmetic_mc"


def test_nothing_compared_is_no_pass() -> None:
    with pytest.raises(AgentlabError, match="no task's per-sample log-likelihoods could be compared"):
        check_applied("a", {TASK: [-1.0, -2.0]}, {TASK: []})
    with pytest.raises(AgentlabError, match="could be compared"):
        check_applied("a", {}, {TASK: [-1.0]})
    assert check_applied("a", {TASK: [-1.0]}, {TASK: [-1.5]}) == {TASK: 0.5}


def test_missing_samples_names_the_tasks_short_of_their_items() -> None:
    results = {"results": {TASK: {}}, "n-samples": {TASK: {"original": 10, "effective": 2}}}
    one = {"doc_id": 0, "resps": [[[-1.0, False]]]}
    assert missing_samples(results, {TASK: [one, {**one, "doc_id": 1}]}) == []
    assert missing_samples(results, {TASK: [one, one]}) == [TASK]  # one item twice (two filters), one missing
    assert missing_samples(results, {}) == [TASK]
    assert missing_samples({"results": {TASK: {}, "grp": {}}, "groups": {"grp": {}}}, {TASK: [one]}) == []


def test_a_row_whose_samples_are_gone_is_scored_again(in_tmp: Path, tiny_model: dict[str, Path],
                                                      one_torch_thread: None, capsys: pytest.CaptureFixture) -> None:
    from agentlab.core.train.tiny import make_tiny_adapter

    adapter = make_tiny_adapter(tiny_model["hf"], in_tmp / "adapters" / "loud", seed=1, scale=0.3)
    run = in_tmp / "run"
    assert main(["eval", "--model", str(tiny_model["hf"]), "--set", "device=cpu", "--limit", "3", "--batch-size", "4",
                 "--tasks", TASK, "--adapter", str(adapter), "--out", str(run)]) == 0
    first = json.loads((run / "results.json").read_text())
    assert set(first["applied"]["loud"]) == {TASK} and first["paired"]["loud"]
    capsys.readouterr()

    def resume() -> tuple[dict, str]:
        assert main(["eval", "--resume", str(run)]) == 0
        return json.loads((run / "results.json").read_text()), capsys.readouterr().err

    samples = f"samples_{TASK}.jsonl"
    (run / "lm-eval" / "loud" / samples).unlink()  # the adapter's samples deleted
    results, err = resume()
    assert "base: scored earlier, kept" in err
    assert f"loud: scored earlier, but its samples are missing or incomplete ({samples} in " in err
    assert "scored again" in err
    assert results["applied"] == first["applied"] and results["paired"] == first["paired"]
    assert len((run / "lm-eval" / "loud" / samples).read_text().splitlines()) == 3

    (run / "lm-eval" / "base" / samples).write_text("")  # the base's emptied: every adapter's check leaned on it
    results, err = resume()
    assert "base: scored earlier, but its samples are missing or incomplete" in err
    assert "loud: scored earlier, kept" in err
    assert results["applied"] == first["applied"] and results["paired"] == first["paired"]

    # a resumed run's own config.yaml damaged (cut short: only its first comment line left) is the run folder's
    # damage, not a -c file to fill in or leave out
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config[:30])
    assert main(["eval", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.yaml'}: the config file is empty" in err and "the run folder is damaged" in err
    assert "give no file for the defaults" not in err and "restore it from a copy" in err
