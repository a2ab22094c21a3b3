"""report.md of `agentlab evolve run`: fitness per generation (fitness.png), the lineage tree, every individual,
and the best adapter against its ancestors on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.core.files import counted
from agentlab.core.runs import save_figure


def _session(results: dict[str, Any]) -> str:
    """After the run's seconds (all its sessions), the last session's when a resume scored only part of the run."""
    now, session = results.get("scored_this_session"), results.get("session_seconds")
    if now is None or session is None or now >= len(results["individuals"]):
        return ""
    return f" in all (the last session: {session:.0f} s, {now} scored)"


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _seed_best(results: dict[str, Any]) -> bool:
    """The best is a seed: no child of the search could be scored (it is never one otherwise)."""
    return (results["individuals"].get(results["best"]["id"]) or {}).get("origin") == "seed"


def seeds_ahead(results: dict[str, Any]) -> str | None:
    """A line when the last generation's best fitness is a seed's, not the best evolved's (no child beat the seeds;
    without a validation split "best evolved" was that seed), else None."""
    history, best = results.get("history") or [], results["best"]
    top = history[-1]["best"] if history else None
    if top is None or top["id"] == best["id"] or _seed_best(results) or \
            (results["individuals"].get(top["id"]) or {}).get("origin") != "seed":
        return None
    return (f"no child beat the seeds on fitness: the seed {top['id']} leads the last generation (fitness "
            f"{_num(top['fitness'])}, the best evolved {best['id']} {_num(best['fitness'])}); seeds are not "
            "candidates for the recommendation")


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
    line = f"{'    ' * depth}- {who} (gen {ind['generation']}, task {_num(ind.get('task'))}"
    line += ", seed)" if ind.get("origin") == "seed" else f", rank {ind.get('rank')})"
    out = [line]
    for parent, w in zip(ind.get("parents") or [], ind.get("weights") or [], strict=False):
        sub = lineage_text(individuals, parent, depth + 1)
        sub[0] = sub[0].replace(f"- {parent} ", f"- {parent} x {w:.2f} ", 1)
        out += sub
    return out


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}"


def _accuracy(row: dict[str, Any], between: str = " | ") -> str:
    """A test row's accuracy, then its 95% Wilson interval (by default as two table cells)."""
    return f"{row['correct']}/{row['total']} = {row['accuracy']:.3f}{between}{row['ci'][0]:.3f}-{row['ci'][1]:.3f}"


