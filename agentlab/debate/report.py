"""What debate writes for people: report.md (the debate as text, the votes per round, agreement.png) and the eval
table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agentlab.core.debate.answers import Answer, all_failed
from agentlab.core.runs import save_figure


def _conf(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text.strip() or "(no reply)").splitlines())


def _sources(agents: list[dict[str, Any]]) -> str:
    return ", ".join(f"{a['name']}: {a['source']}" for a in agents)


# The decision in words, for the summary and report.md: what `reconcile` or `keep_round0` mean, without the docs.
_METHOD_WORDS = {
    "reconcile": "a confidence-weighted vote (ReConcile): each answer counts by its agent's stated confidence, "
                 "binned 100% -> 1.0, 90% or more -> 0.8, 80% or more -> 0.5, over 60% -> 0.3, else 0.1 "
                 "(none stated: 0.5)",
    "confidence": "a vote weighted by each agent's stated confidence (none stated: 0.5)",
    "majority": "a majority vote (one agent, one vote)",
}
_RULE_WORDS = {
    "vote": "round 0's independent answers (no debate round asked)",
    "last_round": "the last round's answers",
    "all_rounds": "every answer of every round",
    "on_disagreement": "round 0's answers when every agent agreed there, else the last round's",
    "keep_round0": "round 0's answers, unless every agent gave the same answer in the last round (then that one)",
}


def decision_words(method: str, rule: str, decided: bool = True) -> str:
    """One sentence saying how the final answer was decided: ``final['method']`` (the vote method, or ``judge``
    when the judge decided) over the rounds ``rule`` picks; not ``decided``: that there was nothing to decide on."""
    if not decided:
        return (f"Nothing was decided: no answer in the rounds that rule {rule} counts could be parsed, so the "
                f"{method} vote had nothing to count.")
    if method == "judge":
        return "Decided by the judge model, which read the agents' last-round answers."
    return (f"Decided by {_METHOD_WORDS.get(method, f'the vote {method}')} over "
            f"{_RULE_WORDS.get(rule, f'the rounds rule {rule} picks')}; a tie goes to the answer more agents gave, "
            "then to the first given.")


def failures(results: dict[str, Any]) -> str:
    """How many model calls failed and the first error: "all 6 calls failed; the first: ..."."""
    errors, calls = results["errors"], results["answers"]
    failed = f"all {calls}" if errors == calls else f"{errors} of {calls}"
    return f"{failed} calls failed; the first: {results.get('first_error')}"


def next_step(error: str | None) -> str:
    """What to do about a failed model call: a prompt grown past the model's context is the usual one in a debate,
    since every round shows each agent its own earlier replies and the others' answers."""
    # hf's, llama.cpp's, OpenAI's and others' words for it (not a model named *-context)
    if error and re.search(r"does not fit the context|tokens but n_ctx is|maximum context length"
                           r"|context_length_exceeded|context window", error):
        return ("each round's prompt holds the earlier rounds and outgrew the model's context: ask fewer rounds "
                "(--rounds), shorter replies (--set max_tokens=N), show only the others' answers (--visibility "
                "answer), or use a model with a longer context (--base-model; n_ctx of a llama_cpp provider)")
    return ("every failed call and its error is in llm_calls.jsonl; check the agents' models (routed ones with "
            "`agentlab llm-bench --llm FILE`), then run the debate again")


