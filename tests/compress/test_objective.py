"""The compression objective in words: objectives and constraints read from the seed's phrasing and its variants,
bounds against the base model, and one clear error for what cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.compress.objective import parse_objective
from agentlab.core.errors import UsageError


@pytest.mark.parametrize(("text", "described"), [
    ("maximize speedup with <2% accuracy loss", "maximize speedup subject to accuracy >= 0.98 x base"),
    ("Maximize speedup with accuracy loss < 2%", "maximize speedup subject to accuracy >= 0.98 x base"),
    ("minimize size, maximize speedup with perplexity increase <5%",
     "minimize size, maximize speedup subject to perplexity <= 1.05 x base"),
    ("maximize speedup with less than 2 points of accuracy drop and size < 100 MB",
     "maximize speedup subject to accuracy >= base -0.02 and size <= 100"),
    ("minimize perplexity subject to size below 0.06 GB", "minimize perplexity subject to size <= 60"),
    ("maximize compression ratio with ppl increase under 10%",
     "maximize compression subject to perplexity <= 1.1 x base"),
    ("minimize latency", "minimize latency"),
])
def test_phrasings(text: str, described: str) -> None:
    assert parse_objective(text).describe() == described


def test_bounds_against_the_base_model() -> None:
    goal = parse_objective("maximize speedup with <2% accuracy loss and perplexity increase < 10% and size < 100 MB")
    accuracy, ppl, size = goal.constraints
    assert accuracy.holds(0.49, base=0.5) and not accuracy.holds(0.48, base=0.5)
    assert ppl.holds(10.9, base=10.0) and not ppl.holds(11.1, base=10.0)
    assert size.holds(99, base=None) and not size.holds(101, base=None) and not size.holds(None, base=None)
    points = parse_objective("maximize speedup with <2 points accuracy loss").constraints[0]
    assert points.bound(0.5) == pytest.approx(0.48)


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty objective"), ("make it fast", "no 'maximize X'"), ("maximize happiness", "unknown metric"),
    ("maximize speedup with accuracy increase <2%", "cannot read the constraint 'accuracy increase <2%'"),
])
def test_unreadable_objectives_say_what_and_how(text: str, says: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_objective(text)
    assert says in info.value.message and info.value.hint


@pytest.mark.parametrize(("text", "described"), [
    ("maximize speedup, <2% accuracy loss", "maximize speedup subject to accuracy >= 0.98 x base"),
    ("maximize speedup, accuracy loss < 2%", "maximize speedup subject to accuracy >= 0.98 x base"),
    ("maximize speedup; <2% accuracy loss", "maximize speedup subject to accuracy >= 0.98 x base"),
    ("maximize speedup and keep perplexity below 30", "maximize speedup subject to perplexity <= 30"),
    ("maximize speedup while keeping perplexity below 30", "maximize speedup subject to perplexity <= 30"),
    ("maximize speedup, minimize perplexity", "maximize speedup, minimize perplexity"),
])
def test_constraints_outside_a_with_clause_are_read(text: str, described: str) -> None:
    """Only the text after "with / subject to / ..." was read for constraints: "maximize speedup, <2% accuracy loss"
    ran as "maximize speedup" with no constraint and no word."""
    assert parse_objective(text).describe() == described


@pytest.mark.parametrize(("text", "says"), [
    ("maximize speedup, be nice", "cannot read 'be nice': neither an objective"),
    ("maximize speedup quickly", "cannot read 'quickly' in 'maximize speedup quickly'"),
    ("maximize speedup with size < 100 parsecs", "cannot read the constraint 'size < 100 parsecs'"),
    ("maximize speedup with accuracy loss < 200%", "allows losing 100% or more of the accuracy, so it can never fail"),
    ("maximize speedup with <2 accuracy loss", "allows losing 100% or more of the accuracy"),
    ("maximize speedup with <100 points accuracy loss", "allows losing all of the accuracy"),
])
def test_text_that_is_no_objective_or_constraint_or_a_bound_nothing_breaks_is_refused(text: str, says: str) -> None:
    """Leftover words were dropped without a word, and a loss of 200% was accepted as accuracy >= -1 x base."""
    with pytest.raises(UsageError) as info:
        parse_objective(text)
    assert says in info.value.message and info.value.hint


def test_when_no_experiment_meets_the_goal_and_the_base_does_the_report_says_keep_it() -> None:
    """The closest experiment was recommended at perplexity 500 (base 34) with no word that the base model, which
    meets the goal, is the better choice."""
    from agentlab.compress.report import _recommendation
    from agentlab.compress.run import best_summary

    goal = parse_objective("maximize speedup with <2% accuracy loss")
    base = {"index": 0, "label": "base model", "state": "done", "feasible": True, "violation": 0.0, "broken": [],
            "experiment": None, "derived": {"speedup": 1.0, "accuracy": 0.8}, "metrics": {}}
    bad = {**base, "index": 1, "label": "wanda 90%", "feasible": False, "violation": 0.5, "broken": ["accuracy"],
           "experiment": {"prune": {}}, "derived": {"speedup": 3.0, "accuracy": 0.0}}
    rec = best_summary(goal, [base, bad])
    assert rec["index"] == 1 and not rec["feasible"] and rec["base_feasible"]
    assert "the base model meets them: keep it" in "\n".join(_recommendation(rec))
    rec = best_summary(goal, [{**base, "feasible": False}, bad])  # an absolute bound the base breaks too: no such word
    assert not rec["base_feasible"] and "keep it" not in "\n".join(_recommendation(rec))


def test_an_unknown_metric_in_yaml_objectives_or_constraints_is_refused_at_validation(tmp_path: Path) -> None:
    """`constraints: [{metric: acc}]` passed the dry run, then every experiment broke 'acc'; `objectives: [{metric:
    sped}]` failed the real run as "the base model's measurement failed": now the field's line, exit 2."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import load_config
    from agentlab.core.errors import ConfigError

    file = tmp_path / "c.yaml"
    file.write_text('objective: ""\nobjectives:\n  - {metric: speedup, direction: maximize}\nconstraints:\n'
                    '  - {metric: acc, op: ">=", value: 0.5}\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, CompressConfig)
    assert info.value.exit_code == 2
    assert "c.yaml:5: constraints[0].metric: unknown metric 'acc' (did you mean accuracy?)" in info.value.message
    with pytest.raises(ConfigError, match=r"objectives\[0\].metric: unknown metric 'sped' \(did you mean speedup"):
        load_config(file, CompressConfig, ["objectives=[{metric: sped, direction: maximize}]",
                                           "constraints=[]"])


def test_yaml_objectives_beside_the_default_sentence_are_the_goal(tmp_path: Path) -> None:
    """`objectives:` with `objective` left at its default ran the default sentence's goal without a word: the
    objectives given are the goal now; beside a sentence given too, or constraints without objectives, refused."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import load_config
    from agentlab.core.errors import ConfigError

    file = tmp_path / "o.yaml"
    file.write_text("objectives:\n  - {metric: size, direction: minimize}\n")
    cfg = load_config(file, CompressConfig)
    assert cfg.goal().describe() == "minimize size" and cfg.objective is None
    assert CompressConfig(objectives=[{"metric": "size", "direction": "minimize"}]).goal().describe() == "minimize size"
    with pytest.raises(ConfigError, match="the goal is given twice, in words \\(objective\\) and as objectives"):
        load_config(file, CompressConfig, ["objective=maximize speedup"])
    with pytest.raises(ConfigError, match="constraints: given without objectives"):
        load_config(file, CompressConfig, ["objectives=[]", "constraints=[{metric: size, op: '<=', value: 1}]"])


def test_constraints_without_objectives_say_so_at_their_line(tmp_path: Path) -> None:
    """`constraints:` alone said "c.yaml:1: objective: the goal is given twice, in words (objective) and as
    constraints" though the file wrote no objective (its line 1 was `model:`)."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import load_config
    from agentlab.core.errors import ConfigError

    file = tmp_path / "conly.yaml"
    file.write_text('model: smollm2-135m\nconstraints:\n  - {metric: size, op: "<=", value: 1}\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, CompressConfig)
    assert f"{file}:2: constraints: given without objectives" in info.value.message
    assert "given twice" not in info.value.message and "objective:" in info.value.message  # the way out


@pytest.mark.parametrize(("text", "says"), [
    ("make it purple", "'make it purple': no 'maximize X' or 'minimize X' found; for example \"maximize speedup"),
    ("maximize speedup quickly", "'maximize speedup quickly': cannot read 'quickly' in 'maximize speedup quickly'; "
                                 "write one objective per clause"),
])
def test_an_unreadable_objective_in_a_config_file_names_its_file_line_and_field(tmp_path: Path, text: str,
                                                                                  says: str) -> None:
    """It was `objective 'make it purple': no 'maximize X' or 'minimize X' found` (a UsageError raised past
    validation), naming neither the file nor the line nor the field; `config validate` said the same."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import Flag, load_config
    from agentlab.core.errors import ConfigError

    file = tmp_path / "cp_goal.yaml"
    file.write_text(f"# agentlab compress -c FILE\nobjective: {text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, CompressConfig, schema="compress")
    assert info.value.message.startswith(f"{file}:2: objective: {says}") and "\n" not in info.value.message
    with pytest.raises(ConfigError, match=f"^--objective {text}: objective: '{text}'"):
        load_config(None, CompressConfig, [Flag("--objective", "objective", text)])
