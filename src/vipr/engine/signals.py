"""Stop signals for the training loops: Ctrl-C (SIGINT) and SIGTERM stop a run after the current step.

A loop installs a :class:`StopRequest` for the duration of a run (``handling``); the handler only
records the signal, so the step in flight finishes and the loop saves a consistent checkpoint
before it stops: resuming after Ctrl-C is then bit-exact. A second signal raises
KeyboardInterrupt at once (the way out of a step that hangs).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The handler: remembers the first stop signal; a second one raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum  # acted on by the loop after the current step


@contextmanager
def handling(handler: Callable, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Install ``handler`` for ``signals`` while the block runs and restore the previous handlers.

    Only the main thread may set handlers (Python's rule); elsewhere (a test's worker thread,
    an embedded server) the block runs with the handlers unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
