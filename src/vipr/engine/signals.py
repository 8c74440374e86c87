"""Stop signals for the training loops: a handler for the duration of a run, then the previous ones."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def handling(handler: Callable, signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
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
