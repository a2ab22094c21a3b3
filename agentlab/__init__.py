"""agentlab: LLM-driven ML experiments from the shell."""

from __future__ import annotations

# The version lives in one place, pyproject.toml; an installed agentlab (wheel or editable) reports it from there.
# Read on first use (PEP 562), not at import: importlib.metadata takes tens of milliseconds to import, and the console
# script imports this package before agentlab.start can turn a Ctrl-C into one line.
_version: str | None = None


def __getattr__(name: str) -> str:
    global _version
    if name != "__version__":
        raise AttributeError(f"module 'agentlab' has no attribute {name!r}")
    if _version is None:
        from importlib import metadata

        try:
            _version = metadata.version("agentlab")
        except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
            _version = "0+unknown"
    return _version
