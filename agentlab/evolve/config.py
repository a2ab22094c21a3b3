"""The `agentlab evolve run` config: the seeds, the task and its splits, the population, selection, crossover and
mutation, and the fitness (task accuracy, cooperation in a debate, novelty)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from agentlab.core.config import ModelName, RunName, StrictModel
from agentlab.core.search.settings import StorageURL
from agentlab.core.train.blend import FLOAT32_MAX

Search = Literal["ga", "cmaes", "random", "uniform", "task_arithmetic", "ties"]
Baseline = Literal["uniform", "task_arithmetic", "ties", "random"]


class TaskSettings(StrictModel):
    file: Path | None = Field(None, description="JSONL task file, one {\"question\": ..., \"answer\": ...} per line, "
                              "shuffled and split into fitness, validation and test; empty: `generate`")
    generate: Literal["mixed", "easy", "medium", "hard"] = Field(
        "mixed", description="with no file: mixed is the shipped mixed task of the three seed skills (arithmetic, "
        "geography, units; its own fitness, validation and test files, agentlab/core/skilldata); easy, medium, "
        "hard: a generated arithmetic task (a+b, a+b*c, Du et al.'s), written into the run folder")
    fitness_questions: int = Field(36, ge=2, description="questions every individual is scored on (the fitness "
                                   "split); the adapters were never trained on them")
    validation_questions: int = Field(36, ge=0, description="questions that pick the final individual of the search "
                                      "and of each baseline (the best validation score; 0: the best fitness)")
    test_questions: int = Field(90, ge=0, description="questions kept apart from selection: only the final report "
                                "scores the best adapter, the seeds and the baselines on them (0: no test split)")
    score: Literal["loglik", "accuracy"] = Field(
        "loglik", description="the task part of the fitness: loglik, the mean per-token log-likelihood of the gold "
        "answer after the question (one forward pass per question, no generation; smooth, so one question does "
        "not decide selection), with greedy accuracy reported beside it; accuracy: greedy accuracy alone")
    seed: int = Field(0, description="shuffle of the task file before the split (and the generated task's seed)")
    harness: str | None = Field(None, description="an lm-eval task (e.g. agentlab_arithmetic) that scores the task "
                                "part of the fitness and the test split instead of the built-in greedy accuracy: "
                                "its first fitness_questions items are the fitness split, the next test_questions "
                                "the test split (the cooperation debate still asks the questions above)")
    include_path: list[Path] = Field(default_factory=list, description="with harness: folders of your own lm-eval "
                                     "task YAMLs")


# The seed's fitness is task + cooperation + novelty: both extra parts are on by default, weighted so that they break
# near-ties of the task score without overriding it (benchmarks/evolve_search.py --weights task-only default: the
# recommended child's test score under these weights against the task alone, docs/commands/evolve.md).
DEFAULT_COOP = 0.1
DEFAULT_NOVELTY = 0.05


class FitnessWeights(StrictModel):
    # a weight of nan or inf made every fitness nan, and the run "succeeded" (exit 0) with nothing compared
    model_config = ConfigDict(allow_inf_nan=False)

    task: float = Field(1.0, description="weight of the task score on the fitness split (task.score: the mean "
                        "per-token log-likelihood, <= 0, or the accuracy, 0-1)")
    coop: float = Field(DEFAULT_COOP, description="weight of the cooperation: the accuracy of the debate with the "
                        "individual replacing one seed, minus the seeds' debate (-1 to 1); 0: no debate is asked at "
                        "all (the task alone, faster)")
    novelty: float = Field(DEFAULT_NOVELTY, description="weight of the novelty: mean distance to the rest of the "
                           "population (0-1); 0: none")


class CoopSettings(StrictModel):
    rounds: int = Field(1, ge=1, description="debate rounds after the independent answers")
    replace: Literal["weakest", "first"] = Field(
        "weakest", description="which seed the individual replaces in the debate: the one with the lowest accuracy "
        "on the fitness split, or the first")
    decision: Literal["majority", "confidence", "reconcile"] = Field("majority", description="the debate's vote "
                                                                      "over its last round")


class EvolveConfig(StrictModel):
    # What a resume may change (core.runs.resume_changes): how the scoring is spread; the rest decides the population
    # already scored.
    RESUME_MAY_CHANGE: ClassVar[tuple[str, ...]] = ("name", "workers", "batch", "device")
    # every number finite (ranges' bounds included): weight_range: [-.inf, .inf] was valid, then failed once the run
    # folder was made and the model loaded (its CMA-ES weights were nan)
    model_config = ConfigDict(allow_inf_nan=False)

    name: RunName = Field("evolve", description="run name (folder suffix)")
    base_model: ModelName = Field("smollm2-135m", description="the base model every adapter belongs to: the built-in "
                            "smollm2-135m, a transformers folder, a GGUF file or a cached hub id")
    seeds: list[Path] = Field(default_factory=list, description="the adapters the population is seeded from (PEFT "
                              "LoRA folders on base_model); empty: adapters/skill_arithmetic, _geography, _units "
                              "under the current directory (`agentlab train-persona --data skill_X --out "
                              "adapters/skill_X`), else adapters/persona_a, _b, _c, those that exist")
    task: TaskSettings = Field(default_factory=TaskSettings, description="what the individuals are scored on")
    search: Search = Field(
        "cmaes", description="how children are made: cmaes (CMA-ES over one blend weight per seed, Optuna's "
        "CmaEsSampler), ga (tournament selection, two-parent blends, mutation), random (weights drawn uniformly in "
        "weight_range), uniform (the average of the seeds: one child), task_arithmetic (the sum of the seeds times "
        "one global scale, a grid over scale_range), ties (TIES merging, a grid over ties_density x scale_range). "
        "Every method scores the same number of children: (population - seeds) + generations x (population - "
        "elite). Default cmaes: in benchmarks/evolve_search.py it tied the GA and the merge baselines on test accuracy "
        "and its picks had the best validation log-likelihood of the searches")
    baselines: list[Baseline] = Field(
        default_factory=lambda: ["uniform", "task_arithmetic", "ties", "random"],  # type: ignore[arg-type]
        description="methods also run after the search, baseline_budget children each (uniform: one), so the "
        "report compares the best evolved against them on the test split; [] for none")
    baseline_budget: int = Field(6, ge=1, description="children scored per baseline (the grid or random draws); "
                                 "benchmarks/evolve_search.py gives every method the full search budget instead")
    weight_range: tuple[float, float] = Field((-0.5, 1.5), description="cmaes and random: the range of each seed's "
                                              "blend weight; CMA-ES starts at its centre with a step of a sixth of "
                                              "its width (Optuna's CmaEsSampler defaults)")
    scale_range: tuple[float, float] = Field((0.3, 1.5), description="task_arithmetic and ties: the global scale's "
                                             "grid runs over this range")
    ties_density: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.8], min_length=1,
                                      description="ties: the shares of each delta's largest entries kept")
    population: int = Field(8, ge=2, description="individuals per generation: the seeds, then children of them")
    generations: int = Field(4, ge=0, description="generations bred after the initial population (gen_0)")
    elite: int = Field(2, ge=0, description="the best individuals of a generation carried into the next unchanged "
                       "(not scored again)")
    tournament: int = Field(3, ge=1, description="tournament size of the parent selection")
    alpha_range: tuple[float, float] = Field((0.25, 0.75), description="the first parent's blend weight is drawn "
                                             "uniformly in this range per child (the second gets 1 - it)")
    mut: float = Field(0.03, ge=0, le=1, description="mutation: probability that an element of a child's A/B "
                       "factors gets Gaussian noise")
    mut_std: float = Field(0.01, ge=0, le=FLOAT32_MAX,  # blend refuses more
                           description="mutation: the noise's standard deviation")
    max_rank: int = Field(48, ge=1, description="a child's rank is the sum of its parents' ranks (an exact blend) "
                          "up to this; above it, the best rank-max_rank approximation (the discarded energy is "
                          "recorded)")
    fitness: FitnessWeights = Field(default_factory=FitnessWeights, description="fitness = task * accuracy + "
                                    "coop * cooperation + novelty * novelty; each part is recorded")
    novelty: Literal["answers", "weights"] = Field(
        "answers", description="answers: the share of fitness questions on which two individuals answer "
        "differently; weights: ||dW_i - dW_j|| / (||dW_i|| + ||dW_j||) over every adapted module")
    coop: CoopSettings = Field(default_factory=CoopSettings, description="the cooperation part of the fitness")
    probe: str = Field("What is 7 times 8?", description="prompt on which every adapter must change the base "
                       "model's logits before it is scored")
    min_logit_change: float = Field(1e-4, gt=0, description="an adapter whose largest logit change on the probe is "
                                    "below this is an error (it changes nothing), not a score")
    max_tokens: int = Field(16, ge=1, description="most tokens per greedy answer (the skill seeds answer in a few)")
    store: StorageURL = Field(None, description="the population store (an Optuna storage: sqlite:///..., "
                              "postgresql://..., or a journal file path) that workers on several machines share; "
                              "empty: population.db in the run folder")
    workers: int = Field(1, ge=1, description="processes scoring children in parallel on this machine (each loads "
                         "the base model; `agentlab evolve worker --store URL` adds workers on other machines)")
    batch: int = Field(2, ge=1, description="individuals a worker scores together: their requests share the "
                       "model's batches; a crash loses at most one batch of scoring")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the base model runs")
    seed: int = Field(0, description="seed of selection, crossover weights and mutation")

    @field_validator("alpha_range", "weight_range", "scale_range", mode="before")
    @classmethod
    def _pair(cls, value: Any) -> Any:
        """Two numbers: pydantic said a one-item range was "required field is missing"."""
        if isinstance(value, (list, tuple)) and len(value) != 2:
            raise ValueError(f"give [low, high]: 2 items, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> EvolveConfig:
        for name in ("alpha_range", "weight_range", "scale_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name}: {low} > {high}; give [low, high]")
        if self.elite >= self.population:
            # named by the one given (the error then points at its flag, --set or line): `--population 2` said
            # "config: elite: 2 must be below population (2)"
            if "elite" in self.model_fields_set and "population" not in self.model_fields_set:
                raise ValueError(f"elite: {self.elite} must be below population ({self.population}), or no child is "
                                 "bred; lower elite or raise population")
            raise ValueError(f"population: {self.population} must be above elite ({self.elite}), or no child is "
                             "bred; raise population or lower elite")
        if any(not 0 < d <= 1 for d in self.ties_density):
            raise ValueError(f"ties_density: every density must be in (0, 1] (got {self.ties_density})")
        return self

    def children(self, seeds: int) -> int:
        """Children every search method scores: gen_0's free places, then population - elite per generation."""
        return max(0, self.population - seeds) + self.generations * (self.population - self.elite)
