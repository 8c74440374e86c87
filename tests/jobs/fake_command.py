"""A stand-in for a vipr command in the job tests, run by path: it does what its FAKE_* variables say.

Its run folder is its --out. Each attempt appends to RUN/attempts.jsonl a ``start`` line (argv,
pid, process group, OMP_NUM_THREADS, MKL_NUM_THREADS, VIPR_JOB_ID, VIPR_JOB_NAME, time) and, if
it gets there, an ``end`` line (exit code, time); stdout gets a line of each.

    FAKE_SECONDS        how long its first attempt works (default 0)
    FAKE_LATER_SECONDS  how long a later attempt works (default FAKE_SECONDS)
    FAKE_EXIT           its exit code (default 0)
    FAKE_FAIL_ATTEMPTS  exit 3 while fewer attempts than this have started before it
    FAKE_IGNORE_TERM    1: SIGTERM is ignored, only SIGKILL stops it

SIGTERM (not ignored): writes checkpoint.pt and exits 130, as vipr does. Success and failure both
write checkpoint.pt (unless there is one); success also writes mlflow_run.json for the workspace's
tracking URI.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

ARGV = sys.argv[1:]
RUN = Path(ARGV[ARGV.index("--out") + 1])
ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VIPR_JOB_ID", "VIPR_JOB_NAME")


def note(event: str, **fields) -> None:
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    with open(RUN / "attempts.jsonl", "a") as log:
        log.write(line + "\n")
    print(line, flush=True)


def end(code: int) -> None:
    if not (RUN / "checkpoint.pt").exists():
        (RUN / "checkpoint.pt").write_text("fake")
    note("end", code=code)
    sys.exit(code)


def main() -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    before = sum('"start"' in line for line in (RUN / "attempts.jsonl").read_text().splitlines()) \
        if (RUN / "attempts.jsonl").is_file() else 0
    if os.environ.get("FAKE_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: end(130))
    note("start", argv=ARGV, pgid=os.getpgrp(), attempt=before + 1, **{k: os.environ.get(k) for k in ENV_KEYS})
    seconds = os.environ.get("FAKE_SECONDS", "0")
    stop = time.time() + float(os.environ.get("FAKE_LATER_SECONDS", seconds) if before else seconds)
    while time.time() < stop:
        time.sleep(0.02)
    if before < int(os.environ.get("FAKE_FAIL_ATTEMPTS", "0")):
        end(3)
    code = int(os.environ.get("FAKE_EXIT", "0"))
    if code == 0:
        uri = f"sqlite:///{Path(os.environ['VIPR_HOME']).resolve() / 'mlflow.db'}"
        (RUN / "mlflow_run.json").write_text(json.dumps({uri: {"run_id": f"run-{os.environ['VIPR_JOB_ID']}"}}))
    end(code)


if __name__ == "__main__":
    main()
