"""An objective that is the user's own command: any training script, any metric, searched by every planner.

The contract, for the command's author:

- ``command`` is split like a shell line (``shlex``; no shell runs it: no pipes, ``&&`` or ``$VAR``). The trial's
  params reach it the way the script takes them: ``{args}`` (a word of its own) becomes one ``--key=value`` per
  param (argparse, click, typer, tyro, fire, jsonargparse or LightningCLI: ``script.argparse_options``; W&B
  Sweeps' ``${args}``; a switch, ``action="store_true"`` or click's ``is_flag``, is given bare when true and left
  out when false, and an option of several values, ``nargs="+"``, its values as words of their own),
  ``{overrides}`` one ``key=value`` per param
  (Hydra's form), ``{key}`` one value, ``{params}`` the path of ``params.json`` in the trial's own folder
  ``<run>/trials/run_NNNN/`` (the base params updated by the trial's values; a dotted key, ``optimizer.lr``, updates
  the nested dict). With ``config`` (the project's own config file, ``config_file.ConfigFile``) the workspace's copy
  of that file holds the trial's values.
- The environment also holds ``AGENTLAB_TRIAL_DIR`` (the trial folder), ``AGENTLAB_PARAMS`` (the params file) and
  ``AGENTLAB_WORKSPACE``. The command runs in the trial's workspace (``workspace.Workspaces``: a git worktree or a
  copy of the project) at the project folder's place, or in ``cwd`` itself without workspaces.
- The result is the last line of stdout that is a JSON object holding the metric key (and no ``step``), else
  ``metrics.json`` in the workspace or the trial folder, else the last line of output that reads ``<metric>:
  <number>`` or ``<metric>=<number>`` (with the line's other ``name: number`` pairs). Its other keys are kept with the
  trial. A JSON line that holds ``step`` and the metric, or a text line with the metric and an ``epoch`` / ``step``
  number, is an intermediate value: the pruner sees it, and when it says stop the command is terminated (the trial
  is pruned).
- A non-zero exit, no result, a metric that is not a finite number, or a run past ``timeout_s`` is a failed trial
  whose reason holds the last lines of stderr (secrets scrubbed: ``_log_end``); the search goes on. stdout and
  stderr are kept in the trial folder (``stdout.log``, ``stderr.log``).
- The command runs in its own process group, and on Linux with the parent-death signal set to SIGKILL: a timeout,
  Ctrl-C or SIGTERM of agentlab kills the whole group, and ``kill -9`` of agentlab kills the command (its own
  children are its to end: PyTorch's DataLoader workers do).

``validate()`` runs before trial 0: a program that cannot be found or run, a searched key the base params lack, or
an option the command gives itself that a placeholder passes too (``{args} --lr=3``), is a ``UsageError`` (exit 2)
before any trial.
"""

from __future__ import annotations

import codecs
import contextlib
import difflib
import functools
import json
import logging
import math
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agentlab.core.config import scrub_text
from agentlab.core.errors import UsageError
from agentlab.core.process import die_with_parent
from agentlab.core.runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from agentlab.core.search.loop import Pruned, TrialFailed
from agentlab.core.search.records import reason_line
from agentlab.core.search.space import lookup, same_value
from agentlab.core.tracking import flatten
from agentlab.nas.config import CommandObjectiveConfig, close_key
from agentlab.nas.script import (
    ArgOption,
    argparse_options,
    config_files,
    hydra_app,
    inside,
    project_imports,
    python_source,
    script_of,
)
from agentlab.nas.workspace import LINK_FILES

if TYPE_CHECKING:
    from agentlab.nas.code_change import CodeTrials
    from agentlab.nas.config_file import ConfigFile
    from agentlab.nas.workspace import Workspaces

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # the checks run at --dry-run, before the run and in it: each warning said once


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)

PLACEHOLDER = "{params}"
ARGS, OVERRIDES = "{args}", "{overrides}"
USES_PARAMS = (PLACEHOLDER, ARGS, OVERRIDES)
NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|(?i:nan|inf))"
# the program's first argument is a script that must exist when it ends so (`python train.py`, `bash run.sh`)
SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".R", ".r", ".jl", ".js", ".rb", ".pl")
PYTHON = re.compile(r"python[\d.]*(\.exe)?")  # an interpreter's name: python, python3, python3.11
SHELL_OPERATORS = frozenset({"|", "||", "&&", "&", ";", ">", ">>", "<", "2>", "2>>", "&>", "2>&1", "|&"})
STEP_NAMES = ("epoch", "step", "iter", "iteration")
EPOCH_HEADER = re.compile(r"\s*Epoch\s+(\d+)\s*/\s*\d+\s*$", re.IGNORECASE)  # Keras' line before an epoch
# `epoch 3`, `Epoch 3/10`, `step: 40`, the Hugging Face Trainer's `'epoch': 2.0` (`'epoch': '2'` from transformers
# 5); not a fraction (`'epoch': 0.5`)
STEP = re.compile(rf"\b(?:{'|'.join(STEP_NAMES)})\b['\"]?\s*[:=#\[]?\s*['\"]?(\d+)(?!\.\d*[1-9])", re.IGNORECASE)
STDERR_LINES = 10  # the lines of stderr a failed trial's reason quotes
KILL_GRACE_S = 2.0  # after SIGTERM to the group, SIGKILL follows this much later
NAME = re.compile(r"[A-Za-z_][\w./-]*")


# a number printed as its object (`tensor(0.3100)`, `tensor(0.31, grad_fn=...)`, NumPy 2's `np.float64(0.31)`, a
# dict of them printed whole): the number inside
WRAPPED = r"(?:tensor\(|(?:np\.|numpy\.)?(?:float|int)(?:16|32|64)\()?"


TOTAL = r"(?:/([1-9]\d*)(?!\d|\.\d))?"  # a count's total after it (`9890/10000`): group 3, ``_read_number``


def _pair(name: str) -> re.Pattern[str]:
    """`name: number` / `name=number` for names matching the pattern ``name`` (the number may be quoted, as in
    transformers 5's log dicts: `'eval_loss': '0.41'`, or printed as a tensor or NumPy scalar: ``WRAPPED``): group
    1 the name, 2 the number, 3 a count's total (PyTorch's MNIST example: `Accuracy: 9890/10000`, ``_read_number``)."""
    return re.compile(rf"(?<![\w.])({name})['\"]?\s*[:=]\s*['\"]?{WRAPPED}({NUMBER}){TOTAL}(?!\w|[.,]\d)")


def _read_number(found: re.Match[str]) -> float:
    """A match's number (group 2), a count over its total as their fraction (`9890/10000` is 0.989; two values
    apart by a slash, `0.41/0.52`, are the first)."""
    total = found.group(3) if found.re.groups >= 3 and found.group(2).isdigit() else None
    return float(found.group(2)) / int(total) if total else float(found.group(2))


def _row(name: str) -> re.Pattern[str]:
    """A table row holding a name and its number alone (PyTorch Lightning's test / validate table, with or without
    its box-drawing borders: `│ test/loss │ 0.5433 │`, `    test_loss     0.5433`): groups as ``_pair``'s."""
    return re.compile(rf"^[\s│┃|]*({name})[\s│┃|]+({NUMBER})[\s│┃|]*$")


def _spaced(name: str) -> re.Pattern[str]:
    """`name number`, the two apart by spaces alone (`INFO done. val_loss 0.41`, fairseq's `| loss 4.2 |`,
    nanoGPT's `step 250: train loss 1.97, val loss 2.08`): groups as ``_pair``'s. Read for the metric only."""
    return re.compile(rf"(?<![\w.])({name})[ \t]+({NUMBER}){TOTAL}(?!\w|[.,]\d)")


PAIR, SPACED = _pair(NAME.pattern), _spaced(NAME.pattern)
# a name apart from its number by spaces alone that looks like a metric's (`val loss 2.08`, `top-1 0.7`), not a word
# of a sentence (`trained on 320 rows`): what ``printed_instead`` lists of SPACED's names
GENERIC = (r"^(?:loss|acc|accuracy|err|error|score|mse|rmse|mae|auc|ppl|perplexity|bleu|rouge|precision|recall|wer"
           r"|cer|iou|nll)$")
