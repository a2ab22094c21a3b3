"""The `agentlab debate` config: the question, the agents, the rounds and how the final answer is decided.

The same file works for every backend; only the agent entries change: ``{name, adapter: FOLDER}`` is a PEFT adapter
on ``base_model`` in process (transformers), ``{name, model: NAME}`` is a model or route of the routing config
(``llm``, ``--llm``: an OpenAI-compatible server such as vLLM serving one LoRA per model name, GGUFs on llama.cpp).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr, model_validator

from agentlab.core.config import ModelName, RunName, StrictModel
from agentlab.core.debate.rules import VISIBILITIES, Rule, Visibility
from agentlab.core.llm.config import PARAMS_HELP, Params, RoutingRef


class AgentSpec(StrictModel):
    name: str | None = Field(None, description="the agent's name in the transcript (default: the adapter folder's "
                             "name, or the model name)")
    adapter: Path | None = Field(None, description="a PEFT adapter folder: the agent is base_model with this adapter, "
                                 "in process (transformers)")
    model: str | None = Field(None, description="a model or route name of the routing config (--llm) instead of an "
                              "adapter")
    params: Params = Field(default_factory=dict, description=f"this agent's {PARAMS_HELP}")
    structured: bool | None = Field(None, description="ask for JSON {answer, confidence} under a schema; empty: "
                                    "only where the backend enforces schemas (llama.cpp), else the tolerant parser")

    @model_validator(mode="after")
    def _one_backend(self) -> AgentSpec:
        if (self.adapter is None) == (self.model is None):
            raise ValueError("give exactly one of adapter (a PEFT folder) or model (a routing config name)")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.adapter.name if self.adapter is not None else str(self.model)


class EvalSettings(StrictModel):
    task: Path | None = Field(None, description="JSONL task file, one {\"question\": ..., \"answer\": ...} per line "
                              "(`agentlab debate make-task` writes one)")
    concurrency: int = Field(8, ge=1, description="questions debated at once (their requests batch together)")
    sc_temperature: float = Field(0.7, ge=0, description="temperature of the self-consistency samples")
    limit: int | None = Field(None, ge=1, description="only the first N questions of the task")
    visibilities: list[Visibility] = Field(default_factory=lambda: list(VISIBILITIES),  # type: ignore[arg-type]
                                           min_length=1, description="the debate is run once per visibility "
                                           "(round 0, shared, is asked once) and every rule is scored on each: "
                                           "full, answer, answer_confidence; the configured `visibility` is "
                                           "debated too when this list leaves it out (the default row is its)")


# The rule that debates with the best mean accuracy in docs/benchmarks/debate_rules.md (keep_round0 [full]).
DEBATING_RULE: Rule = "keep_round0"
DEFAULT_ROUNDS = 3
# Every round's prompt holds the earlier rounds (each agent's own replies and the others' answers: about 300 tokens a
# round for three agents at max_tokens 96 under full visibility): a 2k context (llama.cpp's default n_ctx) fills after
# about 6 rounds, an 8k one after about 25, and 50 outgrow a 16k one. Du et al. debate 2-4 rounds.
MAX_ROUNDS = 50
DEFAULT_BASE = "smollm2-135m"


class DebateConfig(StrictModel):
    # What a resume may change (core.runs.resume_changes): a debate takes more rounds, an eval more questions; the
    # rest decides the answers already given.
    RESUME_MAY_CHANGE: ClassVar[dict[str, tuple[str, ...]]] = {
        "debate": ("name", "rounds", "llm", "device", "eval"),
        "debate-eval": ("name", "llm", "device", "eval.limit", "eval.concurrency")}

    name: RunName = Field("debate", description="run name (folder suffix)")
    topic: str | None = Field(None, description="the question or topic to debate (`question` is the same)")
    question: str | None = Field(None, description="alias of topic")
    kind: Literal["auto", "numeric", "open", "text"] = Field(
        "auto", description="numeric: agents vote on a number; open: on a stance (yes / no / mixed) and the judge "
        "writes the summary; text: on a short factual answer (a city); auto: numeric when the question holds a "
        "digit (in `debate eval`: by the gold answer: a number, a stance, else text)")
    base_model: ModelName = Field(DEFAULT_BASE, description="base model of the adapter agents: the built-in "
                            "smollm2-135m, a transformers folder, a GGUF file or a cached hub id")
    agents: list[AgentSpec] = Field(default_factory=list, description="the debaters; empty: adapters/persona_a, "
                                    "_b, _c under the current directory, those that exist")
    llm: RoutingRef | None = Field(None, description="routing config for model agents, or a built-in model's name "
                                   "(--llm; default configs/llm.yaml when an agent names a model)")
    rounds: int | None = Field(None, ge=0, le=MAX_ROUNDS,
                               description=f"debate rounds after the independent answers of round 0, at most "
                               f"{MAX_ROUNDS} (each round's prompt holds every earlier round); "
                               "empty: the rule's own (vote: none, every other rule: 3; `debate eval`: 3); 0: a dry "
                               "run that checks every agent answers and writes nothing; N > 0 with no rule given: the "
                               "best debating rule measured, keep_round0 (docs/benchmarks/debate_rules.md); N > 0 "
                               "with rule vote is refused by `debate` (vote asks no debate round; `debate eval` scores "
                               "every rule over the N rounds and marks vote's row default)")
    decision: Literal["reconcile", "confidence", "majority", "judge"] = Field(
        "reconcile", description="reconcile: confidence-weighted vote with ReConcile's binning; confidence: raw "
        "confidences as weights; majority: one agent one vote; judge: the judge model decides from the last round")
    rule: Rule | None = Field(
        None, description="which rounds decide (core/debate/rules.py): vote (round 0's vote alone: no debate round "
        "is asked), last_round (the vote of the last round), all_rounds (one vote over every round's answers), "
        "on_disagreement (debate only when round 0 is split; a unanimous round 0 stops there), keep_round0 (round "
        "0's vote unless the last round converged). Empty: vote, or keep_round0 when rounds > 0 is given (the best "
        "rule that debates). Measured by benchmarks/debate_rules.py: on the built-in SmolLM2 personas every rule "
        "that debates fell below round 0's vote, keep_round0 least")
    visibility: Visibility = Field(
        "full", description="what each agent sees of the others' previous answers: full (their replies), answer "
        "(the parsed answers only), answer_confidence (answer and confidence)")
    judge: str | None = Field(None, description="the judge's model or route (decision judge, topic summaries); "
                              "empty: base_model without adapter when there are adapter agents, else the routing "
                              "config's `judge` route (or its default)")
    prompt_style: Literal["auto", "format", "plain"] = Field(
        "auto", description="format: every prompt asks the reply to end with Answer:/Stance: and Confidence: "
        "lines; plain: the question alone and the others' answers, read by the tolerant parser; auto: plain for "
        "numeric questions when every agent is an adapter (the shipped personas, trained without any format, "
        "answered 7 x 8 with '1.' and '45' under the format lines and '54.' / '56' without), else format (on an "
        "open topic their plain replies held no stance at all)")
    max_tokens: int = Field(96, ge=1, description="most tokens per answer; a structured (JSON) agent is asked with "
                            "at least its reply schema's longest object (184-219 tokens), the judge with at least 160, "
                            "so their replies complete (a value set below is raised, with a warning)")
    temperature: float = Field(0.0, ge=0, description="temperature of the debate's answers (0: greedy)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="adapter agents: where the base model runs")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="`agentlab debate eval`")
    # True when the rule was not given and rounds > 0 picked DEBATING_RULE (the output names it).
    _rule_chosen: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _one_question(self) -> DebateConfig:
        if self.topic is not None and self.question is not None and self.topic != self.question:
            raise ValueError("topic and question both given; they are the same field")
        if self.topic is None:  # one spelling kept (config.yaml, a resume's comparison): topic
            self.topic, self.question = self.question, None
        names = [a.label for a in self.agents]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"agents: name {twice[0]!r} used twice; give each agent its own `name`")
        if self.rule is None:  # an explicit rounds > 0 asks for a debate: the best debating rule measured decides
            self._rule_chosen = bool(self.rounds)
            self.rule = DEBATING_RULE if self.rounds else "vote"
        return self

    @property
    def rule_chosen(self) -> bool:
        """True when no rule was given and rounds > 0 picked :data:`DEBATING_RULE`."""
        return self._rule_chosen

    @property
    def decision_rule(self) -> Rule:
        """The rule, resolved (the validator fills an empty one)."""
        return self.rule or "vote"

    @property
    def debate_rounds(self) -> int:
        """The rounds `agentlab debate` asks after round 0: the given number, else the rule's own (vote: none)."""
        if self.rounds is not None:
            return self.rounds
        return 0 if self.decision_rule == "vote" else DEFAULT_ROUNDS

    @property
    def eval_rounds(self) -> int:
        """The rounds `debate eval` asks: every rule is scored, so the debating ones need rounds (default 3)."""
        return self.rounds if self.rounds is not None else DEFAULT_ROUNDS

    @property
    def text(self) -> str | None:
        return self.topic if self.topic is not None else self.question
