"""The debate on its LangGraph graph: byte parity with the engine it replaced, on the bundled tasks (answers recorded
from that engine in ``data/parity``, ``parity_cases.py``), and a run killed with SIGKILL mid-round that ``--resume``
continues to the same files as a run never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import parity_cases  # noqa: E402

pytest.importorskip("langgraph.checkpoint.sqlite.aio")


@pytest.fixture
def frozen(in_tmp: Path) -> Any:
    undo = parity_cases.frozen_clock()
    yield in_tmp
    undo()


def test_transcripts_and_decisions_are_byte_identical_to_the_engine_before_the_graph(frozen: Path) -> None:
    produced = parity_cases.produce(frozen)
    recorded = sorted(p.name for p in parity_cases.DATA.iterdir())
    assert sorted(produced) == recorded
    for case, files in produced.items():
        for name, data in files.items():
            assert data == (parity_cases.DATA / case / name).read_bytes(), f"{case}/{name} differs"
    # the graph's checkpoints are in the run folder
    assert (frozen / "runs" / "easy-last_round" / "debate.sqlite").stat().st_size > 0


CHILD = """
import json, os, sys, time
sys.path.insert(0, {here!r})
import parity_cases
from pathlib import Path
from agentlab.core.llm.providers.scripted import ScriptedProvider
from agentlab.core.runs import run_in_folder
from agentlab.debate.config import DebateConfig
from agentlab.debate.run import prepare, run

parity_cases.frozen_clock()

def reply(model, messages, params):
    if sum(m["role"] == "assistant" for m in messages) == 2:  # round 2: say so, then hang until killed
        Path("in-round-2").touch()
        time.sleep(600)
    return parity_cases.greedy(model, messages, params)

cfg = DebateConfig.model_validate(json.loads({cfg!r}))
run_in_folder("debate", cfg, run, out="runs/killed",
              inputs={{**prepare(cfg), "providers": {{"s": ScriptedProvider("s", [reply])}}}})
"""


def test_killed_mid_round_resumes_from_the_checkpoint_to_the_same_files(frozen: Path) -> None:
    from agentlab.core.llm.providers.scripted import ScriptedProvider
    from agentlab.core.runs import run_in_folder
    from agentlab.debate.config import DebateConfig
    from agentlab.debate.run import prepare, run

    (frozen / "llm.yaml").write_text(parity_cases.LLM)
    fields = {"llm": "llm.yaml", "agents": [{"model": x} for x in "abc"], "rule": "last_round", "rounds": 3,
              "topic": "What is the result of 7+5*3?", "decision": "judge", "judge": "b"}
    cfg = DebateConfig.model_validate(fields)
    whole, folder = run_in_folder("debate", cfg, run, out="runs/whole",
                                  inputs={**prepare(cfg), "providers": {"s": ScriptedProvider("s",
                                                                                              [parity_cases.greedy])}})
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(here=str(HERE), cfg=json.dumps(fields))],
                             cwd=frozen)
    deadline = time.monotonic() + 120
    while not (frozen / "in-round-2").exists():
        assert child.poll() is None and time.monotonic() < deadline, "the child stopped before round 2"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = frozen / "runs" / "killed"
    assert not (killed / "results.json").exists() and (killed / "debate.sqlite").stat().st_size > 0
    lines = (killed / "transcript.jsonl").read_text().splitlines()
    assert sorted({json.loads(line)["round"] for line in lines}) == [0, 1] and len(lines) == 6

    resumed = ScriptedProvider("s", [parity_cases.greedy])
    results, _ = run_in_folder("debate", cfg, run, resume=killed, inputs={**prepare(cfg), "providers": {"s": resumed}})
    seen = sorted(sum(m["role"] == "assistant" for m in c.messages) for c in resumed.calls if c.model != "b"
                  or "Several agents" not in c.messages[0]["content"])
    assert seen == [2, 2, 2, 3, 3, 3]  # rounds 0 and 1 came from the checkpoint, round 2 asked again
    assert sum("Several agents" in c.messages[0]["content"] for c in resumed.calls) == 1  # the judge, once
    for name in ("transcript.jsonl", "report.md"):
        assert (killed / name).read_bytes() == (folder / name).read_bytes(), name
    assert results["final"] == whole["final"] and results["per_round"] == whole["per_round"]
    assert results["judge_reply"] == whole["judge_reply"]


def test_a_finished_debate_resumed_with_more_rounds_asks_only_those_and_the_judge_again(frozen: Path) -> None:
    from agentlab.core.llm.providers.scripted import ScriptedProvider
    from agentlab.core.runs import run_in_folder
    from agentlab.debate.config import DebateConfig
    from agentlab.debate.run import prepare, run

    (frozen / "llm.yaml").write_text(parity_cases.LLM)
    fields = {"llm": "llm.yaml", "agents": [{"model": x} for x in "abc"], "rule": "last_round",
              "topic": "What is the result of 3+9*2?", "decision": "judge", "judge": "a"}

    def debate(rounds: int, out: str, resume: Path | None = None) -> tuple[dict[str, Any], ScriptedProvider, Path]:
        cfg = DebateConfig.model_validate({**fields, "rounds": rounds})
        provider = ScriptedProvider("s", [parity_cases.greedy])
        results, folder = run_in_folder("debate", cfg, run, out=None if resume else out, resume=resume,
                                        inputs={**prepare(cfg), "providers": {"s": provider}})
        return results, provider, folder

    _, _, folder = debate(1, "runs/short")
    results, provider, _ = debate(2, "", resume=folder)
    judged = [c for c in provider.calls if "Several agents" in c.messages[0]["content"]]
    asked = sorted(sum(m["role"] == "assistant" for m in c.messages) for c in provider.calls if c not in judged)
    assert asked == [2, 2, 2] and len(judged) == 1
    whole, _, fresh = debate(2, "runs/whole")
    assert (folder / "transcript.jsonl").read_bytes() == (fresh / "transcript.jsonl").read_bytes()
    assert results["final"] == whole["final"] and results["judge_reply"] == whole["judge_reply"]