def render_report(results: dict[str, Any], rounds: list[list[Answer]]) -> str:
    final = results["final"]
    agents = [a["name"] for a in results["agents"]]
    lines = [
        "# debate", "", f"**Question:** {results['question']}", "",
        f"{len(agents)} agents ({_sources(results['agents'])}), "
        f"{results['rounds']} debate round(s) after the independent answers of round 0; decision: "
        f"`{results['decision']}`, rule `{results.get('rule', 'last_round')}`; agents see "
        f"`{results.get('visibility', 'full')}` of each other; judge: {results['judge']}.", "",
        f"**Final answer:** {final['answer'] if final['answer'] is not None else 'none (no agent gave one)'}"
        + (" (a tie, broken by core.vote's rule: more ballots, then the first given)" if final["tie"] else ""), "",
    ]
    lines += [decision_words(final["method"], final.get("rule", "last_round"), final["answer"] is not None), ""]
    if final.get("note"):
        lines += [final["note"] + ".", ""]
    if results["errors"]:
        lines += [f"{failures(results)}.", "", f"Next step: {next_step(results.get('first_error'))}.", ""]
    if results.get("rule") == "vote":
        lines += ["The rule `vote` decides on round 0's answers: no debate round was asked (set `rule` to debate).",
                  ""]
    elif results.get("stop_reason") and rounds and all_failed(rounds[-1]):
        lines += [f"Stopped early: {results['stop_reason']}.", ""]
    elif results.get("rounds_asked", results["rounds"]) < results["rounds"]:
        lines += [f"Round 0 was unanimous: the rule `{results['rule']}` asked no debate round.", ""]
    if results.get("judge_reply"):
        lines += ["## The judge", "", _quote(results["judge_reply"]["text"]), ""]
    lines += ["## Votes per round", "", "| round | " + " | ".join(agents) + " | vote | agreement | no vote |",
              "|---|" + "---|" * (len(agents) + 3)]
    for r, answers in zip(results["per_round"], rounds, strict=True):
        by = {a.agent: a for a in answers}
        cells = [by[n].shown + ("" if by[n].error is not None else f" ({_conf(by[n].confidence)})") for n in agents]
        winner = r["vote"]["winner"]
        lines.append(f"| {r['round']} | " + " | ".join(cells) + f" | {winner if winner is not None else '-'}"
                     f"{' (tie)' if r['vote']['tie'] else ''} | {r['agreement']:.0%} | {r['vote']['no_votes']} |")
    lines += ["", "![agreement per round](agreement.png)", "",
              f"{results['answers']} answers, {results['unparseable']} without a parseable answer (no vote), "
              f"{results['errors']} failed calls; {results['tokens']['prompt']:,} prompt and "
              f"{results['tokens']['completion']:,} completion tokens.", "", "## The debate", ""]
    for number, answers in enumerate(rounds):
        lines += [f"### Round {number}", ""]
        for a in answers:
            parsed = a.answer if a.answer is not None else "no answer parsed"
            lines += [f"**{a.agent}** ({parsed}, confidence {_conf(a.confidence)}, {a.completion_tokens} tokens, "
                      f"{a.seconds:.1f} s)" + (f" failed: {a.error}" if a.error else ""), "", _quote(a.text), ""]
    return "\n".join(lines)


def agreement_plot(agreement: list[float], path: Path) -> None:
    """The winner's share of the votes per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(agreement)), agreement, marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("agreement (winner's share)")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(len(agreement)))
    ax.set_title("debate: agreement per round")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def render_eval(results: dict[str, Any], resume: str = "agentlab debate eval --resume DIR") -> str:
    """``debate eval``'s report.md; ``resume`` is the command that asks the questions not scored again."""
    lines = [
        "# debate eval", "", f"Task: `{results['task']}`, {results['questions']} questions; agents: "
        f"{', '.join(results['agents'])}; {results['rounds']} debate round(s); votes `{results['decision']}`; "
        f"visibilities: {', '.join(results.get('visibilities', ['full']))}.",
    ]
    unscored = results.get("unscored")
    if unscored:
        lines += ["", f"**{unscored['questions']} of {unscored['of']} questions were not scored**: a model call "
                  f"failed (first: {unscored['first_error']}). They are left out of the table below (lines "
                  f"{', '.join(map(str, unscored['lines']))}); every failed call is in llm_calls.jsonl. Fix the "
                  f"route, then `{resume}` asks only those again."]
    lines += [
        "", f"Default (the configured rule and visibility, marked **bold**): `{results.get('default')}`. Rules "
        "(core/debate/rules.py): `vote` round 0's vote (no debate round), `last_round` the last round's vote, "
        "`all_rounds` one vote over every round, `on_disagreement` debate only when round 0 is split, "
        "`keep_round0` round 0 unless the last round converged; their tokens count only the rounds they need.",
        "", "Accuracy with its 95% Wilson interval; an answer that cannot be parsed counts as wrong. Tokens: prompt "
        "+ completion per question. Self-consistency: the majority of as many independent samples as the debate "
        f"spent answers ({results['sc_samples']}, at temperature {results['sc_temperature']}, cycling over the "
        "agents).", "", table(results["table"]), "",
    ]
    return "\n".join(lines)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | correct | accuracy | 95% CI | unparsed | tokens / question |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = f"**{r['method']}**" if r.get("default") else r["method"]
        lines.append(f"| {name} | {r['correct']}/{r['total']} | {r['accuracy']:.3f} | "
                     f"{r['ci'][0]:.3f}-{r['ci'][1]:.3f} | {r['unparsed']} | {r['tokens_per_question']:.1f} |")
    return "\n".join(lines)