def headline(results: dict[str, Any]) -> list[str]:
    """The best evolved against each seed and each baseline on the test split: accuracy with its 95% Wilson
    interval, the per-token log-likelihood, and the best's paired accuracy difference with its 95% interval."""
    final = results["final"]
    rows = [r for r in final["rows"] if r["relation"] in ("best", "seed") or r["relation"].startswith("baseline")]
    if not rows:
        return []
    best = rows[0]
    others = [r for r in rows[1:] if "best_minus" in r]
    beaten = sum(r["best_minus"]["mean"] > 0 for r in others)
    lines = ["## Headline: the best evolved against every seed and baseline (test split)", "",
             f"{counted(final['questions'], 'test question')} that neither selection nor the final pick saw. The best "
             f"evolved ({best['id']}, search `{results.get('search', 'ga')}`) is ahead of {beaten} of {len(others)}; "
             "difference: the best's accuracy minus the other's, in points, with its paired 95% interval "
             "(significant when it excludes 0).", "",
             "| adapter | relation | test accuracy | 95% CI | per-token log-lik | best minus it (points) | 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = r.get("best_minus")
        ll = f"{r['loglik']:.3f}" if r.get("loglik") is not None else "-"
        lines.append(f"| {r['id']} | {r['relation']} | {_accuracy(r)} | {ll} | "
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
        f"generation{'' if results['generations'] == 1 else 's'} after gen_0, base {results['base_model']}; "
        f"{q['fitness']} fitness, {q.get('validation', 0)} validation and {q['test']} test questions; "
        f"{results['seconds']:.0f} s{_session(results)}.", "",
        f"Fitness = {w['task']:g} x {task_name} + {w['coop']:g} x cooperation + {w['novelty']:g} x novelty "
        f"({results['novelty']}). {coop} " + ("The final pick is the child with the best validation score." if
                                              q.get("validation") else "No validation split: the final pick is the "
                                              "child with the best fitness in the last generation, a baseline's its "
                                              "best fitness-split task score."), "",
        f"**Best{' (a seed: no child was scored)' if _seed_best(results) else ''}: {best['id']}**, fitness "
        f"{_num(best['fitness'])} (task {_num(best['task'])}, validation {_num(best.get('validation'))}): "
        f"`{ind[best['id']]['path']}`", "", *([f"Note: {ahead}.", ""] if (ahead := seeds_ahead(results)) else []),
        *_recommended(results),
        *headline(results)]
    if results.get("baselines"):
        lines += ["## Baselines", "", "| baseline | children | best (validation) | its validation | its fitness-split "
                  "task |", "|---|---|---|---|---|"]
        picks = {r["relation"].removeprefix("baseline "): r["id"] for r in results["final"]["rows"]
                 if r["relation"].startswith("baseline")}
        for name, ids in results["baselines"].items():
            pick = picks.get(name)
            chosen = ind[pick] if pick else {}
            lines.append(f"| {name} | {len(ids)} | {pick or '-'} | {_num(chosen.get('validation'))} | "
                         f"{_num(chosen.get('task'))} |")
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
        lines += [f"{counted(final['questions'], 'question')} that selection never saw (accuracy, 95% Wilson "
                  "interval).", "",
                  "| adapter | relation | gen | fitness-split task | test accuracy | 95% CI |",
                  "|---|---|---|---|---|---|"]
        for r in final["rows"]:
            lines.append(f"| {r['id']} | {r['relation']} | {r['generation']} | {_num(r['fitness_split'])} | "
                         f"{_accuracy(r)} |")
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


# ---------------------------------------------------------------------- the console


def task_meaning(score: str, questions: int | None = None) -> str:
    """What the task part of the fitness measures, for a reader of the console."""
    what, scale = (("the mean per-token log-likelihood of the gold answers", "<= 0, nearer 0 is better")
                   if score == "loglik" else ("greedy accuracy", "0-1"))
    return f"{what}{f' on {questions} fitness questions' if questions else ''}, {scale}"


def fitness_line(weights: dict[str, float], score: str, questions: int, novelty: str = "answers") -> str:
    """The fitness the generations are ranked by, in one line (said when a run starts)."""
    parts = [f"{weights['task']:g} x task"]
    if weights.get("coop"):
        parts.append(f"{weights['coop']:g} x cooperation (the seeds' debate with it, minus theirs alone)")
    if weights.get("novelty"):
        parts.append(f"{weights['novelty']:g} x novelty (distance of its {novelty} to the others)")
    return f"fitness = {' + '.join(parts)}; task = {task_meaning(score, questions)}; higher fitness is better"


def generation_line(k: int, best: dict[str, Any], mean: dict[str, Any], weights: dict[str, float]) -> str:
    """Generation ``k`` on the console: its best individual's fitness and its parts (a part of weight 0, which
    counts for nothing, left out as ``fitness_line`` leaves it out), and the mean fitness."""
    parts = [f"task {best['task']:.3f}"] + [f"{key} {best[key]:{spec}}" for key, spec in
                                            (("coop", "+.2f"), ("novelty", ".2f")) if weights.get(key)]
    return f"gen {k}: best {best['id']} fitness {best['fitness']:.3f} ({', '.join(parts)}); mean fitness " \
        f"{mean['fitness']:.3f}"


def console_lines(results: dict[str, Any]) -> list[str]:
    """The end of `evolve run` on the console: the best evolved (its fitness explained), what is recommended and
    why, its test score beside the best seed's and the best baseline's, and whether validation and test agree."""
    ind = results["individuals"]
    best = results["best"]
    by_validation = bool(results.get("questions", {}).get("validation"))
    chooser = ("fitness-split task score" if not by_validation else
               "validation log-likelihood" if results.get("score") == "loglik" else "validation accuracy")

    def chosen_by(m: str) -> float | None:
        """The value the recommendation compares: the validation score, else the fitness-split task score."""
        value = ind[m].get("validation") if by_validation else ind[m].get("task")
        return float(value) if value is not None else None

    w = results.get("fitness_weights") or {}
    # cooperation is a change (signed); novelty a distance
    weighted = [key for key in ("coop", "novelty") if w.get(key) and best.get(key) is not None]
    parts = [f"task {_num(best['task'])}"] + [f"{key} {_num(best.get(key), key == 'coop')}" for key in weighted]
    label = (f"no child was scored: the best is the seed {best['id']}" if _seed_best(results) else
             f"best evolved ({results.get('search', 'ga')}): {best['id']}")
    lines = [f"{label}, fitness {_num(best['fitness'])} "
             f"({', '.join(parts)}; task: {task_meaning(results.get('score', 'accuracy'))}), validation "
             f"{_num(best.get('validation'))}"]
    seed_note = seeds_ahead(results)
    if seed_note:
        lines.append(f"note: {seed_note}")
    rec = results.get("recommended") or {"id": best["id"], "relation": "best evolved", "path": ind[best["id"]]["path"]}
    rows = results["final"]["rows"]
    picks = [r for r in rows if r["relation"].startswith("baseline")]
    rivals = [f"{r['relation'].removeprefix('baseline ')} {_num(chosen_by(r['id']))}" for r in picks
              if r["id"] != rec["id"]]
    if rec["id"] != best["id"]:
        rivals.insert(0, f"the best evolved {_num(chosen_by(best['id']))}")
    lines.append(f"recommended: {rec['id']} ({rec['relation']}): the highest {chooser} ({_num(chosen_by(rec['id']))})"
                 + (f", against {', '.join(rivals)}" if rivals else "") + "; the candidates are the best evolved "
                 f"and each baseline's pick (not the seeds), and the test split never chooses. Adapter: {rec['path']}")
    by_id = {r["id"]: r for r in rows}
    mine = by_id.get(rec["id"])
    if mine is None:
        return lines + ([] if rows else ["no test split (task.test_questions: 0)"])
    shown = [("recommended", mine)]
    if rec["id"] != best["id"] and best["id"] in by_id:
        shown.append(("best evolved", by_id[best["id"]]))
    seeds = [r for r in rows if r["relation"] == "seed"]
    if seeds:
        shown.append(("best seed", max(seeds, key=_on_test)))
    others = [r for r in picks if r["id"] != rec["id"]]
    if others:
        label = "best other baseline" if rec["relation"].startswith("baseline") else "best baseline"
        shown.append((label, max(others, key=_on_test)))
    lines.append(f"test split, {counted(results['final']['questions'], 'question')} no selection saw (greedy "
                 "accuracy; every adapter in report.md):")
    lines += [f"  {label}: {r['id']} ({'best evolved' if r['relation'] == 'best' else r['relation']}) "
              f"{_accuracy(r, ' (95% CI ')}), validation {_num(r.get('validation'))}" for label, r in shown]
    ahead = [(label, r) for label, r in shown[1:] if r["accuracy"] > mine["accuracy"]]
    if not ahead:
        lines.append("validation and test agree: none of these scores higher than the recommendation on test")
    mine_value = chosen_by(mine["id"])
    for label, r in ahead:
        diff = r.get("best_minus") if mine["relation"] == "best" else None  # the best's paired difference to it
        noise = ""
        if diff:
            low, high = -100 * diff["ci"][1], -100 * diff["ci"][0]
            noise = f" (paired 95% CI {low:+.1f} to {high:+.1f}" + ("; it includes 0)" if low <= 0 <= high else ")")
        value, points = chosen_by(r["id"]), f"{100 * (r['accuracy'] - mine['accuracy']):+.1f} points{noise}"
        if value is not None and mine_value is not None and value < mine_value:
            lines.append(f"validation and test disagree: the {label} {r['id']} is below the recommendation on "
                         f"{chooser} ({_num(value)} vs {_num(mine_value)}) but above it on test by {points}")
        else:
            why = "seeds are not candidates for the recommendation" if r["relation"] == "seed" else "a tie"
            lines.append(f"note: the {label} {r['id']} is above the recommendation on test by {points} and not "
                         f"below it on {chooser} ({_num(value)} vs {_num(mine_value)}): {why}")
    return lines


def _on_test(row: dict[str, Any]) -> tuple[float, float]:
    """The best on test, a tie broken by the validation score (log-likelihood), not by the rows' order."""
    value = row.get("validation")
    return row["accuracy"], float(value) if value is not None and value == value else float("-inf")
