"""nas's tools for the ``agent`` planner on the user's own command (an ``objective:`` section), every result computed
in code: ``read_project`` (the project's files, read-only: the command's script, its README and config files, each
cut at ``READ_CHARS``) and ``learning_curve`` (a finished trial's step lines, as the pruner saw them). The brief
states the objective in code too: the metric and its direction, the command, every searched key with its base
value and range, the params kept at their base, the files ``read_project`` offers. Notes go to
``<runs>/nas/knowledge.json`` under the project's folder and metric. Nothing here is about forecasters."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.core.agent.runtime import AgentModel, Tool
from agentlab.core.config import redact
from agentlab.core.runs import runs_root
from agentlab.core.search.agent import AgentKit, TrialView, learning_curve
from agentlab.core.search.planners import PlanContext, TrialDomain
from agentlab.core.search.records import TrialRecord
from agentlab.core.search.space import ParamSpec
from agentlab.nas.code_agent import EDIT_TOOL, CodeSearch, change_of
from agentlab.nas.command import better
from agentlab.nas.config import CommandObjectiveConfig, NASConfig
from agentlab.nas.own_code import command_space
from agentlab.nas.script import hydra_configs, inside, project_imports, script_of

READ_CHARS = 4000  # one read_project answer at most (the runtime cuts a tool's result further for the model)
MAX_FILE_BYTES = 1_000_000  # larger files are not read at all
MAX_FILES = 40  # files listed
CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini")
# Files whose names say they hold secrets are never listed or read: the model may be a remote API.
SECRET_NAME = re.compile(r"secret|credential|token|passw|api[_-]?key|private|service[_-]?account|auth|\.env",
                         re.IGNORECASE)


# A secret written into a file the model reads (``WANDB_API_KEY = "abc..."``, ``token: 'xyz...'``, ``"Authorization":
# "Bearer ..."``, ``api_key: str = "..."``, ``--hub_token=...``): a value assigned (``=`` or ``:``) to a name
# (``_secret_name``) replaced before the text leaves (the model may be a remote API). A quoted value of 6 characters or
# more (spaces allowed); an unquoted one that is a single word of 6 or more, not a number and not code
# (``tokenizer.eos``, ``os.environ[...]``, ``get_key()``, ``${VAR}``), in a Python file only with a digit in it (a
# variable's name has none). Neither a special token of a tokenizer (``"<|endoftext|>"``) nor a URL without
# credentials (``auth_url``; a URL's password is scrubbed by ``redact``).
SECRET_VALUE = re.compile(
    r"""(?<![\w.])(?P<name>[A-Za-z_][\w.-]*)["']?\]?\s*(?::\s*[A-Za-z_][\w.\[\], |]*?\s*)?[=:]\s*"""
    r"""(?:(?P<quoted>"(?!\[redacted\])[^"\n]{6,}"|'(?!\[redacted\])[^'\n]{6,}')"""
    r"""|(?P<bare>[^\s"'#,;}()\[\]]{6,})(?=[\s#,;})\]"']|$))""")
NO_SECRET = re.compile(r"<\|[^|\n]*\|>|</?[A-Za-z_]\w*>|\[[A-Z_]+\]"  # a special token: <|pad|>, </s>, [MASK]
                       r"|[A-Za-z][A-Za-z0-9+.-]*://[^\s@?#]*")  # a URL without credentials or query
SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey")  # a word ending so: accesstoken, clientsecret
AUTH_WORDS = ("auth", "authorization", "authentication")


def _secret_name(name: str) -> bool:
    """Whether ``name`` holds a word of a secret: its words (split at ``_``, ``-``, ``.`` and camelCase) or two of
    them together (``api_key``, ``apiKey``) ending in token, secret, password, passwd or apikey, or a word auth,
    authorization or authentication. Not ``tokenizer``, ``max_tokens``, ``author``."""
    words = [w.lower() for w in re.split(r"[_.-]+|(?<=[a-z0-9])(?=[A-Z])", name) if w]
    return any(w.endswith(SECRET_WORDS) or w in AUTH_WORDS
               for w in [*words, *(a + b for a, b in zip(words, words[1:], strict=False))])


