"""report.md of a NAS run: the best config's diff from the base, the trials, and the plots people look at."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentlab.core.runs import atomic_write_bytes, read_events, save_figure
from agentlab.core.search.agent import agent_story, agent_summary
from agentlab.core.search.kinds import DEFAULT_SAMPLER
from agentlab.core.search.records import TrialRecord, planner_label, planner_name
from agentlab.core.search.share import contribution_lines
from agentlab.nas.config import NAIVE_FAMILIES
from agentlab.nas.ensemble import kept_naive, model_name, shown_weights
from agentlab.nas.literature import render

if TYPE_CHECKING:
    from optuna import Study

    from agentlab.core.search.loop import SearchOutcome
    from agentlab.nas.config import NASConfig

log = logging.getLogger(__name__)
SAMPLER = DEFAULT_SAMPLER["nas"]  # the LLM chooser's sampler: its warm-up trials are credited to it


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}"
    return str(value)


STANDARDISED = "on standardised data"  # every MSE / MAE of a search: each channel scaled by the train split's stats


def short(value: Any, digits: int = 3) -> str:
    """A value for the console: floats to ``digits`` significant digits (0.157, 0.01), anything else as is."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}g}"
    return str(value)


def one_line(text: str, limit: int) -> str:
    """``text`` on one line of at most ``limit`` characters for a table cell: its start and its end kept (an error's
    last words are the ones that tell), cut by characters, not words (a long path is no word to drop)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head] + "…" + text[len(text) - (limit - head - 1):]


def _change(base: float | None, best: float | None) -> str | None:
    """``-44% (0.77 -> 0.43)``: the relative change from ``base`` to ``best`` (negative: lower, i.e. better)."""
    if base is None or best is None or not base or not (math.isfinite(base) and math.isfinite(best)):
        return None
    return f"{(best - base) / abs(base):+.0%} ({short(base)} -> {short(best)})"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The console summary of a search (results.json): the best trial, the published comparison, the change from
    the base config, the best config's changes (rounded), why it stopped; every MSE said to be on standardised
    data."""
    best, base = results["best"], results["base"]
    lines = [f"best trial {best['run_id']}: val MSE {short(best['val_mse'], 4)}, test MSE "
             f"{short(best['test_mse'], 4)}, test MAE {short(best['test_mae'], 4)} ({STANDARDISED}), "
             f"{best['n_params']:,} params "
             f"({planner_label(best, SAMPLER)}); {best.get('family', 'informer')}, lookback {best.get('seq_len')}"]
    ensemble = results.get("ensemble")
    if ensemble:
        lines.append(ensemble_line(ensemble, best, results.get("final_model", "ensemble") == "ensemble"))
    literature = results.get("literature") or {}
    fair = [r for r in literature.get("rows", []) if r["protocol"] == "fair"]
    if fair and best["test_mse"] is not None:
        beaten = sum(1 for r in fair if best["test_mse"] < r["mse"])
        top = min(fair, key=lambda r: r["mse"])
        by_ensemble = "" if not ensemble else (
            f"; {_the(model_name(ensemble))}: lower than {sum(1 for r in fair if ensemble['test_mse'] < r['mse'])}")
        lines.append(f"published ({literature['dataset']}, horizon {literature['horizon']}, every test window): "
                     f"lower test MSE than {beaten} of {len(fair)}{by_ensemble}; the best, {top['model']}, has "
                     f"{top['mse']:.3f} ({STANDARDISED})")
    if base is not None:
        val = _change(base["val_mse"], best["val_mse"])
        test = _change(base.get("test_mse"), best.get("test_mse"))
        if val is not None:
            lines.append(f"best vs the base config ({base['run_id']}): val MSE {val}"
                         + (f", test MSE {test}" if test is not None else "") + f", {STANDARDISED}")
    changed = {k: v for k, v in best["params"].items() if base is None or base["params"].get(k) != v}
    lines.append("best changes: " + (", ".join(f"{k}={short(v)}" for k, v in changed.items())
                                     or "none (base is best)"))
    agent = agent_summary(results.get("agent"))
    if agent:
        lines.append(agent)
    chooser = results.get("llm_contribution")
    if chooser:  # whether the LLM was asked at all: a short search or the bandit may ask it about none
        asked, trials = chooser.get("asked", 0), chooser.get("trials", 0)
        lines.append(f"llm planner: asked about {asked} of {trials} planner trial{'' if trials == 1 else 's'}"
                     + ("; its prompts and replies are in llm_calls.jsonl" if asked else
                        " (the llm_share bound or the bandit chose the sampler each time: see the trials' notes)"))
    lines += [line] if (line := ran_line(results)) else []
    return lines


