"""report.md and pareto.png of `agentlab compress`: the recommendation against the base model, the Pareto plots
(perplexity and accuracy against speedup and against size; the goal's front highlighted, the base model marked),
every experiment, and the energy spent with how it was obtained (measured or estimated)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.compress.objective import Goal
from agentlab.compress.scoring import feasible_front
from agentlab.core.gpu import NO_GPU
from agentlab.core.gpu import describe as describe_gpu
from agentlab.core.runs import save_figure
from agentlab.core.search.agent import agent_story
from agentlab.core.search.share import contribution_lines
from agentlab.core.search.study import SERVER_URLS

if TYPE_CHECKING:
    from agentlab.compress.config import CompressConfig

_PANELS = (("speedup", "perplexity"), ("speedup", "accuracy"), ("size", "perplexity"), ("size", "accuracy"))
_UNITS = {"speedup": "x base decode tok/s", "size": "MB on disk", "perplexity": "eval text", "accuracy": "task",
          "memory": "MB", "latency": "ms per token", "compression": "x base size", "energy": "kWh", "co2e": "kg"}
FIGURES = ("speedup", "accuracy", "perplexity", "size", "compression")  # the derived figures planners are shown
BASE_FIGURES = ("perplexity", "accuracy", "decode_tps", "size_mb")  # the base model's measurements they are shown


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"


def figures_line(derived: dict[str, Any]) -> str:
    """The ``FIGURES`` of a record's ``derived`` metrics, in their order, "-" for a missing value."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in derived.items() if k in FIGURES)


def outcome_line(record: dict[str, Any]) -> str:
    """A finished experiment as the console prints it: its index, label and planner, then its figures (the base's
    own for the base model), the verdict against the goal, and its memory and GPU (measured now, or read back from
    the workspace), or why it failed."""
    reused = ", reused from the workspace" if record.get("reused") else ""  # proposed_by: the llm planner's warm-up
    head = f"[{record.get('index')}] {record.get('label')} ({record.get('proposed_by') or record['planner']}{reused})"
    if record.get("state") != "done":
        return f"{head}: failed: {record.get('error')}"
    d, m = record.get("derived") or {}, record.get("metrics") or {}
    line = (f"{head}: speedup {fmt(d.get('speedup'))}x, perplexity {fmt(d.get('perplexity'))}, accuracy "
            f"{fmt(d.get('accuracy'))}, size {fmt(d.get('size'))} MB")
    if record.get("index") != 0:
        line += "; meets the goal" if record.get("feasible") else f"; breaks {', '.join(record.get('broken') or [])}"
    if "gpu" in m:  # a reused record's too: the stored measurement, on this device (part of the workspace key)
        line += f"; memory {fmt(m.get('memory_mb'))} MB; GPU: {describe_gpu(m)}"
    return line


def base_line(metrics: dict[str, Any]) -> str:
    """The base model's ``BASE_FIGURES`` measured in ``metrics``, "-" for a missing one."""
    return ", ".join(f"{k} {fmt(metrics.get(k))}" for k in BASE_FIGURES)


