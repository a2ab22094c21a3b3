"""Streamlit drawing shared by the pages: an error line, one run folder (report with its plots, the command's own
view, plots, config, events), and a job started from the UI. Data comes from ``runs`` and ``views``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import streamlit as st

from agentlab.core.agent import approval
from agentlab.core.errors import AgentlabError
from agentlab.core.runs import FAILED, RUNNING, runs_root
from agentlab.ui import jobs, runs, views
from agentlab.ui.jobs import Job

# Filled by app.py on every script run: page name -> st.Page, for links between pages.
PAGES: dict[str, Any] = {}


def plain(text: str) -> str:
    """Text from a file or a link shown as itself in Streamlit's Markdown (one line): the characters of links,
    images, HTML, emphasis, code and math escaped, so a run.json value or a ``?run=`` such as
    ``![x](https://host/p.png)`` fetches nothing and styles nothing; a byte of a name that is not UTF-8 as
    ``\\xe9`` (``runs.shown``)."""
    return re.sub(r"([\\`*_\[\]!|<>~$])", r"\\\1", runs.shown(text))


# what a config error's hint offers on the command line (core.config: an empty file, one not found), where the option
# naming the file may be left out
_LEAVE_OUT = (", or give no file for the defaults", ", or leave that option out for the defaults")


def error(exc: AgentlabError) -> None:
    """An error as the CLI prints it: the message, and the next step."""
    hint = exc.hint
    for offer in _LEAVE_OUT:  # the CLI's hint offers to leave the file out: a page's file field has no such way
        hint = hint.replace(offer, "") if hint else hint
    st.error(runs.shown(exc.message) + (f"  \nhint: {hint}" if hint else ""), icon=":material/error:")


def link_to_run(run_id: str, label: str = "open in Runs") -> None:
    page = PAGES.get("runs")
    if page is not None:
        st.page_link(page, label=label, icon=":material/folder_open:", query_params={"run": run_id})


def chart_rows(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """Rows whose ``keys`` are all numbers (a chart has no place for a missing value)."""
    return [r for r in rows if all(isinstance(r.get(k), (int, float)) for k in keys)]


# --------------------------------------------------------------------------- one run folder


def run_detail(row: runs.RunRow, root: Path) -> None:
    """The run as it is now; a running run redraws itself every 2 s until it ends."""
    if row.status == RUNNING:
        _live(str(row.path), str(root))
    else:
        _detail(row)


@st.fragment(run_every=2.0)
def _live(path: str, root: str) -> None:
    row = runs.read_run(Path(path), Path(root))
    if row.status != RUNNING:
        st.rerun()  # the whole page: the list shows the new status too, and the timer stops
    _detail(row)


def _detail(row: runs.RunRow) -> None:
    st.subheader(row.id)
    cells = row.cells()
    # what is known, no empty fields: a damaged run.json is `damaged`, and the warning below says why
    st.caption(" · ".join(part for part in (row.command, cells["status"], cells["started"] and
                                            f"started {cells['started']}", runs.duration(row.seconds), row.result)
                          if part))
    if row.waiting():
        _approval(row)
    if row.status == RUNNING:
        st.info("  \n".join(views.progress(row.command, row.path)), icon=":material/progress_activity:")
    for problem in row.problems.values():
        st.warning(plain(problem))
    view = COMMAND_VIEWS.get(row.command)
    agent = views.agent_timeline(row.path) if row.command in ("nas", "compress") else []
    names = ["Report", *([view[0]] if view else []), *(["Agent"] if agent else []), "Plots", "Config", "Events"]
    # A running run has no report yet: it opens on the command's own view, which grows as the run goes.
    default = view[0] if view and row.status == RUNNING else "Report"
    tabs = dict(zip(names, st.tabs(names, default=default), strict=True))
    with tabs["Report"]:
        _report(row)
    if view:
        with tabs[view[0]]:
            view[1](row.path)
    if agent:
        with tabs["Agent"]:
            st.caption("the agent planner's steps: each tool it called, the arguments and the result computed in "
                       "code; (guard): a trial the classical sampler ran; (approval): your answers")
            st.dataframe(agent, hide_index=True)
    with tabs["Plots"]:
        _plots(row.path)
    with tabs["Config"]:
        for name in ("config.yaml", "models.yaml", "llm.yaml"):
            _text_file(row.path / name, "yaml")
    with tabs["Events"]:
        events_tab(row.path)


def events_tab(path: Path) -> None:
    """The last events of the run folder's events.jsonl, and how many lines among them could not be read: one read
    of the file's end a render (a long file's earlier lines are not read, and said so)."""
    events, unread, whole = runs.event_table(path)
    one = unread == 1
    st.caption(f"the last {len(events)} events of events.jsonl" + ("" if whole else " (the lines before them are "
                                                                   "not read)") + (
        f"; {unread} line{'' if one else 's'} {'of it' if whole else 'among them'} could not be read (not a JSON "
        f"object: torn by a crash, or edited) and {'is' if one else 'are'} left out" if unread else ""))
    st.dataframe(events, hide_index=True)


def _approval(row: runs.RunRow) -> None:
    """A run stopped at the agent's approval (--approve without a terminal): the step it wants to run, read from
    the agent's checkpoint, and the answers: approve, decline (with a note), or run the proposal shown with
    changes. An answer resumes the run with it (``jobs.answer``: ``--resume RUN --answer ...``)."""
    action = approval.pending(row.path)
    if action is None:
        return
    sent: Job | None = st.session_state.get("approval_jobs", {}).get(row.id)
    with st.container(border=True):
        st.markdown("**The agent waits for your approval** (`--approve`)")
        st.code(approval.describe(action), language=None)
        if sent is not None and sent.returncode is None:
            st.info("your answer was sent: the run resumes", icon=":material/progress_activity:")
            return
        if sent is not None and sent.returncode not in (0, 130):
            st.error(f"the resumed run stopped: {sent.error()}")
        note = st.text_input("Note for the agent (sent with Decline)", key="approve_note")
        edits = (action.get("args") or {}).get("edits") if action.get("diff") is not None else None
        if edits is not None:  # a code change: its new texts, editable
            new = [st.text_area(f"New text of edit {i} ({e['path']})", e["new"], key=f"approve_new_{i}")
                   for i, e in enumerate(edits)]
            changes = "" if new == [e["new"] for e in edits] else "edited"
        else:
            changes = st.text_input("Or changes to this proposal (key=value, comma-separated)",
                                    key="approve_changes", placeholder="model.d_model=32, train.learning_rate=0.001")
        yes, no, edit = st.columns(3)
        reply = None
        if yes.button("Approve", key="approve_yes", type="primary", icon=":material/check:"):
            reply = approval.make_answer("yes")
        if no.button("Decline", key="approve_no", icon=":material/close:"):
            reply = approval.make_answer("no", note)
        if edit.button("Run with the changes", key="approve_edit", disabled=not changes.strip()):
            reply = approval.make_answer("edit", changes=approval.parse_changes(changes)) if edits is None else \
                approval.make_answer("edit", edits=[{**e, "new": n} for e, n in zip(edits, new, strict=True)])
        if reply is not None:
            job = jobs.answer(row.path, row.command, reply)
            st.session_state.setdefault("approval_jobs", {})[row.id] = job
            st.rerun()


def _text_file(path: Path, language: str) -> None:
    try:
        text = runs.read_file_text(path)
    except AgentlabError as exc:
        error(exc)
        return
    if text is not None:
        st.caption(path.name)
        st.code(text, language=language)


def _report(row: runs.RunRow) -> None:
    path = row.path
    try:
        parts = runs.report_parts(path)
    except AgentlabError as exc:
        error(exc)
        return
    advice = None if parts or row.waiting() else runs.continue_advice(row)  # waiting: the approval above says it
    if advice is not None:  # it stopped: no report.md is coming unless it goes on
        why = ("the run was interrupted (Ctrl-C, a kill, or its process died) before it finished"
               if row.status != FAILED else f"the run failed ({plain(row.error)})" if row.error else "the run failed")
        st.warning(f"{why}, so it wrote no report.md; {runs.shown(advice)}", icon=":material/pause_circle:")
    elif not parts and row.status == runs.DAMAGED:  # no run to finish: the warning above says what is wrong
        st.caption("no report.md (the run folder is damaged: see the warning above)")
    elif not parts:
        st.caption("no report.md yet (the command writes it when it finishes)")
    for kind, value in parts:
        if kind == "image":
            _image(st, Path(value), Path(value).relative_to(path.resolve()).as_posix())
        else:
            st.markdown(value)


def _plots(path: Path) -> None:
    images = runs.plots(path)
    if not images:
        st.caption("no plots in this run folder")
    columns = st.columns(2)
    for i, image in enumerate(images):
        _image(columns[i % 2], image, image.relative_to(path).as_posix())


def _image(where: Any, image: Path, name: str) -> None:
    """``image`` drawn in ``where`` (the page or a column) with its ``name`` in the run folder as caption; a file that
    is no image it can read (random bytes, an empty or cut-off .png, an .svg that is not UTF-8) is named as damaged
    in its place, and the rest of the page is drawn: Pillow's error had stopped the script (empty Config and Events
    tabs). Pillow raises many kinds for a damaged file (OSError, SyntaxError, ValueError, EOFError, ...); Streamlit's
    own rerun and stop are BaseException, so they pass."""
    try:
        where.image(str(image), caption=runs.shown(name))
    except Exception:  # noqa: BLE001
        try:
            empty = image.stat().st_size == 0
        except OSError:
            empty = False
        where.warning(plain(f"{name}: damaged image, not shown ("
                            + ("an empty file" if empty else "not a PNG, JPEG or SVG image it can read")
                            + "); the rest of the run is shown"), icon=":material/broken_image:")


# --------------------------------------------------------------------------- each command's own view


def _nas(path: Path) -> None:
    """The trials with the searched metric under its own name (the forecaster's val MSE, or the metric of the user's
    own command, in its direction), the best-so-far curve, and a trial's learning curve. A curve with no point yet
    (no trial has a value: running, or every trial failed) is a line saying so: a chart of no rows has no columns."""
    metric = views.nas_metric(path)
    trials = views.nas_trials(path, metric)
    if not trials:
        st.caption("no finished trial yet")
        return
    curve = views.nas_curve(trials, metric)
    if curve:
        st.line_chart(curve, x="trial", y=[metric.label, "best so far"], x_label="trial",
                      y_label=f"{metric.label} ({metric.better})" if metric.own else "validation MSE")
    else:
        st.caption(f"no trial with a {metric.label} yet: the curve is drawn from the first one")
    st.dataframe(trials, hide_index=True)
    ids = [str(t["run"]) for t in trials if t.get("run")]
    if ids:
        chosen = st.selectbox("Learning curve of trial", ids, index=len(ids) - 1,
                              key=f"nas_trial_{runs.shown(path.name)}")
        x, y = ("step", [metric.label]) if metric.own else ("epoch", ["train loss", "val MSE"])
        points = chart_rows(views.nas_learning_curve(path, chosen, metric), x, *(y if metric.own else ()))
        if points:
            st.line_chart(points, x=x, y=y)


def _debate(path: Path) -> None:
    cfg, results = views.run_config(path), views.json_file(path / "results.json") or {}
    st.markdown(f"**Question:** {cfg.get('topic') or results.get('question') or '?'}")
    final = (results.get("final") or {}) if isinstance(results, dict) else {}
    if final:
        st.success(f"final answer ({final.get('method')}): {final.get('answer')}")
    for rnd in views.debate_rounds(path):
        agreement = rnd["agreement"]
        st.markdown(f"#### Round {rnd['round']}" + (f" · vote: {rnd['winner']} · agreement {agreement:.0%}"
                                                    if isinstance(agreement, (int, float)) else ""))
        for turn in rnd["turns"]:
            with st.chat_message("assistant", avatar=":material/person:"):
                confidence = turn.get("confidence")
                st.markdown(f"**{turn.get('agent')}** · answer `{turn.get('answer')}`"
                            + (f" · confidence {confidence:.0%}" if isinstance(confidence, (int, float)) else ""))
                st.text(turn.get("text") or turn.get("error") or "")
        if rnd["votes"]:
            st.dataframe(rnd["votes"], hide_index=True)


def _evolve(path: Path) -> None:
    lineage = views.evolve_lineage(path)
    if not lineage["dot"]:
        st.caption("no results.json yet: the lineage is drawn when the run finishes")
        return
    st.markdown(f"**Best:** {lineage['best']}")
    st.graphviz_chart(lineage["dot"])
    curve = chart_rows(lineage["curve"], "generation", "best fitness", "mean fitness")
    if curve:
        st.line_chart(curve, x="generation", y=["best fitness", "mean fitness"], y_label="fitness")
    st.dataframe(lineage["individuals"], hide_index=True)


def _compress(path: Path) -> None:
    points = views.compress_points(path)
    left, right = st.columns(2)
    for column, y in ((left, "perplexity"), (right, "accuracy")):
        shown = chart_rows(points, "speedup", y)
        if shown:
            column.scatter_chart(shown, x="speedup", y=y, color="set", size=80)
    st.dataframe(points, hide_index=True)


def _dashed(rows: list[dict[str, Any]]) -> Any:
    """``rows`` as a table whose missing values show as ``-`` (as report.md writes them), not ``None``: the numbers
    stay numbers (the table sorts them as such), only their display is text."""
    import pandas as pd  # type: ignore[import-untyped]  # the ui extra (streamlit depends on it too)

    def shown(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):  # None, or pandas' NaN for it
            return "-"
        return str(round(value, 3)) if isinstance(value, float) else str(value)

    return pd.DataFrame(rows).style.format(shown)


def _bench(path: Path) -> None:
    table, levels = views.bench_rows(path)
    st.dataframe(_dashed(table), hide_index=True)
    st.caption(f"per concurrency level; {views.PER_REQUEST_SPEED}: one request's output tokens over its time after "
               f"the first token, the median over the requests; {views.THROUGHPUT}: the output tokens of all the "
               "level's requests over its wall time (report.md's column of that name)")
    st.dataframe(_dashed(levels), hide_index=True)


def _pipeline(path: Path) -> None:
    steps, problems = views.pipeline_steps(path)
    for problem in problems:  # a damaged step file named, as on the History page
        st.warning(plain(problem))
    st.dataframe([{k: v for k, v in s.items() if k != "output"} for s in steps], hide_index=True)
    for s in steps:
        with st.expander(f"{s['#']:02d} {s['stage']}" if isinstance(s["#"], int) else str(s["stage"])):
            st.text(s["output"] or "")
    final = path / "final.txt"
    if final.is_file():
        st.markdown("**Final answer**")
        st.code(final.read_text(encoding="utf-8", errors="replace"), language=None)


def _persona(path: Path) -> None:
    loss = chart_rows(views.persona_loss(path), "step", "loss")
    if loss:
        st.line_chart(loss, x="step", y="loss")


def _eval(path: Path) -> None:
    results = views.json_file(path / "results.json")
    if isinstance(results, dict):
        st.dataframe(results.get("table") or [], hide_index=True)


def _lm_eval(path: Path) -> None:
    results = views.json_file(path / "results.json")
    if isinstance(results, dict):
        st.dataframe([{"model": row, **{f"{s['task']} {s['metric']}": s["value"] for s in scores}}
                      for row, scores in (results.get("rows") or {}).items()], hide_index=True)


COMMAND_VIEWS = {"nas": ("Trials", _nas), "debate": ("Transcript", _debate), "evolve": ("Lineage", _evolve),
                 "compress": ("Pareto front", _compress), "llm-bench": ("Latency", _bench),
                 "pipeline": ("Stages", _pipeline), "train-persona": ("Loss", _persona),
                 "debate-eval": ("Scores", _eval), "eval": ("Scores", _lm_eval)}


# --------------------------------------------------------------------------- a job started from the UI


def job_panel(key: str) -> None:
    """The job in ``st.session_state[key]``: live while it runs, then its answer or its error line."""
    job = st.session_state.get(key)
    if not isinstance(job, Job):
        return
    if job.state == "running":
        _job_live(key)
    else:
        _job_done(job)


@st.fragment(run_every=1.0)
def _job_live(key: str) -> None:
    job: Job = st.session_state[key]
    if job.state != "running":
        st.rerun()
    with st.status(f"running: agentlab {' '.join(job.args[:2])} → {job.out.name}", state="running", expanded=True):
        lines = views.progress("pipeline", job.out) if job.out.is_dir() else ["starting"]
        st.write("  \n".join(lines))
        if st.button("Stop (Ctrl-C)", key=f"{key}_stop"):
            job.stop()


def _job_done(job: Job) -> None:
    if job.state == "failed":
        st.error((job.error() or f"exit code {job.returncode}").replace("\n", "  \n"), icon=":material/error:")
        with st.expander("command output"):
            st.code(job.output(), language=None)
        return
    st.success(f"completed: {job.out}", icon=":material/check_circle:")
    _pipeline(job.out)
    root = runs_root().absolute()
    if root in job.out.parents:
        link_to_run(job.out.relative_to(root).as_posix())
