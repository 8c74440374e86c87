"""Progress bar (tqdm on stderr: images/s, loss, ETA) and the JSONL metrics log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm


class Progress:
    """A step counter bar; a no-op when disabled (non-main ranks, --no-progress)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr,
                        dynamic_ncols=True, disable=not enabled)

    def update_stats(self, epoch: int, loss: float, rate: float) -> None:
        self.postfix(f"epoch {epoch} loss {loss:.4f} {rate:,.0f} img/s")

    def postfix(self, text: str) -> None:
        """The status after the bar, shown at its next refresh."""
        self.bar.set_postfix_str(text, refresh=False)

    def note(self, text: str) -> None:
        """A short status before the bar, e.g. the last feature-bank refresh time."""
        self.bar.set_description_str(text, refresh=False)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class MetricsLog:
    """Append-only JSONL file of metric records; callable so loops can take it as a plain function."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def __call__(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
