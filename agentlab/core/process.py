"""Child processes that die with agentlab."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # prctl(2): the signal the child gets when its parent dies


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to send the child ``sig`` (SIGKILL; SIGTERM lets it clean up, as an evolve
    worker gives its batch back) when agentlab dies (``kill -9`` included); None elsewhere. libc is loaded here,
    before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # agentlab died before the call: nothing would send the signal
            os.kill(os.getpid(), sig)

    return preexec