METRIC_LIKE = re.compile(rf"[\d_./-]|{GENERIC}", re.IGNORECASE)
# the word before a generic name, part of the name as printed (`Val loss 0.3`, `Validation Loss: 0.3`): a word of
# letters, not an all-caps log level (INFO), a step's name or a little word of a sentence
WORD_BEFORE = re.compile(r"(?:^|(?<=[\s,;:|(\[{]))([A-Za-z][a-z]+) $")
NOT_A_NAME_WORD = frozenset({"the", "and", "or", "of", "on", "at", "to", "in", "is", "was", "with", "for", "an",
                             *STEP_NAMES})
SOURCE_LINE = re.compile(r"\.py['\"]?$")  # a name that is a source file: `file.py:12` names a line, not a metric


def nested_params(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a deep copy) updated by ``values``, a dotted key (``optimizer.lr``) setting a nested dict's value."""
    out = json.loads(json.dumps(base))
    for key, value in values.items():
        node = out
        *parents, last = key.split(".") if key not in out else [key]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def flat_values(params: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The base value of each searched key (dotted keys read through nested dicts); a missing key is left out."""
    return {key: found[1] for key in keys if (found := lookup(params, key))[0]}


def cli_value(value: Any) -> str:
    """A value on a command line: numbers and strings as written, booleans ``true`` / ``false``, None ``null``,
    lists and dicts as compact JSON (Hydra and ``json.loads`` both read it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _truth(value: Any) -> bool | None:
    """A switch's value as true or false: a bool, 0 / 1, or "true" / "false" / "yes" / "no"; None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    return None


@functools.cache
def _named(metric: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """``PAIR``, ``ROW`` and ``SPACED`` for one metric (its name escaped: ``Validation accuracy``)."""
    return _pair(re.escape(metric)), _row(re.escape(metric)), _spaced(re.escape(metric))


def text_metrics(line: str, metric: str) -> tuple[dict[str, float], int | None] | None:
    """The ``name: number`` / ``name=number`` pairs of a text line that reports ``metric`` (or a table row of the
    metric's name and a number alone: ``ROW``; or the metric's name and a number apart by spaces: ``SPACED``), and
    its epoch or step number (None for a final line); None when the line does not report the metric."""
    if metric not in line:  # most lines of a trial's output: passed over before any pattern runs
        return None
    pairs: dict[str, float] = {}
    taken = None
    pair, row_of, spaced = _named(metric)
    if (cells := row_of.match(line)) is not None:
        return {metric: float(cells.group(2))}, None
    if NAME.fullmatch(metric) is None:  # a name of several words (`Validation accuracy`): PAIR reads its last one
        if (taken := pair.search(line) or spaced.search(line)) is None:
            return None
        pairs[metric] = _read_number(taken)
    for found in PAIR.finditer(line):
        if SOURCE_LINE.search(found.group(1)):  # `train.py:12`, where logging or rich says a line was written
            continue
        if taken is None or found.end() <= taken.start() or found.start() >= taken.end():
            pairs[found.group(1).strip("'\"")] = _read_number(found)
    if metric not in pairs and (taken := spaced.search(line)) is not None:
        pairs[metric] = _read_number(taken)
    if metric not in pairs:
        return None
    step = STEP.search(line)
    if step is not None and (re.search(r"\bbest\b", line, re.IGNORECASE)
                             or re.search(r"\bat\s+$", line[:step.start()], re.IGNORECASE)):
        step = None  # `best val_loss: 0.21 at epoch 7`: a final line that names an epoch, not a step line
    for name in [name for name in pairs if name.lower() in STEP_NAMES]:  # `Epoch: 3/10` is no metric
        pairs.pop(name)
    return pairs, int(step.group(1)) if step else None


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".pkl", ".joblib", ".h5", ".keras", ".onnx",
                       ".npz")
CHECKPOINT_CAP = 500 * 1024 * 1024  # bytes of checkpoint kept per trial (the rest is left in the workspace)


def snapshot(folder: Path, names: tuple[str, ...] = ()) -> dict[Path, int]:
    """path -> mtime (ns) of the checkpoint files (``CHECKPOINT_SUFFIXES``) and the files named ``names`` under
    ``folder`` (links not followed): what a trial found, to tell it from what it wrote."""
    out: dict[Path, int] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)) and d != ".git"]
        for name in filenames:
            if name in names or (not names and os.path.splitext(name)[1].lower() in CHECKPOINT_SUFFIXES):
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    if not path.is_symlink():
                        out[path] = path.stat().st_mtime_ns
    if not names:
        out.update(snapshot(folder, ("metrics.json",)))
    return out


def keep_checkpoints(cwd: Path, folder: Path, before: dict[Path, int]) -> list[str]:
    """Checkpoint files the trial wrote into its workspace (by suffix; new or changed since the workspace was made,
    smallest first, up to ``CHECKPOINT_CAP`` bytes) moved to ``<trial>/checkpoint/`` before the workspace goes;
    the names kept."""
    found = []
    for path, mtime in snapshot(cwd).items():
        if path.suffix.lower() in CHECKPOINT_SUFFIXES and before.get(path) != mtime:
            with contextlib.suppress(OSError):
                found.append((path.stat().st_size, path))
    kept, total = [], 0
    for size, path in sorted(found, key=lambda item: item[0]):
        if total + size > CHECKPOINT_CAP:
            log.info("checkpoint %s (%d MB) over the %d MB cap: not kept", path.name, size >> 20,
                     CHECKPOINT_CAP >> 20)
            continue
        rel = path.relative_to(cwd)
        target = folder / "checkpoint" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        kept.append(str(rel))
        total += size
    return kept


def better(direction: str) -> str:
    """``higher is better`` / ``lower is better``: the direction in the words the model and the user read."""
    return "higher is better" if direction == "maximize" else "lower is better"


def merged_base(spec: CommandObjectiveConfig, config: ConfigFile | None, cwd: Path,
                keys: Iterable[str]) -> dict[str, Any]:
    """What trial 0 runs with: objective.params, on top of the config file's values when there is one. A key of
    ``keys`` (the searched ones) that neither gives starts at the script's own value: with ``{args}`` its parser's
    default, with ``{overrides}`` its value in the Hydra app's composed config, or the option its group chose
    (``hydra_config``)."""
    base = nested_params(config.values, flatten(spec.params)) if config is not None else spec.params
    missing = [key for key in keys if not lookup(base, key)[0]]
    defaults: dict[str, Any] = {}
    if missing and ARGS in spec.command:
        options = script_options(spec.command, cwd)
        defaults = {key: found.default[0] for key in missing
                    if (found := options.get(key)) is not None and found.default is not None}
    elif missing and OVERRIDES in spec.command:
        job, choices = hydra_config(spec.command, cwd, base)
        defaults = {key: choices[key] if key in choices else held[1] for key in missing
                    if key in choices or ((held := lookup(job, key))[0] and not isinstance(held[1], dict))}
    return {**base, **defaults}  # flat, as objective.params may be: a group's choice `model` beside `model.degree`


def hydra_config(command: str, cwd: Path, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job config a Hydra app composes from its own files with ``params`` as its overrides, and the option each
    of its groups chose (``model: linear``): Hydra's own composition, printed by the command with ``--cfg all`` (the
    job does not run). Empty when the script is not a Hydra app, the command has another placeholder, or the app
    cannot compose (``hydra_failure`` says why)."""
    found = _hydra(command, cwd, params)
    return (found[1], found[2]) if found is not None else ({}, {})


def hydra_failure(command: str, cwd: Path, params: dict[str, Any]) -> tuple[str, str] | None:
    """Why the Hydra app printed no config: the command as run to print it (``python train.py --cfg job``) and the
    line of its stderr that says what went wrong (``ModuleNotFoundError: No module named 'hydra'``: the command's
    python lacks it); None when it printed one, or it is no Hydra app ``hydra_config`` asks."""
    found = _hydra(command, cwd, params)
    if found is None or not found[3]:
        return None
    return shlex.join([*found[0], "--cfg", "job"]), found[3]


def _hydra(command: str, cwd: Path, params: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any],
                                                                     dict[str, Any], str] | None:
    try:
        parts = shlex.split(command)
    except ValueError:
        return None
    script = script_of(command, cwd)
    app = hydra_app(script, cwd) if script is not None else None
    if script is None or app is None:
        return None
    words: list[str] = []
    for part in parts:
        if part == OVERRIDES:
            words += [f"{key}={cli_value(value)}" for key, value in flatten(params).items()]
        elif re.search(r"\{[A-Za-z_][\w.-]*\}", part):
            return None
        else:
            words.append(part)
    # composed once per state of the script and its config files (a search builds its objective more than once)
    try:
        stamp = tuple((f, (cwd / f).stat().st_mtime_ns) for f in [script, *config_files(app, cwd, None)])
    except OSError:  # a file gone since it was listed: compose again
        stamp = ((str(time.monotonic_ns()), 0),)
    return (tuple(words), *_composed(tuple(words), str(cwd), stamp))


@functools.lru_cache(maxsize=8)
def _composed(words: tuple[str, ...], cwd: str, stamp: tuple[tuple[str, int], ...]) -> tuple[dict[str, Any],
                                                                                          dict[str, Any], str]:
    """The composed job config and the groups' choices, else empty ones and why (the stderr line that says it)."""
    import yaml

    why = "it printed no config"
    for flags in (["--cfg", "all", "--resolve"], ["--cfg", "all"]):  # unresolvable interpolations: as written
        try:
            done = subprocess.run([*words, *flags], cwd=cwd, capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                why = _failure(done.returncode, done.stderr)
            data = yaml.safe_load(done.stdout) if done.returncode == 0 else None
            choices = data.pop("hydra")["runtime"]["choices"] if isinstance(data, dict) else None
        except (OSError, subprocess.SubprocessError, yaml.YAMLError, ValueError, KeyError, TypeError) as exc:
            why = str(exc) if isinstance(exc, (OSError, subprocess.SubprocessError)) else "its output was no config"
            continue
        if isinstance(data, dict) and isinstance(choices, dict):
            return data, {group: option for group, option in choices.items() if not group.startswith("hydra/")}, ""
    return {}, {}, scrub_text(why)


def _failure(code: int, stderr: str) -> str:
    """A command's failure in one line: its exit code and the stderr line that says what went wrong. Hydra's own
    errors (`In 'config': Could not find 'model/cnn'`) come first, then its search path and its hint
    (`Set the environment variable HYDRA_FULL_ERROR=1 ...`): the first line is the one."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return f"exit code {code}, nothing on stderr"
    if lines[-1].startswith("Set the environment variable HYDRA_FULL_ERROR") and not any(
            line.startswith("Traceback") for line in lines):
        return f"exit code {code}; stderr: {lines[0].strip()}"
    return reason_line(f"exit code {code}" + _stderr_tail(stderr, 6))


def script_options(command: str, cwd: Path) -> dict[str, ArgOption]:
    """The options of the command's script and the project modules it imports (``argparse_options``: argparse,
    click, typer, tyro, fire; read, not run)."""
    script = script_of(command, cwd)
    if script is None:
        return {}
    return argparse_options([cwd / f for f in [script, *project_imports(script, cwd)]], shlex.split(command))


def check_option_values(command: str, cwd: Path, space: dict[str, Any]) -> None:
    """With ``{args}``, each searched value is one the script's option takes (``ArgOption.type`` and
    ``.choices``: argparse's and click's ``type=int`` / ``float`` and ``choices=``, a typer parameter's ``int``
    annotation, Enum or Literal); ``UsageError`` naming the first that is not, before any trial (the parser would
    fail each trial of it: `invalid int value: '38.43'`)."""
    script = script_of(command, cwd) if ARGS in command else None
    if script is None:
        return
    rules = script_options(command, cwd)
    convert = {"int": int, "float": float}
    for key, spec in space.items():
        rule = rules.get(key)
        if rule is None or rule.kind != "value":
            continue
        if spec.choices is None and rule.type == "int" and spec.kind == "float":
            raise UsageError(f"search.space.{key}: a range of floats ({spec.low}..{spec.high}), but {script} "
                             f"reads {rule.option} as an int",
                             hint=f"give int bounds ({{low: {int(spec.low)}, high: {int(spec.high)}}}), or choices")
        if spec.choices is None and rule.choices is not None:
            values: Iterable[Any] = range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)) \
                if spec.kind == "int" else [spec.low, spec.high]
        else:
            values = spec.choices or []
        for value in values:
            word = cli_value(value)
            try:
                taken = convert[rule.type](word) if rule.type else word
            except ValueError:
                raise UsageError(f"search.space.{key}: {value!r} cannot be read as {rule.type} (`{rule.option}="
                                 f"{word}`), as {script} reads it",
                                 hint="give values the option takes") from None
            if rule.choices is not None and taken not in rule.choices:
                raise UsageError(f"search.space.{key}: {value!r} is not one of {script}'s choices for "
                                 f"{rule.option} ({', '.join(map(str, rule.choices))})",
                                 hint="search the option's choices, or add the value to them")


def lookup_flat(passed: dict[str, Any], base: dict[str, Any], key: str) -> Any:
    return passed[key] if key in passed else lookup(base, key)[1]


class CommandObjective:
    """The ``Objective`` of ``core.search.loop`` for a command (see the module docstring for the contract).

    ``spec``: nas's ``objective:`` section, of which it reads ``command``, ``metric``, ``params``, ``timeout_s``,
    ``sandbox`` and ``eval_command`` (``cwd`` is the folder it resolves to; ``config`` the file it names, read);
    ``trial_dir(number)`` gives a trial's folder. ``base_params``: the base already known (``merged_base``; the eval
    command's is its trial's), else read from the project."""

    def __init__(self, spec: CommandObjectiveConfig, *, cwd: Path, trial_dir: Callable[[int], Path],
                 space_keys: tuple[str, ...] = (),
                 config: ConfigFile | None = None, workspaces: Workspaces | None = None,
                 code: CodeTrials | None = None, base_params: dict[str, Any] | None = None):
        self.command, self.metric = spec.command, spec.metric
        self.cwd, self.trial_dir, self.timeout_s = Path(cwd), trial_dir, spec.timeout_s
        self.space_keys = space_keys
        self.config, self.workspaces = config, workspaces
        self.code = code  # code trials (objective.editable): each trial's code built in its workspace, checked after
        self.sandbox = spec.sandbox  # bwrap: the command under bubblewrap (``sandboxed``)
        self.eval_command = spec.eval_command  # run after the command in its workspace: its metric is what counts
        self.own_params = spec.params  # objective.params as written: what {args} / {overrides} pass besides the space
        # the base every trial's values update: the config file's values, objective.params on top (merged_base)
        self.base_params = merged_base(spec, config, self.cwd, space_keys) if base_params is None else base_params
        self._seen: list[tuple[str, float]] = []  # (params, value) of the first trials: a command ignoring them
        self.ignored_params: str | None = None  # the warning, once given

    # ------------------------------------------------------------------ before any trial

    def parts(self) -> list[str]:
        try:
            return shlex.split(self.command)
        except ValueError as exc:
            raise UsageError(f"objective.command: cannot be split into arguments ({exc})",
                             hint="close the quotes; the command runs without a shell") from None

    def argv(self, params_path: str = PLACEHOLDER, values: dict[str, Any] | None = None) -> list[str]:
        """The command's words with the trial's params in place (``values``: the trial's space values; None: the
        placeholders left as written, for checks)."""
        parts = self.parts()
        if values is None:
            return [part.replace(PLACEHOLDER, params_path) for part in parts]
        # a searched key the trial leaves out (a conditional key whose condition does not hold) is not passed with
        # its base value either: Hydra refuses an override of a key its config group lacks
        passed = {**{k: v for k, v in flatten(self.own_params).items() if k not in self.space_keys or k in values},
                  **values}
        out: list[str] = []
        for part in parts:
            if part == ARGS:
                out += [arg for key, value in passed.items() for arg in self._arg(key, value)]
            elif part == OVERRIDES:
                out += [f"{key}={cli_value(value)}" for key, value in passed.items()]
            else:
                part = part.replace(PLACEHOLDER, params_path)
                for key in self._value_keys(part):
                    part = part.replace("{" + key + "}", cli_value(lookup_flat(passed, self.base_params, key)))
                out.append(part)
        return out

    def anchored(self, argv: list[str]) -> list[str]:
        """``argv`` with each relative path that leads out of the workspace absolute (``Workspaces.anchored``)."""
        return [self.workspaces.anchored(word) for word in argv] if self.workspaces is not None else argv

    def passes_overrides(self) -> bool:
        return OVERRIDES in self.parts()

    def fixed_overrides(self) -> dict[str, Any]:
        """What every trial gets besides its searched keys, in Hydra's form: objective.params' constants and the
        command's own ``key=value`` / ``+key=value`` / ``~key`` words."""
        fixed = {k: v for k, v in flatten(self.own_params).items() if k not in self.space_keys}
        for word in self.parts():
            found = re.fullmatch(r"([+~]{0,2}[A-Za-z_][\w./@-]*)(?:=(.*))?", word)
            if found and ("=" in word or word.startswith("~")):
                fixed[found.group(1)] = found.group(2)
        return fixed

    @functools.cached_property
    def options(self) -> dict[str, ArgOption]:
        """The script's options (``script_options``), read once."""
        return script_options(self.command, self.cwd)

    def _arg(self, key: str, value: Any) -> list[str]:
        """One param's ``{args}`` words: ``--key=value``, with the script's own option name when the param is named
        by its dest (``batch_size`` for ``--batch-size``). An argparse switch is given bare when true and left out
        when false or null (``--no-key`` when false for a BooleanOptionalAction; a store_false's dest the other way
        round: given when false; 0 / 1 and "true" / "false" count):
        argparse refuses ``--use_bias=true`` ("ignored explicit argument"). An option of several values (``nargs``)
        given a list gets each value as a word (``--sizes 64 32``: argparse's ``type=int`` refused ``[64,32]``), and
        a short option alone its value as a word too (``-l 0.5``)."""
        found = self.options.get(key, ArgOption(f"--{key}", "value", None))
        option, kind = found.option, found.kind
        if kind == "list" and isinstance(value, (list, tuple)):
            return [option, *(cli_value(v) for v in value)]
        if kind == "python":  # python-fire reads a Python literal: `--use_bn=False`, `--optimizer='adam'`
            return [f"{option}={value!r}"]
        on = _truth(value)
        if kind == "store_false" and (on is not None or value is None):  # the dest of `--no-x`: false gives it
            return [option] if on is False else []
        if kind in ("store", "optional") and (on is not None or value is None):
            if on:
                return [option]
            return ["--no-" + option.lstrip("-")] if kind == "optional" and on is False else []
        if not option.startswith("--"):  # a short option alone (`-l`): click reads `-l=0.5` as "=0.5"
            return [option, cli_value(value)]
        return [f"{option}={cli_value(value)}"]

    def _value_keys(self, part: str) -> list[str]:
        """The ``{key}`` placeholders of a word that name a param (other braces are left as written)."""
        return [key for key in re.findall(r"\{([A-Za-z_][\w.-]*)\}", part)
                if key not in ("params", "args", "overrides") and (key in self.space_keys
                                                                   or lookup(self.base_params, key)[0])]

    def uses_params(self) -> bool:
        """Whether the command can see a trial's params at all: a placeholder or the config file."""
        return self.config is not None or self._placeholders()

    def _placeholders(self) -> bool:
        """Whether the command line passes a trial's params (a placeholder)."""
        parts = self.parts()
        return any(p in part for part in parts for p in USES_PARAMS) or any(map(self._value_keys, parts))

    def validate(self) -> None:
        """Refuse (``UsageError``, exit 2) a command that cannot start or a searched key the base params lack."""
        parts = self.argv()
        for word in (ARGS, OVERRIDES):
            inside = [p for p in parts if word in p and p != word]
            if inside:
                raise UsageError(f"objective.command: {word} must be a word of its own ({inside[0]!r})",
                                 hint=f"it becomes several arguments: write it apart, e.g. `python train.py {word}`")
        if not parts:
            raise UsageError("objective.command: empty", hint="give the command that trains, e.g. "
                             "`python train.py --params {params}`")
        self.validate_program()
        self._check_placeholders(parts)
        self._check_option_names(parts)
        self._check_given_twice(parts)
        if self.space_keys and not self.uses_params():  # a warning: the script may read the file AGENTLAB_PARAMS names
            warn_once("objective.command passes no params ({args}, {overrides}, {params} or {key}) and "
                      "objective.config is not set: unless the script reads the params file AGENTLAB_PARAMS names, "
                      "it ignores the search's values")
        if self.config is not None:
            own = [k for k in self.space_keys if not lookup(self.own_params, k)[0]]
            self.config.require(own)
            self.config.check_writable(own)
            passes = any(p in part for part in parts for p in USES_PARAMS)
            for key in flatten(self.own_params):
                if not self.config.lookup(key)[0] and not passes and not any(
                        key in self._value_keys(part) for part in parts):
                    raise UsageError(f"objective.params.{key}: neither in {self.config.path.name} nor passed to "
                                     "the command (no {args}, {overrides}, {params} or {" + key + "} in it)",
                                     hint=f"fix the name to one of {self.config.path.name}'s keys, or pass it to the "
                                     "command with a placeholder")
        missing = [key for key in self.space_keys if not lookup(self.base_params, key)[0]]
        if missing:
            script = script_of(self.command, self.cwd)
            said, composed_keys = "", set()
            hint = "add it to objective.params with its current value (trial 0), or remove it from search.space"
            if script is not None and ARGS in self.command and missing[0] in self.options:
                said = (f", and {script}'s {self.options[missing[0]].option} has no default written as a literal "
                        "(read from the source, not run)")
            elif script is not None and ARGS in self.command:
                said = (f", and no option of {script} (argparse, click, typer, tyro, fire, jsonargparse or "
                        "LightningCLI; or of the modules it imports) gives it a literal default")
            elif script is not None and OVERRIDES in self.command and hydra_app(script, self.cwd):
                job, groups = hydra_config(self.command, self.cwd, self.own_params)
                composed, composed_keys = bool(job or groups), {*flatten(job), *groups}
                failed = None if composed else hydra_failure(self.command, self.cwd, self.own_params)
                said = (f", and the Hydra app's config (`{script} --cfg job`) does not hold it" if composed else
                        f", and the Hydra app did not print its config: `{failed[0]}` failed: {failed[1]}"
                        if failed is not None else ", and the Hydra app did not print its config")
                if failed is not None:
                    missing_module = "No module named" in failed[1]  # a python without hydra-core, say
                    hint = (f"make `{failed[0]}` print the app's config (it runs in {self.cwd}"
                            + ("; install the missing module for the python the command runs" if missing_module
                               else "") + "), then its keys are the base; or add the key to objective.params with "
                            "its current value")
            known = sorted({*flatten(self.base_params), *composed_keys,
                            *(self.options if ARGS in self.command else {})})
            close = [k for k in close_key(missing[0], known) if k != missing[0]]
            raise UsageError(f"search.space.{missing[0]}: not a key of objective.params{said}"
                             + (f" (did you mean {close[0]}?)" if close else ""), hint=hint)
        problems = self.check({})
        if problems:
            raise UsageError(f"objective.params: {problems[0]}", hint="give plain JSON values")
        if self.sandbox == "bwrap":
            check_bwrap()
        if self.eval_command is not None:
            try:
                evaluator = self._eval_objective(self.cwd)
                evaluator.validate_program()
                evaluator._check_given_twice(evaluator.argv(), searched_only=True)
            except UsageError as exc:
                raise UsageError(str(exc).replace("objective.command", "objective.eval_command"),
                                 hint=exc.hint) from None

    def _check_placeholders(self, parts: list[str]) -> None:
        """Warn of a ``{key}`` that names no param but is close to one (``{lrr}`` for ``lr``): it reaches the command
        as written, so the searched key never does. Only a warning: other braces stay as written, and a template
        such as Lightning's ``model-{epoch}.pt`` is close to an ``epochs`` param without being a typo."""
        known = sorted({*flatten(self.base_params), *self.space_keys})
        for part in parts:
            for key in re.findall(r"(?<!\$)\{([A-Za-z_][\w.-]*)\}", part):
                if key in ("params", "args", "overrides") or key in self._value_keys(part):
                    continue
                close = close_key(key, known)
                if close:
                    warn_once(f"objective.command: {{{key}}} names no param, so it reaches the command as written "
                               f"(did you mean {{{close[0]}}}?)")

    def _check_option_names(self, parts: list[str]) -> None:
        """Warn of an ``objective.params`` key that ``{args}`` passes as an option the script was not seen to have
        (``--lrr=0.1``: argparse exits 2 on it, and trial 0, the base, fails). Only a warning: options are read from
        the source, and one added in a loop, parsed with ``parse_known_args`` or a library's own (LightningCLI's
        ``trainer.*``: dotted keys are left alone) is not seen."""
        script = script_of(self.command, self.cwd)
        if ARGS not in parts or script is None or not self.options:
            return
        names = {name for key, found in self.options.items() for name in (key, found.option.lstrip("-"))}
        for key in flatten(self.own_params):
            if "." in key or key in self.space_keys or key in names or key.replace("_", "-") in names:
                continue
            close = close_key(key, sorted(self.options))
            warn_once(f"objective.params.{key}: {script} has no option for it that could be read from its source "
                       f"(it has {', '.join(sorted({f.option for f in self.options.values()}))}), so the script may "
                       "refuse it and trial 0 fail" + (f" (did you mean {close[0]}?)" if close else ""))

    def _check_given_twice(self, parts: list[str], *, searched_only: bool = False) -> None:
        """Refuse (``UsageError``, before trial 0) an option the command gives itself that a placeholder gives too:
        a key ``{args}`` passes (``--lr=3`` after ``{args}`` with lr searched: argparse keeps the last, so every
        trial ran lr=3 and the search found nothing), one ``{overrides}`` passes (``lr=3``), or an option given
        both with a ``{key}`` placeholder and without (``--lr={lr} --lr=3``). The script's words alone are read (a
        launcher's own options before it are not its: with no script found, only the placeholders' keys are looked
        for); an argparse option that collects repeats (``append``) is left alone. ``searched_only``: the keys of
        ``objective.params`` may be given again (an ``eval_command`` overriding a training setting, a larger
        ``--batch_size``), the searched ones may not."""
        at = self._script_at(parts)
        words = parts[(at if at is not None else -1) + 1:]
        passed = {**({} if searched_only else flatten(self.own_params)), **dict.fromkeys(self.space_keys)}
        why = {key: "a searched key" if key in self.space_keys else "a key of objective.params" for key in passed}

        def refuse(option: str, given: str, key: str, placeholder: str) -> None:
            raise UsageError(f"objective.command: gives {option} itself ({given}), and {placeholder} already passes "
                             f"{key} ({why[key]}): every trial would get {option} twice, and the script keeps one "
                             f"of the two ({'Hydra' if placeholder == OVERRIDES else 'argparse'}: the last), so the "
                             "search's value or the fixed one is silently dropped",
                             hint=f"remove {given} from objective.command: a fixed value goes in objective.params "
                             f"({key}: ...), a searched one in search.space")

        fixed = [(i, word) for i, word in enumerate(words) if "{" not in word]
        if ARGS in words:
            for key in passed:
                found = self.options.get(key, ArgOption(f"--{key}", "value", None))
                if found.repeats:
                    continue
                names = {found.option, *(["--no-" + found.option.lstrip("-")] if found.kind == "optional" else [])}
                for i, word in fixed:
                    if word.partition("=")[0] in names:
                        value = words[i + 1] if word in names and found.kind in ("value", "list", "python") \
                            and i + 1 < len(words) and not words[i + 1].startswith(("-", "{")) else None
                        refuse(word.partition("=")[0], word if value is None else f"{word} {value}", key, ARGS)
        if OVERRIDES in words:
            for _, word in fixed:
                found_key = re.fullmatch(r"\+{0,2}([A-Za-z_][\w./@-]*)=.*", word)
                if found_key is not None and found_key.group(1) in passed:
                    refuse(found_key.group(1), word, found_key.group(1), OVERRIDES)
        # an option given with a {key} placeholder and again without one: `--lr={lr} --lr=3`, `lr={lr} lr=3` (a
        # launcher's options, `docker run -e LR={lr} -e OMP=4`, and {params}, `--config base.yaml --config {params}`
        # as jsonargparse merges them, are not this)
        if at is None:
            return
        repeating = {o.option for o in self.options.values() if o.repeats}
        given: dict[str, list[str]] = {}
        for i, word in enumerate(words):
            name, eq, value = word.partition("=")
            if word in (ARGS, OVERRIDES) or name in repeating or not re.fullmatch(r"-{0,2}[A-Za-z_][\w./@-]*", name):
                continue
            if not eq:
                if not word.startswith("-") or i + 1 >= len(words) or words[i + 1].startswith("-"):
                    continue
                value = words[i + 1]
            given.setdefault(name, []).append(value)
        for name, values in given.items():
            held = [v for v in values if self._value_keys(v)]
            inner = {_set_key(v) for v in held}  # `--set lr={lr} --set epochs=3`: two settings, not one twice
            others = [v for v in values if v not in held and (None in inner or _set_key(v) in inner)]
            if held and others:
                other = others[0]
                raise UsageError(f"objective.command: gives {name} twice ({name}={held[0]} and {name}={other}): the "
                                 "script keeps one of the two (argparse: the last), so the search's value may never "
                                 "reach it", hint=f"give {name} once, as {name}={held[0]}")

    def _script_at(self, parts: list[str]) -> int | None:
        """The index of the command's script among ``parts`` (``script_of``; after ``-m``, its module), else None."""
        script = script_of(self.command, self.cwd)
        if script is None:
            return None
        target = (self.cwd / script).resolve()
        for i, part in enumerate(parts):
            if "{" not in part and not part.startswith("-") and (
                    (Path(part) if Path(part).is_absolute() else self.cwd / part).resolve() == target):
                return i
        return parts.index("-m") + 1 if "-m" in parts[:-1] else None

    def validate_program(self) -> None:
        """The command's program can be found and run, in an existing folder (``UsageError`` otherwise)."""
        parts = self.argv()
        if not self.cwd.is_dir():
            raise UsageError(f"objective.cwd: {self.cwd} is not a folder", hint="give the project's folder")
        if not parts:
            raise UsageError("objective.command: empty")
        # the words as written (posix=False keeps quotes): `--sep '|'` passes a quoted bar, no operator
        operator = next((word for word in shlex.split(self.command, posix=False) if word in SHELL_OPERATORS), None)
        if operator is not None:
            raise UsageError(f"objective.command: {operator!r} is a shell operator, and the command runs without a "
                             "shell (it would reach the program as an argument)",
                             hint="drop it (each trial's stdout and stderr are kept in its trial folder), or put the "
                             "pipeline in a script that passes its arguments on (\"$@\") and run that")
        program = parts[0]
        if os.sep in program or (os.altsep and os.altsep in program):
            path = Path(program) if Path(program).is_absolute() else self.cwd / program
            if not path.is_file() or not os.access(path, os.X_OK):
                why = "does not exist" if not path.exists() else "is not an executable file"
                raise UsageError(f"objective.command: {program} {why} (looked in {self.cwd})",
                                 hint="give the path of an executable, or run a script through its interpreter "
                                 "(python train.py ...)")
        elif shutil.which(program) is None:
            raise UsageError(f"objective.command: {program!r} is not found on PATH",
                             hint="install it, activate its environment, or give its full path")
        at = next((i for i, word in enumerate(parts) if i and not word.startswith("-")), None)
        if at is None or {"-c", "-m"} & set(parts[1:at]) or "{" in parts[at]:
            return
        script = parts[at]
        path = Path(script) if Path(script).is_absolute() else self.cwd / script
        if Path(script).suffix in SCRIPT_SUFFIXES and path.is_dir():
            raise UsageError(f"objective.command: {script} is a folder, not a script (looked in {self.cwd})",
                             hint="give the script's path (python train.py ...), or run a package with python -m")
        if PYTHON.fullmatch(Path(program).name) and path.is_dir() and not (path / "__main__.py").is_file():
            raise UsageError(f"objective.command: {script} is a folder with no __main__.py, which python cannot run "
                             f"(looked in {self.cwd})", hint="give the script's path (python train.py ...), or run "
                             "a package with python -m")
        if Path(script).suffix == ".py" and path.is_file():
            try:
                python_source(path)
            except (SyntaxError, UnicodeDecodeError) as exc:  # Python refuses to run it: every trial would fail
                where = f"{script}:{exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else script
                raise UsageError(f"objective.command: {where} is not UTF-8 and declares no other encoding, so Python "
                                 "cannot run it", hint="save it as UTF-8, or declare its encoding on its first line "
                                 "(# -*- coding: latin-1 -*-)") from None
        if Path(script).suffix in SCRIPT_SUFFIXES and not path.exists():  # it would fail every trial, trial 0 first
            shell = script.startswith("~") or "$" in script
            raise UsageError(f"objective.command: {script} does not exist (looked in {self.cwd})",
                             hint=("no shell runs the command, so ~ and $VARS are not expanded: give the path "
                                   "itself" if shell else "give the script's path relative to the folder the "
                                   "command runs in (objective.cwd, else the YAML's folder)"))

    def check(self, params: dict[str, Any]) -> list[str]:
        """Problems of a trial's params before it runs: they must make a JSON file."""
        try:
            json.dumps(nested_params(self.base_params, params), allow_nan=False)
        except (TypeError, ValueError) as exc:
            return [f"the params cannot be written as JSON: {exc}"]
        return []

    # ------------------------------------------------------------------ one trial

    def run(self, number: int, params: dict[str, Any], report: Callable[[int, float], bool]) -> dict[str, Any]:
        folder = self.trial_dir(number).absolute()  # the command runs in cwd: a relative --out would miss it
        folder.mkdir(parents=True, exist_ok=True)
        params_path = folder / "params.json"
        atomic_write_json(params_path, nested_params(self.base_params, params))
        with contextlib.suppress(FileNotFoundError):
            (folder / "metrics.json").unlink()  # a stale one must not pass for this run's result
        failed = True
        try:
            cwd = self.workspaces.create(number) if self.workspaces is not None else self.cwd
            guard = self.code.prepare(number, cwd, folder) if self.code is not None else None
            before = snapshot(cwd) if self.workspaces is not None else {}  # what the trial did not write
            if self.config is not None:
                self._write_config(cwd, folder, params)
            argv = self.anchored(self.argv(str(params_path), params))
            atomic_write_text(folder / "command.txt", shlex.join(argv) + "\n")
            env = {**os.environ, "AGENTLAB_TRIAL_DIR": str(folder), "AGENTLAB_PARAMS": str(params_path),
                   "AGENTLAB_WORKSPACE": str(cwd)}
            argv = self._confined(argv, number, cwd, folder)
            if self.sandbox == "bwrap":
                env["TMPDIR"] = str(folder / "tmp")
                (folder / "tmp").mkdir(exist_ok=True)
            start = time.monotonic()
            run = _Child(argv, cwd, env, folder)
            try:
                result, text_result, code = self._follow(run, report, start)
            except Pruned:
                failed = False  # stopped by the pruner: no failure to keep the workspace of
                raise
            finally:
                run.stop()
            seconds = round(time.monotonic() - start, 3)
            if code != 0:
                tail = _tail(folder / "stderr.log")
                if self.workspaces is not None and re.search(r"No such file or directory: '\.\./", tail):
                    tail += ("\n(a relative path out of the project: each trial runs in a copy of the project under "
                             f"{self.workspaces.root}, so ../ leads there; give the path absolute, or on the command "
                             "line, where it is given absolute)")
                raise TrialFailed(f"exit code {code} after {seconds:g} s" + tail)
            if self.eval_command:
                result = self._evaluate(number, params_path, params, cwd, env, folder)
            result = result or self._metrics_file(folder, cwd, before)
            # the last line naming the metric is the result: a word there (`val_loss: None` after the epochs' lines)
            if result is None and (unread := not_a_number(self.metric, folder, last=True)) is not None:
                raise TrialFailed(f"no result: {unread}" + _tail(folder / "stderr.log"))
            result = result or text_result or self._stderr_result(folder)
            if result is None and (unread := not_a_number(self.metric, folder)) is not None:
                raise TrialFailed(f"no result: {unread}" + _tail(folder / "stderr.log"))
            if result is None:
                where = "in the workspace (any folder) and " if self.workspaces is not None else ""
                raise TrialFailed(f"no result: no {self.metric!r} in a stdout line that is a JSON object (and no "
                                  f"'step'), a metrics.json written by the trial {where}in the trial folder, or a "
                                  f"line of stdout or stderr reading `{self.metric}: <number>`, "
                                  f"`{self.metric}=<number>` or `{self.metric} <number>`"
                                  + printed_instead(self.metric, folder) + _tail(folder / "stderr.log"))
            if self.code is not None and guard is not None:
                self.code.verify(guard, cwd)  # before its result counts: a run that rewrote a protected file
            out = {**self._result(result, folder), "seconds": seconds}
            failed = False
            if self.workspaces is not None:
                keep_checkpoints(cwd, folder, before)
        finally:
            if self.workspaces is not None:
                self.workspaces.done(number, failed)
        self._watch_ignored(params, out["value"])
        return out

    def _eval_objective(self, cwd: Path) -> CommandObjective:
        """``objective.eval_command`` as a command of its own (its words, its params placeholders) run in ``cwd``."""
        assert self.eval_command is not None
        spec = CommandObjectiveConfig.model_construct(command=self.eval_command, metric=self.metric,
                                                      params=self.own_params)
        return CommandObjective(spec, cwd=cwd, trial_dir=self.trial_dir, space_keys=self.space_keys,
                                config=self.config, base_params=self.base_params)

    def _confined(self, argv: list[str], number: int, cwd: Path, folder: Path) -> list[str]:
        """``argv`` under the sandbox (``objective.sandbox``): the trial's workspace and folder writable."""
        if self.sandbox != "bwrap":
            return argv
        top = self.workspaces.path(number) if self.workspaces is not None else cwd
        return sandboxed(argv, [top, folder], cwd)

    def _evaluate(self, number: int, params_path: Path, params: dict[str, Any], cwd: Path, env: dict[str, str],
                  folder: Path) -> dict[str, Any]:
        """``objective.eval_command`` after the command, in the same workspace (and sandbox): its result is the
        trial's (``eval_stdout.log``, ``eval_stderr.log`` in the trial folder)."""
        assert self.eval_command is not None
        argv = self._confined(self.anchored(self._eval_objective(cwd).argv(str(params_path), params)), number, cwd,
                              folder)
        start = time.monotonic()
        run = _Child(argv, cwd, env, folder, prefix="eval_")
        try:
            result, text_result, code = self._follow(run, lambda step, value: False, start)
        finally:
            run.stop()
        if code != 0:
            raise TrialFailed(f"objective.eval_command: exit code {code}" + _tail(folder / "eval_stderr.log"))
        if result is None and (unread := not_a_number(self.metric, folder, "eval_", last=True)) is not None:
            raise TrialFailed(f"objective.eval_command: no result: {unread}" + _tail(folder / "eval_stderr.log"))
        found = result or text_result or self._stderr_result(folder, "eval_")
        if found is None and (unread := not_a_number(self.metric, folder, "eval_")) is not None:
            raise TrialFailed(f"objective.eval_command: no result: {unread}" + _tail(folder / "eval_stderr.log"))
        if found is None:
            raise TrialFailed(f"objective.eval_command printed no {self.metric} (a JSON line with it, "
                              f"`{self.metric}: <number>`, `{self.metric}=<number>` or `{self.metric} <number>`)"
                              + _tail(folder / "eval_stderr.log"))
        return found

    def _write_config(self, cwd: Path, folder: Path, params: dict[str, Any]) -> None:
        """The workspace's copy of the project's config file with this trial's values; a copy of it in the trial
        folder (``config_used`` plus the file's suffix)."""
        assert self.config is not None and self.workspaces is not None, "a config file needs workspaces"
        wanted = {**flatten(self.own_params), **params}
        # only what differs from the file: a value the trial keeps stays as the user wrote it (1e-3, quotes, ...)
        values = {k: v for k, v in wanted.items()
                  if (found := self.config.lookup(k))[0] and not same_value(found[1], v)}
        text = self.config.render(values)
        rel = self.config.path.resolve().relative_to(self.cwd.resolve())
        if not inside(self.workspaces.root.resolve(), (cwd / rel).parent):  # a folder linked whole: never written
            raise TrialFailed(f"objective.config: {rel} lies in a folder the trial's workspace links to yours "
                              f"({(cwd / rel).parent.resolve()}: git ignores it and it holds over {LINK_FILES} "
                              "files, so it is linked, not copied), so the trial's values would be written into your "
                              "file: nothing written, the trial not run. Fix: move the config file out of that "
                              "folder and set objective.config to its new place")
        data = self.config.encode(text)  # in the file's own encoding (a Python module's coding declaration)
        atomic_write_bytes(cwd / rel, data)
        atomic_write_bytes(folder / f"config_used{self.config.path.suffix}", data)

    def _watch_ignored(self, params: dict[str, Any], value: float) -> None:
        """Warn once when three or more different params gave the same metric to the last digit and the command
        has no way to see them (no placeholder, no config file: it is most likely not reading its params) or only
        the config file (the script may read another file, or set the value again after reading it). Two are not
        enough: a metric with few possible values (accuracy on a small validation set) repeats by chance."""
        if self.ignored_params is not None or len(self._seen) >= 8 or self._placeholders():
            return  # objective.config alone is watched too: a script may not read the file as the trials write it
        key = json.dumps(params, sort_keys=True, default=str)
        self._seen.append((key, value))
        count = len({k for k, v in self._seen if v == value})
        if count < 3:
            return
        said = f"{count} trials with different params gave the same {self.metric} ({value!r})"
        if self.config is not None:
            self.ignored_params = (
                f"{said}, and objective.command gets them only through objective.config ({self.config.path.name}): "
                "the script probably does not read the values the trials write there (another file, or a value it "
                "sets again)")
        else:
            self.ignored_params = (
                f"{said} and objective.command passes no params ({{args}}, {{overrides}}, {{params}} or {{key}}) and "
                "objective.config is not set: the command probably ignores the search's values")
        log.warning("%s", self.ignored_params)

    def _follow(self, run: _Child, report: Callable[[int, float], bool],
                start: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        """Read the child's output until both pipes end: step lines (of stdout and stderr) go to ``report``, the
        last result line of stdout is kept. Returns (the last JSON result line or None, the last text result line
        or None, the exit code)."""
        result: dict[str, Any] | None = None
        text_result: dict[str, Any] | None = None  # the last text line reporting the metric, no epoch in it
        last_step: dict[str, Any] | None = None  # a script printing only per-epoch lines: its last one is the result
        history: list[dict[str, Any]] = []  # the step lines: history.json in the trial folder
        # Keras: a line `Epoch 3/10` alone, then lines of the epoch's metrics: the epoch of each stream
        epoch_of: dict[str, int] = {}
        # a step's point that reaches the pruner when the next step starts, as its last value: one of Keras' epoch
        # lines (the first is the first batch's), or a progress bar's drawn state (an epoch's first shows the
        # validation of the one before)
        unreported: dict[str, tuple[int, float]] = {}
        deadline = start + self.timeout_s if self.timeout_s is not None else None

        def prune(step: int, value: float) -> None:
            if report(step, value):
                run.stop()
                raise Pruned({"value": value, self.metric: value, "step": step})

        open_streams, stdout_closed = {STDOUT, STDERR}, 0.0
        while open_streams:
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                stream, line, drawn = run.lines.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    run.stop()
                    raise self._timed_out(run) from None
                if stdout_closed and time.monotonic() - stdout_closed > KILL_GRACE_S and run.process.poll() is not None:
                    break  # stderr held open by a process the command left behind
                continue
            if line is None:  # the command is ending: stdout's end, then what stderr still holds
                open_streams.discard(stream)
                stdout_closed = time.monotonic() if stream == STDOUT else stdout_closed
                continue
            data, later = _json_object(line), drawn
            if data is None:
                if (header := EPOCH_HEADER.match(line)) is not None:
                    if stream in unreported:
                        prune(*unreported.pop(stream))
                    epoch_of[stream] = int(header.group(1))
                    continue
                found = text_metrics(line, self.metric)
                if found is None:
                    continue
                pairs, step = found
                if step is None and stream in epoch_of:
                    step, later = epoch_of[stream], True
                if step is None:
                    if stream == STDOUT:  # a final line of stderr is read after the end (_stderr_result)
                        text_result = pairs
                    continue
                data = {**pairs, "step": step}
            if self.metric not in data:
                continue
            if "step" not in data:
                if stream == STDOUT:
                    result = data
                continue
            value, step = data[self.metric], data["step"]
            if _number(value) and _number(step) and float(step).is_integer():
                point = {"step": int(step), **{k: v for k, v in data.items() if _number(v)}}
                if history and history[-1]["step"] == point["step"]:
                    history[-1] = point  # a progress bar's updates, or both streams: the step's last line
                else:
                    history.append(point)
                if stream == STDOUT:  # stderr's lines count after stdout's (_stderr_result reads them in order)
                    last_step = {k: v for k, v in data.items() if k != "step"}
                    text_result = None  # a final line before training went on (an evaluation first) is not the end
                atomic_write_json(run.folder / "history.json", history)  # the learning curve, as it grows
                if stream in unreported and unreported[stream][0] != int(step):
                    prune(*unreported.pop(stream))
                if later:
                    unreported[stream] = (int(step), float(value))
                else:
                    unreported.pop(stream, None)
                    prune(int(step), float(value))
        for step, value in unreported.values():  # the last step's: for the pruner's later comparisons
            report(step, value)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            code = run.process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            raise self._timed_out(run) from None
        return result, text_result or last_step, code

    def _timed_out(self, run: _Child) -> TrialFailed:
        return TrialFailed(f"timed out after {self.timeout_s:g} s (objective.timeout_s)"
                           + _tail(run.folder / "stderr.log"))

    def _metrics_file(self, folder: Path, cwd: Path, before: dict[Path, int]) -> dict[str, Any] | None:
        """``metrics.json`` of the trial folder, else the newest one the trial wrote anywhere in its workspace (a
        Hydra-style ``outputs/<date>/metrics.json`` included; one the project held before is not this trial's),
        never of the user's own folder (an earlier run's); None without."""
        places = [folder / "metrics.json"]
        if self.workspaces is not None:
            written = [(mtime, path) for path, mtime in snapshot(cwd, ("metrics.json",)).items()
                       if before.get(path) != mtime]
            places += [path for _, path in sorted(written, reverse=True)]
        for path in places:
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TrialFailed(f"{path.name} cannot be read: {exc}") from None
            if isinstance(data, dict) and self.metric in data:
                return data
            log.info("%s has no %r key: not the result", path, self.metric)
        return None

    def _stderr_result(self, folder: Path, prefix: str = "") -> dict[str, Any] | None:
        """The last line of stderr that reports the metric, per-epoch or final (a script that reports through
        ``logging``): as on stdout, a final line before the last per-epoch line is not the result."""
        try:
            text = (folder / f"{prefix}stderr.log").read_bytes()[-65536:].decode("utf-8", errors="replace")
        except OSError:
            return None
        for line in reversed(text.splitlines()):
            found = text_metrics(plain(line), self.metric)
            if found is not None:
                return found[0]
        return None

    def _result(self, data: dict[str, Any], folder: Path) -> dict[str, Any]:
        value = data[self.metric]
        if not _number(value) or not math.isfinite(float(value)):
            raise TrialFailed(f"{self.metric} is {value!r}, not a finite number" + _tail(folder / "stderr.log"))
        kept = {k: scrub_text(v) if isinstance(v, str) else v for k, v in data.items()  # study, model: no secret
                if isinstance(v, (str, int, float, bool)) or v is None}
        return {**kept, "value": float(value), self.metric: float(value)}


STDOUT, STDERR = "stdout", "stderr"
LINE_END = re.compile(r"(\r\n|\r|\n)")
ANSI = re.compile(r"\x1b(?:\[[0-9;:?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")  # colours, links


def plain(line: str) -> str:
    """``line`` without terminal escape sequences: a script may colour its output even into a pipe
    (``\\x1b[32mval_loss: 0.41\\x1b[0m``); the logs keep them, the result is read without."""
    return ANSI.sub("", line) if "\x1b" in line else line


class _Child:
    """The running command: its own process group; stdout and stderr each read by a thread into
    ``{prefix}stdout.log`` / ``stderr.log`` and onto ``lines`` as (stream, line, drawn), (stream, None, False) when
    it closes; ``drawn``: the line ended in a carriage return (a progress bar's state, redrawn over)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], folder: Path, prefix: str = ""):
        self.folder = folder
        self.lines: queue.Queue[tuple[str, str | None, bool]] = queue.Queue()
        logs = {name: open(folder / f"{prefix}{name}.log", "wb")  # noqa: SIM115 - closed by the reader threads
                for name in (STDOUT, STDERR)}
        try:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, start_new_session=True,
                                            preexec_fn=die_with_parent())
        except OSError as exc:
            for log_file in logs.values():
                log_file.close()
            raise TrialFailed(f"the command could not start: {exc.strerror or exc} ({argv[0]})") from None
        self._readers = [threading.Thread(target=self._read, args=(name, pipe, logs[name]), daemon=True,
                                          name=f"agentlab-command-{name}")
                         for name, pipe in ((STDOUT, self.process.stdout), (STDERR, self.process.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: str, pipe: IO[bytes], log_file: IO[bytes]) -> None:
        """What the pipe holds, into the log as it comes (a progress bar's updates too, which end in carriage
        returns and no newline for a whole epoch) and onto ``lines``, a line ending at a newline or a carriage
        return (each update of a progress bar a line of its own)."""
        decoder, pending = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
        try:
            while chunk := os.read(pipe.fileno(), 65536):
                log_file.write(chunk)
                log_file.flush()
                *parts, pending = LINE_END.split(pending + decoder.decode(chunk))
                for line, end in zip(parts[::2], parts[1::2], strict=True):
                    if (line := plain(line)).strip():
                        self.lines.put((stream, line, end == "\r"))
            if (pending := plain(pending + decoder.decode(b"", final=True))).strip():
                self.lines.put((stream, pending, False))
        except (OSError, ValueError):  # the pipe closed under the reader (stop() after its grace period)
            pass
        finally:
            log_file.close()
            self.lines.put((stream, None, False))

    def stop(self) -> None:
        """End the whole process group (SIGTERM, SIGKILL after a grace period) if it still runs; let the readers
        write what the pipes still hold and close the files."""
        kill_group(self.process)
        for reader in self._readers:
            reader.join(timeout=KILL_GRACE_S)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def sandboxed(argv: list[str], writable: list[Path], cwd: Path) -> list[str]:
    """``argv`` under bubblewrap: the file system read-only but ``writable`` (the trial's workspace and folder) and
    no network but loopback (a network namespace of its own), killed when agentlab dies. Temporary files go to
    ``TMPDIR`` (the caller points it into the trial folder): /tmp is read-only like the rest."""
    words = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in writable:
        words += ["--bind", str(path.resolve()), str(path.resolve())]
    return [*words, "--unshare-net", "--die-with-parent", "--chdir", str(cwd.resolve()), "--", *argv]


def check_bwrap() -> None:
    """``UsageError`` (exit 2, before trial 0) when bubblewrap is missing or cannot make its namespaces here."""
    if shutil.which("bwrap") is None:
        raise UsageError("objective.sandbox: bwrap is not installed", hint="install bubblewrap (Debian: apt-get "
                         "install bubblewrap), or set objective.sandbox: none")
    probe = subprocess.run(sandboxed(["true"], [], Path("/")), capture_output=True, timeout=30)
    if probe.returncode != 0:
        why = probe.stderr.decode("utf-8", "replace").strip()[:200]
        raise UsageError(f"objective.sandbox: bwrap cannot run here: {why}",
                         hint="allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or "
                         "set objective.sandbox: none")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``process``'s group, then SIGKILL to what is left of it after ``KILL_GRACE_S``; reaps it."""
    pgid = process.pid  # start_new_session: the child leads its own group
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is gone (its leader exited and so did every member)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(pgid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_S)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _set_key(value: str) -> str | None:
    """The key of an option's ``key=value`` value (``--set lr=3``: ``lr``), else None."""
    found = re.fullmatch(r"\+{0,2}([A-Za-z_][\w.]*)=.*", value, re.DOTALL)
    return found.group(1) if found else None


def not_a_number(metric: str, folder: Path, prefix: str = "", last: bool = False) -> str | None:
    """Where the trial's output gave the metric a value that is no number (`val_loss: abc`), as a failure's
    reason says it: ``stdout line 3 gives val_loss a value that is not a number: `val_loss: abc```; the last such
    line of stdout, else of stderr; None when no line does (the metric was not printed at all). ``last``: only when
    that line is the last naming the metric (of stdout, else of stderr), the final result line, and the same stream
    gave the metric a number before it: epoch lines that gave it numbers before it are no result then; a number
    after it is. A stream whose lines give the metric words alone is no result either way (`resumed: val_loss=None`
    on stdout while the epochs log to stderr): the next stream is read."""
    # a word for its value (`abc`, `None`, `'n/a'`), not a format (`{val_loss:.2f}`) nor a number's start
    given = re.compile(rf"(?<![\w.]){re.escape(metric)}['\"]?\s*[:=]\s*['\"]?[A-Za-z]")
    for stream in (STDOUT, STDERR):
        end = _log_end(folder / f"{prefix}{stream}.log", 1_000_000)
        if end is None:
            continue
        text, cut = end
        lines = text.splitlines()
        word: str | None = None  # last mode: the stream's last line naming the metric, a word
        for number in range(len(lines) - 1, 0 if cut else -1, -1):  # a line cut by the seek is no line
            line = lines[number].strip()
            data = _json_object(line)
            if last and (text_metrics(line, metric) is not None or (data is not None and metric in data)):
                # a number (or a JSON value) before the word: the epochs' lines, and the final word fails the
                # trial; with no word after it, the metric's last line gave it a number: that is the result
                return word
            if word is None and given.search(line) and text_metrics(line, metric) is None and data is None:
                at = f"{stream} line {number + 1}" if not cut else f"a line of {stream}"
                shown = line if len(line) <= 200 else line[:200] + "..."
                word = f"{at} gives {metric} a value that is not a number: `{shown}`"
                if not last:
                    return word
    return None


def printed_instead(metric: str, folder: Path) -> str:
    """``; it printed val_loss, val_acc (did you mean metric: val_loss?)``: the names the trial's output gave numbers
    to (JSON keys, ``name: number``, ``name=number``, ``name number`` when the name looks like a metric's:
    ``METRIC_LIKE``), when the metric was not among them; empty when none."""
    names: dict[str, None] = {}  # in the order first printed, each once
    for log_name in ("stdout.log", "stderr.log"):
        end = _log_end(folder / log_name, 1_000_000)  # the end, where a final result line is
        if end is None:
            continue
        text, cut = end
        for line in text.splitlines()[1 if cut else 0:]:  # a line cut by the seek is no line
            data = _json_object(line)
            found = ([k for k, v in data.items() if _number(v)] if data
                     else [_as_printed(line, found) for found in PAIR.finditer(line)]
                     + [_as_printed(line, found) for found in SPACED.finditer(line)
                        if METRIC_LIKE.search(found.group(1))])
            names.update((n.strip("'\""), None) for n in found
                         if n.lower() not in STEP_NAMES and not SOURCE_LINE.search(n))
    names_list = list(names)
    if not names_list:
        return ""
    close = [n for n in names_list if n.lower() == metric.lower()][:1] or difflib.get_close_matches(
        metric, names_list, n=1, cutoff=0.6)  # first the one that differs in case alone (`Val loss`)
    shown = ", ".join(names_list[:8]) + (f" and {len(names_list) - 8} more" if len(names_list) > 8 else "")
    return f"; it printed {shown}" + (f" (did you mean metric: {close[0]}?)" if close else "")


def _as_printed(line: str, found: re.Match[str]) -> str:
    """The name of a ``PAIR`` / ``SPACED`` match as the line prints it: a generic one (`loss`) with the word before
    it (`Val loss`, `Validation Loss`)."""
    name = found.group(1)
    before = WORD_BEFORE.search(line, 0, found.start(1))
    if before is None or not re.match(GENERIC, name, re.IGNORECASE) or before.group(1).lower() in NOT_A_NAME_WORD:
        return name
    return f"{before.group(1)} {name}"


def _log_end(path: Path, limit: int) -> tuple[str, bool] | None:
    """The last ``limit`` bytes of a trial's log as text (``plain``, secrets scrubbed: ``scrub_text``), and whether
    the file holds more before them (its first line may then be cut); None when it cannot be read. What a failure's
    reason quotes from the logs goes to the console, the study, the agent's state and the planner model (maybe a
    remote API): a secret the command printed (``invalid key <WANDB_API_KEY's value>``) reaches none of them."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            start = max(0, handle.tell() - limit)
            handle.seek(start)
            text = plain(handle.read().decode("utf-8", errors="replace"))  # as messages: no colours
    except OSError:
        return None
    return scrub_text(text), start > 0


def _tail(path: Path, lines: int = STDERR_LINES) -> str:
    """``; stderr (last N lines): ...`` from the trial's stderr.log, or empty when it has nothing."""
    end = _log_end(path, 16_384)
    return _stderr_tail(end[0], lines) if end is not None else ""


def _stderr_tail(text: str, lines: int = STDERR_LINES) -> str:
    """``; stderr (last N lines): ...``: the last ``lines`` lines of stderr's ``text`` that hold something, or empty
    when none does (a trial's failure reason; a Hydra app's that printed no config: ``_failure``)."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return f"; stderr (last {len(kept)} lines):\n" + "\n".join(kept) if kept else ""
