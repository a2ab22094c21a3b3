"""The `agentlab evolve run` config: the seeds, the task and its splits, the population, selection, crossover and
mutation, and the fitness (task accuracy, cooperation in a debate, novelty)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agentlab.core.config import StrictModel


class TaskSettings(StrictModel):
    file: Path | None = Field(None, description="JSONL task file, one {\"question\": ..., \"answer\": ...} per line; "
                              "empty: a generated arithmetic task (`generate`), written into the run folder")
    generate: Literal["easy", "medium", "hard"] = Field("easy", description="with no file: the arithmetic task "
                                                         "generated (easy a+b, medium a+b*c, hard Du et al.'s)")
    fitness_questions: int = Field(20, ge=2, description="questions every individual is scored on (the fitness "
                                   "split); the adapters were never trained on them")
    test_questions: int = Field(40, ge=0, description="questions kept apart from selection: only the final report "
                                "scores the best adapter and its ancestors on them (0: no test split)")
    seed: int = Field(0, description="shuffle of the task file before the split (and the generated task's seed)")
    harness: str | None = Field(None, description="an lm-eval task (e.g. agentlab_arithmetic) that scores the task "
                                "part of the fitness and the test split instead of the built-in greedy accuracy: "
                                "its first fitness_questions items are the fitness split, the next test_questions "
                                "the test split (the cooperation debate still asks the questions above)")
    include_path: list[Path] = Field(default_factory=list, description="with harness: folders of your own lm-eval "
                                     "task YAMLs")


class FitnessWeights(StrictModel):
    task: float = Field(1.0, description="weight of the task accuracy on the fitness split (0-1)")
    coop: float = Field(0.5, description="weight of the cooperation: the accuracy of the debate with the individual "
                        "replacing one seed, minus the seeds' debate (-1 to 1)")
    novelty: float = Field(0.1, description="weight of the novelty: mean distance to the rest of the population "
                           "(0-1)")


class CoopSettings(StrictModel):
    rounds: int = Field(1, ge=1, description="debate rounds after the independent answers")
    replace: Literal["weakest", "first"] = Field(
        "weakest", description="which seed the individual replaces in the debate: the one with the lowest accuracy "
        "on the fitness split, or the first")
    decision: Literal["majority", "confidence", "reconcile"] = Field("majority", description="the debate's vote "
                                                                      "over its last round")


class EvolveConfig(StrictModel):
    name: str = Field("evolve", description="run name (folder suffix)")
    base_model: str = Field("smollm2-135m", description="the base model every adapter belongs to: the built-in "
                            "smollm2-135m, a transformers folder, a GGUF file or a cached hub id")
    seeds: list[Path] = Field(default_factory=list, description="the adapters the population is seeded from (PEFT "
                              "LoRA folders on base_model); empty: adapters/persona_a, _b, _c under the current "
                              "directory, those that exist")
    task: TaskSettings = Field(default_factory=TaskSettings, description="what the individuals are scored on")
    population: int = Field(6, ge=2, description="individuals per generation: the seeds, then children of them")
    generations: int = Field(3, ge=0, description="generations bred after the initial population (gen_0)")
    elite: int = Field(2, ge=0, description="the best individuals of a generation carried into the next unchanged "
                       "(not scored again)")
    tournament: int = Field(3, ge=1, description="tournament size of the parent selection")
    alpha_range: tuple[float, float] = Field((0.25, 0.75), description="the first parent's blend weight is drawn "
                                             "uniformly in this range per child (the second gets 1 - it)")
    mut: float = Field(0.03, ge=0, le=1, description="mutation: probability that an element of a child's A/B "
                       "factors gets Gaussian noise")
    mut_std: float = Field(0.01, ge=0, description="mutation: the noise's standard deviation")
    max_rank: int = Field(32, ge=1, description="a child's rank is the sum of its parents' ranks (an exact blend) "
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
    max_tokens: int = Field(24, ge=1, description="most tokens per answer")
    store: str | None = Field(None, description="the population store (an Optuna storage: sqlite:///..., "
                              "postgresql://..., or a journal file path) that workers on several machines share; "
                              "empty: population.db in the run folder")
    workers: int = Field(1, ge=1, description="processes scoring children in parallel on this machine (each loads "
                         "the base model; `agentlab evolve worker --store URL` adds workers on other machines)")
    batch: int = Field(2, ge=1, description="individuals a worker scores together: their requests share the "
                       "model's batches; a crash loses at most one batch of scoring")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the base model runs")
    seed: int = Field(0, description="seed of selection, crossover weights and mutation")

    @model_validator(mode="after")
    def _check(self) -> EvolveConfig:
        low, high = self.alpha_range
        if not low <= high:
            raise ValueError(f"alpha_range: {low} > {high}; give [low, high]")
        if self.elite >= self.population:
            raise ValueError(f"elite: {self.elite} must be below population ({self.population}), or no child is bred")
        return self