def ran_line(results: dict[str, Any]) -> str | None:
    """What of the study's trials this invocation ran, when not all: a resume's, or a worker's of a shared study."""
    ran, total = results.get("ran_here"), results.get("trials")
    if not (isinstance(ran, int) and isinstance(total, int) and total > ran):
        return None
    if results.get("shared"):
        return f"shared study: {total} trial(s), {ran} run by this process, {total - ran} by others or before"
    return f"resumed: {total - ran} trial(s) kept from before, {ran} run now"


def _members(ensemble: dict[str, Any], limit: int = 6) -> str:
    """``run_0003 0.48 (informer), run_0001 0.36 (naive_last), naive_seasonal 0.16, ...``: the members, their family
    (unless it is their name: a naive reference forecast) and their weights, printed so that they sum to 1
    (``shown_weights``)."""
    members = ensemble["members"]
    weights = shown_weights([m["weight"] for m in members])
    shown = [f"{m['run_id']} {w}" + (f" ({m['family']})" if m.get("family") and m["family"] != m["run_id"] else "")
             for m, w in zip(members[:limit], weights, strict=False)]
    more = len(ensemble["members"]) - limit
    return ", ".join(shown) + (f", and {more} more" if more > 0 else "")


def ensemble_line(ensemble: dict[str, Any], best: dict[str, Any], final: bool = True) -> str:
    """The console line of the ensemble (the final model unless ``final`` is False), beside the best single
    trial."""
    name = model_name(ensemble)
    head = f"final model: {name}"
    if not final:
        why = "(not the final model: worse on validation than the best trial, whose forecasts it lacks)"
        head = f"ensemble {why} {name.removeprefix('ensemble ')}" if name.startswith("ensemble ") else f"{name} {why}"
    naive = guard_line(ensemble)
    if naive:
        return (f"final model: the naive forecast {ensemble['members'][0]['run_id']}, val MSE "
                f"{short(ensemble['val_mse'], 4)}, test MSE {short(ensemble['test_mse'], 4)}, test MAE "
                f"{short(ensemble['test_mae'], 4)} ({naive}; best single trial: val {short(best['val_mse'], 4)}, "
                f"test {short(best['test_mse'], 4)})")
    members = "" if name.startswith("the naive forecast") else f" ({_members(ensemble)})"
    return (f"{head}{members}: val MSE "
            f"{short(ensemble['val_mse'], 4)}, test MSE {short(ensemble['test_mse'], 4)}, test MAE "
            f"{short(ensemble['test_mae'], 4)} (best single trial: val {short(best['val_mse'], 4)}, test "
            f"{short(best['test_mse'], 4)}; chosen on validation only)")


def _the(name: str) -> str:
    """``model_name`` as the subject of a clause: "the ensemble of 2 trials", "the naive forecast X"."""
    return name if name.startswith("the ") else f"the {name}"


def guard_line(ensemble: dict[str, Any]) -> str:
    """Why the naive forecast replaced the greedy ensemble as the final model (``ensemble.selection``), else ""."""
    if not kept_naive(ensemble):
        return ""
    sel = ensemble["selection"]
    return (f"the ensemble of the trials beat it on {sel['wins']} of {sel['origins']} rolling origins of the "
            f"validation windows, fewer than {sel['needed']} (its val MSE {short(sel['greedy']['val_mse'], 4)})")


def finished_runs(folder: Path, storage: str | None = None, name: str = "nas") -> list[dict[str, Any]] | None:
    """The finished trials a run folder keeps: its study's (``storage``, else the folder's study.db; a trial a stop
    ended in the study before agent_state.json said so counts too), else its ``agent_state.json``'s; None when it
    has none yet."""
    from agentlab.core.search.study import study_records

    return finished_of(folder, study_records(storage, folder, name))