def _hide_secret(found: re.Match[str], python: bool) -> str:
    """``SECRET_VALUE``'s match with its value ``[redacted]`` when the name is a secret's and the value one
    (``python``: the text is a Python file's, where an unquoted value is a secret only with a digit in it)."""
    bare = found["bare"]
    value = bare if bare is not None else found["quoted"][1:-1]
    if not _secret_name(found["name"]) or NO_SECRET.fullmatch(value):
        return found[0]
    if bare is not None and (_is_number(bare) or "." in bare or "{" in bare or bare.startswith("$")
                             or (python and not re.search(r"\d", bare))):
        return found[0]  # a number, code (an attribute, a template, a variable), a name in Python
    value_at = found.start("bare" if bare is not None else "quoted") - found.start()
    quote = found["quoted"][0] if bare is None else ""
    return f"{found[0][:value_at]}{quote}[redacted]{quote}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def project_files(objective: CommandObjectiveConfig) -> list[str]:
    """The files ``read_project`` reads, relative to ``objective.cwd``: the script first, the project's modules it
    imports, the config file it reads (objective.config), the YAML files of its Hydra config folder
    (``@hydra.main(config_path=...)``), then the README files and the config files of the folder itself (not its
    sub-folders, not hidden files, none whose link leaves it). Never data or binaries."""
    cwd = Path(objective.cwd or ".")
    root = cwd.resolve()
    script = script_of(objective.command, cwd)
    found = [script] if script else []
    if script:
        found += [f for f in project_imports(script, cwd) if not SECRET_NAME.search(Path(f).name)]
    if objective.config is not None:
        config = objective.config if objective.config.is_absolute() else cwd / objective.config
        if config.is_file() and inside(root, config):
            rel = config.resolve().relative_to(root).as_posix()
            if rel not in found:
                found.append(rel)
    if script:  # after the config file it reads: a large conf/ tree never pushes that out of the listing
        found += [f for f in hydra_configs(script, cwd) if not SECRET_NAME.search(Path(f).name) and f not in found]
    try:
        entries = sorted(cwd.iterdir(), key=lambda p: (not p.name.upper().startswith("README"), p.name))
    except OSError:
        return found
    for path in entries:
        name = path.name
        wanted = name.upper().startswith("README") or path.suffix.lower() in CONFIG_SUFFIXES
        if wanted and not name.startswith(".") and not SECRET_NAME.search(name) and path.is_file() \
                and inside(root, path) and name not in found:
            found.append(name)
    return found[:MAX_FILES]


def read_project(objective: CommandObjectiveConfig, files: list[str], path: Any,
                 current: Callable[[str], str | None] | None = None) -> str:
    """One answer of ``read_project``: the listing without ``path``; else the file's text, cut at ``READ_CHARS``.
    Refused, with the reason: a path outside the project folder (a link leaving it included), a file that is not
    one of ``files``, a binary or non-UTF-8 file, a file too large to read."""
    cwd = Path(objective.cwd or ".")
    root = cwd.resolve()
    text = str(path or "").strip()
    if not text:
        return (f"readable files of the project ({root.name}/): {', '.join(files) or 'none'}. Call read_project "
                f"with one of them as path (the first {READ_CHARS} characters are shown).")
    target = Path(text) if Path(text).is_absolute() else cwd / text
    if not inside(root, target):
        return f"refused: {text} is outside the project folder {root.name}/ (only its files are readable)"
    relative = target.resolve().relative_to(root).as_posix()
    if relative not in files:
        return (f"refused: {text} is not one of the project's readable files (the command's script and the modules "
                f"it imports, README and config files): {', '.join(files) or 'none'}")
    try:
        size = target.stat().st_size
        if size > MAX_FILE_BYTES:
            return f"refused: {relative} is {size / 1e6:.1f} MB, too large to read here"
        data = target.read_bytes()
    except OSError as exc:
        return f"cannot read {relative}: {exc.strerror or exc}"
    version = current(relative) if current is not None else None
    if version is not None:  # an editable file: as the best version holds it (the kept changes applied)
        data = version.encode("utf-8")
    if b"\0" in data:
        return f"refused: {relative} is a binary file, not text"
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"refused: {relative} is not UTF-8 text"
    content = redact(content)  # the values of secret environment variables and URL credentials, scrubbed
    python = Path(relative).suffix == ".py"
    content = SECRET_VALUE.sub(lambda found: _hide_secret(found, python), content)  # and keys written into the code
    if len(content) <= READ_CHARS:
        return f"{relative} ({len(content)} characters):\n{content}"
    return (f"{relative} (cut: the first {READ_CHARS} of {len(content)} characters):\n{content[:READ_CHARS]}\n"
            f"[cut at {READ_CHARS} characters]")


def _range(spec: ParamSpec) -> str:
    if spec.choices is not None:
        return "one of " + ", ".join(str(c) for c in spec.choices)
    extra = ", log scale" if spec.log else f", step {spec.step:g}" if spec.step else ""
    return f"{spec.low:g}..{spec.high:g}{extra}"


