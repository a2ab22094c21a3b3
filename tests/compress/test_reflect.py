"""The reflection step: every number of the model's note is checked against the run's measurements in code; a
sentence with a number the measurements do not hold is removed and flagged (a scripted model invents one)."""

from __future__ import annotations

from typing import Any

from agentlab.compress.reflect import check_note, measured_figures, reflect
from agentlab.testing.agents import ScriptAgent

RECORDS: list[dict[str, Any]] = [
    {"index": 0, "label": "base model", "state": "done", "seconds": 99.5,
     "metrics": {"perplexity": 20.41, "accuracy": 0.4, "decode_tps": 50.0, "size_mb": 513.0},
     "derived": {"speedup": 1.0, "accuracy": 0.4, "perplexity": 20.41, "size": 513.0}},
    {"index": 1, "label": "gguf Q4_K_M", "state": "done", "feasible": True, "seconds": 61.2,
     "experiment": {"quantize": {"method": "gguf", "gguf_type": "Q4_K_M"}},
     "metrics": {"perplexity": 23.87, "accuracy": 0.35, "decode_tps": 159.7, "size_mb": 100.2},
     "derived": {"speedup": 3.194, "accuracy": 0.35, "perplexity": 23.87, "size": 100.2}},
    {"index": 2, "label": "magnitude 50% 2:4 > +lora 50", "state": "done", "feasible": False, "seconds": 1339.6,
     "experiment": {"prune": {"method": "magnitude", "sparsity": 0.5, "pattern": "2:4"},
                    "recover": {"method": "lora", "steps": 50}},
     "metrics": {"perplexity": 41.2, "accuracy": 0.1, "decode_tps": 48.0, "size_mb": 513.0},
     "derived": {"speedup": 0.96, "accuracy": 0.1, "perplexity": 41.2, "size": 513.0}},
]


def test_numbers_at_the_precision_written_names_and_differences_pass() -> None:
    note = ("gguf Q4_K_M ran 3.19x faster than the base at perplexity 23.9 against 20.41, and lost 0.05 accuracy. "
            "magnitude 50% 2:4 > +lora 50 took 22.3 min and kept only 0.1 accuracy; int8 was not tried.")
    kept, flagged = check_note(note, RECORDS)
    assert flagged == [] and kept == note


def test_an_invented_number_removes_its_sentence_and_is_flagged() -> None:
    note = "GGUF Q4_K_M reached speedup 3.19. It kept 97% of the accuracy. Pruning hurt: perplexity 41.2."
    kept, flagged = check_note(note, RECORDS)
    assert kept == "GGUF Q4_K_M reached speedup 3.19. Pruning hurt: perplexity 41.2."
    assert flagged == [{"sentence": "It kept 97% of the accuracy.", "numbers": ["97%"]}]
    assert 3.194 in measured_figures(RECORDS) and 2.0 in measured_figures(RECORDS)  # a figure, the experiments


def test_the_reflection_step_checks_the_scripted_models_note() -> None:
    invented = "GGUF Q4_K_M is 3.19x faster. Wanda at 65% gave speedup 5.5 with no loss."
    model = ScriptAgent([("answer", {"note": invented})])
    events: list[tuple[str, dict[str, Any]]] = []
    block = reflect(model, "the run's figures", RECORDS, lambda kind, **f: events.append((kind, f)))
    assert block["written"] == invented and block["note"] == "GGUF Q4_K_M is 3.19x faster."
    assert block["flagged"][0]["numbers"] == ["65%", "5.5"]
    assert model.seen[0][1]["content"] == "the run's figures" and "Use only the figures" in model.seen[0][0]["content"]
    assert [k for k, _ in events] == ["agent_subagent", "agent_reflection"] and events[1][1]["flagged"] == 1
