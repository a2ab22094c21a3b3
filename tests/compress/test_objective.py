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
     "maximize speedup subject to accuracy >= base -0.02 (2 points) and size <= 100 MB"),
    ("minimize perplexity subject to size below 0.06 GB", "minimize perplexity subject to size <= 61.44 MB"),
    ("maximize compression ratio with ppl increase under 10%",
     "maximize compression subject to perplexity <= 1.1 x base"),
    ("minimize latency", "minimize latency"),
])
def test_phrasings(text: str, described: str) -> None:
    assert parse_objective(text).describe() == described


def test_the_goal_is_printed_with_its_units_and_a_study_keeps_its_words_without_them() -> None:
    """"memory < 1 GB" was printed "memory <= 1000" (a GB taken as 1000 of the measured MB, 2**20 bytes each), "co2e
    < 0.1 kg" as "co2e <= 0.1", "<2 points accuracy loss" as "accuracy >= base -0.02"; a study keeps the goal's
    words without units (as 0.1.0 wrote them), so its runs resume."""
    from types import SimpleNamespace

    from agentlab.compress.run import GOAL_ATTR, check_goal

    goal = parse_objective("maximize speedup with memory < 1 GB and co2e < 0.1 kg and <2 points accuracy loss")
    assert goal.describe() == ("maximize speedup subject to memory <= 1024 MB and co2e <= 0.1 kg and accuracy >= base "
                               "-0.02 (2 points)")
    old = "maximize speedup subject to memory <= 1024 and co2e <= 0.1 and accuracy >= base -0.02"
    assert goal.describe(units=False) == old
    check_goal(SimpleNamespace(study_name="s", user_attrs={GOAL_ATTR: old}, get_trials=lambda deepcopy: []), goal, "")


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
    ("maximize speedup quickly", "cannot read 'quickly'"),
    ("maximize speedup, maximize speedup quickly", "cannot read 'quickly' in 'maximize speedup quickly'"),
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
    assert "**Keep the base model**: it meets the constraints and no experiment does; the closest, to compare: " \
        "**wanda 90%** (experiment 1) (it breaks accuracy)" in "\n".join(_recommendation(rec))
    rec = best_summary(goal, [{**base, "feasible": False}, bad])  # an absolute bound the base breaks too: no such word
    assert not rec["base_feasible"] and "Keep the base" not in "\n".join(_recommendation(rec))


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
    ("make it purple", "no 'maximize X' or 'minimize X' found; for example \"maximize speedup"),
    ("maximize speedup quickly", "cannot read 'quickly'; write one objective per clause"),
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
    with pytest.raises(ConfigError) as info:
        load_config(None, CompressConfig, [Flag("--objective", "objective", text)])
    assert info.value.message.startswith(f"--objective {text}: objective: {says}")


@pytest.mark.parametrize(("text", "says"), [
    ("size < 5%", "--objective size < 5%: objective: size is not measured in '%'; give size in MB or GB"),
    ("maximize speedup with size < 5%",
     "--objective maximize speedup with size < 5%: objective: 'size < 5%': size is not measured in '%'"),
    ("maximize speedup and", "--objective maximize speedup and: objective: nothing after 'and' at its end"),
    ("make it go brrr", "--objective make it go brrr: objective: no 'maximize X' or 'minimize X' found"),
    ("accuracy loss < 200%", "--objective accuracy loss < 200%: objective: allows losing 100% or more of the "
                             "accuracy, so it can never fail"),
    ("maximize speedup with accuracy loss < 200%", "--objective maximize speedup with accuracy loss < 200%: "
                                                   "objective: 'accuracy loss < 200%': allows losing 100% or more"),
])
def test_an_unreadable_objective_flag_says_its_text_once(text: str, says: str) -> None:
    """It was `--objective size < 5%: objective: 'size < 5%': 'size < 5%': size is not measured in '%'`: the text
    three times (the option, the sentence, the clause); the clause is named only when it is not the whole text."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import Flag, load_config
    from agentlab.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, CompressConfig, [Flag("--objective", "objective", text)])
    assert info.value.message.startswith(says), info.value.message
    assert info.value.message.count(text) == 1


@pytest.mark.parametrize(("text", "described"), [
    ("maximize speedup with accuracy >= 50%", "maximize speedup subject to accuracy >= 0.5"),
    ("maximize speedup with accuracy at least 50 points", "maximize speedup subject to accuracy >= 0.5"),
    ("maximize speedup with latency < 5 ms", "maximize speedup subject to latency <= 5 ms"),
    ("maximize speedup with energy < 0.001 kWh", "maximize speedup subject to energy <= 0.001 kWh"),
    ("maximize speedup with co2e < 0.01 kg", "maximize speedup subject to co2e <= 0.01 kg"),
    ("minimize size with speedup > 1.5x", "minimize size subject to speedup >= 1.5x"),
    ("maximize speedup, and keep perplexity below 30", "maximize speedup subject to perplexity <= 30"),
])
def test_a_bound_in_the_metrics_own_unit_is_read_in_it(text: str, described: str) -> None:
    """"accuracy >= 50%" was read as accuracy >= 50 (a fraction: nothing met it), "latency < 5 ms" and "energy <
    0.001 kWh" were refused though ms and kWh are those metrics' units."""
    assert parse_objective(text).describe() == described