def finished_of(folder: Path, records: list[Any] | None) -> list[dict[str, Any]] | None:
    """``finished_runs`` from the study's records as read (``study_records``; None: no study to read)."""
    from agentlab.core.search.records import state_dict

    try:
        runs = state_dict(records, "value")["runs"] if records else \
            json.loads((folder / "agent_state.json").read_text(encoding="utf-8"))["runs"]
        done = [r for r in runs if r.get("counted", True) and r.get("state") in ("complete", "pruned", "failed")]
        return done if done or not records else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def resume_line(folder: Path, max_iterations: int, storage: str | None = None, name: str = "nas") -> str:
    """Before a resumed search starts (a dry run too): the folder it continues, which a bare ``--resume`` picks,
    how many finished trials it keeps (its study's, else ``agent_state.json``'s: ``finished_runs``) and how many it
    may still run; said also when it has no state yet (it stopped before its first trial ended), or the folder
    picked would go unnamed."""

    done = finished_runs(folder, storage, name)
    if done is None:
        return f"resuming {folder}: no trial finished there yet; up to {max_iterations} to run"
    states = {s: sum(1 for r in done if r["state"] == s) for s in ("complete", "pruned", "failed")}
    detail = ", ".join(f"{n} {s}" for s, n in states.items() if n)
    left = max(0, max_iterations - len(done))
    return (f"resuming {folder}: kept {len(done)} finished trial(s)" + (f" ({detail})" if detail else "")
            + f"; up to {left} more to reach {max_iterations}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(history: list[dict[str, float]], path: Path, loss: str = "mse") -> None:
    """Train loss (``loss`` names it) and validation MSE by epoch as a PNG (matplotlib's Agg canvas; no pyplot
    global state)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    for key, label in (("train_loss", f"train loss ({loss})"), ("val_mse", "val MSE")):
        values = [h[key] if math.isfinite(h[key]) else math.nan for h in history]
        ax.plot(epochs, values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (scaled data)")
    ax.set_xticks(epochs)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def plot_history(records: list[TrialRecord], path: Path) -> Path | None:
    """Validation MSE of every finished trial, coloured by planner, with the best-so-far line."""
    done = [r for r in records if r.state in ("complete", "pruned") and r.finite]
    if not done:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4))
    colors: dict[str, Any] = {}
    for planner in sorted({r.planner for r in done}):
        for state, marker in (("complete", "o"), ("pruned", "x")):
            pts = [r for r in done if r.planner == planner and r.state == state]
            if pts:
                label = planner if state == "complete" else f"{planner} (pruned)"
                dots = ax.scatter([r.number for r in pts], [r.value for r in pts], label=label, s=28, marker=marker,
                                  color=colors.get(planner))
                colors.setdefault(planner, dots.get_facecolor()[0] if state == "complete" else dots.get_edgecolor())
    best, xs, ys = math.inf, [], []
    for r in sorted((r for r in done if r.state == "complete" and r.accepted), key=lambda r: r.number):
        best = min(best, cast(float, r.value))  # `done` holds finite values only
        xs.append(r.number)
        ys.append(best)
    if xs:
        last = max(r.number for r in done)
        if last > xs[-1]:  # the line runs to the last trial: a later one below it was not accepted (min_delta)
            xs.append(last)
            ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="black", linewidth=1.2, label="best accepted")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers, even with 2 of them
    ax.set_ylabel("validation MSE")
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_importances(study: Study, path: Path) -> Path | None:
    """fANOVA parameter importances (Optuna); skipped while too few trials have finished."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3:
        return None
    import warnings

    try:
        with warnings.catch_warnings():  # a conditional key seen in few trials: optuna warns, the plot still holds
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError, TypeError) as exc:  # TypeError: list-valued choices
        log.info("no parameter importances: %s", exc)
        return None
    if not importances:
        return None
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def render_report(cfg: NASConfig, outcome: SearchOutcome, results: dict[str, Any], run_path: Path,
                  study: Study) -> str:
    best, base = outcome.best, outcome.base
    assert best is not None, "require_finished_trials runs before the report"
    lines = ["# agentlab nas", ""]
    gain = results["gain"]["val_mse"]
    chosen = results["best"]
    lines.append(f"Best: **{best.run_id}** — {chosen['family']}, lookback {chosen['seq_len']}: val MSE "
                 f"{_fmt(best.value)}, test MSE {_fmt(best.metrics.get('test_mse'))}, test MAE "
                 f"{_fmt(best.metrics.get('test_mae'))}, {best.metrics.get('n_params', 0):,} parameters.")
    if base is not None:
        change = round(-gain, 3) or 0.0 if gain is not None else 0.0  # under 0.05%: +0.0%, not -0.0%
        lines.append(f"Base config ({base.run_id}): val MSE {_fmt(base.value)}, test MSE "
                     f"{_fmt(base.metrics.get('test_mse'))}. Change in val MSE from the base: {change:+.1%} "
                     "(negative: lower error)." if gain is not None else "")
    lines.append("Every MSE and MAE here is on standardised data: each channel scaled by the mean and standard "
                 "deviation of its train split.")
    naive = results["naive_baseline"]
    lines.append(f"Naive last-value forecast on the same test windows: MSE {_fmt(naive.get('test_mse'))}, "
                 f"MAE {_fmt(naive.get('test_mae'))}.")
    lines += [f"{results['planner']}. Stopped: {results['stop_reason']}. Trials: {results['trials']} "
              f"({', '.join(f'{v} {k}' for k, v in results['states'].items())}).", ""]
    lines += _ensemble_section(results.get("ensemble"), chosen, results.get("final_model", "ensemble"))
    literature = results.get("literature")
    if literature is not None:
        lines += [*render(chosen, literature, results.get("ensemble"))[1:], ""]
    families = results.get("families") or {}
    if len(families) > 1:
        lines += ["## Families", "", "| family | trials | complete | pruned | failed | best val MSE |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {f['trials']} | {f['complete']} | {f['pruned']} | {f['failed']} | "
                  f"{_fmt(f['best_val_mse'])} |" for name, f in sorted(
                      families.items(), key=lambda kv: math.inf if kv[1]["best_val_mse"] is None
                      else kv[1]["best_val_mse"])]
        lines.append("")
    lines += ["## Best config vs base", "", "| key | base | best |", "|---|---|---|"]
    base_params = base.params if base else {}
    changed = {k: v for k, v in best.params.items() if base_params.get(k) != v}
    lines += [f"| {k} | {_fmt(base_params.get(k))} | **{_fmt(v)}** |" for k, v in changed.items()] or ["| (none) | | |"]
    history = plot_history(outcome.records, run_path / "optimization_history.png")
    importances = plot_importances(study, run_path / "param_importances.png")
    curve = run_path / "trials" / best.run_id / "learning_curve.png"
    lines += ["", "## Plots", ""]
    for title, path in (("optimisation history", history), ("parameter importances", importances),
                        (f"learning curve of {best.run_id}", curve if curve.is_file() else None)):
        if path is not None:
            lines.append(f"![{title}]({path.relative_to(run_path)})")
    lines += ["", "## Trials", "", "Changes are against the best trial when each trial was planned (the config it "
              "set out to improve), not against the base config: \"Best config vs base\" above has those.", "",
              "| run | planner | changes vs the best then | val MSE | test MSE | params | state | decision |",
              "|---|---|---|---|---|---|---|---|"]
    for r in outcome.records:
        changes = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in r.changes.items()) or "-"
        decision = ("accepted" if r.accepted else "rejected" if r.accepted is False else "") + (
            f": {r.reason}" if r.reason else "")
        lines.append(f"| {r.run_id} | {planner_name(r, SAMPLER)} | {changes} | {_fmt(r.value)} | "
                     f"{_fmt(r.metrics.get('test_mse'))} | {_fmt(r.metrics.get('n_params'))} | {r.state} | "
                     f"{decision} |")
    lines += llm_section(outcome.records, results.get("llm_contribution"))
    lines += agent_story(results.get("agent"), list(read_events(run_path)) if results.get("agent") else [])
    return "\n".join(lines) + "\n"


