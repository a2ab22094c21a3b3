"""`agentlab evolve run` (docs/commands/evolve.md, which lists the run folder): ``Breeder`` proposes each generation
(the GA, or a search over blend weights, ``search.py``) and then the baselines to the shared search loop; every
individual is scored once (``score.py``), the fitness is computed per generation (``generation_row``), and the best
validation score picks the adapters compared with the seeds on the test split, which neither selection nor the pick
saw.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.config import absolute_path, absolute_paths
from agentlab.core.debate.task import _SHAPES, Question, answer_kind, as_questions, load_task, make_task, write_task
from agentlab.core.errors import (
    AgentlabError,
    ConfigError,
    InputError,
    RunDirError,
    UsageError,
    shell_word,
)
from agentlab.core.files import cannot_write, counted
from agentlab.core.harness import load_tasks, task_manager
from agentlab.core.models.adapters import (
    SKILLS,
    adapter_fingerprint,
    check_adapter_base,
    persona_adapters,
    read_adapter,
    skill_adapters,
)
from agentlab.core.models.load import logit_changes
from agentlab.core.models.modelref import resolve_model
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import RunDir, flat_settings, read_events, said_setting
from agentlab.core.search.loop import Hooks, TrialAborted
from agentlab.core.search.planners import NoProposal, PlanContext, Proposal
from agentlab.core.search.study import check_storage, missing_study, store_file
from agentlab.core.skills import mixed_file
from agentlab.core.train.blend import (
    NotFiniteChild,
    blend_adapters,
    check_compatible,
    delta_distance,
    read_parent,
    ties_merge,
)
from agentlab.core.vote import normalise, wilson_interval
from agentlab.evolve.config import EvolveConfig, TaskSettings
from agentlab.evolve.population import FORMER, Population, check_owner, open_population
from agentlab.evolve.report import fitness_line, fitness_plot, generation_line, render_report
from agentlab.evolve.score import ScoreSettings, reference, test_accuracy
from agentlab.evolve.search import budget, cma_ask, fixed_spec
from agentlab.evolve.worker import evolve_loop, individual, run_workers

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider

log = logging.getLogger(__name__)
TASK_FILE = "task.jsonl"
TRAIN_SKILLS = ("train them: agentlab train-persona --data skill_X --out adapters/skill_X (X = arithmetic, geography, "
                "units)")
# what results.json keeps of each individual
RESULT_KEYS = ("generation", "origin", "path", "parents", "weights", "rank", "discarded_energy", "state", "error",
               "task", "accuracy", "validation", "coop", "coop_accuracy", "probe_change", "tokens", "seconds",
               "worker", "harness", "baseline", "density", "scale")


# ---------------------------------------------------------------------- inputs, checked before a run folder exists


def prepare(cfg: EvolveConfig, *, resuming: bool = False) -> dict[str, Any]:
    """The seeds (LoRA adapters on one base, blendable together), the base model and the task's two splits.

    Every path the run keeps is made absolute here, as config.yaml writes it (the seeds, the base model, the task file
    and include paths, a journal store): the population store keeps them for every process that scores, so a resume
    or an `evolve worker --store` started in another folder loads the same model and adapters, not those of that
    name there (a store that kept ``models/tiny`` as typed failed every individual of a resume from elsewhere)."""
    absolute = absolute_paths(cfg)
    cfg.base_model, cfg.task, cfg.store = absolute.base_model, absolute.task, absolute.store
    found_here = not cfg.seeds  # the seeds are the default adapters found under the current directory
    if found_here:
        found = skill_adapters() or persona_adapters()
        if not found:
            raise UsageError("no seeds: no --seeds, no seeds in the config, and no adapters/skill_arithmetic, "
                             "_geography, _units (or adapters/persona_a, _b, _c) under the current directory",
                             hint=f"{TRAIN_SKILLS}, or pass --seeds DIR ...")
        cfg.seeds = found
    cfg.seeds = [Path(p).expanduser().resolve() for p in cfg.seeds]
    names = [p.name for p in cfg.seeds]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"seeds: two seed folders are named {twice[0]!r}",
                         hint="individuals are named after their folder: rename one")
    parents = [read_parent(p) for p in cfg.seeds]  # InputError (exit 2) naming the folder; before the counts below
    if len(cfg.seeds) > cfg.population:
        raise UsageError(f"seeds: {len(cfg.seeds)} seeds do not fit a population of {cfg.population}",
                         hint=f"raise population to at least {len(cfg.seeds)}, or give fewer seeds")
    needs = [m for m in (cfg.search, *cfg.baselines) if m != "ga"]
    if needs and len(cfg.seeds) < 2:
        what = "search" if needs[0] == cfg.search else "baseline"
        got, hint = f"got {len(cfg.seeds)}", "give more --seeds"
        if found_here:  # the user gave none: say which were found, and which defaults were not
            missing = ", ".join(f"adapters/{name}" for name in SKILLS if name not in names)
            got += (f": {', '.join(f'adapters/{name}' for name in names)}, found under the current directory as "
                    f"no --seeds were given; the default skill adapters {missing} were not found")
            hint = f"{TRAIN_SKILLS}, or pass --seeds DIR DIR ..."
        raise UsageError(f"{what} {needs[0]} combines the seeds: it needs at least 2 ({got})",
                         hint=f"{hint}, or --set search=ga --set baselines=[]")
    check_compatible(parents)
    base = resolve_model(cfg.base_model, user="base_model")
    # before anything loads (the model's load found it minutes later); one seed tells: check_compatible above
    # refused seeds of two bases
    check_adapter_base(parents[0].path, parents[0].config, str(cfg.base_model), base, runs="every seed is blended "
                       "and scored on", hint="evolve them on their base (--base-model {trained}), or give seeds "
                       "trained on {base_model}")
    if cfg.store is not None:
        unwritable = cannot_write(Path(cfg.store).parent) if "://" not in cfg.store else None
        if unwritable is not None:  # a journal file the run's open would fail to make, once its run folder was made
            raise ConfigError(f"store {cfg.store}: cannot write the journal file in {unwritable[0]} ({unwritable[1]})",
                              hint="give the store a path in a folder you can write to, or an sqlite:/// URL")
        check_storage(cfg.store, what="store")  # a journal whose folder does not exist too (``check_journal_folder``)
        if not resuming:  # a resume's settings and seeds are checked against its own config.yaml (check_resume)
            check_store(cfg)
    fitness, validation, test = split_task(cfg, resuming=resuming)
    if cfg.task.harness is not None:
        check_harness(cfg)
    for name, change in logit_changes(cfg.base_model, {p.name: p for p in cfg.seeds}, cfg.probe,
                                      device=cfg.device).items():
        if change < cfg.min_logit_change:
            raise InputError(f"seed {Path(cfg.seeds[names.index(name)])}: the adapter changes nothing (largest "
                             f"logit change on the probe {change:.3g} < min_logit_change {cfg.min_logit_change:g})",
                             hint="an untrained adapter (B = 0) or one for another model; train it, or drop it")
    return {"fitness": fitness, "validation": validation, "test": test}


def split_task(cfg: EvolveConfig, *, resuming: bool = False) -> tuple[list[Question], list[Question],
                                                                       list[Question]]:
    """The fitness, validation and test questions: the shipped mixed task's own splits, or a task file (or a
    generated arithmetic task) shuffled and cut in three. A task file's repeated questions are dropped first
    (``distinct_questions``): a file of 20 copies of one line put it in every split, and the test split "no selection
    saw" held the questions selection scored. A resume scores the split its run recorded (``_settings``), whatever
    this returns; one of a run started before repeats were dropped is not refused for them here."""
    t = cfg.task
    sizes = {"fitness": t.fitness_questions, "validation": t.validation_questions, "test": t.test_questions}
    if t.file is None and t.generate == "mixed":
        out = []
        for split, n in sizes.items():
            questions = load_task(mixed_file(split))
            if len(questions) < n:
                raise UsageError(f"task: the shipped mixed task's {split} split has "
                                 f"{counted(len(questions), 'question')}; "
                                 f"task.{split}_questions asks for {n}",
                                 hint=f"lower task.{split}_questions to at most {len(questions)}")
            out.append(questions[:n])
        return out[0], out[1], out[2]
    need = sum(sizes.values())
    if t.file is None:
        questions = generated_questions(t, need, resuming=resuming)
    else:
        rows = load_task(t.file)
        try:
            questions, repeats = distinct_questions(t.file, rows)
        except UsageError:
            if not resuming:
                raise
            questions, repeats = rows, []
        if resuming and len(questions) < need <= len(rows):
            questions, repeats = rows, []  # a run started before repeats were dropped: the rows it was split from
        if len(questions) < need:
            dropped = f" ({counted(len(repeats), 'repeat')} dropped)" if repeats else ""
            raise UsageError(f"{t.file}: {counted(len(questions), 'distinct question' if repeats else 'question')}"
                             f"{dropped}; the splits need {need} "
                             f"({t.fitness_questions} fitness + {t.validation_questions} validation + "
                             f"{t.test_questions} test)",
                             hint="lower task.fitness_questions / validation_questions / test_questions, or give a "
                             "longer task file")
        if repeats and not resuming:
            copy = repeats[0]
            log.warning("%s: %s dropped (the first: line %d, a copy of line %d): each question is in one split "
                        "alone, asked once", t.file, counted(len(repeats), "repeated question"), copy.line,
                        next(q.line for q in questions if q.question == copy.question))
        questions = list(questions)
        random.Random(t.seed).shuffle(questions)
    a, b = t.fitness_questions, t.fitness_questions + t.validation_questions
    return questions[:a], questions[a:b], questions[b:need]


def generated_questions(t: TaskSettings, need: int, *, resuming: bool = False) -> list[Question]:
    """``need`` distinct questions of the generated arithmetic task, the same for the same seed: ``make_task``
    draws its expressions at random, repeats too (easy: 135 distinct of 162), and a repeat put one question in two
    splits. ``make_task`` of more rows begins with the rows of fewer, so it is asked for more until the first
    ``need`` distinct ones are there, in its order (a seed whose first ``need`` rows were distinct splits as before).
    ``UsageError`` naming ``task.generate`` when it has fewer distinct questions than the splits need; a resume is
    not refused (it scores the split its run recorded, ``_settings``): it gets ``make_task``'s rows, repeats too."""
    difficulty, seed = t.generate, t.seed
    shape, top = _SHAPES[difficulty]
    space = (top + 1) ** shape.count("{")  # every expression of its shape: each a question of its own
    if need > space:
        if resuming:
            return as_questions(make_task(need, difficulty, seed))
        raise UsageError(f"task.generate {difficulty}: {counted(space, 'distinct question')}; the splits need "
                         f"{need} ({t.fitness_questions} fitness + {t.validation_questions} validation + "
                         f"{t.test_questions} test)",
                         hint="lower task.fitness_questions / validation_questions / test_questions, or a harder "
                         f"task.generate ({'hard' if difficulty == 'medium' else 'medium or hard'})")
    drawn = need
    while True:
        first: dict[str, dict[str, str]] = {}
        for row in make_task(drawn, difficulty, seed):
            first.setdefault(row["question"], row)
            if len(first) == need:
                return as_questions(list(first.values()))
        drawn *= 2


