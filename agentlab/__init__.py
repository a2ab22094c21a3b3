"""agentlab: LLM-driven ML experiments from the shell."""

from importlib import metadata

# The version lives in one place, pyproject.toml; an installed agentlab (wheel or editable) reports it from there.
try:
    __version__ = metadata.version("agentlab")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
