"""Run a pipeline: stages in dependency order, the models of a multi stage concurrently, one step file per stage.

Run folder (``runs/pipeline/<timestamp>-<name>/``)::

    config.yaml, models.yaml    the resolved pipeline and models (absolute model paths): re-runnable as they are
    llm.yaml                    the routing config, when a routed (HTTP) model is used
    input.txt                   the pipeline input
    session.json                input, parent_run_id, from_stage: what `history` lists even for a failed run
    steps/01-<stage>.json       input, messages sent, each model's answer with tokens and seconds, aggregation, output
    events.jsonl                one llm_call event per model call (the router's) and one stage event per stage
    final.txt, results.json     the final answer; the machine-readable summary (a failed session: final null and
                                failed_stage)
    report.md                   the stages and the final answer (a failed session: the failed stage, its error and
                                the `rerun --from` line)

Every local model the pipeline calls is checked against the memory budget before the first one loads: the
process-wide model cache keeps them all loaded at once. The check comes after the configs, input.txt and
session.json are written, so a refused run is still a session that can be listed, shown and rerun.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.config import absolute_paths, dump_yaml, redact
from agentlab.core.errors import ConfigError
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import GenParams, Messages, Provider
from agentlab.core.progress import NullProgress, Progress, ProgressTask
from agentlab.core.runs import RunDir, now_iso
from agentlab.pipeline.aggregate import Answer, concat, render_template, synthesis_messages, vote
from agentlab.pipeline.config import ModelsConfig, PipelineConfig, StageConfig, dependencies, execution_order
from agentlab.pipeline.load import Loaded
from agentlab.pipeline.models import LOCAL_PREFIX, build_llm_config, check_fits, check_models, split_by_rules
from agentlab.pipeline.serving import StageFailed, StageServer
from agentlab.pipeline.templates import render

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    run_id: str
    parent_run_id: str | None
    input: str
    final: str
    steps: list[dict[str, Any]]
    models_loaded: list[dict[str, Any]]
    seconds: float
    path: Path
    from_stage: str | None = None
    pipeline: str = "pipeline"
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The results.json contract: run ids, input, final answer, per-stage tokens and seconds, models loaded."""
        stages = [{"index": s["index"], "name": s["stage"], "type": s["type"], "models": [o["model"] for o in
                   s["outputs"]], "aggregation": (s.get("aggregation") or {}).get("kind"),
                   "prompt_tokens": s["prompt_tokens"], "completion_tokens": s["completion_tokens"],
                   "seconds": s["seconds"], "reused": s["reused"], "step_file": s["step_file"]} for s in self.steps]
        fresh = [s for s in self.steps if not s["reused"]]
        return {"run_id": self.run_id, "parent_run_id": self.parent_run_id, "pipeline": self.pipeline,
                "from_stage": self.from_stage, "input": self.input, "final": self.final, "stages": stages,
                "tokens": {"prompt": sum(s["prompt_tokens"] for s in fresh),
                           "completion": sum(s["completion_tokens"] for s in fresh)},
                "model_calls": sum(len(s["outputs"]) + bool((s.get("aggregation") or {}).get("call"))
                                   for s in fresh),
                "models_loaded": self.models_loaded, **self.extra, "seconds": round(self.seconds, 4)}


def run(models_cfg: ModelsConfig, pipeline_cfg: PipelineConfig, run_dir: RunDir, *, input_text: str,
        llm: LLMConfig | None = None, providers: dict[str, Provider] | None = None,
        progress: Progress | None = None, reuse: dict[str, dict[str, Any]] | None = None,
        parent_run_id: str | None = None) -> PipelineResult:
    """Run the pipeline on ``input_text`` into ``run_dir`` (synchronous entry; see ``run_async``).

    ``llm``: the routing config for ``routed`` models. ``providers``: provider objects by provider name
    (``local:<model>`` for a local model, the routing config's name for a routed one) used instead of building
    them (tests pass ``ScriptedProvider``s); models behind given providers are not memory-checked. ``reuse``: stage
    name -> a parent run's step record, copied instead of calling models (``rerun --from``).
    """
    return asyncio.run(run_async(models_cfg, pipeline_cfg, run_dir, input_text=input_text, llm=llm,
                                 providers=providers, progress=progress, reuse=reuse, parent_run_id=parent_run_id))