def distinct_questions(path: Path, questions: list[Question]) -> tuple[list[Question], list[Question]]:
    """``questions`` with each question's first line alone, and the repeats dropped; ``UsageError`` naming both lines
    when two copies of a question disagree on the answer (compared as votes are, ``normalise``: "Paris" and "paris."
    agree)."""
    first: dict[str, Question] = {}
    repeats: list[Question] = []
    for q in questions:
        kept = first.setdefault(q.question, q)
        if kept is q:
            continue
        if normalise(kept.answer) != normalise(q.answer):
            raise UsageError(f"{path}:{q.line}: repeats the question of line {kept.line} with another answer "
                             f"({json.dumps(q.answer)}; line {kept.line}: {json.dumps(kept.answer)})",
                             hint="keep one line per question, with its right answer")
        repeats.append(q)
    return list(first.values()), repeats


def check_harness(cfg: EvolveConfig) -> None:
    """The lm-eval task exists, its data is on disk and it has items for both splits."""
    t = cfg.task
    loaded = load_tasks(task_manager(t.include_path, names=[t.harness or ""]), [t.harness or ""])
    need = t.fitness_questions + t.test_questions
    for name, task in loaded["tasks"].items():
        if len(task.eval_docs) < need:
            raise UsageError(f"task.harness {name}: {counted(len(task.eval_docs), 'item')}; the splits need {need} "
                             f"({t.fitness_questions} fitness + {t.test_questions} test)",
                             hint="lower task.fitness_questions / task.test_questions, or give a longer task")


def _question_dicts(questions: list[Question]) -> list[dict[str, Any]]:
    return [{"id": q.id, "line": q.line, "question": q.question, "answer": q.answer, "kind": answer_kind(q)}
            for q in questions]


# ---------------------------------------------------------------------- the run


