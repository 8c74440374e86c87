"""Progress on stderr, a live bar on a terminal or log lines elsewhere, and the JSONL metrics log.

A bar that redraws itself ten times a second is right on a terminal and wrong in a log file
(a 2-minute ``vipr quickstart`` piped to a file wrote 173 KB of redraws). So bars are live only
when stdout and stderr are both terminals and the user did not pass ``--no-progress``;
otherwise the training loop prints one line per epoch (or per ``every`` steps), with the
figures the bar shows::

    train: step 39/78 (50%) epoch 1 loss 5.2361 lr 0.06 1,020 img/s elapsed 0:04 ETA 0:04

and short side tasks (decoding, feature passes, banks) print nothing unless they run long.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

SILENT_MAX_S = 60.0  # in line mode, a line at least this often, however long an epoch is
SIDE_TASK_QUIET_S = 10.0  # line mode: a side task shorter than this prints nothing


def live_terminal() -> bool:
    """True when stdout and stderr are both terminals: a redrawn bar is then seen, not logged."""
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def clock(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: elapsed and remaining time as tqdm shows it."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """The training loop's step counter: a live bar, or a log line every ``every`` steps.

    Args:
        total: steps of the whole run; ``initial``: steps already done (a resumed run).
        enabled: False prints nothing at all (non-main ranks).
        bars: False (``--no-progress``) asks for log lines even on a terminal.
        epoch_steps: steps per epoch; in line mode one line per epoch by default.
        every: steps between log lines (default ``epoch_steps``, else a tenth of the run).
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train", *,
                 bars: bool = True, epoch_steps: int | None = None, every: int | None = None):
        self.total, self.n, self.desc, self.enabled = total, initial, desc, enabled
        self.live = enabled and bars and live_terminal()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr,
                        dynamic_ncols=True, disable=not self.live)
        self.every = max(1, every or epoch_steps or math.ceil(total / 10))
        self.started = self.last_line_t = time.perf_counter()
        self.first = self.last_line_n = initial
        self.status, self.notes = "", ""

    def update_stats(self, epoch: int, loss: float, rate: float, lr: float | None = None) -> None:
        lr_text = f" lr {lr:.4g}" if lr is not None else ""
        self.postfix(f"epoch {epoch} loss {loss:.4f}{lr_text} {rate:,.0f} img/s")

    def postfix(self, text: str) -> None:
        """The status after the bar, shown at its next refresh (or on the next log line)."""
        self.status = text
        self.bar.set_postfix_str(text, refresh=False)

    def note(self, text: str) -> None:
        """A short status before the bar, e.g. the last feature-bank refresh time."""
        self.notes = text
        self.bar.set_description_str(text, refresh=False)

    def report(self) -> None:
        """In line mode, a line now: figures that arrive after an epoch's last step (a kNN probe)."""
        if self.enabled and not self.live:
            self._line(time.perf_counter())

    def advance(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)
        if self.enabled and not self.live:
            now = time.perf_counter()
            if self.n % self.every == 0 or self.n >= self.total or now - self.last_line_t >= SILENT_MAX_S:
                self._line(now)

    def close(self) -> None:
        """Close the bar; in line mode, a last line if steps ran since the previous one (a stop mid-epoch)."""
        self.bar.close()
        if self.enabled and not self.live and self.n != self.last_line_n:
            self._line(time.perf_counter())

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        done = self.n - self.first
        eta = elapsed / done * (self.total - self.n) if done else 0.0
        percent = 100 * self.n // max(self.total, 1)
        figures = " ".join(part for part in (self.notes, self.status) if part)
        print(f"{self.desc}: step {self.n}/{self.total} ({percent}%) {figures} elapsed {clock(elapsed)} "
              f"ETA {clock(eta)}".replace("  ", " "), file=sys.stderr, flush=True)
        self.last_line_n, self.last_line_t = self.n, now


def side_bar(iterable=None, *, total: int | None = None, desc: str, unit: str, enabled: bool = True,
             leave: bool = True):
    """A bar for work beside the training loop (decoding, feature passes): tqdm on a terminal,
    else a :class:`QuietBar` that speaks only when the work is long."""
    if enabled and live_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)
    return QuietBar(iterable, total=total, desc=desc, unit=unit, enabled=enabled)


class QuietBar:
    """tqdm's ``update`` / ``close`` / iteration / ``with``, writing log lines only for long work:
    nothing below SIDE_TASK_QUIET_S, then a line at most every SILENT_MAX_S and one at the end."""

    def __init__(self, iterable=None, *, total: int | None = None, desc: str, unit: str, enabled: bool = True):
        self.iterable, self.desc, self.unit, self.enabled = iterable, desc, unit, enabled
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.started, self.spoke_at = 0, time.perf_counter(), None

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> QuietBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        since = now - (self.spoke_at or self.started)
        if self.enabled and now - self.started >= SIDE_TASK_QUIET_S and since >= SILENT_MAX_S:
            self._line(now)

    def close(self) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.started >= SIDE_TASK_QUIET_S and self.spoke_at != now:
            self._line(now, final=True)
        self.enabled = False  # closing twice (iteration, then ``with``) speaks once

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.started
        of = f"/{self.total:,}" if self.total else ""
        rate = self.n / elapsed if elapsed else 0.0
        tail = "done" if final else (f"ETA {clock((self.total - self.n) / rate)}" if self.total and rate else "")
        print(f"{self.desc}: {self.n:,}{of} {self.unit} {rate:,.0f} {self.unit}/s elapsed {clock(elapsed)} {tail}"
              .rstrip(), file=sys.stderr, flush=True)
        self.spoke_at = now


class MetricsLog:
    """Append-only JSONL file of metric records; callable so loops can take it as a plain function."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def __call__(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def last_epoch_record(path: Path) -> dict:
    """The last per-epoch record (the one with ``epoch_seconds``: loss_mean, images_per_s, ...) of the
    metrics log ``path`` that MetricsLog writes; {} before the first epoch ends."""
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    epochs = [r for r in records if "epoch_seconds" in r]
    return epochs[-1] if epochs else {}