@pytest.mark.parametrize(("text", "says"), [
    ("maximize speedup with size < 5%", "'size < 5%': size is not measured in '%'"),
    ("maximize speedup with latency < 5 gb", "'latency < 5 gb': latency is not measured in 'gb'"),
    ("maximize speedup with perplexity < 30 points", "perplexity is not measured in 'points'"),
    ("maximize speedup with <2 mb size increase", "cannot read the constraint '<2 mb size increase'"),
    ("maximize speedup, minimize speedup", "speedup is both maximized and minimized"),
    ("maximize speedup with size < 100 MB and size > 200 MB", "'size > 200 mb' and 'size < 100 mb' leave no size"),
    ("maximize speedup with perplexity < 30 and perplexity > 40", "leave no perplexity that meets both"),
    ("maximize speedup with accuracy > 1.5", "'accuracy > 1.5': accuracy >= 1.5 can never be met"),
    ("maximize speedup with size < 0 MB", "'size < 0 mb': size <= 0 can never be met"),
    ("maximize speedup with <2% accuracy loss and", "nothing after 'and' at its end"),
])
def test_a_unit_the_metric_lacks_a_contradiction_or_a_dangling_and_is_refused(text: str, says: str) -> None:
    """Each was accepted with exit 0: the unit dropped (size < 5 read as 5 MB, latency < 5 GB as 5000 ms), a goal no
    result could meet, a clause cut off after "and"."""
    with pytest.raises(UsageError) as info:
        parse_objective(text)
    assert says in info.value.message and info.value.hint


@pytest.mark.parametrize(("yaml", "says"), [
    ("objectives:\n  - {metric: speedup, direction: maximize}\n  - {metric: speedup, direction: minimize}\n",
     "c.yaml:2: objectives: speedup is both maximized and minimized"),
    ("objectives:\n  - {metric: speedup, direction: maximize}\nconstraints:\n  - {metric: accuracy, op: '>=', "
     "value: 1.5}\n", "c.yaml:5: constraints[0]: accuracy >= 1.5 can never be met"),
    ("objectives:\n  - {metric: speedup, direction: maximize}\nconstraints:\n  - {metric: size, op: '<=', value: 100}"
     "\n  - {metric: size, op: '>=', value: 200}\n", "c.yaml:4: constraints: 'size >= 200 MB' and 'size <= 100 MB'"),
])
def test_a_yaml_goal_no_result_could_meet_is_refused_at_its_line(tmp_path: Path, yaml: str, says: str) -> None:
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import load_config
    from agentlab.core.errors import ConfigError

    file = tmp_path / "c.yaml"
    file.write_text('objective: ""\n' + yaml)
    with pytest.raises(ConfigError) as info:
        load_config(file, CompressConfig)
    assert says in info.value.message