def check_resume(cfg: EvolveConfig, folder: Path) -> None:
    """A resume's population is there (``RunDirError``, before anything loads): a new one would score every
    individual again, and the reference debate. And its seeds are the ones it started with (``UsageError``, like a
    changed setting): what it scored and bred was made from them (``seed_fingerprints``)."""
    began = any(e.get("kind") in ("scored", "reference") for e in read_events(folder))
    # a file of 0 bytes is as gone as a missing one: opening it would make a new, empty population in it
    if (file := missing_study(cfg.store, folder, "population.db", empty=True)) is not None:
        if not began:  # nothing kept yet: the resume starts the population
            return
        gone = "empty (0 bytes)" if Path(file).exists() else "missing"
        raise RunDirError(f"{file}: the population of {folder} is {gone} (it holds what the run scored)",
                          hint="restore the file, or start a new run")
    try:
        pop = open_population(cfg.store, folder, create=False)
    except AgentlabError:
        if began:
            raise
        return  # a stop before the population was made: nothing kept yet
    # checked whenever the population is there: a session killed while breeding gen_0 kept its reference debate, made
    # from the seeds, before recording anything (``run`` records it on any other stop)
    stored = pop.attr("seed_fingerprints") or {}
    now = seed_fingerprints([p for p in cfg.seeds if p.name in stored])
    changed = [f"{name} {stored[name][:12]} -> {new[:12]}" for name, new in now.items()
               if new is not None and new != stored[name]]
    if changed:
        raise UsageError(f"{folder}: a seed adapter changed on disk since the run started ({'; '.join(changed)}: the "
                         "fingerprint of its weights); nothing was written",
                         hint="put back the seeds the run started with (what it scored and bred was made from them), "
                         "or start a new run with the new seeds")


def population_config(cfg: EvolveConfig) -> dict[str, Any]:
    """What a population is made with, flat (``{"task.score": "loglik", "seeds": [...]}``): every setting but those a
    resume may change (``RESUME_MAY_CHANGE``) and the store itself (a copy of the store is the same population).
    The store keeps it (``config``) so that a run given the store of another (``check_store``) can be compared."""
    skip = (*EvolveConfig.RESUME_MAY_CHANGE, "store")

    dumped = flat_settings(absolute_paths(cfg).model_dump(mode="json"))
    return {k: v for k, v in dumped.items() if not any(k == s or k.startswith(s + ".") for s in skip)}


def check_store(cfg: EvolveConfig) -> None:
    """A store that already holds a population (``store`` / ``--store``) is used only with the settings and seeds it
    was made with (``UsageError``, exit 2, before anything is written): a run given the store of another run, not as
    a resume, took that run's population over silently (its seeds, its scores, an adapter of that run recommended,
    exit 0). With the same settings and seeds it carries on with what the store holds once that run has finished;
    before, the store is that run's (``check_owner``: help it with `evolve worker`, which never comes here, or resume
    it). A store made before agentlab kept its settings in it is compared by what it kept: the seeds and their
    fingerprints."""
    if cfg.store is None or missing_study(cfg.store, Path.cwd()) is not None:
        return
    try:
        pop = open_population(cfg.store, None, create=False)
    except AgentlabError:  # no evolve population in it: a new one is made there
        return
    settings = pop.attr("settings")
    if settings is None and not pop.store.trials():
        check_owner(pop, cfg.store)  # made an instant ago by a run that goes on
        return  # made, nothing stored yet
    stored, now = pop.attr("config"), population_config(cfg)
    if stored is not None:
        # the settings both know: one added to agentlab since the store was made is its default on both sides
        changed = [f"{key} {said_setting(stored[key])} -> {said_setting(now[key])}"
                   for key in sorted(stored.keys() & now.keys()) if stored[key] != now[key]]
    else:  # its base model may be kept as typed (relative): the seeds and their fingerprints tell the population
        seeds, old = {p.name: str(p) for p in cfg.seeds}, (settings or {}).get("seeds")
        changed = [] if old == seeds else [f"seeds {said_setting(old)} -> {said_setting(seeds)}"]
    prints = pop.attr("seed_fingerprints") or {}
    changed += [f"seed {name} {prints[name][:12]} -> {new[:12]} (the fingerprint of its weights)"
                for name, new in seed_fingerprints([p for p in cfg.seeds if p.name in prints]).items()
                if new is not None and prints[name] is not None and new != prints[name]]
    if changed:
        folder = pop.attr("folder")
        raise UsageError(f"store {cfg.store}: holds the population of another run{f' ({folder})' if folder else ''}, "
                         f"made with other settings or seeds ({'; '.join(changed)}); nothing was written",
                         hint=(f"continue that run: agentlab evolve run --resume {shell_word(folder)}; or "
                               if folder else "")
                         + _NEW_STORE)
    check_owner(pop, cfg.store)
    check_kept_adapters(pop, cfg.store)


_NEW_STORE = "give this run a new store (or leave store out: population.db in its run folder)"


def check_kept_adapters(pop: Population, store: str) -> None:
    """The adapter folder of every individual a finished store kept scored is on disk (``UsageError``, exit 2,
    before anything is written): a run given the store of a run whose folder was removed since kept its scores and
    recommended an adapter that no longer exists (results.json and report.md naming it), exit 0."""
    gone = [(m, ind["path"]) for m, ind in pop.individuals().items()
            if ind["state"] == "complete" and ind.get("path") and not Path(ind["path"]).is_dir()]
    if gone:
        more = f" (and {counted(len(gone) - 1, 'other')})" if len(gone) > 1 else ""
        folder = pop.attr("folder")
        raise UsageError(f"store {store}: the adapter folder of {gone[0][0]}, scored in it, is gone: {gone[0][1]}"
                         f"{more}; its score cannot be kept without it; nothing was written",
                         hint=f"restore the adapters/ folder of {folder or 'the run that made the store'}, or "
                         + _NEW_STORE)


def seed_fingerprints(seeds: list[Path]) -> dict[str, str | None]:
    """Each seed's fingerprint by folder name (``adapter_fingerprint``; None: no weights, ``prepare`` names it). A
    run stores them when it starts; a resume whose seeds changed on disk since is refused, as the scores, the
    reference debate and the children it kept were made from the old ones."""
    return {folder.name: adapter_fingerprint(folder) for folder in seeds}


