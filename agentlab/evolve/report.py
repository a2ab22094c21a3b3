"""report.md of `agentlab evolve run`: fitness per generation (fitness.png), the lineage tree, every individual,
and the best adapter against its ancestors on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.core.runs import save_figure


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def fitness_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Best and mean fitness per generation, and the mean of each fitness part."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = results["history"]
    gens = [h["generation"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(gens, [h["best"]["fitness"] for h in history], marker="o", label="best")
    left.plot(gens, [h["mean"]["fitness"] for h in history], marker="s", label="mean")
    left.set_title("fitness")
    for part, marker in (("task", "o"), ("coop", "^"), ("novelty", "s")):
        right.plot(gens, [h["mean"][part] for h in history], marker=marker, label=f"mean {part}")
    right.plot(gens, [h["best"]["task"] for h in history], marker="o", linestyle="--", label="best's task")
    right.set_title("fitness parts")
    for ax in (left, right):
        ax.set_xlabel("generation")
        ax.set_xticks(gens)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def lineage_mermaid(individuals: dict[str, dict[str, Any]]) -> list[str]:
    """A Mermaid flowchart (GitHub renders it): parent --weight--> child."""
    lines = ["```mermaid", "flowchart LR"]
    for m, ind in individuals.items():
        label = f"{m}<br/>task {_num(ind.get('task'))}" if ind.get("task") is not None else f"{m}<br/>{ind['state']}"
        lines.append(f'  {_node(m)}["{label}"]')
    for m, ind in individuals.items():
        for parent, w in zip(ind.get("parents") or [], ind.get("weights") or [], strict=False):
            lines.append(f"  {_node(parent)} -- {w:.2f} --> {_node(m)}")
    lines.append("```")
    return lines


def _node(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def lineage_text(individuals: dict[str, dict[str, Any]], who: str, depth: int = 0) -> list[str]:
    """``who`` and its ancestors as an indented tree."""
    ind = individuals[who]
    weights = ind.get("weights") or []
    line = f"{'    ' * depth}- {who} (gen {ind['generation']}, task {_num(ind.get('task'))}"
    line += ", seed)" if ind.get("origin") == "seed" else f", rank {ind.get('rank')})"
    out = [line]
    for parent, w in zip(ind.get("parents") or [], weights, strict=False):
        sub = lineage_text(individuals, parent, depth + 1)
        sub[0] = sub[0].replace(f"- {parent} ", f"- {parent} x {w:.2f} ", 1)
        out += sub
    return out


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def headline(results: dict[str, Any]) -> list[str]:
    """The best evolved against each seed and each baseline on the test split: accuracy with its 95% Wilson
    interval, the per-token log-likelihood, and the best's paired accuracy difference with its 95% interval."""
    final = results["final"]
    rows = [r for r in final["rows"] if r["relation"] == "best" or r["relation"] == "seed"
            or r["relation"].startswith("baseline")]
    if not rows:
        return []
    best = rows[0]
    others = [r for r in rows[1:] if "best_minus" in r]
    beaten = sum(r["best_minus"]["mean"] > 0 for r in others)
    lines = ["## Headline: the best evolved against every seed and baseline (test split)", "",
             f"{final['questions']} test questions that neither selection nor the final pick saw. The best evolved "
             f"({best['id']}, search `{results.get('search', 'ga')}`) is ahead of {beaten} of {len(others)}; "
             "difference: the best's accuracy minus the other's, in points, with its paired 95% interval "
             "(significant when it excludes 0).", "",
             "| adapter | relation | test accuracy | 95% CI | per-token log-lik | best minus it (points) | 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r.get("best_minus")
        ll = f"{r['loglik']:.3f}" if r.get("loglik") is not None else "-"
        lines.append(f"| {r['id']} | {r['relation']} | {r['correct']}/{r['total']} = {r['accuracy']:.3f} | "
                     f"{r['ci'][0]:.3f}-{r['ci'][1]:.3f} | {ll} | "
                     + (f"{_pct(diff['mean'])} | {_pct(diff['ci'][0])} to {_pct(diff['ci'][1])} |" if diff
                        else "- | - |"))
    return [*lines, ""]


def _recommended(results: dict[str, Any]) -> list[str]:
    rec = results.get("recommended")
    if not rec or rec["id"] == results["best"]["id"]:
        return []
    return [f"**Recommended: {rec['id']}** ({rec['relation']}): its validation score {_num(rec['validation'])} beats "
            f"the best evolved's; the adapter to use is `{rec['path']}`.", ""]


def render_report(results: dict[str, Any], plot: str | None) -> str:
    ind = results["individuals"]
    best = results["best"]
    w = results["fitness_weights"]
    ref = results["reference"]
    score = results.get("score", "accuracy")
    task_name = "per-token log-likelihood of the gold answer" if score == "loglik" else "task accuracy"
    coop = (f"Cooperation: the debate's accuracy with the individual in place of {ref['replaced']} minus the seeds' "
            f"own debate ({ref['debate_accuracy']:.3f})." if ref.get("debate_accuracy") is not None else
            "No cooperation debate (its weight is 0).")
    q = results["questions"]
    lines = [
        "# evolve", "",
        f"Search `{results.get('search', 'ga')}`; population {results['population']}, {results['generations']} "
        f"generations after gen_0, base {results['base_model']}; {q['fitness']} fitness, {q.get('validation', 0)} "
        f"validation and {q['test']} test questions; {results['seconds']:.0f} s.", "",
        f"Fitness = {w['task']:g} x {task_name} + {w['coop']:g} x cooperation + {w['novelty']:g} x novelty "
        f"({results['novelty']}). {coop} The final pick is the child with the best validation score.", "",
        f"**Best: {best['id']}**, fitness {_num(best['fitness'])} (task {_num(best['task'])}, validation "
        f"{_num(best.get('validation'))}): `{ind[best['id']]['path']}`", "", *_recommended(results),
        *headline(results)]
    if results.get("baselines"):
        lines += ["## Baselines", "", "| baseline | children | best (validation) | its validation | its fitness-split "
                  "task |", "|---|---|---|---|---|"]
        picks = {r["relation"].removeprefix("baseline "): r["id"] for r in results["final"]["rows"]
                 if r["relation"].startswith("baseline")}
        for name, ids in results["baselines"].items():
            pick = picks.get(name)
            lines.append(f"| {name} | {len(ids)} | {pick or '-'} | "
                         f"{_num(ind[pick].get('validation')) if pick else '-'} | "
                         f"{_num(ind[pick].get('task')) if pick else '-'} |")
        lines.append("")
    if plot:
        lines += [f"![fitness per generation]({plot})", ""]
    lines += ["## Generations", "",
              "| gen | best | best fitness | mean fitness | mean task | mean coop | mean novelty |",
              "|---|---|---|---|---|---|---|"]
    for h in results["history"]:
        m = h["mean"]
        lines.append(f"| {h['generation']} | {h['best']['id']} | {h['best']['fitness']:.3f} | {m['fitness']:.3f} | "
                     f"{m['task']:.3f} | {m['coop']:+.3f} | {m['novelty']:.3f} |")
    final = results["final"]
    lines += ["", "## Every adapter scored on the test split", ""]
    if final["rows"]:
        lines += [f"{final['questions']} questions that selection never saw (accuracy, 95% Wilson interval).", "",
                  "| adapter | relation | gen | fitness-split task | test accuracy | 95% CI |",
                  "|---|---|---|---|---|---|"]
        for r in final["rows"]:
            lines.append(f"| {r['id']} | {r['relation']} | {r['generation']} | {_num(r['fitness_split'])} | "
                         f"{r['correct']}/{r['total']} = {r['accuracy']:.3f} | {r['ci'][0]:.3f}-{r['ci'][1]:.3f} |")
    else:
        lines.append("No test split (task.test_questions: 0).")
    lines += ["", "## Lineage of the best", "", *lineage_text(ind, best["id"]), "", "## Lineage tree", "",
              *lineage_mermaid(ind), "", "## Individuals", "",
              "| id | gen | parents (weights) | rank | discarded energy | task | coop | probe change | s | state |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m, i in ind.items():
        parents = ", ".join(f"{p} ({w:.2f})" for p, w in zip(i.get("parents") or [], i.get("weights") or [],
                                                               strict=False)) or "seed"
        energy = f"{i['discarded_energy']:.2g}" if i.get("discarded_energy") is not None else "-"
        if i.get("origin") not in (None, "seed", "blend"):
            parents = f"{i['origin']}: " + (f"density {i['density']}, scale {i['scale']}" if i.get("density")
                                             else ", ".join(f"{w:.2f}" for w in i.get("weights") or []))
        state = i["state"] if not i.get("error") else f"{i['state']}: {i['error']}"
        lines.append(f"| {m} | {i['generation']} | {parents} | {i.get('rank')} | {energy} | {_num(i.get('task'))} | "
                     f"{_num(i.get('coop'), True)} | {i.get('probe_change') or '-'} | {i.get('seconds') or '-'} | "
                     f"{state} |")
    if ref.get("debate_accuracy") is not None:
        seeds = ", ".join(f"{k} {v:.3f}" for k, v in ref["accuracy"].items())
        lines += ["", f"Seeds alone on the fitness split: {seeds}; their debate: {ref['debate_accuracy']:.3f}.", ""]
    return "\n".join(lines)
