"""Jinja2 for stage prompts and template aggregation, in a sandbox that only sees plain data.

Templates come from YAML files that may be shared, so they run in ``ImmutableSandboxedEnvironment``: no
underscore attributes, no mutation of the values passed in, and only the ``range`` global (``cycler``, ``joiner``,
``namespace`` and ``lipsum`` are removed: their objects lead back to Python internals). Undefined names and blocked
attributes raise instead of rendering as empty text, so a leak attempt or a typo is an error, not a silent blank.
"""

from __future__ import annotations

import functools
from typing import Any

from agentlab.core.errors import ConfigError


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals = {"range": env.globals["range"]}  # the sandbox's bounded range
    return env


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> Any:
    return _env().from_string(text)


def template_problem(text: str | None) -> str | None:
    """None when ``text`` compiles and names no dunder attribute (``__class__``: every object has them, and the
    sandbox refuses them only when it renders, once a session folder exists; a plain ``_id`` key of a mapping
    renders), else the problem with its line ("syntax error: line 2: unexpected '}'")."""
    if text is None:
        return None
    from jinja2 import TemplateSyntaxError, nodes

    try:
        _compiled(text)
    except TemplateSyntaxError as exc:
        return f"syntax error: line {exc.lineno}: {exc.message}"
    for node in _env().parse(text).find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Filter):  # x|attr("__class__")
            name = getattr(node.args[0], "value", None) if node.name == "attr" and node.args else None
        else:
            name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(name, str) and name.startswith("__"):
            return f"line {node.lineno}: '{name}' is an underscore attribute (Python internals), which templates " \
                   "cannot reach"
    return None


def references(text: str) -> tuple[set[str], set[str]]:
    """What a template that compiles reads: the variables it takes from outside, and the stages it names as
    ``stages.NAME`` or ``stages['NAME']`` (``stages[name]`` with a computed name and method calls such as
    ``stages.get(...)`` are left to run time)."""
    from jinja2 import meta, nodes

    tree = _env().parse(text)
    variables = meta.find_undeclared_variables(tree)
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    stages = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not (isinstance(node.node, nodes.Name) and node.node.name == "stages") or id(node) in called:
            continue
        if isinstance(node, nodes.Getattr):
            stages.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            stages.add(node.arg.value)
    return variables, stages if "stages" in variables else set()


def render(text: str, where: str, **variables: Any) -> str:
    """Render ``text`` with ``variables``; any template failure is a ``ConfigError`` naming ``where``."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    try:
        return _compiled(text).render(**variables)
    except SecurityError as exc:
        raise ConfigError(f"{where}: the template tried to reach Python internals ({exc})",
                          hint="templates see only plain data: input, original, stages, answers") from None
    except TemplateError as exc:
        stages = f"; stages available: {', '.join(variables['stages']) or 'none'}" if "stages" in variables else ""
        raise ConfigError(f"{where}: template error: {exc}",
                          hint=f"variables available: {', '.join(sorted(variables))}{stages}") from None
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:  # {{ 1/0 }}, range too big, bad call
        raise ConfigError(f"{where}: template error: {type(exc).__name__}: {exc}",
                          hint="fix the expression in the template") from None