def run(cfg: EvolveConfig, run_dir: RunDir, *, fitness: list[Question], test: list[Question],
        validation: list[Question] | None = None, progress: Progress | None = None,
        announce: Callable[[str], None] | None = None, providers: dict[str, Provider] | None = None) -> dict[str, Any]:
    progress = progress or NullProgress()
    say = announce or log.info
    new = not run_dir.info.get("resumed")
    # a store file (journal or SQLite) this run makes: removed with the run folder (``_unmade``)
    made_file = new and cfg.store is not None and missing_study(cfg.store, Path.cwd()) is not None
    pop = open_population(cfg.store, run_dir.path, create=True)
    if new:
        # bad input found once the folder is made (exit 2, before the first event: a child's blend not finite) takes
        # these with it, and the folder it made; they are the run's alone when its population is in the folder, or
        # in a store where this run made it (``_unmade`` removes it there)
        run_dir.scratch(TASK_FILE)
        if cfg.store is None:
            run_dir.scratch("population.db")
        if cfg.store is None or pop.created:
            run_dir.scratch("adapters")
            run_dir.scratch("workers")
    pending: list[tuple[str, dict[str, Any]]] = []  # events held until gen_0 is bred (``Breeder.pending``)
    try:
        return _run(cfg, run_dir, pop, fitness=fitness, test=test, validation=validation, progress=progress,
                    say=say, providers=providers, pending=pending)
    except BaseException as exc:
        if new and isinstance(exc, AgentlabError) and run_dir.will_undo(exc):  # bad input: the run leaves nothing
            _unmade(cfg, pop, run_dir, exc, made_file)
        else:  # a stop (Ctrl-C) or a failure: the run is kept, with what its store holds (the reference debate)
            with contextlib.suppress(Exception):  # a full disk: the run's own error is the one to say
                record_events(run_dir, pending)
        raise


def record_events(run_dir: RunDir, pending: list[tuple[str, dict[str, Any]]]) -> None:
    """Record the events held back (``Breeder.pending``), in order, each once."""
    while pending:
        kind, data = pending[0]
        run_dir.event(kind, **data)
        pending.pop(0)


def _unmade(cfg: EvolveConfig, pop: Population, run_dir: RunDir, exc: AgentlabError, made_file: bool) -> None:
    """A new run that bad input stopped before its first event leaves nothing: ``RunDir`` removes its folder (the
    console named it when it was made) and this removes the population it made in a store outside it (``store``:
    the store's file when the run made it, else the run's study in it; what the store held before stays), so the next
    run given that store, its input fixed, is not refused as another run's. ``exc`` says so: it is what the user
    reads last."""
    removed = (f"; nothing was recorded: the run folder {run_dir.path} was removed" if run_dir.created else
               f"; nothing was recorded: the run's files were removed from {run_dir.path}")
    if cfg.store is not None and pop.created:
        try:
            storage = pop.store.storage
            storage.delete_study(pop.store.study_id)
            file = store_file(cfg.store)
            # the file goes only when it holds nothing else: another process may have added a study meanwhile
            if made_file and file is not None and not storage.get_all_studies():
                for path in (file, file.with_name(file.name + ".claims.lock")):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                removed += f", and the store {cfg.store} it made"
            else:
                removed += f", and the population it made in the store {cfg.store}"
        except Exception as err:  # the store cannot be written now: the run's own error is the one to say
            log.warning("store %s: could not remove the population of the removed run: %s", cfg.store, err)
            removed += f" (the population it made in the store {cfg.store} is left: remove it before giving the " \
                "store to a new run)"
    exc.message += removed
    exc.args = (exc.message,)


