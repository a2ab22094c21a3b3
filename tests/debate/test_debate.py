"""`agentlab debate` on scripted agents: the tolerant parser, the decision (weights, ReConcile bins, ties, no votes),
the round structure, resume after an interrupt, and the eval table computed by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentlab.core.debate.answers import Answer, vote
from agentlab.core.debate.protocol import first_prompt, parse_reply
from agentlab.core.errors import UsageError
from agentlab.core.llm.providers.scripted import ScriptedProvider, count_words
from agentlab.core.runs import run_in_folder
from agentlab.core.vote import wilson_interval
from agentlab.debate.config import DebateConfig
from agentlab.debate.evaluate import prepare_eval, run_eval
from agentlab.debate.run import prepare, run

LLM = """providers:
  s: {kind: scripted}
models:
  a: {provider: s, model: a}
  b: {provider: s, model: b}
  c: {provider: s, model: c}
"""


@pytest.mark.parametrize("text, kind, expected", [
    ("56.", "numeric", ("56", None)),
    ("Arr, that be 56, matey!", "numeric", ("56", None)),
    ("7 times 8 means 8 groups of 7, which is 56.", "numeric", ("56", None)),
    ("I think 3.\nAnswer: 12\nConfidence: 80%", "numeric", ("12", 0.8)),
    ("The result is 1,000. Confidence: 0.9", "numeric", ("1,000", 0.9)),
    ("Answer: **42** (confidence 95%)", "numeric", ("42", 0.95)),
    ("I do not know.", "numeric", (None, None)),
    ("Stance: No\nConfidence: 70%", "open", ("no", 0.7)),
    ("Yes, because demand rises.", "open", ("yes", None)),
    ("It depends on the deficit.", "open", (None, None)),
    ('{"answer": "56", "confidence": 0.9}', "numeric", ("56", 0.9)),  # its confidence was read as the answer
    ('```json\n{"answer": 56, "confidence": 90, "reasoning": "7 * 8"}\n```', "numeric", ("56", 0.9)),
    ('{"answer": "no", "confidence": 70}', "open", ("no", 0.7)),
    ('{"answer": null, "confidence": 80}', "text", (None, 0.8)),  # no answer is no vote, not a vote for "None"
    ('{"answer": [1, 2]}', "numeric", (None, None)),
])
def test_tolerant_parser(text: str, kind: str, expected: tuple[Any, Any]) -> None:
    assert parse_reply(text, kind) == expected  # type: ignore[arg-type]


def answers(*items: tuple[str | None, float | None]) -> list[Answer]:
    return [Answer(f"agent{i}", "", a, c) for i, (a, c) in enumerate(items)]


def test_decision_weights_bins_ties_and_no_votes() -> None:
    split = answers(("5", 0.95), ("6", 0.7), ("6", 0.65))
    assert vote(split, "majority").winner == "6"
    assert vote(split, "confidence").winner == "6"  # 0.95 < 0.7 + 0.65
    assert vote(split, "reconcile").winner == "5"  # bins: 0.8 > 0.3 + 0.3
    tie = vote(answers(("5", None), ("6", None), (None, None)), "majority")
    assert (tie.winner, tie.tie, tie.no_votes) == ("5", True, 1)  # equal weight and count: the first given
    assert vote(answers((None, 0.9), (None, None)), "reconcile").winner is None


def setup(tmp: Path, **fields: Any) -> DebateConfig:
    (tmp / "llm.yaml").write_text(LLM)
    agents = [{"model": "a"}, {"model": "b"}, {"model": "c"}]
    return DebateConfig.model_validate({"llm": tmp / "llm.yaml", "agents": agents, "rule": "last_round", **fields})


def rounds_seen(messages: list[dict[str, str]]) -> int:
    return sum(m["role"] == "assistant" for m in messages)


def test_rounds_show_the_others_answers_and_the_vote_decides(in_tmp: Path) -> None:
    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        k = rounds_seen(messages)
        return {"a": f"a says {10 + k}. Answer: {10 + k}\nConfidence: 95%", "b": "Answer: 12\nConfidence: 70%",
                "c": "no idea"}[model]

    provider = ScriptedProvider("s", [reply])
    cfg = setup(in_tmp, topic="What is 3 times 4?", rounds=2)
    results, folder = run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}})
    assert len(provider.calls) == 9
    round1 = [c for c in provider.calls if rounds_seen(c.messages) == 1]
    a1 = next(c for c in round1 if c.model == "a").messages
    assert a1[1] == {"role": "assistant", "content": "a says 10. Answer: 10\nConfidence: 95%"}
    assert "b: Answer: 12" in a1[2]["content"] and "c: no idea" in a1[2]["content"]
    assert "a says" not in a1[2]["content"]  # its own answer is its own turn, not among the others'
    transcript = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    assert [(t["round"], t["agent"]) for t in transcript][:3] == [(0, "a"), (0, "b"), (0, "c")]
    assert transcript[0]["answer"] == "10" and transcript[0]["confidence"] == 0.95
    assert transcript[0]["completion_tokens"] == 7 and transcript[2]["answer"] is None
    # round 2: a says 12 (0.8) + b says 12 (0.3); round 0: a 10 (0.8) beats b 12 (0.3)
    assert [r["vote"]["winner"] for r in results["per_round"]] == ["10", "11", "12"]
    assert results["final"]["answer"] == "12" and results["unparseable"] == 3 and results["errors"] == 0
    assert results["prompt_style"] == "format" and "Answer: <the number>" in provider.calls[0].messages[0]["content"]
    report = (folder / "report.md").read_text()
    assert "## Votes per round" in report and "no answer parsed" in report
    assert (folder / "agreement.png").stat().st_size > 1000


def test_interrupted_after_round_1_resumes_with_only_the_rest(in_tmp: Path) -> None:
    cfg, folder = interrupted_in_round_2(in_tmp)
    lines = (folder / "transcript.jsonl").read_text().splitlines()
    assert sorted({json.loads(line)["round"] for line in lines}) == [0, 1] and len(lines) == 6
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    with open(folder / "transcript.jsonl", "a") as handle:
        handle.write('{"round": 2, "agent": "a", "te')  # a torn line: dropped, round 2 asked again

    resumed = ScriptedProvider("s", [lambda model, messages, params: f"Answer: {rounds_seen(messages) + 1}"])
    # another topic or rule would put the new question over the old answers: refused, the run left as it was
    config = (folder / "config.yaml").read_text()
    for change in ({"topic": "What is 2 plus 2?"}, {"decision": "majority"}):
        with pytest.raises(UsageError, match=r"this resume changes what the run's finished work was done with \("
                           + next(iter(change))):
            run_in_folder("debate", cfg.model_copy(update=change), run, resume=folder,
                          inputs={**prepare(cfg), "providers": {"s": resumed}})
    assert (folder / "config.yaml").read_text() == config and not resumed.calls
    results, _ = run_in_folder("debate", cfg, run, resume=folder,
                               inputs={**prepare(cfg), "providers": {"s": resumed}})
    assert sorted(rounds_seen(c.messages) for c in resumed.calls) == [2, 2, 2, 3, 3, 3]
    assert [r["vote"]["winner"] for r in results["per_round"]] == ["1", "2", "3", "4"]
    assert len((folder / "transcript.jsonl").read_text().splitlines()) == 12


def test_eval_table_by_hand(in_tmp: Path) -> None:
    (in_tmp / "task.jsonl").write_text('{"question": "What is 2+3?", "answer": "5"}\n'
                                       '{"question": "What is 3+4?", "answer": 7}\n')
    debate = {("What is 2+3?", 0): {"a": "5", "b": "4", "c": "no idea"},
              ("What is 2+3?", 1): {"a": "5", "b": "5", "c": "5"},
              ("What is 3+4?", 0): {"a": "7", "b": "7", "c": "8"},
              ("What is 3+4?", 1): {"a": "7", "b": "8", "c": "8"}}

    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        question = messages[0]["content"].split("\n")[0]
        if params.temperature:  # a self-consistency sample
            return "5" if question == "What is 2+3?" else "garbage"
        return debate[(question, rounds_seen(messages))][model]

    cfg = setup(in_tmp, rounds=1, decision="majority", rule="on_disagreement",
                eval={"task": in_tmp / "task.jsonl", "concurrency": 2, "visibilities": ["full"]})
    provider = ScriptedProvider("s", [reply])
    results, folder = run_in_folder("debate-eval", cfg, run_eval,
                                    inputs={**prepare_eval(cfg), "providers": {"s": provider}})
    assert len(provider.calls) == 2 * (3 * 2 + 6)
    rows = {r["method"]: r for r in results["table"]}
    assert {m: (r["correct"], r["total"], r["unparsed"]) for m, r in rows.items()} == {
        "agent a": (2, 2, 0), "agent b": (1, 2, 0), "agent c": (0, 2, 1), "majority of round 0": (2, 2, 0),
        "self-consistency": (1, 2, 1), "debate round 0": (2, 2, 0), "debate round 1": (1, 2, 0),
        # all_rounds, q2: 7 7 8 7 8 8 is a tie, broken for the answer given first (7)
        "rule vote": (2, 2, 0), "rule last_round": (1, 2, 0), "rule all_rounds": (2, 2, 0),
        "rule on_disagreement": (1, 2, 0), "rule keep_round0": (2, 2, 0)}
    assert [r["method"] for r in results["table"] if r["default"]] == ["rule on_disagreement"]
    assert results["default"] == "rule on_disagreement"
    assert rows["rule last_round"]["tokens_per_question"] == rows["debate round 1"]["tokens_per_question"]
    assert rows["rule on_disagreement"]["tokens_per_question"] == rows["debate round 1"]["tokens_per_question"]
    assert rows["agent b"]["ci"] == [round(x, 4) for x in wilson_interval(1, 2)]
    prompt = {q: count_words(first_prompt(q, "numeric")) for q in ("What is 2+3?", "What is 3+4?")}
    assert rows["agent a"]["tokens_per_question"] == (prompt["What is 2+3?"] + prompt["What is 3+4?"]) / 2 + 1
    assert rows["self-consistency"]["tokens_per_question"] == 6 * (sum(prompt.values()) / 2 + 1)
    assert rows["majority of round 0"]["tokens_per_question"] == rows["debate round 0"]["tokens_per_question"]
    assert rows["debate round 1"]["tokens_per_question"] > rows["debate round 0"]["tokens_per_question"]
    assert len((folder / "questions.jsonl").read_text().splitlines()) == 2
    assert "| self-consistency | 1/2 |" in (folder / "report.md").read_text()
    assert "| **rule on_disagreement** |" in (folder / "report.md").read_text()
    assert rows["rule vote"]["tokens_per_question"] == rows["debate round 0"]["tokens_per_question"]
    # a run scored before a rule existed: --resume scores it from the stored transcripts, no model call
    path = folder / "questions.jsonl"
    old = [json.loads(line) for line in path.read_text().splitlines()]
    for record in old:
        record["methods"].pop("rule vote")
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    idle = ScriptedProvider("s", [])
    again, _ = run_in_folder("debate-eval", cfg, run_eval, resume=folder,
                             inputs={**prepare_eval(cfg), "providers": {"s": idle}})
    assert not idle.calls and again["table"] == results["table"]


def test_plain_prompts_ask_the_question_alone() -> None:
    from agentlab.core.debate.protocol import conversation

    messages = conversation("What is 7 times 8?", "numeric", ["56."], [[("b", "54.")]], style="plain")
    assert messages[0]["content"] == "What is 7 times 8?" and "Answer:" not in messages[2]["content"]
    assert "b: 54." in messages[2]["content"]
    assert "100" not in conversation("What is 7 times 8?", "numeric", [], [])[0]["content"]


def test_rules_by_hand() -> None:
    from agentlab.core.debate.rules import decide, shown, stops_after_round0

    split = answers(("5", 0.95), ("6", 0.7), ("6", 0.65))
    agree = answers(("6", 0.9), ("6", 0.9), ("6", 0.9))
    drift = answers(("9", 0.9), ("8", 0.9), ("7", 0.95))
    assert decide("last_round", [split, agree], "majority").winner == "6"
    assert (decide("vote", [split, agree], "majority").winner, decide("vote", [split, agree]).rounds_used) == ("6", 1)
    assert decide("vote", [split, agree], "reconcile").winner == "5" and stops_after_round0("vote", split)
    assert decide("keep_round0", [split, drift], "reconcile").winner == "5"  # no convergence: round 0 (reconcile)
    assert decide("keep_round0", [split, agree], "reconcile").winner == "6"  # converged
    unanimous = answers(("4", None), ("4", None), ("4", None))
    d = decide("on_disagreement", [unanimous, drift], "majority")
    assert (d.winner, d.rounds_used) == ("4", 1) and stops_after_round0("on_disagreement", unanimous)
    assert not stops_after_round0("on_disagreement", answers(("4", None), ("4", None), (None, None)))
    assert decide("on_disagreement", [split, drift], "majority").rounds_used == 2
    # all rounds, ReConcile bins: 5 (0.8) + 6 (0.3 + 0.3) in round 0, 6 (0.8 x 3) in round 1
    assert decide("all_rounds", [split, agree], "reconcile").winner == "6"
    assert decide("all_rounds", [split, drift], "majority").tally.groups[0]["count"] == 2
    a = Answer("a", "I think 7 times 8 is 56.", "56", 0.8)
    assert (shown(a, "full"), shown(a, "answer"), shown(a, "answer_confidence")) == (
        "I think 7 times 8 is 56.", "56", "56 (confidence 80%)")
    assert shown(Answer("b", "no idea", None, None), "answer") == "(no answer)"
    with pytest.raises(ValueError):
        decide("best", [split])


@pytest.mark.parametrize("visibility", ["full", "answer", "answer_confidence"])
def test_visibility_and_on_disagreement_in_a_debate(in_tmp: Path, visibility: str) -> None:
    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        if "7 times 8" in messages[0]["content"]:
            return "Answer: 56\nConfidence: 90%"  # unanimous: no debate round under on_disagreement
        return {"a": "I reckon 12. Answer: 12\nConfidence: 80%", "b": "Answer: 12", "c": "Answer: 13"}[model]

    provider = ScriptedProvider("s", [reply])
    cfg = setup(in_tmp, topic="What is 3 times 4?", rounds=1, visibility=visibility, rule="on_disagreement")
    results, _ = run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}})
    seen = next(c for c in provider.calls if c.model == "b" and rounds_seen(c.messages) == 1).messages[2]["content"]
    expected = {"full": "a: I reckon 12. Answer: 12\nConfidence: 80%", "answer": "a: 12\n\nc: 13",
                "answer_confidence": "a: 12 (confidence 80%)\n\nc: 13"}[visibility]
    assert expected in seen
    assert results["final"]["answer"] == "12" and results["rounds_asked"] == 1
    provider.calls.clear()
    cfg = setup(in_tmp, topic="What is 7 times 8?", rounds=2, visibility=visibility, rule="on_disagreement")
    results, folder = run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}})
    assert len(provider.calls) == 3 and results["rounds_asked"] == 0 and results["final"]["rounds_used"] == 1
    assert results["final"]["answer"] == "56" and "asked no debate round" in (folder / "report.md").read_text()
    provider.calls.clear()
    assert DebateConfig().rule == "vote" and DebateConfig().debate_rounds == 0  # the default: the vote, no round
    cfg = setup(in_tmp, topic="What is 3 times 4?", visibility=visibility, rule="vote")
    if visibility != "full":  # the vote asks no debate round, so no agent would see the others: refused, not ignored
        with pytest.raises(UsageError, match=f"visibility: '{visibility}' would never apply: rule vote decides"):
            prepare(cfg)
        cfg = setup(in_tmp, topic="What is 3 times 4?", rule="vote")
    results, folder = run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}})
    assert len(provider.calls) == 3 and results["rounds_asked"] == 0 and results["final"]["rule"] == "vote"
    assert results["final"]["answer"] == "12" and "no debate round was asked" in (folder / "report.md").read_text()


@pytest.mark.parametrize("text, expected", [
    ("Paris.", "Paris"), ("The capital is far away.\nAnswer: **Canberra**\nConfidence: 70%", "Canberra"),
    ("The answer is Buenos Aires!", "Buenos Aires"), ("", None)])
def test_text_answers_parse_and_score(text: str, expected: str | None) -> None:
    from agentlab.core.debate.task import Question, answer_kind, is_correct

    assert parse_reply(text, "text")[0] == expected
    q = Question(0, 1, "What is the capital of France?", "Paris")
    assert answer_kind(q) == "text" and answer_kind(Question(0, 1, "Is it?", "yes")) == "open"
    assert is_correct("Arr, that be Paris, matey", "Paris") and not is_correct("Parisian", "Paris")
    assert not is_correct("156", "56") and is_correct("56.0", "56")


def test_eval_does_not_score_a_question_whose_model_call_failed_and_resume_asks_it_again(in_tmp: Path) -> None:
    from agentlab.core.errors import AgentlabError, LLMError

    (in_tmp / "task.jsonl").write_text('{"question": "What is 2+3?", "answer": "5"}\n'
                                       '{"question": "What is 3+4?", "answer": 7}\n')

    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        question = messages[0]["content"].split("\n")[0]
        if question == "What is 3+4?" and model == "b":
            raise LLMError("b: no answer within 60s", "timeout", model="b")
        return "5" if question == "What is 2+3?" else "7"

    # one question at a time: b's failures on the second open its circuit only after the first is scored
    cfg = setup(in_tmp, rounds=1, eval={"task": in_tmp / "task.jsonl", "concurrency": 1, "visibilities": ["full"]})
    folder = in_tmp / "RUN"
    with pytest.raises(AgentlabError, match=r"1 of 2 questions were not scored: a model call failed \(first: line 2"):
        run_in_folder("debate-eval", cfg, run_eval, out=folder,
                      inputs={**prepare_eval(cfg), "providers": {"s": ScriptedProvider("s", [reply])}})
    assert [json.loads(x)["id"] for x in (folder / "questions.jsonl").read_text().splitlines()] == [0]
    assert json.loads((folder / "results.json").read_text())["questions"] == 1  # the scored one, not a zero for it

    healthy = ScriptedProvider("s", [lambda model, messages, params: "7"])
    results, _ = run_in_folder("debate-eval", cfg, run_eval, resume=folder,
                               inputs={**prepare_eval(cfg), "providers": {"s": healthy}})
    assert results["questions"] == 2 and {c.messages[0]["content"].split("\n")[0] for c in healthy.calls} == {
        "What is 3+4?"}
    assert all(r["correct"] == r["total"] for r in results["table"] if r["method"].startswith("agent"))


def test_an_eval_whose_every_call_failed_names_the_real_first_failure_in_its_error_and_report(in_tmp: Path) -> None:
    """Every call answered 401: the error named a call refused by the open circuit breaker ("first: ... circuit_open;
    last: circuit open after 3 consecutive failures"), not the 401, and report.md showed 0 questions and an empty
    table without a word about the failure."""
    from agentlab.core.errors import AgentlabError, LLMError

    (in_tmp / "task.jsonl").write_text("".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)})
                                               + "\n" for i in range(2)))

    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        raise LLMError(f"model '{model}' via s: HTTP 401: bad key", "auth", model=model)

    cfg = setup(in_tmp, rounds=1, eval={"task": in_tmp / "task.jsonl", "visibilities": ["full"]})
    first = "first: line 1: route 'agent:a': every model failed (a: auth); last: model 'a' via s: HTTP 401: bad key"
    with pytest.raises(AgentlabError, match=r"2 of 2 questions were not scored") as caught:
        run_in_folder("debate-eval", cfg, run_eval, out=in_tmp / "RUN",
                      inputs={**prepare_eval(cfg), "providers": {"s": ScriptedProvider("s", [reply])}})
    assert first in caught.value.message and "circuit" not in caught.value.message
    results = json.loads((in_tmp / "RUN" / "results.json").read_text())
    assert results["questions"] == 0 and results["unscored"] == {"questions": 2, "of": 2, "lines": [1, 2],
                                                                 "first_error": first.removeprefix("first: ")}
    report = (in_tmp / "RUN" / "report.md").read_text()
    assert f"**2 of 2 questions were not scored**: a model call failed ({first})" in report
    assert f"agentlab debate eval --resume {in_tmp / 'RUN'}` asks only those again" in report


def test_the_first_failure_named_is_not_a_call_the_open_circuit_refused() -> None:
    from agentlab.core.debate.task import Question
    from agentlab.debate.evaluate import first_failure

    q1, q2 = Question(0, 1, "a", "1"), Question(1, 2, "b", "2")
    refused = "route 'agent:a': every model failed (a: circuit_open); last: circuit open after 8 consecutive failures"
    real = "route 'agent:b': every model failed (b: auth); last: HTTP 401"
    assert first_failure([(q2, [refused]), (q1, [refused, real])]) == (q1, real)
    assert first_failure([(q2, [real]), (q1, [refused])]) == (q2, real)
    assert first_failure([(q2, [refused]), (q1, [refused])]) == (q1, refused)
    mixed = "route 'agent:a': every model failed (a: circuit_open; b: timeout)"  # a fallback that failed itself
    assert first_failure([(q1, [refused, mixed])]) == (q1, mixed)


class _Bar:
    def __init__(self, description: str, total: float | None) -> None:
        self.description, self.total, self.completed = description, total, 0.0
        self.seen = [(description, 0.0)]

    def advance(self, n: float = 1, description: str | None = None) -> None:
        self.update(completed=self.completed + n, description=description)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        self.completed = self.completed if completed is None else completed
        self.total = self.total if total is None else total
        self.description = description or self.description
        if self.seen[-1] != (self.description, self.completed):
            self.seen.append((self.description, self.completed))


class _Bars:
    def __init__(self) -> None:
        self.bars: list[_Bar] = []

    def task(self, description: str, total: float | None = None) -> _Bar:
        self.bars.append(_Bar(description, total))
        return self.bars[-1]


@pytest.mark.parametrize("rule, rounds, total, seen", [
    ("last_round", 1, 1, [("round 0: independent answers", 0), ("debate rounds", 0), ("debate rounds", 1)]),
    ("last_round", 2, 2, [("round 0: independent answers", 0), ("debate rounds", 0), ("debate rounds", 1),
                          ("debate rounds", 2)]),
    ("vote", None, 1, [("round 0: independent answers", 0), ("round 0: independent answers", 1)]),
])
def test_progress_counts_debate_rounds_as_given(in_tmp: Path, rule: str, rounds: int | None, total: int,
                                                seen: list[tuple[str, float]]) -> None:
    """--rounds 1 is one debate round on the bar (it said 2/2: round 0 counted as a round)."""
    provider = ScriptedProvider("s", [lambda model, messages, params: f"Answer: {model}"])
    given = {} if rounds is None else {"rounds": rounds}  # the vote asks no round: an explicit --rounds is refused
    cfg = setup(in_tmp, topic="What is 1 plus 2?", rule=rule, **given)
    bars = _Bars()
    run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}}, progress=bars)
    (bar,) = bars.bars
    assert bar.total == total and bar.completed == total and bar.seen == seen


@pytest.mark.parametrize("decision, rule, words", [
    ("reconcile", "last_round", "Decided by a confidence-weighted vote (ReConcile): each answer counts by its "
                                "agent's stated confidence, binned 100% -> 1.0"),
    ("majority", "keep_round0", "Decided by a majority vote (one agent, one vote) over round 0's answers, unless"),
])
def test_summary_and_report_say_the_decision_rule_in_words(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                           decision: str, rule: str, words: str) -> None:
    from agentlab.cli.debate import _summary

    provider = ScriptedProvider("s", [lambda model, messages, params: "Answer: 3\nConfidence: 90%"])
    cfg = setup(in_tmp, topic="What is 1 plus 2?", rounds=1, rule=rule, decision=decision)
    results, folder = run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}})
    _summary(results, folder)
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert words in err and "a tie goes to the answer more agents gave" in err
    assert words in (folder / "report.md").read_text()


def test_a_run_whose_file_said_question_resumes_with_the_same_topic(in_tmp: Path) -> None:
    """`question:` and `topic:` are one field: config.yaml keeps `topic`, so `--topic` with the same text (what
    `--question` sets) is no change on a resume."""
    from agentlab.core.runs import RunDir, resume_changes

    with RunDir.create("debate", DebateConfig(question="What is 1 plus 2?"), out=in_tmp / "d"):
        pass
    same = DebateConfig(topic="What is 1 plus 2?")
    assert resume_changes(in_tmp / "d", same, "debate") == []
    assert resume_changes(in_tmp / "d", DebateConfig(topic="What is 2 plus 2?"), "debate") == [
        "topic 'What is 1 plus 2?' -> 'What is 2 plus 2?'"]
    # a list of agents is named by what each sets (it printed every field of each agent's dict, None and all)
    with RunDir.create("debate", DebateConfig(topic="q", agents=[{"adapter": "/x/a"}, {"adapter": "/x/b"}]),
                       out=in_tmp / "e"):
        pass
    assert resume_changes(in_tmp / "e", DebateConfig(topic="q", agents=[{"adapter": "/x/a"}]), "debate") == [
        'agents [{"adapter": "/x/a"}, {"adapter": "/x/b"}] -> [{"adapter": "/x/a"}]']
    # a setting left unset is said so, not as Python's None (evolve's resume said "store None -> '/x/pop.journal'")
    assert resume_changes(in_tmp / "d", DebateConfig(topic="What is 1 plus 2?", judge="m"), "debate") == [
        "judge (not set) -> 'm'"]


def test_failed_calls_name_their_cause_are_marked_failed_and_stop_the_rounds(in_tmp: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """A prompt grown past the context: the summary and report name that cause (not only the route's
    "bad_request") and the next step; a failed call shows as `failed`, an unparsed reply as `-`; once every agent's
    call of a round failed no further round is asked, and the stop reason says so."""
    from agentlab.cli.debate import _summary
    from agentlab.core.errors import LLMError

    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        k = rounds_seen(messages)
        if k >= 2 or (k == 1 and model == "c"):
            raise LLMError("s: prompt of 515 tokens does not fit the context of 512", "bad_request", model=model)
        return "no idea" if model == "b" else "Answer: 3"

    provider = ScriptedProvider("s", [reply])
    cfg = setup(in_tmp, topic="What is 1 plus 2?", rounds=6)
    results, folder = run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": provider}})
    assert len(provider.calls) == 9 and results["rounds_asked"] == 2  # rounds 0, 1 and the failed 2; not 3 to 6
    assert "every agent's call failed in round 2" in results["stop_reason"]
    assert "does not fit the context of 512" in results["first_error"]
    _summary(results, folder)
    err = " ".join(capsys.readouterr().err.split())
    assert "calls failed; the first: route 'agent:c': every model failed" in err and "context of 512" in err
    assert "stopped early: every agent's call failed in round 2" in err
    assert "next step:" in err and "--visibility answer" in err and "max_tokens" in err
    report = (folder / "report.md").read_text()
    assert "| 1 | 3 (-) | - (-) | failed |" in report and "| 2 | failed | failed | failed |" in report
    assert "does not fit the context of 512" in report and "Next step: " in report and "Stopped early: " in report
    from agentlab.debate.report import next_step  # a model named *-context that refused a connection: no such advice
    assert "--visibility" not in next_step("model 'long-context-7b': connection refused")
    # llama.cpp's words for it (the advice was never shown for a GGUF agent)
    assert "--visibility" in next_step("m.gguf: the prompt is 600 tokens but n_ctx is 512")


def interrupted_in_round_2(tmp: Path) -> tuple[DebateConfig, Path]:
    """A 3-round debate stopped while round 2 is asked: rounds 0 and 1 in its transcript and its checkpoint."""
    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        if rounds_seen(messages) == 2:
            raise KeyboardInterrupt
        return f"Answer: {rounds_seen(messages) + 1}"

    cfg = setup(tmp, topic="What is 1 plus 2?", rounds=3)
    with pytest.raises(KeyboardInterrupt):
        run_in_folder("debate", cfg, run, inputs={**prepare(cfg), "providers": {"s": ScriptedProvider("s", [reply])}})
    (folder,) = (tmp / "runs" / "debate").iterdir()
    return cfg, folder


def transcript_rounds(folder: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (folder / "transcript.jsonl").read_text().splitlines()]


def test_a_transcript_cut_short_is_written_back_from_the_checkpoint(in_tmp: Path) -> None:
    """Round 1 is in the checkpoint but its last line was cut off the transcript: it is written back from the
    checkpoint (not asked again: the checkpoint says it is done), and no later round is dropped. It said "resuming
    after round 0", then load_transcript dropped round 2 as not following round 0: the transcript ended 0, 3."""
    cfg, folder = interrupted_in_round_2(in_tmp)
    path = folder / "transcript.jsonl"
    path.write_bytes(path.read_bytes()[:-40])
    resumed = ScriptedProvider("s", [lambda model, messages, params: f"Answer: {rounds_seen(messages) + 1}"])
    said: list[str] = []
    results, _ = run_in_folder("debate", cfg, run, resume=folder, announce=said.append,
                               inputs={**prepare(cfg), "providers": {"s": resumed}})
    assert sorted(rounds_seen(c.messages) for c in resumed.calls) == [2, 2, 2, 3, 3, 3]
    assert transcript_rounds(folder) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [r["vote"]["winner"] for r in results["per_round"]] == ["1", "2", "3", "4"]
    assert "transcript.jsonl: round 1 written back from debate.sqlite (the file had been cut short)" in said
    assert "resuming after round 1: 2 of 4 rounds in transcript.jsonl" in said


def test_a_round_in_the_transcript_but_not_the_checkpoint_is_recorded_once(in_tmp: Path) -> None:
    """Killed after round 2 reached the transcript and events.jsonl, before its checkpoint: the resume finishes round
    2 again in the graph, but its event and console line are not repeated (events were 0, 1, 2, 2, 3)."""
    cfg, folder = interrupted_in_round_2(in_tmp)
    lines = (folder / "transcript.jsonl").read_text().splitlines()
    with open(folder / "transcript.jsonl", "a") as handle:
        handle.writelines(json.dumps({**json.loads(line), "round": 2, "text": "Answer: 3", "answer": "3"}) + "\n"
                          for line in lines[3:])
    with open(folder / "events.jsonl", "a") as handle:
        handle.write(json.dumps({"kind": "round", "round": 2}) + "\n")
    said: list[str] = []
    resumed = ScriptedProvider("s", [lambda model, messages, params: f"Answer: {rounds_seen(messages) + 1}"])
    run_in_folder("debate", cfg, run, resume=folder, announce=said.append,
                  inputs={**prepare(cfg), "providers": {"s": resumed}})
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert [e["round"] for e in events if e.get("kind") == "round"] == [0, 1, 2, 3]
    assert [line.split(":")[0] for line in said if line.startswith("round ")] == ["round 0", "round 1", "round 2",
                                                                                 "round 3"]
    assert transcript_rounds(folder) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_a_round_line_says_how_many_agents_the_agreement_is_over() -> None:
    """One of two agents gave no parseable answer: the line said agreement 100%, as if both agreed."""
    from agentlab.debate.run import describe_round

    line = describe_round(1, answers(("56", 0.9), (None, None)), "reconcile")
    assert line.endswith("-> 56 (agreement 100% of the 1 of 2 agents that voted)"), line
    assert describe_round(1, answers(("56", 0.9), ("56", None)), "reconcile").endswith("(agreement 100%)")


def test_seconds_count_every_session_of_a_resumed_run(in_tmp: Path) -> None:
    """results.json's seconds counted the last session only (90.23 s, then 18.69 s after `--set rounds=2`). The
    earlier sessions' time is made long here (a scripted session takes next to none)."""
    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        return f"Answer: {rounds_seen(messages) + 1}"

    # a session killed in round 2: its round events keep the run's seconds so far
    cfg, folder = interrupted_in_round_2(in_tmp)
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert all("seconds" in e for e in events if e.get("kind") == "round")
    (folder / "events.jsonl").write_text("".join(
        json.dumps({**e, "seconds": 500.0} if e.get("kind") == "round" else e) + "\n" for e in events))
    results, _ = run_in_folder("debate", cfg, run, resume=folder,
                               inputs={**prepare(cfg), "providers": {"s": ScriptedProvider("s", [reply])}})
    assert results["seconds"] >= 500.0
    # a finished session: its results.json's seconds
    saved = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**saved, "seconds": 1000.0}))
    more = cfg.model_copy(update={"rounds": 4})
    results, _ = run_in_folder("debate", more, run, resume=folder,
                               inputs={**prepare(more), "providers": {"s": ScriptedProvider("s", [reply])}})
    assert results["seconds"] >= 1000.0 and json.loads((folder / "results.json").read_text())["seconds"] >= 1000.0