def write_plot(goal: Goal, records: list[dict[str, Any]], path: Path) -> Path | None:
    """pareto.png, or None when matplotlib is missing or nothing finished."""
    done = [r for r in records if r.get("state") == "done"]
    if not done:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    on_front = {done[i]["index"] for i in feasible_front(goal, done)}
    two = tuple(o.metric for o in goal.objectives[:2])  # two objectives: their front itself, the first panel
    pair = next((p for p in _PANELS if set(p) == set(two)), two[::-1]) if len(two) == 2 else None
    panels = [*([pair] if pair else []), *(p for p in _PANELS if p != pair)]
    fig, axes = plt.subplots((len(panels) + 1) // 2, 2, figsize=(10, 4 * ((len(panels) + 1) // 2)), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (x, y) in zip(axes.flat, panels, strict=False):
        points: dict[str, tuple[float, float, list[str]]] = {}  # (nearly) coinciding results: one label, "1,3"
        for r in done:
            px, py = r["derived"].get(x), r["derived"].get(y)
            if px is None or py is None:
                continue
            base, best = r["index"] == 0, r["index"] in on_front
            ax.scatter(px, py, marker="*" if base else "o", s=160 if base else 40,
                       c="black" if base else ("tab:red" if best else "tab:blue"), zorder=3)
            points.setdefault(f"{px:.2g} {py:.2g}", (px, py, []))[2].append(str(r["index"]))
        for px, py, names in points.values():
            ax.annotate(",".join(names), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for axis, metric, values in (("x", x, [p[0] for p in points.values()]),
                                     ("y", y, [p[1] for p in points.values()])):
            ax.set(**{f"{axis}label": f"{metric} ({_UNITS[metric]})"})
            if metric == "perplexity" or (values and min(values) > 0 and max(values) > 10 * min(values)):
                ax.set(**{f"{axis}scale": "log"})  # one 278x speedup squashed the others on a linear axis
        ax.grid(alpha=0.3)
    fig.suptitle(f"{goal.describe()}\n* base model, red: Pareto front of the goal among the results meeting its "
                 "constraints, numbers: experiment index", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def _row(r: dict[str, Any], front: set[int]) -> str:
    d, m = r.get("derived") or {}, r.get("metrics") or {}
    state = r.get("state", "done")
    flags = "failed: " + (r.get("error") or "") if state == "failed" else ("yes" if r.get("feasible") else "no")
    return (f"| {r['index']} | {r['label']}{' (front)' if r['index'] in front else ''} | "
            f"{r.get('proposed_by') or r.get('planner', '')} | "
            f"{fmt(d.get('speedup'))} | {fmt(d.get('perplexity'))} | {fmt(d.get('accuracy'))} | {fmt(d.get('size'))} | "
            f"{fmt(d.get('memory'))} | {fmt(m.get('co2e_kg'))} | {m.get('energy_mode', '-')} | "
            f"{'reused' if r.get('reused') else 'ran'} | {flags} |")


def _recommendation(rec: dict[str, Any]) -> list[str]:
    best, base = rec.get("best"), rec.get("base") or {}
    if best is None:
        return ["No experiment finished: nothing to recommend."]
    name, broken = f"**{rec['label']}** (experiment {rec['index']})", ", ".join(rec["broken"])
    head = name + ("" if rec["feasible"] else f": **no experiment met the constraints**; this one is the closest (it "
                   f"breaks {broken})")
    if keep := rec.get("keep_base"):  # the base model is the recommendation, the experiment shown to compare
        head = "**Keep the base model**: it meets the constraints and " + (
            f"no experiment that does is better on the goal; the best, to compare: {name}" if rec["feasible"] else
            f"no experiment does; the closest, to compare: {name} (it breaks {broken})")
    lines = [head, "", f"| metric | base model | {'that experiment' if keep else 'recommended'} |", "|---|---|---|"]
    bm, rm = base.get("metrics") or {}, best.get("metrics") or {}
    for key, name in (("perplexity", "perplexity"), ("accuracy", "accuracy"), ("decode_tps", "decode tokens/s"),
                      ("prefill_tps", "prefill tokens/s"), ("size_mb", "size (MB)"), ("memory_mb", "memory (MB)"),
                      ("gpu_memory_mb", "peak GPU memory (MB)"), ("gpu_power_w", "mean GPU power (W)"),
                      ("nonzero_params", "non-zero parameters")):
        lines.append(f"| {name} | {_cell(bm, key)} | {_cell(rm, key)} |")
    d = best.get("derived") or {}
    lines += ["", f"Speedup {fmt(d.get('speedup'))}x, compression {fmt(d.get('compression'))}x (against the base "
              "model measured in the same way, in this run or the workspace record it reused).", "",
              "Config:", "", "```json", json.dumps(rec.get("experiment"), indent=2), "```", ""]
    file = rec.get("model_file")
    if rec["index"] == 0 or keep:
        lines.append("Model: the base model itself, unchanged.")
    elif file is None:
        lines.append("Model: not kept (an int8-only experiment, one off the front, or `checkpoints_mb: 0`); run "
                     "its config again to rebuild it.")
    elif file.endswith(".gguf"):
        lines.append(f"Model: `{file}` (llama.cpp loads it; `agentlab models export-hf` makes a transformers folder "
                     "of it).")
    else:
        lines.append(f"Model: `{file}`, the pruned (and recovered) model before its int8 quantization, saved whole: "
                     "`torch.load(path, weights_only=False)`, then quantize it as the config says.")
    return lines


def _cell(metrics: dict[str, Any], key: str) -> str:
    """A metric for the table; a GPU figure measured on a machine without one reads "no GPU", not "-"."""
    if key.startswith("gpu_") and metrics.get("gpu") == NO_GPU:
        return NO_GPU
    return fmt(metrics.get(key))


def shared_search(cfg: CompressConfig) -> bool:
    """Whether the run's study is on a database server, where workers run one search (``search.storage``):
    a run on its own study.db, or on an SQLite or journal study other runs share with their own budgets, ran its
    experiments itself, however often it was resumed (each resume is another process, not another worker)."""
    storage = cfg.search.storage
    return isinstance(storage, str) and storage.startswith(SERVER_URLS)


def render_report(cfg: CompressConfig, goal: Goal, records: list[dict[str, Any]], results: dict[str, Any],
                  events: list[dict[str, Any]] | None = None) -> str:
    """report.md; ``events``: the run's events (the agent planner's steps, told as a table)."""
    energy, counts = results["energy"], results["counts"]
    front = set(results["front"])
    here = "by the workers of the shared search" if shared_search(cfg) else "here"
    lines = [f"# agentlab compress: {cfg.model}", "", f"Goal: {goal.describe()}"
             + (f' (from "{cfg.objective}")' if cfg.objective else ""), "",
             f"Planner: {cfg.search.planner}. Stopped: {results['stop_reason']}.", "",
             f"Experiments: {counts['experiments']} ({counts['ran']} run {here} including the base model, "
             f"{counts['reused']} reused from the workspace, {counts['failed']} failed).", "",
             "## Recommended", "", *_recommendation({**results["recommended"], "base": results["base"]}), ""]
    if results.get("plot"):
        lines += ["## Pareto plots", "", f"![pareto]({results['plot']})", ""]
    lines += ["## Experiments", "", "| # | experiment | planner | speedup | perplexity | accuracy | size MB "
              "| memory MB | kg CO2e | energy | source | meets constraints |", "|" + "---|" * 12,
              *(_row(r, front) for r in records), ""]
    budget = f" of a {fmt(energy['budget_kg'])} kg budget" if energy["budget_kg"] is not None else ""
    lines += ["## Energy", "", f"Spent by the experiments run {here}: {fmt(energy['energy_kwh'])} kWh, "
              f"{fmt(energy['co2e_kg'])} kg CO2e{budget}; energy mode: **{energy['mode']}** (codecarbon: "
              "'measured' only where a power meter was read, 'estimated' from CPU TDP and load otherwise). Reused "
              "experiments cost nothing in this run.", ""]
    block = results.get("llm_contribution")
    if block:
        lines += [*contribution_lines(block, "hypervolume of the feasible experiments")[1:], ""]
    notes = [r for r in records if r.get("note")]
    if notes:
        lines += ["## Planner notes", "", *(f"- {r['index']} ({r.get('proposed_by') or r['planner']}{_origin(r)}): "
                                            f"{r['note']}" for r in notes), ""]
    lines += agent_story(results.get("agent"), events or [], unit="experiment")
    return "\n".join(lines)


def _origin(record: dict[str, Any]) -> str:
    origin = record.get("origin")
    if not origin:
        return ""
    return f", {origin}" + (f" {record['choice']} of {record['candidates']}" if origin in ("picked", "own") else "")
