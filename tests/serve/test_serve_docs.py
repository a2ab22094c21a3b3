"""docs/commands/serve.md's runnable examples poll the gateway's log until it says "serving on": a poll that runs
before the log exists must say nothing (it printed `grep: serve.log: No such file or directory`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "commands" / "serve.md"
BLOCK = re.compile(r"^<!-- runnable(?::\s*slow)? -->\s*\n```bash\s*\n(.*?)^```", re.M | re.S)
POLL = re.compile(r"^for i in \$\(seq (\d+)\); do (.*serve\.log.*); done$", re.M)


def test_the_log_polls_are_quiet_before_the_log_exists(tmp_path: Path) -> None:
    polls = [m for block in BLOCK.findall(PAGE.read_text(encoding="utf-8")) for m in POLL.finditer(block)]
    assert len(polls) >= 2  # the built-in model's example and the tool round trip
    for poll in polls:
        once = f"for i in $(seq 2); do {poll.group(2).replace('sleep 1', 'true')}; done"  # no serve.log yet
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", once], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0 and done.stderr == "", (poll.group(0), done.stderr)