async def run_async(models_cfg: ModelsConfig, pipeline_cfg: PipelineConfig, run_dir: RunDir, *, input_text: str,
                    llm: LLMConfig | None = None, providers: dict[str, Provider] | None = None,
                    progress: Progress | None = None, reuse: dict[str, dict[str, Any]] | None = None,
                    parent_run_id: str | None = None) -> PipelineResult:
    """``run`` for callers inside an event loop."""
    start = time.perf_counter()
    declared = pipeline_cfg.base_pipeline.stages
    if not declared:
        raise ConfigError("the pipeline has no stages",
                          hint="add stages under base_pipeline.stages, or pass --stage NAME=MODEL")
    stages, deps, reuse = execution_order(declared), dependencies(declared), dict(reuse or {})
    unknown = sorted(set(reuse) - {s.name for s in stages})
    if unknown:
        raise ConfigError(f"reused stage(s) not in the pipeline: {', '.join(unknown)}")
    primary = {m for s in stages if s.name not in reuse for m in s.model_names()}
    used = primary | {m for s in stages if s.name not in reuse for m in s.fallbacks}
    missing = sorted(used - set(models_cfg.models))
    if missing:
        raise ConfigError(f"model(s) not in the models file: {', '.join(missing)}",
                          hint=f"known: {', '.join(models_cfg.models) or 'none'}")
    llm_cfg = build_llm_config(models_cfg, llm, used)
    given = dict(providers or {})
    from_stage = next((s.name for s in stages if s.name not in reuse), None) if reuse or parent_run_id else None
    routed = llm if any(models_cfg.backend(n) == "routed" for n in used) else None
    # The session's files before the memory check: a run refused for memory is a session that `history` lists with
    # its input and `rerun` reads (its config.yaml and models.yaml), like one that failed at a stage.
    _save_snapshots(run_dir, models_cfg, pipeline_cfg, routed)
    run_dir.write_text("input.txt", input_text)
    run_dir.write_json("session.json", {"run_id": run_dir.path.name, "parent_run_id": parent_run_id,
                                        "pipeline": pipeline_cfg.name, "input": input_text,
                                        "from_stage": from_stage, "started": now_iso()})
    if parent_run_id is not None:
        run_dir.update_info(parent_run_id=parent_run_id)
    # Fallbacks load only when needed (their provider checks the memory budget then); a primary model whose file
    # cannot be read is left to fail at its stage, where its fallbacks take over.
    loading = [n for n in models_cfg.models if n in primary and f"{LOCAL_PREFIX}{n}" in llm_cfg.providers
               and f"{LOCAL_PREFIX}{n}" not in given]
    estimates = check_fits(models_cfg, loading, skip_unreadable=True)  # before anything loads
    for status in check_models(models_cfg, {n for n in used if models_cfg.models[n].quantization}):
        if status.quantization_mismatch:  # `models check` calls it not ready; the run goes on, said
            log.warning("model %s: declared quantization %s but the file is %s (%s)", status.name,
                        status.quantization, status.quantization_found, status.path)
    loads_before = _load_count()

    progress = progress or NullProgress()
    routers: dict[str, Router] = {}
    for rules in split_by_rules(llm_cfg, models_cfg, llm):  # local and routed models: each under its own rules
        routers.update(dict.fromkeys(rules.models, Router.for_run(rules, run_dir, providers=given)))
    positions = {s.name: i for i, s in enumerate(declared)}  # a stage's place in the file: what --set counts
    server = StageServer(routers, llm_cfg, models_cfg, run_dir, given, positions)
    outputs: dict[str, str] = {}
    steps: list[dict[str, Any]] = []
    try:
        for index, stage in enumerate(stages, 1):
            if stage.name in reuse:
                task = progress.task(f"{index:02d} {stage.name} (reused)", total=1)
                step = {**reuse[stage.name], "index": index, "reused": True, "reused_from": parent_run_id}
                task.advance()
            else:
                task = progress.task(f"{index:02d} {stage.name}", total=_calls_of(stage))
                text_in = _stage_input(deps[stage.name], stage, outputs, input_text)
                try:
                    step = await _run_stage(server, stage, text_in, input_text, outputs, task)
                except StageFailed as exc:
                    _record_failure(run_dir, stage.name, index, positions[stage.name], exc)
                    # the finished stages, the failed one and the `rerun --from` line, as every run folder's summary
                    failed = PipelineResult(run_dir.path.name, parent_run_id, input_text, "", steps,
                                            _loaded(estimates), time.perf_counter() - start, run_dir.path,
                                            from_stage, pipeline_cfg.name).summary()
                    failed.update(final=None, failed_stage={"name": stage.name, "index": index,
                                                            "position": positions[stage.name], "error": exc.message,
                                                            "next_step": exc.hint})
                    run_dir.save_results(failed)
                    run_dir.save_report(report_markdown(failed))
                    raise
                step["index"] = index
            step["step_file"] = f"steps/{index:02d}-{stage.name}.json"
            run_dir.write_json(step["step_file"], step)
            run_dir.event("stage", stage=stage.name, index=index, type=stage.type, reused=step["reused"],
                          seconds=step["seconds"], prompt_tokens=step["prompt_tokens"],
                          completion_tokens=step["completion_tokens"], output_chars=len(step["output"]))
            outputs[stage.name] = step["output"]
            steps.append(step)
    finally:
        await server.aclose()
    final = outputs[pipeline_cfg.final_stage] if pipeline_cfg.final_stage else steps[-1]["output"]
    result = PipelineResult(run_dir.path.name, parent_run_id, input_text, final, steps, _loaded(estimates),
                            time.perf_counter() - start, run_dir.path, from_stage, pipeline_cfg.name,
                            {"gguf_loads": _load_count() - loads_before})
    run_dir.write_text("final.txt", result.final.rstrip("\n") + "\n")
    run_dir.save_results(result.summary())
    run_dir.save_report(report_markdown(result.summary()))
    return result