def test_a_folder_as_a_text_is_refused_at_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval_text: adir` said "adir: is a directory, expected a evaluation text", naming no file, line or key."""
    from agentlab.compress.config import CompressConfig
    from agentlab.core.config import load_config
    from agentlab.core.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "c.yaml").write_text("eval_text: adir\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yaml", CompressConfig)
    assert "c.yaml:1: eval_text: 'adir' is a directory, expected an evaluation text" in info.value.message


def _rec(index: int, feasible: bool, violation: float, **derived: float) -> dict:
    return {"index": index, "label": f"e{index}", "state": "done", "feasible": feasible, "violation": violation,
            "broken": [] if feasible else ["accuracy"], "experiment": None if index == 0 else {"prune": {}},
            "derived": derived, "metrics": {}}


def test_the_front_is_taken_over_the_results_that_meet_the_constraints() -> None:
    """front: [3] named an experiment that broke the constraints, marked "(front)" and red in pareto.png, while the
    recommendation was experiment 2."""
    from agentlab.compress.run import best_summary
    from agentlab.compress.scoring import feasible_front

    goal = parse_objective("maximize speedup with <2% accuracy loss")
    records = [_rec(0, True, 0.0, speedup=1.0, accuracy=0.8), _rec(1, True, 0.0, speedup=1.5, accuracy=0.8),
               _rec(2, True, 0.0, speedup=2.0, accuracy=0.79), _rec(3, False, 0.5, speedup=4.0, accuracy=0.1)]
    assert [records[i]["index"] for i in feasible_front(goal, records)] == [2] == [best_summary(goal, records)["index"]]
    nothing = [{**r, "feasible": False, "violation": v} for r, v in zip(records[1:], (0.3, 0.2, 0.5), strict=True)]
    assert [nothing[i]["index"] for i in feasible_front(goal, nothing)] == [2]  # none meets them: the least violating


def test_a_feasible_recommendation_no_better_than_the_base_says_keep_the_base() -> None:
    """wanda 50% + distill was recommended at speedup 0.923x under "maximize speedup" with no word that the base
    model, which meets the constraints, is better."""
    from agentlab.compress.report import _recommendation
    from agentlab.compress.run import best_summary

    goal = parse_objective("maximize speedup with <2% accuracy loss")
    base, slow = _rec(0, True, 0.0, speedup=1.0, accuracy=0.8), _rec(1, True, 0.0, speedup=0.923, accuracy=0.8)
    rec = best_summary(goal, [base, slow])
    assert rec["index"] == 1 and rec["feasible"] and rec["keep_base"]
    assert "**Keep the base model**: it meets the constraints and no experiment that does is better on the goal" \
        in "\n".join(_recommendation({**rec, "base": rec["base"]}))
    rec = best_summary(goal, [base, slow, _rec(2, True, 0.0, speedup=1.2, accuracy=0.8)])
    assert rec["index"] == 2 and not rec["keep_base"] and "Keep the base" not in "\n".join(_recommendation(rec))
    two = parse_objective("maximize speedup, minimize size with <2% accuracy loss")  # the base dominates it: keep
    rec = best_summary(two, [{**base, "derived": {"speedup": 1.0, "size": 10.0}},
                             {**slow, "derived": {"speedup": 0.9, "size": 10.0}}])
    assert rec["keep_base"]
    rec = best_summary(two, [{**base, "derived": {"speedup": 1.0, "size": 10.0}},
                             {**slow, "derived": {"speedup": 0.9, "size": 5.0}}])  # smaller: a trade-off
    assert not rec["keep_base"]


def test_a_resume_total_equal_to_the_finished_experiments_is_accepted_and_the_hint_says_so(tmp_path: Path) -> None:
    """The refusal of --max-iterations 2 after 3 finished said "give a total above 3", though 3 is accepted."""
    import json

    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import STATE, check_resume

    (tmp_path / "study.db").write_bytes(b"SQLite format 3\x00")  # a study is there (an empty file is refused)
    (tmp_path / STATE).write_text("".join(json.dumps({"experiment": e}) + "\n" for e in (None, {}, {}, {})))
    check_resume(CompressConfig.model_validate({"search": {"max_iterations": 3}}), tmp_path)
    with pytest.raises(UsageError) as info:
        check_resume(CompressConfig.model_validate({"search": {"max_iterations": 2}}), tmp_path)
    assert "give a total of at least 3" in (info.value.hint or "")


def test_the_checkpoints_kept_are_the_feasible_fronts(tmp_path: Path) -> None:
    """_keep_front kept the unconstrained front's checkpoints: the recommendation (experiment 2, meeting the
    constraints) lost its model to experiment 3, which broke them, and model_file came back empty."""
    from types import SimpleNamespace

    from agentlab.compress.run import Search, best_summary
    from agentlab.compress.workspace import Workspace

    goal = parse_objective("maximize speedup with <2% accuracy loss")
    records = [{**r, "key": f"k{r['index']}"} for r in (
        _rec(0, True, 0.0, speedup=1.0, accuracy=0.8), _rec(1, True, 0.0, speedup=1.5, accuracy=0.8),
        _rec(2, True, 0.0, speedup=2.0, accuracy=0.79), _rec(3, False, 0.5, speedup=4.0, accuracy=0.1))]
    ws = Workspace(tmp_path)
    for r in records[1:]:
        (ws.checkpoint_dir(r["key"]) / "model.pt").parent.mkdir(parents=True)
        (ws.checkpoint_dir(r["key"]) / "model.pt").write_bytes(b"\0")
    events: list[tuple[str, dict]] = []
    search = SimpleNamespace(records=records, goal=goal, workspace=ws, cfg=SimpleNamespace(checkpoints_mb=100),
                             run_dir=SimpleNamespace(event=lambda kind, **kw: events.append((kind, kw))))
    Search._keep_front(search)  # type: ignore[arg-type]
    assert best_summary(goal, records)["index"] == 2
    assert set(ws.checkpoints_mb()) == {"k2"} and events[0][1]["dropped"] == ["k1", "k3"]
