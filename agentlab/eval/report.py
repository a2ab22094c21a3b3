"""report.md of `agentlab eval`: the models x tasks table (metric and stderr), each adapter minus the base on the
same items (paired), the probe, and scores.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.core.runs import save_figure
from agentlab.eval.config import EvalConfig


def _cell(score: dict[str, Any] | None) -> str:
    if score is None:
        return "-"
    stderr = score.get("stderr")
    return f"{score['value']:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")


def _columns(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(task, metric, filter) of every score, in the order lm-eval reported them for the first row."""
    out: list[tuple[str, str, str]] = []
    for scores in results["rows"].values():
        for s in scores:
            key = (s["task"], s["metric"], s["filter"])
            if key not in out:
                out.append(key)
    return out


def _label(task: str, metric: str, filt: str) -> str:
    return f"{task} {metric}" + ("" if filt == "none" else f" ({filt})")


def render_report(cfg: EvalConfig, results: dict[str, Any], plot: bool) -> str:
    columns = _columns(results)
    limit = f", the first {cfg.limit} items of each task" if cfg.limit else ""
    shots = f"{cfg.num_fewshot}-shot" if cfg.num_fewshot is not None else "each task's own few-shot setting"
    lines = [
        "# agentlab eval" if cfg.name == "eval" else f"# agentlab eval: {cfg.name}", "",
        f"`{cfg.model}` and {len(results['rows']) - 1} adapter(s) on lm-evaluation-harness "
        f"{results.get('lm_eval_version') or ''} tasks {', '.join(f'`{t}`' for t in cfg.tasks)}{limit}; {shots}, chat "
        f"template {'on' if results['chat_template'] else 'off'}. Each cell: the metric ± its standard error.", "",
        "| model | " + " | ".join(_label(*c) for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row, scores in results["rows"].items():
        by = {(s["task"], s["metric"], s["filter"]): s for s in scores}
        lines.append(f"| {row} | " + " | ".join(_cell(by.get(c)) for c in columns) + " |")
    lines.append("")
    adapters = {row: path for row, path in results["adapters"].items() if row in results["rows"]}  # row -> folder
    if adapters:  # two folders of one name are rows a and a-2: which is which
        lines += ["Each adapter row is named after its folder (a second folder of the same name: `-2`, `-3`, ...):", ""]
        lines += [f"- {row}: `{path}`" for row, path in adapters.items()]
        lines.append("")
    if plot:
        lines += ["![scores](scores.png)", ""]
    if results["paired"]:
        lines += ["## Each adapter minus the base, on the same items", "",
                  "Paired over the items both scored: the mean difference ± its standard error (of the per-item "
                  "differences), and on how many items the adapter did better / worse.", "",
                  "| adapter | task | metric | difference | items better / worse / n |", "|---|---|---|---|---|"]
        for name, comparisons in results["paired"].items():
            for p in comparisons:
                stderr = f" ± {p['stderr']:.3f}" if p["stderr"] is not None else ""
                metric = p["metric"] + ("" if p["filter"] == "none" else f" ({p['filter']})")
                lines.append(f"| {name} | {p['task']} | {metric} | {p['diff']:+.3f}{stderr} | "
                             f"{p['better']} / {p['worse']} / {p['n']} |")
        lines += ["", "## The adapters were applied", "",
                  f"Before scoring, each adapter changed the base model's next-token logits on the probe "
                  f"\"{cfg.probe}\" by at least {cfg.min_logit_change:g}; after scoring, its per-sample "
                  "log-likelihoods differed from the base's (largest change per task):", ""]
        for name, changes in results["applied"].items():
            probe = results["probe"].get(name)
            moved = ", ".join(f"{task} {change:.3g}" for task, change in changes.items())
            lines.append(f"- {name}: probe {probe:.3g}; " + moved if probe is not None else f"- {name}: {moved}")
        lines.append("")
    lines += ["## Files", "",
              "lm-eval's own output of each row is in `lm-eval/<row>/`: `results.json` and `samples_<task>.jsonl` "
              "(every prompt, reply, log-likelihood and per-item metric).", ""]
    return "\n".join(lines)


def scores_plot(results: dict[str, Any], path: Path) -> Path | None:
    """One group of bars per task metric, one bar per row, with stderr whiskers."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(results)
    rows = list(results["rows"])
    if not columns:
        return None
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(columns) * max(1, len(rows)) ** 0.5 + 2), 3.6))
    for i, row in enumerate(rows):
        by = {(s["task"], s["metric"], s["filter"]): s for s in results["rows"][row]}
        values = [by[c]["value"] if c in by else 0.0 for c in columns]
        errors = [(by[c]["stderr"] or 0.0) if c in by else 0.0 for c in columns]
        ax.bar([j + i * width for j in range(len(columns))], values, width, yerr=errors, capsize=3, label=row)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(columns))])
    ax.set_xticklabels([_label(*c).replace(" ", "\n", 1) for c in columns], fontsize=8)
    ax.set_ylabel("score")
    ax.set_title("agentlab eval (lm-evaluation-harness)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
