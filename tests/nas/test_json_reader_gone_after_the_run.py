"""`agentlab nas ... --json | head -c0`: the run had finished and was recorded completed when its JSON lost its
reader, yet the exit said "interrupted; continue with --resume"; it exits 141 and says nothing now."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_own_code import write_project


def test_a_finished_runs_json_reader_gone_says_no_interruption(in_tmp: Path) -> None:
    config = write_project(in_tmp)
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "nas", "-c", str(config), "-n", "2", "--planner",
                             "random", "--json", "--out", "runs/done"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=in_tmp)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the run ends
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=240) == 141, err
    assert "interrupted" not in err and "Traceback" not in err, err
    assert json.loads((in_tmp / "runs" / "done" / "run.json").read_text())["status"] == "completed"
