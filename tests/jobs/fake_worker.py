"""A worker whose jobs run tests/jobs/fake_command.py, for the tests that need one in its own process
(to kill it, or to race several): ``python fake_worker.py '{"cpus": 1, "poll_s": 0.05}'``."""

import json
import sys
from pathlib import Path

from vipr.jobs.worker import Worker, default_settings

FAKE = Path(__file__).with_name("fake_command.py")


def launcher(words: list[str]) -> list[str]:
    return [sys.executable, str(FAKE), *words[1:]]


if __name__ == "__main__":
    sys.exit(Worker(default_settings(**json.loads(sys.argv[1])), launcher=launcher).run())
