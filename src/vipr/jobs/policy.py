"""What an ended attempt makes of its job: one decision table for the worker and for crash recovery.

    why (the stop's cause)   exit code   ->  state, reason
    cancelled                any             cancelled, cancelled
    None | timeout | stopped 0               succeeded (then registration, outputs.register)
    stopped (the worker's)   != 0            queued, stopped   (not counted against retry.max_retries)
    None                     != 0            failed  ) queued again, counted, when the kind is in retry.on
    timeout                  != 0            timeout ) and retries are left; else failed with that reason
    evicted (worker died)    unknown         evicted )
"""

from __future__ import annotations

from vipr.jobs.spec import JobSpec
from vipr.jobs.store import CANCELLED, FAILED, QUEUED, SUCCEEDED

STOPPED, TIMEOUT, EVICTED = "stopped", "timeout", "evicted"


def next_state(why: str | None, code: int | None, spec: JobSpec, retries: int) -> tuple[str, str | None]:
    """(state, reason) for an attempt stopped for ``why`` (None: it ended by itself) with exit ``code``,
    ``retries`` re-queues already granted by the retry policy."""
    if why == CANCELLED:
        return CANCELLED, CANCELLED
    if code == 0 and why != EVICTED:
        return SUCCEEDED, None
    if why == STOPPED:
        return QUEUED, STOPPED
    kind = why or FAILED
    if kind in spec.retry.on and retries < spec.retry.max_retries:
        return QUEUED, kind
    return FAILED, kind


def counted(reason: str | None) -> bool:
    """Whether a re-queue for ``reason`` uses one of the retry policy's retries."""
    return reason != STOPPED
