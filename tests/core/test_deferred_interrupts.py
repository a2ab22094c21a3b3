"""``core.files.deferred_interrupts``: ``redeliver=False`` (serve answers the signal itself), a signal the caller
took in another way counting as the first, and no handler of the block left bound when a signal comes while the
handlers are set."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from agentlab.core.files import deferred_interrupts


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