def run_session(loaded: Loaded, run_dir: RunDir, *, input_text: str, reuse: dict[str, dict[str, Any]] | None = None,
                parent_run_id: str | None = None, progress: Progress | None = None,
                announce: Callable[[str], None] | None = None) -> PipelineResult:
    """``run`` over what ``load.prepare`` (or ``sessions.prepare_rerun``) loaded: the command's entry point."""
    return run(loaded.models, loaded.pipeline, run_dir, input_text=input_text, llm=loaded.llm, progress=progress,
               reuse=reuse, parent_run_id=parent_run_id)


def _loaded(estimates: list[Any]) -> list[dict[str, Any]]:
    """results.json's ``models_loaded``: each local model checked against the memory budget, with its estimate."""
    return [{"name": e.name, "backend": e.backend, "path": str(e.path), "estimate_bytes": e.total_bytes,
             "estimate": e.describe()} for e in estimates]


def report_markdown(summary: dict[str, Any]) -> str:
    """report.md of a session: where it came from, one row per stage, the final answer (a failed session: the
    stage no model served, its error and the `rerun --from` line that continues it)."""
    lines = [f"# pipeline `{summary['pipeline']}`: session {summary['run_id']}", ""]
    if summary.get("parent_run_id"):
        lines += [f"Re-run of `{summary['parent_run_id']}` from stage `{summary.get('from_stage')}`; earlier stages "
                  "reused its outputs.", ""]
    failed = summary.get("failed_stage")
    if failed:
        lines += [f"**Failed at stage `{failed['name']}`** (step {failed['index']}): {failed['error']}", "",
                  f"Next step: {failed['next_step']}.", ""]
    lines += ["## Input", "", "```text", summary["input"].rstrip("\n"), "```", "",
              "## Stages", "", "| # | stage | type | models | tokens in/out | seconds | step file |",
              "|---|---|---|---|---|---|---|"]
    for st in summary["stages"]:
        kind = st["type"] + (f" ({st['aggregation']})" if st.get("aggregation") else "")
        seconds = "reused" if st["reused"] else f"{st['seconds']:.2f}"
        lines.append(f"| {st['index']} | {st['name']} | {kind} | {', '.join(st['models'])} | "
                     f"{st['prompt_tokens']}/{st['completion_tokens']} | {seconds} | [{st['step_file']}]"
                     f"({st['step_file']}) |")
    if failed:
        lines += ["", f"No final answer: the session stopped at stage `{failed['name']}`.", ""]
    else:
        lines += ["", "## Final answer", "", "```text", summary["final"].rstrip("\n"), "```", ""]
    return "\n".join(lines)


def _load_count() -> int:
    """GGUF models loaded by this process so far (0 when llama_cpp was never imported: nothing loaded)."""
    import sys

    module = sys.modules.get("agentlab.core.llm.providers.llama_cpp")
    return module.load_count() if module is not None else 0


def _calls_of(stage: StageConfig) -> int:
    return len(stage.model_names())


def _stage_input(sources: list[str], stage: StageConfig, outputs: dict[str, str], original: str) -> str:
    """The pipeline input for a stage with no source; one output as is; several joined under headers."""
    if not sources:
        return original
    if len(sources) == 1:
        return outputs[sources[0]]
    return "\n\n".join(f"## {name}\n{outputs[name].strip()}" for name in sources)


