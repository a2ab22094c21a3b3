"""``core.files.deferred_interrupts``: ``redeliver=False`` (serve answers the signal itself), a signal the caller
took in another way counting as the first, and no handler of the block left bound when a signal comes while the
handlers are set. ``said_at_once``: the line said while the main thread is still blocked."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from agentlab.core.files import deferred_interrupts, said_at_once


def to_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def cli_handlers() -> Iterator[None]:
    """Ctrl-C and SIGTERM raising KeyboardInterrupt, as the CLI sets them."""
    before = {sig: signal.signal(sig, to_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("cli_handlers")
def test_redeliver_false_keeps_the_signal_for_the_block_to_answer() -> None:
    firsts: list[int] = []
    with deferred_interrupts(on_first=firsts.append, redeliver=False) as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        assert caught == [signal.SIGTERM] and firsts == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is to_interrupt  # nothing raised, the handler back


@pytest.mark.usefixtures("cli_handlers")
def test_a_signal_taken_elsewhere_makes_the_next_the_second() -> None:
    firsts: list[int] = []
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts(on_first=firsts.append, redeliver=False) as caught:
        caught.append(signal.SIGINT)  # as uvicorn's handlers took one while serving
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("went on")
    assert not done and not firsts
    assert signal.getsignal(signal.SIGTERM) is to_interrupt


@pytest.mark.usefixtures("cli_handlers")
def test_a_signal_while_the_handlers_are_set_leaves_none_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handlers were set before the try: a KeyboardInterrupt between the two left the block's handler on
    SIGINT for good (later Ctrl-Cs held by a block long gone)."""
    real = signal.signal
    raised: list[int] = []

    def interrupted_between(sig: int, handler: object) -> object:
        if sig == signal.SIGTERM and not raised:
            raised.append(sig)
            raise KeyboardInterrupt  # a Ctrl-C right after SIGINT's handler was set
        return real(sig, handler)  # type: ignore[arg-type]

    monkeypatch.setattr(signal, "signal", interrupted_between)
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        pass
    assert raised and signal.getsignal(signal.SIGINT) is to_interrupt


def test_ctrl_c_inside_a_long_call_is_said_at_once(sigint_raises: None) -> None:
    """A Ctrl-C while the main thread is inside torch (a backward pass) raised KeyboardInterrupt only when torch
    handed back, 16 s later, with nothing printed. Here the main thread waits, in C, for the line itself: were it
    said only once the main thread ran Python again, the wait would end by its timeout and ``said`` stay unset."""
    said = threading.Event()
    got: list[int] = []

    def say(signum: int) -> None:
        got.append(signum)
        said.set()

    with pytest.raises(KeyboardInterrupt):
        with said_at_once(say):
            # blocked here, the signal goes to another thread, as while the main one is inside torch's C++ code
            before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                os.kill(os.getpid(), signal.SIGINT)
                said.wait(60)  # the lock's wait is not interrupted: the signal was another thread's
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, before)
            for _ in range(1000):  # the handler runs at the main thread's next step
                pass
    assert got == [signal.SIGINT]
