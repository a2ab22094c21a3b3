"""The console script's first second: a Ctrl-C while typer and agentlab's core are still importing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A Ctrl-C that lands while `typer` is imported, made exact: the import itself raises KeyboardInterrupt.
_CTRL_C_IN_IMPORT = textwrap.dedent(
    """
    import sys

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == "typer":
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    from agentlab.start import run

    run()
    """
)


def test_a_ctrl_c_while_importing_is_one_line_and_exit_130() -> None:
    done = subprocess.run([sys.executable, "-c", _CTRL_C_IN_IMPORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "interrupted before the command started: nothing was written; run it again"
    ]


def test_python_dash_m_and_the_console_script_share_the_entry() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["agentlab"] == "agentlab.start:run"
    assert "from agentlab.start import run" in (root / "agentlab" / "__main__.py").read_text()