def _run(cfg: EvolveConfig, run_dir: RunDir, pop: Population, *, fitness: list[Question], test: list[Question],
         validation: list[Question] | None, progress: Progress, say: Callable[[str], None],
         providers: dict[str, Provider] | None, pending: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    start = time.perf_counter()
    here, resumed = str(absolute_path(run_dir.path)), bool(run_dir.info.get("resumed"))
    if not resumed:  # two runs started together on one new store: prepare's check_store saw it empty in both
        check_owner(pop, cfg.store, here)
    earlier, started = pop.attr("folder"), run_dir.info.get("started")
    if resumed and earlier not in (None, here) and pop.attr("run_started") in (None, started):
        # this run's folder, moved or copied since (not another run's, given the store): its children lie here now
        pop.set_attr(FORMER, [*(pop.attr(FORMER) or []), earlier])
    pop.set_attr("folder", here)  # where a store's child folders lie (located)
    pop.set_attr("run_started", started)
    # the earlier sessions' time (kept in the store as each individual is scored; a run finished before it was kept
    # there: its results.json's); results.json's seconds are the whole run's, session_seconds this session's
    kept = pop.attr("seconds") if resumed else 0.0
    before = float((kept if kept is not None else _results(run_dir).get("seconds")) or 0.0)

    def spent() -> float:
        return round(before + time.perf_counter() - start, 1)
    if pop.attr("config") is None:  # what check_store compares a run given this store with
        pop.set_attr("config", population_config(cfg))
    settings = _settings(cfg, pop, fitness, validation or [], test, run_dir)
    n = len(settings.questions)
    breeder = Breeder(cfg, pop, run_dir, say, pending)
    debated = False
    if pop.attr("reference") is None and settings.coop:
        bar = progress.task("the seeds' own debate (reference)", total=len(settings.seeds) * n + n)
        pop.set_attr("reference", reference(settings, providers=providers, tick=bar.advance))
        debated = True
    elif pop.attr("reference") is None:
        pop.set_attr("reference", reference(settings))  # no cooperation part: no debate, nothing asked
    ref = pop.attr("reference")
    if settings.coop and (debated or (resumed and next(run_dir.events("reference"), None) is None)):
        # recorded once gen_0 is bred: a child that is not finite there stops the run as bad input before its first
        # event, with the cooperation part as without it (the folder removed; it was kept, failed, holding this);
        # any other stop records it (``run``), and a resume records one a killed session did not
        breeder.pending.append(("reference", {k: v for k, v in ref.items() if k not in ("round0", "debate")}))
    say(fitness_line(cfg.fitness.model_dump(), settings.score, n, cfg.novelty))
    if bred_generations(cfg) < cfg.generations:
        say(f"search {cfg.search} makes {budget(cfg, cfg.search, len(cfg.seeds), baseline=False)} child(ren): "
            f"{bred_generations(cfg)} generation(s) after gen_0, not the {cfg.generations} asked")

    def scored() -> None:
        """Each individual scored since the last call said (``Breeder.scored``), and the run's seconds kept in the
        store as they are scored, by this process (``on_event``) or its workers (``run_workers`` polls this): a
        session killed (SIGKILL) while its workers scored lost its time, kept only at the end otherwise."""
        if breeder.scored():
            pop.set_attr("seconds", spent())

    def on_event(kind: str, **data: Any) -> None:
        if kind == "trial":
            scored()
        elif kind == "recovered":
            say(recovered_line(pop, data["trials"], resumed))

    def start_workers(numbers: list[int]) -> None:
        if cfg.workers > 1:
            generation = individual(pop, numbers[0])["generation"]  # a group is one generation, or the baselines
            run_workers(pop.url, min(cfg.workers, len(numbers)), cfg.batch, run_dir.file("workers"), scored, say,
                        group="baselines" if generation == "baseline" else f"gen-{generation}")

    done = sum(1 for ind in pop.individuals().values() if ind.get("state") in ("complete", "fail"))
    if done and earlier not in (None, here) and not resumed:  # the store of another run, its settings (check_store)
        say(f"the store {cfg.store} holds the population of {earlier}, made with these settings and seeds: its "
            f"{done} scored individual(s) are kept, not scored again; the run scores {total_trials(cfg)} in all")
    elif done:  # a resumed run: what was scored stays scored
        say(f"resuming: {done} individual(s) scored before are kept, not scored again; the run scores "
            f"{total_trials(cfg)} in all")
    waiting = [t.number for t in pop.store.trials() if t.state.name == "WAITING"]
    if resumed:
        # the loop changes the population from its first step (claims a stop left go back to the queue, a generation
        # is bred): a resume stopped from here on did work, and run.json keeps its record (not undone as nothing)
        run_dir.mark_worked()
    try:  # results.json's seconds are every session's: this one's kept however it ends (``scored`` keeps them as
        # individuals are scored, not after the last one)
        if waiting:  # a resumed run: the generation queued before the stop is scored by the workers too
            start_workers(waiting)
        try:
            evolve_loop(pop, cfg.batch, planner=breeder, max_iterations=total_trials(cfg), providers=providers,
                        seed=cfg.seed, hooks=Hooks(on_event=on_event, progress=progress, run_dir=str(run_dir.path),
                                                   on_queued=start_workers, says_recovered=True)).run()
        except TrialAborted as exc:  # the scoring failed, not an individual (worker.Scorer): its batch is queued again
            raise exc.__cause__ or exc from None
        breeder.record_pending()  # nothing was bred this session (a store holding every generation already)
        try:  # generations of elites alone, after the budget was spent: stored, nothing to score
            unscored = breeder.propose_group()  # never empty
        except NoProposal:
            unscored = []
        if unscored:
            raise AgentlabError(f"the search stopped with {len(unscored)} individuals not scored",
                                hint="see events.jsonl; resume the run: agentlab evolve run --resume RUN")
        history = breeder.history()
        baselines = {name: pop.members(f"baseline_{name}") or [] for name in baseline_names(cfg)}
        individuals = pop.individuals()
        best, picks = final_picks(cfg, individuals, history, baselines)
        final = pop.attr("final")
        if final is None:
            final = compare_on_test(settings, pop, individuals, best, progress, providers, picks)
            pop.set_attr("final", final)
        pop.set_attr("finished", True)
        results = {
            "base_model": cfg.base_model, "population": cfg.population, "generations": bred_generations(cfg),
            "questions": {"fitness": len(settings.questions), "validation": len(settings.validation),
                          "test": final["questions"]}, "score": settings.score,
            "fitness_weights": cfg.fitness.model_dump(), "novelty": cfg.novelty,
            "reference": {k: v for k, v in ref.items() if k not in ("round0", "debate")},
            "individuals": {m: {k: ind.get(k) for k in RESULT_KEYS} for m, ind in individuals.items()},
            "history": history, "best": best_row(individuals, history, best), "final": final,
            "seconds": spent(), "search": cfg.search, "baselines": baselines,
            # a resume's own seconds beside the whole run's: how many it scored says what they bought
            "session_seconds": round(time.perf_counter() - start, 1),
            "scored_this_session": sum(ind.get("state") in ("complete", "fail") for ind in individuals.values()) - done,
            "recommended": recommended(individuals, best, picks)}
        run_dir.save_results(results)
        plot = fitness_plot(results, run_dir.file("fitness.png"))
        run_dir.save_report(render_report(results, plot.name if plot else None))
        return results
    finally:
        with contextlib.suppress(Exception):  # the store cannot be written now: its error is the one to say
            pop.set_attr("seconds", spent())


def _results(run_dir: RunDir) -> dict[str, Any]:
    """The run's results.json as an earlier session wrote it (empty: none, or unreadable)."""
    try:
        found = json.loads(run_dir.file("results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def recovered_line(pop: Population, trials: list[int], resumed: bool) -> str:
    """What the run says of claims that go back to the queue: the individuals by name (the loop knows trial
    numbers, which name nothing a user sees), and "resuming" only in a resume (a new run's own worker that was
    killed was said as one)."""
    names = {ind["trial"]: m for m, ind in pop.individuals().items()}
    listed = ", ".join(names.get(number, f"trial {number}") for number in trials)
    return (f"{'resuming: ' if resumed else ''}{len(trials)} individual(s) that were being scored when their process "
            f"stopped go back to the queue ({listed})")


def _settings(cfg: EvolveConfig, pop: Population, fitness: list[Question], validation: list[Question],
              test: list[Question], run_dir: RunDir) -> ScoreSettings:
    """The stored settings (a resumed run keeps its questions and seeds), or new ones."""
    stored = pop.attr("settings")
    if stored is not None:
        typed, full = Path(stored["base_model"]), Path(cfg.base_model)
        if not typed.is_absolute() and full.is_absolute() and full.parts[-len(typed.parts):] == typed.parts:
            # a store written before its paths were kept absolute (``models/tiny`` as typed): config.yaml's is the
            # same model (a resume cannot change it), its path made absolute in the folder the run started in
            stored = {**stored, "base_model": cfg.base_model}
            pop.set_attr("settings", stored)
        return ScoreSettings(**stored)
    t = cfg.task
    if t.file is None:
        rows = [{"question": q.question, "answer": q.answer} for q in [*fitness, *validation, *test]]
        write_task(run_dir.file(TASK_FILE), rows, force=True)
    # what the workers need to score with task.harness: the task and the item indices of each split
    harness = None if t.harness is None else {
        "task": t.harness, "include": [str(Path(p).resolve()) for p in t.include_path],
        "fitness": list(range(t.fitness_questions)),
        "test": list(range(t.fitness_questions, t.fitness_questions + t.test_questions))}
    settings = ScoreSettings(
        base_model=cfg.base_model, device=cfg.device, questions=_question_dicts(fitness),
        seeds={p.name: str(p) for p in cfg.seeds}, max_tokens=cfg.max_tokens, rounds=cfg.coop.rounds,
        replace=cfg.coop.replace, decision=cfg.coop.decision, probe=cfg.probe, min_change=cfg.min_logit_change,
        harness=harness, score=t.score, validation=_question_dicts(validation),
        coop=cfg.fitness.coop != 0)
    pop.set_attr("test", _question_dicts(test))
    pop.set_attr("seed_fingerprints", seed_fingerprints(cfg.seeds))
    pop.set_attr("settings", asdict(settings))
    return settings


class Breeder:
    """evolve's planner on the search loop: each group it proposes is the next generation (``breed``: the GA, or
    a search over blend weights), then the baselines; asked only once the last group is scored (``generations``).
    A generation stored but not all queued (a crash while breeding) is bred again, identically, and its missing
    individuals proposed. It also says what was scored: each generation's row and each individual (``scored``)
    once, even across a resume. The loop asks a planner of generations for nothing but ``propose_group``."""

    def __init__(self, cfg: EvolveConfig, pop: Population, run_dir: RunDir, say: Callable[[str], None],
                 pending: list[tuple[str, dict[str, Any]]] | None = None):
        self.cfg, self.pop, self.run_dir, self.say = cfg, pop, run_dir, say
        self.announced: set[int] = set()
        self.seen = {event.get("id") for event in run_dir.events("scored")}
        self.logged = {event.get("generation") for event in run_dir.events("generation")}
        # events held until the first group is bred (the reference debate's): bad input found breeding it (a child
        # that is not finite, exit 2) finds the run with nothing recorded, and its folder goes (``RunDir``); any
        # other stop records them (``run``)
        self.pending: list[tuple[str, dict[str, Any]]] = pending if pending is not None else []

    def record_pending(self) -> None:
        record_events(self.run_dir, self.pending)

    def propose_group(self, ctx: PlanContext | None = None) -> list[Proposal]:
        self.scored()
        new: list[dict[str, Any]] = []
        while not new:  # a generation of elites alone (the budget spent) has nothing to score: the next one
            history = self.history()
            k = len(history)
            if k <= bred_generations(self.cfg):
                breed(self.cfg, self.pop, k, self.run_dir, history, new)
            else:
                breed_baselines(self.cfg, self.pop, self.run_dir, new)  # only those not in the store yet
                if not new:
                    self.record_pending()
                    raise NoProposal("every generation and baseline is scored")
        self.record_pending()
        return [Proposal({}, {}, str(ind["origin"]), f"{ind['id']}: " + (
            f"generation {ind['generation']}" if ind.get("baseline") is None else f"baseline {ind['baseline']}"),
            extra={"individual": ind}) for ind in new]

    def history(self) -> list[dict[str, Any]]:
        """The fitness row of each generation until the first not stored or not all scored (each announced once);
        after the search, when the breeder proposes nothing more, every generation is scored."""
        individuals = self.pop.individuals()
        rows: list[dict[str, Any]] = []
        for k in range(bred_generations(self.cfg) + 1):
            members = self.pop.members(k)
            if members is None or any(individuals.get(m, {}).get("state") not in ("complete", "fail")
                                      for m in members):
                break
            rows.append(generation_row(self.cfg, individuals, k, members))
            best, mean = rows[-1]["best"], rows[-1]["mean"]
            if k not in self.announced:
                self.announced.add(k)
                self.say(generation_line(k, best, mean, self.cfg.fitness.model_dump()))
            if k not in self.logged:  # once per generation, across a resume too
                self.logged.add(k)
                self.run_dir.event("generation", generation=k, best=best["id"], fitness=best["fitness"],
                                   mean=mean)
        return rows

    def scored(self) -> int:
        """One ``scored`` event per individual once it is scored, by this process or a worker; how many were new."""
        new = 0
        for m, ind in self.pop.individuals().items():
            if m in self.seen or ind["state"] not in ("complete", "fail"):
                continue
            self.seen.add(m)
            new += 1
            if ind["state"] == "fail":
                self.run_dir.event("scored", id=m, generation=ind["generation"], error=ind["error"])
                self.say(f"{m}: error: {ind['error']}")
            else:
                self.run_dir.event("scored", id=m, generation=ind["generation"], task=ind["task"], coop=ind["coop"],
                                   seconds=ind["seconds"])
        return new


# ---------------------------------------------------------------------- breeding


def breed(cfg: EvolveConfig, pop: Population, k: int, run_dir: RunDir, history: list[dict[str, Any]],
          new: list[dict[str, Any]]) -> list[str]:
    """Generation ``k``'s members, stored: the seeds (gen_0) or the last generation's ``elite`` best, then children
    (the GA's, or the weight search's until its budget is spent); the individuals not in the store yet (adapter
    folders written) appended to ``new``, for the loop to queue. The draws depend only on the seed and the scores,
    so a crash while breeding breeds the same children."""
    known = pop.individuals()
    ranked: list[dict[str, Any]] = []
    if k == 0:
        members = [p.name for p in cfg.seeds]
        new += [_seed(path) for path in cfg.seeds if path.name not in known]
        known = {**known, **{ind["id"]: ind for ind in new}}
    else:  # never empty: generation_row refuses a generation with nothing scored
        ranked = sorted((r for r in history[-1]["members"] if r["fitness"] is not None), key=lambda r: -r["fitness"])
        members = [r["id"] for r in ranked[:cfg.elite]]
    specs = _ga_specs(cfg, k, ranked, members) if cfg.search == "ga" else _search_specs(cfg, k, history, known)
    for j, spec in enumerate(specs):
        child = f"g{k}c{j}"
        members.append(child)
        if child not in known:
            new.append(_make_child(cfg, k, child, spec, run_dir.file("adapters", f"gen_{k}", child), known))
    pop.set_members(k, members)
    return members


def _ga_specs(cfg: EvolveConfig, k: int, ranked: list[dict[str, Any]], members: list[str]) -> list[dict[str, Any]]:
    """The GA's children of generation ``k``: two parents by tournament over ``ranked`` (gen_0: two of the seeds at
    random), the first's weight drawn from ``alpha_range``, and a mutation seed."""
    rng = random.Random(f"{cfg.seed}:{k}")

    def tournament() -> str:
        entrants = rng.sample(ranked, min(cfg.tournament, len(ranked)))
        return str(max(entrants, key=lambda r: r["fitness"])["id"])

    def pick() -> list[str]:
        if k == 0:
            return rng.sample(members, 2) if len(members) > 1 else members[:1]
        first = tournament()
        for _ in range(10):
            second = tournament()
            if second != first:
                return [first, second]
        return [first]

    specs = []
    for _ in range(cfg.population - len(members)):
        parents = pick()
        alpha = rng.uniform(*cfg.alpha_range)
        specs.append({"method": "blend", "parents": parents, "weights": [alpha, 1 - alpha] if len(parents) == 2
                      else [1.0], "noise_seed": rng.randrange(2**31)})
    return specs


def _search_specs(cfg: EvolveConfig, k: int, history: list[dict[str, Any]],
                  known: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Generation ``k``'s children of a search over the seeds' blend weights (``search.py``): gen_0 fills the
    population after the seeds, each later one ``population - elite``, until the budget is spent (uniform: one)."""
    seeds = len(cfg.seeds)
    total = budget(cfg, cfg.search, seeds, baseline=False)
    start = 0 if k == 0 else (cfg.population - seeds) + (k - 1) * (cfg.population - cfg.elite)
    count = max(0, min(cfg.population - (seeds if k == 0 else cfg.elite), total - start))
    if cfg.search != "cmaes":
        return [fixed_spec(cfg, cfg.search, start + j, total, seeds) for j in range(count)]
    # children stored before a crash keep their draws; the rest are the crashed attempt's next draws (the sampler
    # sees the same children of earlier generations, so it draws the same sequence again)
    made = [known[f"g{k}c{j}"] for j in range(count) if f"g{k}c{j}" in known]
    specs = [{"method": "cmaes", "weights": ind["weights"], "cma": ind.get("cma") or {}} for ind in made]
    earlier = {name: ind for name, ind in known.items() if ind.get("generation") != k}
    return specs + (cma_ask(cfg, earlier, history, seeds, k, count)[len(made):] if count > len(made) else [])


def _seed(path: Path) -> dict[str, Any]:
    return {"id": path.name, "generation": 0, "origin": "seed", "path": str(path), "parents": [], "weights": [],
            "rank": int(read_adapter(path).get("r") or 8)}


def _make_child(cfg: EvolveConfig, generation: int | str, child: str, spec: dict[str, Any], folder: Path,
                known: dict[str, dict[str, Any]] | None = None, baseline: str | None = None) -> dict[str, Any]:
    """Child ``child`` as ``spec`` says, its adapter folder written and its record returned: the GA's blend of
    ``spec["parents"]`` (records in ``known``) with mutation, else TIES or an exact blend of every seed."""
    folder = absolute_path(folder)  # kept in the store and lineage.json: it loads from any folder
    ga = spec["method"] == "blend"
    parents = [(known or {})[p] for p in spec["parents"]] if ga else [_seed(p) for p in cfg.seeds]
    paths: list[str | Path] = [p["path"] for p in parents]
    rank = min(sum(int(p["rank"]) for p in parents), cfg.max_rank)
    try:
        if spec["method"] == "ties":
            result = ties_merge(paths, folder, density=spec["density"], scale=spec["scale"], rank=rank, force=True)
        else:
            mutation: dict[str, Any] = ({"mut": cfg.mut, "mut_std": cfg.mut_std, "seed": spec["noise_seed"]}
                                        if ga else {})
            result = blend_adapters(paths, spec["weights"], folder, rank=rank, force=True, **mutation)
    except NotFiniteChild as exc:
        # the blend's hint named `evolve blend`'s flags (--mut-std, --scale): here the config's field decides; the
        # folder it names is not said, as a new run that stops here before its first event is removed (``run``)
        field = ("mut_std or alpha_range" if ga else "scale_range" if spec["method"] in ("ties", "task_arithmetic")
                 else "weight_range")
        raise InputError(f"child {child}: the child's {exc.tensor} is not finite in {exc.dtype}",
                         hint=f"give a smaller {field} and start a new run (a resume makes the same child)") from None
    record = {"id": child, "generation": generation, "origin": spec["method"], "path": str(folder),
              "parents": [p["id"] for p in parents], "weights": spec["weights"], "rank": rank,
              "discarded_energy": result.discarded_energy}
    if ga:
        record.update(weights=[round(w, 4) for w in spec["weights"]], mut=cfg.mut, mut_std=cfg.mut_std,
                      noise_seed=spec["noise_seed"])
    else:
        record.update(baseline=baseline, **{key: spec[key] for key in ("density", "scale", "cma") if key in spec})
    return record


def breed_baselines(cfg: EvolveConfig, pop: Population, run_dir: RunDir, new: list[dict[str, Any]]) -> None:
    """The merge baselines (``cfg.baselines`` other than the search itself), ``baseline_budget`` children each:
    stored, and the ones not in the store yet appended to ``new`` (one group: scored together, workers included)."""
    seeds = len(cfg.seeds)
    known = pop.individuals()
    for name in baseline_names(cfg):
        total = budget(cfg, name, seeds, baseline=True)
        members = [f"{name}{j}" for j in range(total)]
        for j, child in enumerate(members):
            if child not in known:
                new.append(_make_child(cfg, "baseline", child, fixed_spec(cfg, name, j, total, seeds),
                                       run_dir.file("adapters", "baselines", child), baseline=name))
        pop.set_members(f"baseline_{name}", members)


def baseline_names(cfg: EvolveConfig) -> list[str]:
    return [name for name in dict.fromkeys(cfg.baselines) if name != cfg.search]


def bred_generations(cfg: EvolveConfig) -> int:
    """The generations after gen_0 that breed a child: ``generations``, or fewer when the search's budget is spent
    sooner (uniform's one child); a generation of elites alone would repeat the last one's rows."""
    seeds = len(cfg.seeds)
    left = budget(cfg, cfg.search, seeds, baseline=False) - max(0, cfg.population - seeds)
    return 0 if left <= 0 else min(cfg.generations, -(-left // (cfg.population - cfg.elite)))


def total_trials(cfg: EvolveConfig) -> int:
    """Every individual the run scores: the seeds, the search's children and the baselines'."""
    n = len(cfg.seeds)
    return n + budget(cfg, cfg.search, n, baseline=False) + sum(budget(cfg, b, n, baseline=True)
                                                                for b in baseline_names(cfg))


def selection_score(ind: dict[str, Any]) -> float:
    """What picks the final individual: its validation score, else its fitness-split task score."""
    value = ind.get("validation")
    if value is None or (isinstance(value, float) and value != value):
        value = ind.get("task")
    return float(value) if value is not None else float("-inf")


def final_picks(cfg: EvolveConfig, individuals: dict[str, dict[str, Any]], history: list[dict[str, Any]],
                baselines: dict[str, list[str]]) -> tuple[str, dict[str, str]]:
    """The best evolved individual (the best validation score among the search's children; with no validation
    split, the best fitness among the children of the last generation that holds a scored one: a seed ahead of them
    is no evolved individual; a seed only when no child could be scored) and the best of each baseline by its
    validation score, else its fitness-split task score."""
    scored = {m: ind for m, ind in individuals.items() if ind["state"] == "complete"}
    children = [m for m, ind in scored.items() if ind.get("origin") != "seed" and not ind.get("baseline")]
    if cfg.task.validation_questions and children:
        best = max(children, key=lambda m: selection_score(scored[m]))
    else:  # was the last generation's best, a seed as often as not: "best evolved (cmaes): skill_arithmetic"
        best = next((max(rows, key=lambda r: r["fitness"])["id"] for h in reversed(history)
                     if (rows := [r for r in h["members"] if r["id"] in children and r["fitness"] is not None])),
                    history[-1]["best"]["id"])
    done = {name: [m for m in ids if m in scored] for name, ids in baselines.items()}
    return best, {name: max(ids, key=lambda m: selection_score(scored[m])) for name, ids in done.items() if ids}


def recommended(individuals: dict[str, dict[str, Any]], best: str, picks: dict[str, str]) -> dict[str, Any]:
    """The adapter to use: the best validation score among the best evolved and each baseline's pick (the best
    evolved on a tie), so a run never recommends less than a merge baseline did on validation; the test split never
    chooses."""
    mine = "best evolved" if individuals[best].get("origin") != "seed" else "seed: no child was scored"
    candidates = {best: mine, **{m: f"baseline {name}" for name, m in picks.items() if m != best}}
    chosen = max(candidates, key=lambda m: selection_score(individuals[m]))
    return {"id": chosen, "relation": candidates[chosen], "validation": individuals[chosen].get("validation"),
            "path": individuals[chosen]["path"]}


def best_row(individuals: dict[str, dict[str, Any]], history: list[dict[str, Any]], best: str) -> dict[str, Any]:
    """``best``'s row of the last generation that holds it (fitness parts), with its validation score."""
    for h in reversed(history):
        for r in h["members"]:
            if r["id"] == best and r["fitness"] is not None:
                return {**r, "validation": individuals[best].get("validation")}
    ind = individuals[best]
    return {"id": best, "task": ind.get("task"), "coop": ind.get("coop") or 0.0, "novelty": 0.0,
            "fitness": ind.get("task"), "validation": ind.get("validation"), "error": None}


# ---------------------------------------------------------------------- fitness


def generation_row(cfg: EvolveConfig, individuals: dict[str, dict[str, Any]], k: int,
                   members: list[str]) -> dict[str, Any]:
    """Generation ``k``: each member's fitness parts (novelty against the other scored members), best and means."""
    scored = [m for m in members if individuals[m]["state"] == "complete"]
    novelty = _novelty(cfg, individuals, scored)
    w = cfg.fitness
    rows = []
    for m in members:
        ind = individuals[m]
        if m in novelty:
            parts = {"task": ind["task"], "coop": ind["coop"], "novelty": round(novelty[m], 4)}
            fit = round(w.task * parts["task"] + w.coop * parts["coop"] + w.novelty * parts["novelty"], 4)
            rows.append({"id": m, **parts, "fitness": fit, "error": None})
        else:
            rows.append({"id": m, "task": None, "coop": None, "novelty": None, "fitness": None,
                         "error": ind.get("error") or ind["state"]})
    valid = [r for r in rows if r["fitness"] is not None]
    if not valid:
        raise AgentlabError(f"gen {k}: no individual could be scored",
                            hint="see the errors: " + "; ".join(f"{r['id']}: {r['error']}" for r in rows[:3]))
    best = max(valid, key=lambda r: r["fitness"])
    mean = {key: round(sum(r[key] for r in valid) / len(valid), 4) for key in ("fitness", "task", "coop", "novelty")}
    return {"generation": k, "members": rows, "best": best, "mean": mean}


def _novelty(cfg: EvolveConfig, individuals: dict[str, dict[str, Any]], ids: list[str]) -> dict[str, float]:
    if len(ids) < 2:
        return dict.fromkeys(ids, 0.0)
    if cfg.novelty == "weights":
        parents = {m: read_parent(individuals[m]["path"]) for m in ids}

        def distance(a: str, b: str) -> float:
            return delta_distance(parents[a], parents[b])
    else:
        def distance(a: str, b: str) -> float:
            x, y = individuals[a]["answers"], individuals[b]["answers"]
            return sum(p != q or p is None for p, q in zip(x, y, strict=True)) / len(x)
    pairs: dict[tuple[str, str], float] = {}
    for a, b in itertools.combinations(ids, 2):
        pairs[(a, b)] = pairs[(b, a)] = distance(a, b)
    return {a: sum(pairs[(a, b)] for b in ids if b != a) / (len(ids) - 1) for a in ids}


# ---------------------------------------------------------------------- the test split and results


def ancestors(individuals: dict[str, dict[str, Any]], who: str) -> list[str]:
    """Every ancestor of ``who``, nearest first."""
    seen: list[str] = []
    queue = list(individuals[who].get("parents") or [])
    while queue:
        m = queue.pop(0)
        if m not in seen:
            seen.append(m)
            queue += individuals[m].get("parents") or []
    return seen


def compare_on_test(settings: ScoreSettings, pop: Population, individuals: dict[str, dict[str, Any]], best: str,
                    progress: Progress, providers: dict[str, Provider] | None, picks: dict[str, str]) -> dict[str, Any]:
    """The best individual against its ancestors, every seed and the best of each baseline on the test split:
    accuracy with its Wilson interval, the mean per-token log-likelihood (task.score loglik), and the best's paired
    accuracy difference to each (a 95% normal interval over the questions)."""
    questions = pop.attr("test") or []
    if not questions:
        return {"best": best, "questions": 0, "rows": []}
    lineage = ancestors(individuals, best)
    line = [best, *lineage]
    line += [m for m, ind in individuals.items() if ind.get("origin") == "seed" and m not in line]
    line += [m for m in picks.values() if m not in line]
    baseline_of = {m: name for name, m in picks.items()}
    bar = progress.task("the best, seeds and baselines on the test split", total=len(line) * len(questions))
    scores = test_accuracy(settings, questions, {m: individuals[m]["path"] for m in line}, providers=providers,
                           tick=bar.advance)
    rows = []
    for m in line:
        s = dict(scores[m])
        items = s.pop("items", None)
        s.pop("loglik_items", None)
        ind = individuals[m]
        relation = ("best" if m == best else f"baseline {baseline_of[m]}" if m in baseline_of else
                    "seed" if ind.get("origin") == "seed" else "ancestor" if m in lineage else "other")
        row = {"id": m, "relation": relation, "generation": ind["generation"], "origin": ind.get("origin"),
               "fitness_split": ind.get("task"), "validation": ind.get("validation"), **s,
               "ci": [round(x, 4) for x in wilson_interval(s["correct"], s["total"])]}
        best_items = scores[best].get("items")
        if m != best and items is not None and best_items is not None:
            row["best_minus"] = paired_difference(best_items, items)
        rows.append(row)
    return {"best": best, "questions": len(questions), "rows": rows}


def paired_difference(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Mean of ``a - b`` over paired items with its 95% normal interval (the same questions for both)."""
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    half = 1.96 * (var / n) ** 0.5 if n else 0.0
    return {"mean": round(mean, 4), "ci": [round(mean - half, 4), round(mean + half, 4)]}
