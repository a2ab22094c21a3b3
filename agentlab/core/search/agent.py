"""The ``agent`` planner: an LLM agent (``core.agent.runtime``) that plans a search through tools, the classical
sampler among them and as its guard (docs/design/architecture.md, Search; docs/concepts/agents.md). Each trial the
graph resumes with the last result until an action tool (a suggested candidate, or a checked change of the best
config) gives the proposal. Every fact the model sees is computed in code, and a trial never runs twice: after
``kill -9`` a finished trial with the pending action's params is read back from the study.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from agentlab.core.agent.runtime import AgentModel, Tool, arguments, profile_of, summary
from agentlab.core.files import counted
from agentlab.core.llm.config import ModelProfile
from agentlab.core.runs import atomic_write_text
from agentlab.core.search import share as S
from agentlab.core.search.kinds import label
from agentlab.core.search.planners import (
    PlanContext,
    Proposal,
    SearchResults,
    TrialDomain,
    diff,
    params_key,
    trial_key,
)
from agentlab.core.search.prompts import format_changes, plan_schema
from agentlab.core.search.records import TrialRecord
from agentlab.core.search.settings import AgentSettings

ACTIONS = ("run_trial", "try_config", "run_experiment", "try_experiment")  # the tools whose call runs a trial
AGENT_ORIGINS = ("agent", "default")  # trials the agent chose (default: it gave no valid action, candidate 0 ran)
REASON_CHARS = 120


@dataclass
class Done:
    """A finished trial (or experiment) as the agent sees it: its params' key, label, who ran it, whether it was a
    new best (nas: a better value of its metric in its direction, lower validation MSE for the forecaster; compress:
    it grew the feasible front's hypervolume) and its outcome."""

    key: str
    label: str
    planner: str
    origin: str
    improved: bool
    text: str


class AgentView(Protocol):
    """A search as the agent sees it, over the planners' ``Domain`` (``TrialView``: nas's trials; compress's
    ``ExperimentView``). ``done()``: the finished trials in order; ``config(changes)``: the params of the best config
    with ``changes`` (try_config), or the errors."""

    unit: str

    def done(self) -> list[Done]: ...

    def best_line(self) -> str: ...

    def history(self, top: int) -> str: ...

    def describe(self, params: dict[str, Any]) -> str: ...

    def changes_schema(self, open_values: bool = False) -> dict[str, Any]: ...

    def config(self, changes: Any) -> tuple[dict[str, Any] | None, str]: ...


@dataclass
class AgentKit:
    """What a command adds to the agent: the search's ``what`` (a line for the system prompt), ``facts`` (text
    computed in code: the data inspection, the literature), its own ``tools(ctx)``, its ``view`` of the domain (nas:
    ``TrialView``), the action names (run a suggested candidate, run a config of its own), the ``knowledge``
    file (notes kept for the next search on data like this, under ``signature``; ``scope`` names what the notes
    are kept for, as the model reads it) and ``leads``, the knowledge as candidate configs."""

    what: str
    facts: Callable[[], str] = lambda: ""
    tools: Callable[[PlanContext, AgentModel], list[Tool]] = lambda ctx, model: []
    view: Callable[[Any], AgentView] = lambda domain: TrialView(domain)
    actions: tuple[str, str] = ("run_trial", "try_config")
    knowledge: Path | None = None
    signature: str = ""
    scope: str = "data like this"  # what ``note`` keeps facts for: nas's data; a command objective's project
    # Knowledge as configs: (changes of the best config, where they come from), best first, computed in code (nas:
    # the published fair table's leading families and lookbacks). ``suggest`` shows those no trial has followed yet
    # (no trial has all of those settings) as its last candidates, in place of the sampler's extra draws; candidate
    # 0 stays the sampler's own.
    leads: Callable[[], list[tuple[dict[str, Any], str]]] = lambda: []
    # Action tools of the command's own (nas's ``edit_code``): their names, offered between the two above (their
    # Tool, with no ``run``, comes from ``tools``), and the check of a call as the loop's action (the trial's
    # ``params``, ``key``, ``reason`` and the plan's ``extra``), or why not.
    more_actions: tuple[str, ...] = ()
    check_more: Callable[[str, dict[str, Any], PlanContext], tuple[dict[str, Any] | None, str]] | None = None


REASON_CHARSET = r"[A-Za-z0-9 ,.;'()%+=_-]"  # words, numbers and plain punctuation: no braces, quotes or colons, which
# a small model under a grammar otherwise fills with JSON-like debris


def _reason_prop(profile: ModelProfile) -> dict[str, Any]:
    """The ``reason`` argument of the run tools. For a small model (``short_tools``) no description, which it copies
    into the answer instead of giving a reason, and a character set its grammar keeps to words; a strong model gets
    the description and any text."""
    if not profile.short_tools:
        return {"type": "string", "maxLength": REASON_CHARS, "description": "why this one, in a sentence"}
    return {"type": "string", "maxLength": REASON_CHARS, "pattern": f"^{REASON_CHARSET}{{0,{REASON_CHARS}}}$"}


def agent_streak(done: list[Done], patience: int) -> tuple[int, bool]:
    """(the agent's trials since the last new best, whether the guard holds the next trial): the guard takes over
    after ``patience`` agent trials without a new best and hands back after a new best or ``patience`` guard
    trials."""
    streak = guard = 0
    for d in done:
        if d.improved:
            streak = guard = 0
        elif d.origin == "guard":
            guard += 1
            if guard >= patience:
                streak = guard = 0
        elif d.planner == "agent":
            streak += 1
    return streak, streak >= patience


class TrialView:
    """The search loop's trials (``TrialDomain``: nas) as the agent sees them; ``step``: what a trial's intermediate
    values are counted in (the forecaster's epochs; a command's step lines)."""

    unit = "trial"

    def __init__(self, domain: TrialDomain, step: str = "epoch", reason_chars: int = 200,
                 what: Callable[[TrialRecord], str | None] | None = None):
        self.d, self.step, self.reason_chars = domain, step, reason_chars
        self._what = what  # a trial in the command's words when it is more than its params (nas: a code change)

    def _outcome(self, r: TrialRecord) -> str:
        metric = self.d.metric
        if r.state == "complete" and r.value is not None and math.isfinite(r.value):
            return f"{metric} {r.value:.4g}" + ("" if r.accepted is not False else f" (not accepted: {r.reason})")
        if r.state == "pruned":
            return f"pruned ({metric} {r.value:.4g} at the last {self.step})" if r.value is not None else "pruned"
        return f"failed: {r.reason.removeprefix('failed: ')[:self.reason_chars]}"

    def done(self) -> list[Done]:
        rows = [r for r in self.d.records if r.state != "running" and r.counted]
        values = [r.value if r.state == "complete" and r.accepted is not False and r.finite else None for r in rows]
        maximize = self.d.direction == "maximize"
        best: float | None = None
        out = []
        for r, value, (improved, _) in zip(rows, values, S.improvements(values, maximize), strict=True):
            verdict = ""
            if r.state == "complete" and r.finite and best is not None:
                rel = abs(r.value - best) / abs(best) * 100 if best else 0.0  # type: ignore[operator]
                verdict = " - a new best" if improved else \
                    f" - {rel:.1f}% {'below' if maximize else 'above'} the best before it"
            if value is not None and (best is None or improved):  # complete, finite and not refused
                best = value
            what = (self._what(r) if self._what is not None else None) or self.describe(r.params)
            out.append(Done(trial_key(r.params, r.variant), r.run_id, r.planner, r.origin, improved,
                            f"{r.run_id}: {self._outcome(r)}{verdict} ({what})"))
        return out

    def best_line(self) -> str:
        best = self.d.best
        if best is None or best.value is None:
            return "no finished trial yet"
        return (f"best so far {best.run_id}: {self.d.metric} {best.value:.4g} "
                f"({format_changes(self.d.space.rounded(best.params))})")

    def describe(self, params: dict[str, Any]) -> str:
        return format_changes(diff(self.d.space.rounded(params), self.d.space.rounded(self.d.incumbent)))

    def history(self, top: int) -> str:
        rows, shared = self.d.ranked()
        lines = [f"{r.run_id} {self._outcome(r)}: {self.describe(r.params)}" for r in rows[:top]]
        return "\n".join((lines or ["no finished trial yet"]) + (["what the good trials share:", *shared]
                                                                  if shared else []))

    def changes_schema(self, open_values: bool = False) -> dict[str, Any]:
        """Over the values offered from the base config, not the incumbent: the tools the model is shown stay the
        same all search, so a local model's prompt cache (the tools are rendered first) keeps its prefix. With
        ``open_values`` (a full-profile model) any value inside each key's bounds (``SearchSpace.bounds_schema``)."""
        if open_values:
            return self.d.space.bounds_schema()
        values = self.d.space.offered(self.d.base_params)
        return plan_schema(values)["properties"]["changes"] if values else {"type": "object"}

    def config(self, changes: Any) -> tuple[dict[str, Any] | None, str]:
        params, why = self.d.config(changes)
        return params, why[:400]


def learning_curve(domain: TrialDomain, label: str) -> Tool:
    """The ``learning_curve`` tool: a finished trial's intermediate values as the study holds them (what it
    reported at each step, the values the pruner saw: the forecaster's validation MSE per epoch, a command's step
    lines), under ``label`` (e.g. ``validation MSE by epoch``)."""

    def curve(args: dict[str, Any]) -> str:
        number = args.get("trial")
        record = next((r for r in domain.records if r.number == number), None)
        if record is None:
            return f"no finished trial {number}; trials: {', '.join(str(r.number) for r in domain.records)}"
        points = ", ".join(f"{step}:{value:.4g}" for step, value in sorted(record.intermediate.items()))
        return f"{record.run_id} {label}: {points or 'none recorded'} ({record.state})"

    return Tool("learning_curve", f"a finished trial's {label}",
                arguments({"trial": {"type": "integer", "minimum": 0}}), curve)


class AgentPlanner:
    """The ``agent`` planner on a search's ``Domain`` seen through the kit's ``AgentView`` (see the module
    docstring); ``approver`` (``--approve``) answers the graph's approval before each trial; ``on_event`` writes the
    steps to events.jsonl."""

    name = "agent"
    pick_needs_suggest = True  # the runtime offers the first action (run a candidate) only once suggest has run
    bookkeeping = ("todo", "note")  # tools that gather nothing new: their answers say what to do next

    def __init__(self, model: AgentModel, settings: AgentSettings, path: Path, kit: AgentKit, *,
                 sampler: str = "tpe", approver: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 on_event: Callable[..., None] | None = None):
        self.model, self.settings, self.kit, self.sampler = model, settings, kit, sampler
        self.actions: tuple[str, ...] = (kit.actions[0], *kit.more_actions, kit.actions[1])
        self.ctx: PlanContext | None = None
        self.view: AgentView | None = None
        self._suggested: list[Proposal] = []
        self._done: list[Done] = []  # the view's finished trials, read once per proposal
        self._tools: list[Tool] = []  # built once per proposal (each step asks for them twice)
        # the actions the user declined (--approve), by key: the user's note ("" when none or not known: a resumed
        # run's), told to the agent when it proposes one again (they count as tried, but never ran)
        self._declined: dict[str, str] = {}
        asker = None
        if approver is not None:  # the question carries the run folder (the UI answers through it)
            def asker(action: dict[str, Any]) -> dict[str, Any]:
                return approver({**action, "run": str(path.parent)})
        from agentlab.core.agent.harness import AgentRun  # lazy: LangChain loads only when an agent runs

        self.run = AgentRun(self, model, path, max_steps=settings.max_steps, keep=settings.keep,
                            approver=asker, on_event=on_event)

    @property
    def unit(self) -> str:
        return self.view.unit if self.view is not None else "trial"

    # ------------------------------------------------------------------ the planner

    def _view(self) -> AgentView:
        assert self.view is not None
        return self.view

    def propose(self, ctx: PlanContext) -> Proposal:
        self.ctx, self._suggested, self._tools = ctx, [], []
        self._exclude(self.run.declined())
        self.view = self.kit.view(ctx.domain)
        done = self._done = self.view.done()
        streak, guarded = agent_streak(done, self.settings.guard_patience)
        if guarded:
            first = ctx.domain.draw(self.sampler, 1)[0]
            return Proposal(first.params, ctx.domain.changes(first.params), self.name, origin="guard",
                            notes=[f"guard: {streak} {self.unit}s by the agent without a new best; "
                                   f"{label(self.sampler)} runs this one"],
                            extra=dict(first.extra))
        waiting = self.run.pending()
        result: str | None = None
        if waiting is not None and waiting["kind"] == "execute":
            key = waiting["action"]["key"]
            finished = next((i for i, d in enumerate(done) if d.key == key), None)
            if finished is None:  # killed before it finished (or never started): run it now, not twice
                return self._proposal(waiting["action"], resumed=True)
            result = self._result(done, finished)
        action = self.run.advance(result)
        return self._proposal(action)

    def _exclude(self, keys: list[str]) -> None:
        """Configs the user declined (--approve) are never drawn again: they count as tried (nas's domain)."""
        tried = getattr(self.ctx.domain, "tried", None) if self.ctx is not None else None
        if isinstance(tried, set):
            tried.update(keys)
        for key in keys:
            self._declined.setdefault(key, "")

    def decline(self, action: dict[str, Any], note: str = "") -> None:
        """The runtime's call on --approve's "no" (``note``: the user's, told to the agent if it proposes the action
        again): the next ``suggest`` draws again, without the declined config."""
        if action.get("key"):
            self._declined[action["key"]] = note
        self._exclude([action["key"]] if action.get("key") else [])
        self._suggested = []

    def _declined_why(self, key: str) -> str:
        """What the agent is told of an action the user declined, proposed again: declined, never run, the note."""
        note = self._declined.get(key, "")
        return ("the user declined this change (--approve), it never ran: propose something else"
                + (f". The user said: {note}" if note else ""))

    def _proposal(self, action: dict[str, Any], resumed: bool = False) -> Proposal:
        assert self.ctx is not None
        params = action["params"]
        origin = "default" if action.get("default") else "agent"
        notes = [f"the agent gave no valid action ({action['default']}): candidate 0 runs"] if action.get("default") \
            else []
        if resumed:
            notes.append("resumed: the agent's pending action runs (it had not finished)")
        extra = dict(action.get("extra") or next((p.extra for p in self._suggested
                                                   if self._key(p.params) == action["key"]), {}))
        return Proposal(dict(params), self.ctx.domain.changes(params), self.name, action.get("reason", ""),
                        notes=notes, origin=origin, choice=action.get("candidate"), candidates=action.get("of", 0),
                        extra=extra)

    def stats(self) -> dict[str, Any]:
        return self.run.counts()

    def close(self) -> None:
        self.run.close()

    def report(self, results: SearchResults) -> dict[str, Any]:
        """results.json's ``agent`` block (``agent_block``)."""
        # a trial other than the agent's picks that ran on changed code (nas: a kept code change): the figure
        # without the picks has the changes' effect in it too
        changed = any(r.variant and not agent_pick(r.origin, r.choice) for r in results.rows)
        return {"agent": agent_block(self, [(r.origin, r.choice, r.planner) for r in results.rows], results.score,
                                     results.higher_is_better, results.what, changed_code=changed)}

    # ------------------------------------------------------------------ what the model is told (computed here)

    def _result(self, done: list[Done], index: int) -> str:
        lines = [done[index].text]
        guard = [d for d in done[index + 1:] if d.origin == "guard"]
        if guard:
            lines.append(f"meanwhile the guard ({label(self.sampler)}) ran: "
                         + "; ".join(d.text for d in guard[-3:]))
        return "\n".join(lines)

    def reflect(self) -> str:
        assert self.ctx is not None
        view = self._view()
        streak, _ = agent_streak(self._done, self.settings.guard_patience)  # the records change only between proposals
        left = self.settings.guard_patience - streak
        sampler = label(self.sampler)
        # budget_left counts the trial being planned now (PlanContext): "0 left" with one to plan misled the agent
        lines = [f"{counted(self.ctx.budget_left, self.unit)} left, the one you plan now included. "
                 f"{view.best_line()}.",
                 f"{counted(left, 'more ' + self.unit)} without a new best and the guard runs {sampler} instead."]
        return "\n".join(lines)

    def brief(self) -> list[dict[str, Any]]:
        sampler = label(self.sampler)
        run, own = self.actions[0], self.actions[-1]
        unit, patience = self.unit, self.settings.guard_patience
        more = "".join(f", or {name}" for name in self.actions[1:-1])  # the kit's own actions (its facts say more)
        if profile_of(self.model).short_brief:  # a small model: short, and the order of the calls said once, here
            system = (f"You plan {self.kit.what}. Call exactly one tool per step: first suggest, then {run} with "
                      f"one of its candidates (or {own} with changes of your own{more}). Facts come from the tools.")
        else:
            system = (f"You plan {self.kit.what}, one {unit} at a time, within a fixed budget of {unit}s. suggest "
                      f"lists {sampler}'s candidates for the next {unit}: candidate 0 is what {sampler} would run "
                      f"alone, the others its further draws and, marked as such, untried leads from published "
                      f"results. {run} runs a suggested candidate; {own} runs changes of your own to the best config "
                      f"(checked against the search space first){more}. history and the other tools inform you; todo "
                      f"keeps your plan, note a fact for later searches. After {patience} of your "
                      f"{unit}s without a new best, {sampler} runs the next ones (the guard) until one improves. "
                      "Every fact comes from the tools and is computed in code: trust it over your own guesses.")
        facts = [self.kit.facts()]
        notes = [str(n) for n in self._knowledge().get(self.kit.signature, [])][-5:]
        if notes:
            facts.append(f"notes from earlier searches on {self.kit.scope}:\n" + "\n".join(f"- {n}" for n in notes))
        facts.append(f"The search starts from {self._view().best_line()}. Plan, then run the first {self.unit}.")
        return [{"role": "system", "content": system},
                {"role": "user", "content": "\n\n".join(f for f in facts if f)}]

    # ------------------------------------------------------------------ tools

    def tools(self) -> list[Tool]:
        if self._tools:
            return self._tools
        assert self.ctx is not None
        view = self._view()
        k = self.settings.candidates  # fixed (check_action checks the real count): the prompt's tools stay the same
        sampler = label(self.sampler)
        run, own = self.actions[0], self.actions[-1]
        profile = profile_of(self.model)
        self._tools = [
            Tool("suggest", f"{sampler}'s {self.settings.candidates} candidates for the next {self.unit}",
                 {"type": "object", "properties": {}}, self._suggest),
            Tool(run, "run one of the suggested candidates (it counts against the budget)",
                 arguments({"candidate": {"type": "integer", "enum": list(range(max(k, 1)))},
                            "reason": _reason_prop(profile)})),
            Tool(own, f"run a {self.unit} of your own (it counts against the budget)",
                 arguments({"changes": view.changes_schema(profile.open_values), "reason": _reason_prop(profile)})),
            Tool("history", f"the finished {self.unit}s, best first, and what the good ones share",
                 {"type": "object", "properties": {"top": {"type": "integer", "minimum": 1, "maximum": 20}},
                  "additionalProperties": False}, lambda args: view.history(int(args.get("top") or 8))),
            Tool("note", f"keep a fact for the next search on {self.kit.scope}",
                 arguments({"text": {"type": "string", "maxLength": 200}}), self._note),
            Tool("todo", "replace your plan (shown at each step)",
                 arguments({"items": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 80}}}),
                 self._set_todo),
            *self.kit.tools(self.ctx, self.model),
        ]
        return self._tools

    def _draw(self) -> list[Proposal]:
        """The sampler's candidates, the untried ``leads`` of the kit in place of its last draws (candidate 0 is
        always the sampler's own: an agent that runs candidate 0 is the sampler)."""
        assert self.ctx is not None
        if not self._suggested:
            drawn = self.ctx.domain.draw(self.sampler, self.settings.candidates)
            leads: list[Proposal] = []
            seen = {params_key(p.params) for p in drawn}
            tried = [getattr(r, "params", None) or {} for r in getattr(self.ctx.domain, "records", [])]
            for changes, source in self.kit.leads():
                if len(leads) >= len(drawn) - 1:
                    break
                if any(all(t.get(k) == v for k, v in changes.items()) for t in tried):
                    continue  # a trial with these settings ran: the lead was followed
                params, _ = self._view().config(changes)
                if params is not None and params_key(params) not in seen:
                    seen.add(params_key(params))
                    leads.append(Proposal(params, self.ctx.domain.changes(params), self.name, origin="lead",
                                          notes=[source]))
            keep = len(drawn) - len(leads)
            # the sampler's own first, then the leads best first, then the sampler's other draws: the order says
            # where each comes from, never where one model tends to pick
            self._suggested = drawn[:1] + leads + drawn[1:keep]
        return self._suggested

    def _suggest(self, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The candidates as text, and as the agent's state (``suggested``): a ``run_trial`` after a resume runs
        the candidate the model was shown, not a new draw."""
        view = self._view()
        again = bool(self._suggested)
        drawn = self._draw()
        lines = [f"candidate {i}" + (f" ({p.notes[0]})" if p.origin == "lead" and p.notes else "") +
                 f": {view.describe(p.params)}" for i, p in enumerate(drawn)]
        head = ["the same candidates as before (nothing ran since):"] if again else []
        return "\n".join([*head, *lines]), {"suggested": [asdict(p) for p in drawn]}

    def restore(self, state: dict[str, Any]) -> None:
        """The runtime's call before each step: the candidates of the last ``suggest`` come from the graph's state
        (empty after each action), so a process that resumes after ``kill -9`` offers the same ones."""
        self._suggested = [Proposal(**p) for p in state.get("suggested") or []]

    def _knowledge(self) -> dict[str, Any]:
        """The knowledge file (signature -> notes); empty when there is none or it cannot be read."""
        path = self.kit.knowledge
        if path is None or not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _note(self, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Kept in the agent's state (``notes``) and, with a knowledge file, for the next search on this data."""
        text = " ".join(str(args.get("text", "")).split())[:200]
        path = self.kit.knowledge
        if not text:
            return "nothing noted", {}
        if path is None:
            return "noted for the rest of this search", {"notes": [text]}
        data = self._knowledge()
        data[self.kit.signature] = [*data.get(self.kit.signature, []), text][-20:]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1))
        return f"noted for the next search on {self.kit.signature}", {"notes": [text]}

    def _set_todo(self, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The agent's plan, in its state (``todo``): the runtime shows it after each action."""
        todo = [" ".join(str(i).split())[:80] for i in args.get("items", [])][:5]
        return ("todo: " + "; ".join(todo) if todo else "todo cleared"), {"todo": todo}

    # ------------------------------------------------------------------ the action

    def _key(self, params: dict[str, Any]) -> str:
        """A params trial's key: on the incumbent's variant (``TrialDomain.variant``; compress's have none)."""
        return trial_key(params, getattr(self.ctx.domain, "variant", "") if self.ctx is not None else "")

    def check_action(self, args: dict[str, Any], tool: str | None = None) -> tuple[dict[str, Any] | None, str]:
        if tool in self.kit.more_actions and self.kit.check_more is not None:
            assert self.ctx is not None
            ctx, domain = self.ctx, self.ctx.domain
            if self._declined and isinstance(domain, TrialDomain):  # checked as never run: told so below
                ctx = replace(ctx, domain=replace(domain, tried=domain.tried - set(self._declined)))
            action, error = self.kit.check_more(str(tool), args, ctx)
            if action is not None and action.get("key") in self._declined:
                return None, self._declined_why(action["key"])
            return action, error
        reason = " ".join(str(args.get("reason", "")).split())[:REASON_CHARS]
        if "candidate" in args:
            if not self._suggested:  # the graph's state: no suggest since the last action
                return None, f"no candidates were suggested since the last {self.unit}: call suggest first"
            candidates = self._suggested
            index = args.get("candidate")
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(candidates):
                return None, f"candidate must be 0..{len(candidates) - 1}"
            return self._candidate_action(index, reason, reason), ""
        own, error = self._view().config(args.get("changes"))
        if own is None:
            return None, error
        return {"args": {"changes": args.get("changes"), "reason": reason}, "params": own,
                "key": self._key(own), "reason": reason}, ""

    def default_action(self, why: str) -> dict[str, Any]:
        return self._candidate_action(0, "default", why[:200])

    def _candidate_action(self, index: int, stated: str, reason: str) -> dict[str, Any]:
        """The action that runs suggested candidate ``index``: the call as written (``stated``: its reason) and
        the trial's params, key and reason."""
        candidates = self._draw()
        params = candidates[index].params
        return {"args": {"candidate": index, "reason": stated}, "params": params, "key": self._key(params),
                "candidate": index, "of": len(candidates), "reason": reason}


def agent_pick(origin: str, choice: Any) -> bool:
    """Whether a trial is one the agent chose itself: not the sampler's candidate 0 (which the sampler alone would
    have run), not a default, not the guard's, not a warm start's lead. Only these are credited to the agent."""
    return origin == "agent" and choice != 0


def _gain(with_all: float | None, without: float | None, higher_is_better: bool) -> float | None:
    if with_all is None or without is None or not without:
        return None
    return ((with_all - without) if higher_is_better else (without - with_all)) / abs(without)


def agent_block(planner: AgentPlanner, rows: list[tuple[str, Any, str]],
                score: Callable[[Callable[[str, Any, str], bool]], float | None], higher_is_better: bool = False,
                what: str = "best", changed_code: bool = False) -> dict[str, Any]:
    """results.json's ``agent`` block: the graph's counters, the finished trials (``rows``: each one's origin,
    candidate choice and planner) by the agent and by the guard, and the search's ``what`` (nas: the best value of
    its metric; compress: feasible hypervolume), ``score(keep)`` over the trials ``keep(origin, choice, planner)``
    keeps: with every trial, without the agent's own picks (``agent_pick``), without the warm start's leads. The
    agent is credited with its picks only, the knowledge with its leads; a pick of the sampler's candidate 0 is the
    sampler's trial. ``changed_code``: trials other than the picks ran on code the agent changed (nas's kept code
    changes), so the comparison leaves the changes' own effect out (``picks_compared_on_changed_code``)."""
    counts = planner.stats()
    with_all = score(lambda origin, choice, planner: True)
    without_picks = score(lambda origin, choice, planner: not agent_pick(origin, choice))
    leads = sum(1 for _, _, p in rows if p == "leads")
    without_leads = score(lambda origin, choice, planner: planner != "leads") if leads else None
    chosen = sum(1 for o, _, _ in rows if o in AGENT_ORIGINS)
    actions = max(chosen, 1)  # the trials the agent chose (the last one's result never reaches the graph)
    return {"model": planner.model.name, **counts,  # the graph's counters (core.agent.runtime.new_counts)
            "tokens_per_trial": round(counts["tokens"] / actions, 1),
            "seconds_per_trial": round(counts["model_seconds"] / actions, 3),
            "trials_by_agent": sum(1 for o, _, _ in rows if o == "agent"),
            "agent_picks": sum(1 for o, c, _ in rows if agent_pick(o, c)),
            "trials_by_guard": sum(1 for o, _, _ in rows if o == "guard"),
            "trials_from_leads": leads,
            f"{what}_with_all_trials": with_all, f"{what}_without_agent_picks": without_picks,
            "improvement_from_agent_picks": _gain(with_all, without_picks, higher_is_better),
            "picks_compared_on_changed_code": changed_code,
            f"{what}_without_leads": without_leads,
            "improvement_from_leads": _gain(with_all, without_leads, higher_is_better) if leads else None}


def agent_summary(block: dict[str, Any] | None, unit: str = "trial") -> str | None:
    """The agent block in one sentence (the console, report.md)."""
    if not block:
        return None
    line = (f"agent ({block['model']}): {counted(block['steps'], 'step')}, {counted(block['tool_calls'], 'tool call')} "
            f"({block['invalid_tool_calls']} invalid, {block['rejected_calls']} refused by the search, "
            f"{block['defaulted']} defaulted to candidate 0); {counted(block['trials_by_agent'], unit)} by the agent, "
            f"{block['trials_by_guard']} by the guard; {round(block['tokens_per_trial']):,} tokens and "
            f"{block['seconds_per_trial']:g} s of the model per {unit}")
    return line + "; " + credit_line(block, unit)


def credit_line(block: dict[str, Any], unit: str = "trial") -> str:
    """What the agent's own picks and the warm start's leads each bought, against the same search without them."""
    picks = block.get("agent_picks", 0)
    gain = block.get("improvement_from_agent_picks")
    if not picks:
        line = f"the agent picked no {unit} other than the sampler's candidate 0: no gain is the agent's"
    elif gain:
        line = (f"its {counted(picks, 'pick')} other than the sampler's candidate 0 "
                f"{_moved(gain, f'the same {unit}s without them')}")
    elif _all_theirs(block, "_without_agent_picks"):
        line = (f"its {counted(picks, 'pick')} other than the sampler's candidate 0 gave the whole best: the same "
                f"{unit}s without them gave none")
    else:
        line = f"its {counted(picks, 'pick')} other than the sampler's candidate 0 did not improve the best"
    if picks and block.get("picks_compared_on_changed_code"):
        line += (f"; the {unit}s without them ran on its kept code changes too, so this leaves the changes' own "
                 "effect out (the code changes table shows each change's)")
    leads, lead_gain = block.get("trials_from_leads", 0), block.get("improvement_from_leads")
    if leads:
        line += (f"; the warm start's {counted(leads, 'lead')} {_moved(lead_gain)}"
                 if lead_gain else f"; the warm start's {counted(leads, 'lead')} gave the whole best"
                 if _all_theirs(block, "_without_leads") else
                 f"; the warm start's {counted(leads, 'lead')} did not improve the best")
    return line


def _moved(gain: float, against: str = "") -> str:
    """A gain in words: "improved the best by 12.3% over ``against``", or "left the best 0.4% worse than ..."."""
    if gain > 0:
        return f"improved the best by {gain * 100:.1f}%" + (f" over {against}" if against else "")
    return f"left the best {-gain * 100:.1f}% worse" + (f" than {against}" if against else "")


def _all_theirs(block: dict[str, Any], without_key: str) -> bool:
    """Whether the search had a best (nas: a value; compress: a hypervolume above 0) only with the trials the key
    ``{what}{without_key}`` leaves out: no gain is a ratio then (``_gain``: nothing to divide by), yet all of it is
    theirs (a compress run whose every feasible experiment was the agent's pick said "did not improve the best")."""
    with_all = next((v for k, v in block.items() if k.endswith("_with_all_trials")), None)
    without = next((v for k, v in block.items() if k.endswith(without_key)), None)
    return bool(with_all) and not without


def agent_story(block: dict[str, Any] | None, events: list[dict[str, Any]], unit: str = "trial",
                limit: int = 80) -> list[str]:
    """report.md's ``## The agent``: the summary, then each step as a table row (tool, arguments, result), the
    guard's trials among them, from the run's events."""
    head = agent_summary(block, unit)
    if head is None:
        return []
    rows: list[list[str]] = []

    def cell(text: Any) -> str:
        return summary(str(text), 160).replace("|", "/")

    for e in events:
        kind = e.get("kind")
        if kind == "agent_step":
            rows.append([str(e.get("step", "")), e.get("tool", ""), cell(e.get("arguments", "")), ""])
        elif kind == "agent_default":
            rows.append(["-", "(candidate 0)", cell(e.get("why", "")), ""])
        elif kind in ("agent_tool", "agent_observe") and rows and not rows[-1][3]:
            rows[-1][3] = cell(e.get("summary", ""))
        elif kind == "agent_approval":  # --approve: the person's answer and what it made run
            answer, note, changes = e.get("answer", ""), e.get("note") or "", e.get("changes") or {}
            what = ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else note
            rows.append(["-", "(approval)", cell(f"{answer}: {what}" if what else answer),
                         {"yes": "approved", "no": "declined: not run, not proposed again",
                          "edit": "edited"}.get(answer, answer)])
        elif kind == "agent_edit_refused" and rows and rows[-1][1] == "(approval)":
            rows[-1][3] = cell(f"edit not valid ({e.get('error', '')}): asked again")
        elif kind == "plan" and e.get("origin") == "guard":
            rows.append(["-", "(guard)", cell(", ".join(f"{k}={v}" for k, v in (e.get("changes") or {}).items())),
                         ""])
        elif kind == "trial" and rows and rows[-1][1] == "(approval)" and rows[-1][3] in ("approved", "edited"):
            rows[-1][3] = cell(f"{rows[-1][3]}; ran: {e.get('state')} {e.get('value')}")
        elif kind == "trial" and rows and not rows[-1][3] and rows[-1][1] in ("(guard)", "(candidate 0)", *ACTIONS):
            # the trial's outcome (the last action's result never reaches the graph: the search ends first)
            rows[-1][3] = cell(f"{e.get('state')} {e.get('value')}")
        elif kind == "experiment" and rows and not rows[-1][3] and rows[-1][1] in ("(candidate 0)", *ACTIONS):
            rows[-1][3] = cell(f"{e.get('label')}: {e.get('state')}")
    lines = ["", "## The agent", "", head + ".", "", "| step | tool | arguments | result |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more steps in events.jsonl (kind agent_*).")
    return lines