def _leaves(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The params' values by their dotted keys, nested dicts read through: ``{"train": {"l2": 1}}`` and
    ``{"train.l2": 1}`` are both ``train.l2``."""
    found: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        found.update(_leaves(value, name + ".") if isinstance(value, dict) and value else {name: value})
    return found


def objective_facts(cfg: NASConfig, files: list[str]) -> str:
    """The search's facts as the brief states them: the metric and its direction, the command, the searched keys
    (base value, range, condition), the params kept at their base, the project's readable files."""
    objective = cfg.objective
    assert objective is not None
    base = command_space(cfg).base  # what trial 0 runs: the params, the config file's values, the script's defaults
    searched = []
    for key, spec in cfg.search.space.items():
        when = ", only when " + ", ".join(f"{k} is {' or '.join(map(str, v))}" for k, v in spec.when.items()) \
            if spec.when else ""
        searched.append(f"- {key}: base {base.get(key)!r}, range {_range(spec)}{when}")
    kept = {k: v for k, v in _leaves(objective.params).items()
            if not any(k == s or (k.startswith(s + ".") and isinstance(base.get(s), dict))
                       for s in cfg.search.space)}  # a searched dict (choices of dicts) holds its leaves
    given = f"its config file {objective.config.name}" if objective.config else "the trial's params"
    lines = [f"objective: {objective.metric} of each trial ({better(objective.direction)}), the result of "
             f"`{objective.command}` run in a copy of {Path(objective.cwd or '.').name}/ with {given}",
             "searched params (base value: trial 0, range):", *searched]
    if kept:
        lines.append("params kept at their base: " + ", ".join(f"{k}={v!r}" for k, v in kept.items()))
    lines.append(f"project files read_project shows: {', '.join(files) or 'none'}")
    return "\n".join(lines)


def code_facts(cfg: NASConfig, code: CodeSearch) -> str:
    """What the brief says about code changes: the editable files, the rule that keeps a change, the tuning."""
    objective = cfg.objective
    assert objective is not None
    protected = ", ".join(objective.protected) if objective.protected is not None else "every other file"
    return (f"code: edit_code changes the editable files ({', '.join(code.files()) or 'none'}; protected: "
            f"{protected}) of the best version; the change runs as a trial with the best params and is kept "
            f"only if {objective.metric} improves by more than {cfg.search.min_delta:.0%}. After a kept change "
            f"the sampler tunes the params on it for {code.tune_every} trials. read_project shows the best "
            "version. A failed change shows you the command's error; a fix is another change.")


def describe_change(record: TrialRecord) -> str | None:
    """A code change trial in the agent's words (None: a params trial)."""
    change = change_of(record)
    if change is None:
        return None
    return f"code change: {change.reason or 'no reason given'} ({', '.join(change.paths())})"


def command_kit(cfg: NASConfig, code: CodeSearch | None = None) -> AgentKit:
    """The agent's kit for a command objective (see the module docstring); no leads: nothing is known about the
    project but its files, which the agent reads itself. With ``code`` (objective.editable) the agent also changes
    the code: the ``edit_code`` action, and ``read_project`` showing the best version of the editable files."""
    objective = cfg.objective
    assert objective is not None, "command_kit is for a command objective"
    files = project_files(objective)
    if code is not None:
        editable = code.files()
        files = [*editable, *(f for f in files if f not in editable)][:MAX_FILES]
    facts = objective_facts(cfg, files)
    if code is not None:
        facts += "\n" + code_facts(cfg, code)
    metric, direction = objective.metric, objective.direction

    def tools(ctx: PlanContext, model: AgentModel) -> list[Tool]:
        domain = ctx.domain
        assert isinstance(domain, TrialDomain)
        path: dict[str, Any] = {"type": "string", "enum": ["", *files]} if files else {"type": "string"}
        current = (lambda rel: code.read(rel, domain)) if code is not None else None
        return [
            Tool("read_project", "read one of the project's files (the training script, README, config files); "
                 "no path: the list", {"type": "object", "properties": {"path": path},
                                       "additionalProperties": False},
                 lambda args: read_project(objective, files, args.get("path"), current)),
            learning_curve(domain, f"{metric} by step ({better(direction)})"),
            *([code.tool()] if code is not None else []),
        ]

    verb = "maximise" if direction == "maximize" else "minimise"
    what = "a hyperparameter search" if code is None else "a search over the code and hyperparameters"
    view = (lambda domain: TrialView(domain, step="step")) if code is None else \
        (lambda domain: TrialView(domain, step="step", reason_chars=600, what=describe_change))
    return AgentKit(what=f"{what} of the user's own training command (`{objective.command}`): "
                    f"{verb} {metric}, {better(direction)}",
                    facts=lambda: facts, tools=tools, view=view,
                    more_actions=(EDIT_TOOL,) if code is not None else (),
                    check_more=(lambda tool, args, ctx: code.check_action(args, ctx)) if code is not None else None,
                    knowledge=runs_root() / "nas" / "knowledge.json",
                    signature=f"project {Path(objective.cwd or '.').resolve()}: {metric}", scope="this project")