def _pool_of(ensemble: dict[str, Any]) -> str:
    """What the ensemble's pool holds besides the finished trials: the naive forecasts, as many as it has (a run
    made before ``ensemble.naive`` was recorded: all of them)."""
    naive = ensemble.get("naive", NAIVE_FAMILIES)
    if not naive:
        return "the finished trials only: no naive forecast could be made (the run's log says why)"
    if len(naive) < len(NAIVE_FAMILIES):
        return f"the finished trials and the naive forecast {', '.join(naive)}"
    return "the finished trials and the naive forecasts"


def _ensemble_section(ensemble: dict[str, Any] | None, best: dict[str, Any], final: str) -> list[str]:
    """``## Final model``: the ensemble beside the best single trial, and its members with their weights."""
    if not ensemble:
        return []
    mean = " (the weighted mean of its members' forecasts)" if len(ensemble["members"]) > 1 else ""
    use = (f"`agentlab nas predict` forecasts with it{mean}." if final == "ensemble" else
           f"It is worse on validation than the best trial, whose forecasts it lacks, so the final model is the best "
           f"trial {best['run_id']}.")
    sel = ensemble.get("selection") or {}
    if sel.get("against"):
        use += (f" The naive forecasts are always in the pool; the ensemble is kept only when it beats the best of "
                f"them ({sel['against']}) on at least {sel['needed']} of {sel['origins']} rolling origins "
                f"(consecutive blocks of validation windows): it did on {sel['wins']}.")
        if guard_line(ensemble):
            use += (f" So the final model is {sel['kept']} alone; the greedy ensemble ({len(sel['greedy']['members'])}"
                    f" members) had val MSE {_fmt(sel['greedy']['val_mse'])}, test MSE "
                    f"{_fmt(sel['greedy']['test_mse'])}.")
    lines = [f"## Final model: {model_name(ensemble) if final == 'ensemble' else 'best trial'}", "",
             f"Greedy ensemble selection with replacement (Caruana et al. 2004) on validation MSE over a pool of "
             f"{ensemble['pool']} forecasts ({_pool_of(ensemble)}), {ensemble['rounds']} "
             "rounds; the test windows are only scored. "
             + use, "",
             "| model | val MSE | val MAE | test MSE | test MAE |", "|---|---|---|---|---|",
             f"| {model_name(ensemble)} | {_fmt(ensemble['val_mse'])} | "
             f"{_fmt(ensemble['val_mae'])} | {_fmt(ensemble['test_mse'])} | {_fmt(ensemble['test_mae'])} |",
             f"| best single trial {best['run_id']} | {_fmt(best['val_mse'])} | - | {_fmt(best['test_mse'])} | "
             f"{_fmt(best['test_mae'])} |", "", "| member | family | weight | val MSE | test MSE |",
             "|---|---|---|---|---|"]
    weights = shown_weights([m["weight"] for m in ensemble["members"]], 3)  # printed, they sum to 1
    lines += [f"| {m['run_id']} | {m.get('family') or '-'} | {w} | {_fmt(m['val_mse'])} | {_fmt(m['test_mse'])} |"
              for m, w in zip(ensemble["members"], weights, strict=True)]
    return [*lines, ""]


ORIGINS = {"kept": "kept TPE's candidate 0", "picked": "picked candidate", "own": "its own candidate",
           "no answer": "no answer: candidate 0"}


def _one_line(text: str, limit: int = 300) -> str:
    """Model text as one Markdown-safe line: no line breaks or table pipes, at most ``limit`` characters."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def llm_section(records: list[TrialRecord], block: dict[str, Any] | None, metric: str = "val MSE") -> list[str]:
    """``## LLM contribution``: the block's counts in words, then each trial the LLM was asked about, with its
    choice and reasoning; ``metric``: the search's metric as the report names it (a command objective's own)."""
    lines = contribution_lines(block, metric)
    if not lines:
        return []
    lines.append("")
    for r in records:
        if r.origin not in ORIGINS:
            continue
        why = _one_line(r.reasoning) if r.reasoning.strip() else _one_line("; ".join(r.notes)) or "-"
        what = ORIGINS[r.origin] + (f" {r.choice} of {r.candidates}" if r.origin in ("picked", "own") else "")
        lines.append(f"- **{r.run_id}** ({what}; {metric} {_fmt(r.value)}): {why}")
    return lines