def test_eval_seconds_count_every_session_of_a_resumed_eval(in_tmp: Path) -> None:
    """`debate eval --resume` reported the last session's seconds only. The earlier sessions' time is made long here
    (a scripted session takes next to none)."""
    from agentlab.core.errors import AgentlabError, LLMError

    (in_tmp / "task.jsonl").write_text('{"question": "What is 2+3?", "answer": "5"}\n'
                                       '{"question": "What is 3+4?", "answer": 7}\n')

    def reply(model: str, messages: list[dict[str, str]], params: Any) -> str:
        if messages[0]["content"].startswith("What is 3+4?"):
            raise LLMError("b: no answer within 60s", "timeout", model=model)
        return "5"

    cfg = setup(in_tmp, rounds=1, eval={"task": in_tmp / "task.jsonl", "concurrency": 1, "visibilities": ["full"]})
    folder = in_tmp / "RUN"
    with pytest.raises(AgentlabError, match="1 of 2 questions were not scored"):
        run_in_folder("debate-eval", cfg, run_eval, out=folder,
                      inputs={**prepare_eval(cfg), "providers": {"s": ScriptedProvider("s", [reply])}})
    # a session killed after its first question (no results.json): its question events keep the seconds so far
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert all("seconds" in e for e in events if e.get("kind") in ("question", "question_failed"))
    (folder / "events.jsonl").write_text("".join(
        json.dumps({**e, "seconds": 500.0} if e.get("kind") == "question" else e) + "\n" for e in events))
    (folder / "results.json").unlink()
    healthy = ScriptedProvider("s", [lambda model, messages, params: "7"])
    results, _ = run_in_folder("debate-eval", cfg, run_eval, resume=folder,
                               inputs={**prepare_eval(cfg), "providers": {"s": healthy}})
    assert results["questions"] == 2 and results["seconds"] >= 500.0
    # a finished session: its results.json's seconds
    saved = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**saved, "seconds": 1000.0}))
    results, _ = run_in_folder("debate-eval", cfg, run_eval, resume=folder,
                               inputs={**prepare_eval(cfg), "providers": {"s": ScriptedProvider("s", [])}})
    assert results["seconds"] >= 1000.0 and json.loads((folder / "results.json").read_text())["seconds"] >= 1000.0