async def _run_stage(server: StageServer, stage: StageConfig, text_in: str, original: str,
                     outputs: dict[str, str], task: ProgressTask) -> dict[str, Any]:
    start = time.perf_counter()
    variables = {"input": text_in, "original": original, "stages": dict(outputs)}
    prompt = render(stage.prompt, f"stage '{stage.name}': prompt", **variables)
    messages: Messages = [{"role": "system", "content": stage.system}] if stage.system else []
    messages.append({"role": "user", "content": prompt})
    params = GenParams().merged(stage.params)
    names = [stage.model] if stage.type == "single" and stage.model is not None else list(stage.models or [])
    # All models of a multi stage at once: HTTP requests overlap, local models generate in worker threads. A name
    # repeated in the list is sampled apart: its k-th repeat gets seed + k (``StageServer.repeat_params``).
    calls = list(await asyncio.gather(*(_call(server, stage, n, messages, params, task, names[:i].count(n))
                                        for i, n in enumerate(names))))
    answers = [Answer(c["model"], c["text"]) for c in calls]
    aggregation: dict[str, Any] | None = None
    if stage.type == "single":
        answer = calls[0]["text"]
    elif stage.aggregation == "concat":
        answer, aggregation = concat(answers), {"kind": "concat"}
    elif stage.aggregation == "vote":
        answer, details = vote(answers)
        aggregation = {"kind": "vote", **details}
    elif stage.aggregation == "synthesis":
        assert stage.aggregator is not None
        call_messages = synthesis_messages(prompt, answers)
        call = await _call(server, stage, stage.aggregator, call_messages, params, task)
        answer, aggregation = call["text"], {"kind": "synthesis", "call": {**call, "messages": call_messages}}
    else:
        assert stage.template is not None
        answer = render_template(stage.template, answers, input=text_in, original=original,
                                           stages=outputs, where=f"stage '{stage.name}': template")
        aggregation = {"kind": "template"}
    output = f"{text_in.rstrip()}\n\n{answer}" if stage.output_mode == "input_plus_answer" else answer
    extra_calls = [aggregation["call"]] if aggregation and "call" in aggregation else []
    return {"stage": stage.name, "type": stage.type, "input_from": stage.input_from, "input": text_in,
            "messages": messages, "outputs": calls, "aggregation": aggregation, "output": output,
            "prompt_tokens": sum(c["prompt_tokens"] for c in calls + extra_calls),
            "completion_tokens": sum(c["completion_tokens"] for c in calls + extra_calls),
            "seconds": round(time.perf_counter() - start, 4), "reused": False}


async def _call(server: StageServer, stage: StageConfig, name: str, messages: Messages,
                params: GenParams, task: ProgressTask, repeat: int = 0) -> dict[str, Any]:
    """One slot of a stage, served by its model or a fallback (``serving.StageServer``). ``model`` is the model that
    answered, ``asked`` the stage's own, ``serving`` every attempt (retries, the out-of-memory retry, fallbacks);
    ``params`` has the seed a repeated model was sent (``repeat``: the slots before this one naming it)."""
    start = time.perf_counter()
    completion, served_by, serving = await server.serve(stage.name, name, stage.fallbacks, messages, params, repeat)
    task.advance()
    model_cfg = server.llm_cfg.models[served_by]
    sent = server.repeat_params(served_by, params, repeat)
    seed = {"seed": sent.seed} if sent is not params else {}
    return {"model": served_by, "asked": name, "provider_model": model_cfg.model, "text": completion.text,
            "params": {**model_cfg.params, **stage.params, **seed}, "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens, "finish_reason": completion.finish_reason,
            "seconds": round(time.perf_counter() - start, 4), "serving": serving}


def _record_failure(run_dir: RunDir, stage: str, index: int, position: int, exc: StageFailed) -> None:
    """What happened to a stage no model served: in session.json (``failed_stage``: ``index`` its step number, from 1
    in run order; ``position`` its place in ``base_pipeline.stages``, from 0; ``routed``: every model asked was routed,
    for `show`'s hint) and as a stage_failed event."""
    session = run_dir.path / "session.json"
    data = json.loads(session.read_text(encoding="utf-8")) if session.is_file() else {}
    data["failed_stage"] = {"name": stage, "index": index, "position": position, "error": exc.message,
                            "serving": exc.serving, "routed": exc.routed}
    run_dir.write_json("session.json", data)
    run_dir.event("stage_failed", stage=stage, index=index, outcome=exc.kind, error=exc.message)


def _save_snapshots(run_dir: RunDir, models_cfg: ModelsConfig, pipeline_cfg: PipelineConfig,
                    routed: LLMConfig | None) -> None:
    """Both configs as resolved (absolute model paths), each opening with the command that reads it: config.yaml
    (the pipeline, as every run folder's config) and models.yaml (and llm.yaml for routed models)."""
    folder = run_dir.path.resolve()  # absolute: the re-run line works from any folder
    llm_flag = f" --llm {folder / 'llm.yaml'}" if routed is not None else ""
    run_dir.write_text("models.yaml", f"# agentlab models check {folder / 'models.yaml'}\n"
                       + dump_yaml(models_cfg.resolved().model_dump(mode="json")))
    run_dir.rerun = (f"pipeline run --models {folder / 'models.yaml'} -c {{config}}{llm_flag} --input-file "
                     f"{folder / 'input.txt'}")
    run_dir.save_config(pipeline_cfg)
    if routed is not None:
        run_dir.write_text("llm.yaml", f"# agentlab llm-bench -c {folder / 'llm.yaml'}\n"
                           + dump_yaml(redact(absolute_paths(routed).model_dump(mode="json"))))
