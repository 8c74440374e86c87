"""``vipr worker``: run the local job queue on this machine (vipr.jobs.worker)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Annotated

from vipr.cli.options import read_options
from vipr.config import Range
from vipr.errors import ConfigError

HELP = """Run queued jobs (`vipr job submit`) on this machine, highest priority first, then in submit
order, as many at once as fit --cpus and --memory. A job holds resources.cpu x
processes_per_node cores and resources.memory; each process gets OMP_NUM_THREADS =
MKL_NUM_THREADS = its cores, so jobs sharing the machine do not oversubscribe it. Every attempt
runs in its own process group, its output in WORKSPACE/jobs/ID.log.

A job past its timeout, or cancelled, gets SIGTERM (vipr saves its checkpoint), then SIGKILL
after --grace seconds. SIGTERM or Ctrl-C stops the worker the same way: its jobs are queued
again and resume their run folders on the next worker. Jobs a killed worker left running are
recovered by the next worker to start (or any live one): marked evicted, then queued again
while retry.on has evicted and retries are left. `vipr job submit` starts a worker itself
(--exit-when-idle 60) when none is alive; start one yourself to choose its budget.

The queue is WORKSPACE/vipr.db, or $VIPR_DB_URL (postgresql+psycopg://...) for a queue that
workers on several machines share."""


@dataclass(frozen=True)
class WorkerOptions:
    """``vipr worker``'s options (read through vipr.cli.options.read_options: a bad value names its flag)."""

    cpus: Annotated[float | None, Range(0, 4096, low_open=True)] = None  # cores; None: all of this machine's
    memory: str | None = None  # a quantity (16Gi); None: this machine's RAM
    max_jobs: Annotated[int | None, Range(1, 10**5)] = None  # None: as many as fit
    grace: Annotated[float, Range(0, 86400)] = 30.0  # seconds from a job's SIGTERM to its SIGKILL
    exit_when_idle: Annotated[float | None, Range(0, 10**7)] = None  # seconds; None: run until stopped


def add_parser(sub) -> None:
    o = WorkerOptions
    p = sub.add_parser("worker", help="run the local job queue on this machine", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpus", type=float, metavar="N",
                   help=f"cores the running jobs may hold together (default: all, {os.cpu_count()})")
    p.add_argument("--memory", metavar="QTY", help="memory the running jobs may hold together, e.g. 16Gi "
                                                   "(default: this machine's RAM)")
    p.add_argument("--max-jobs", type=int, metavar="N", help="jobs at once (default: as many as fit)")
    p.add_argument("--grace", type=float, metavar="SECONDS",
                   help=f"between a job's SIGTERM and its SIGKILL (default {o.grace:g})")
    idle = p.add_mutually_exclusive_group()
    idle.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                      help="exit after this long with nothing running and nothing it could run queued")
    idle.add_argument("--once", action="store_true",
                      help="run what is queued (retries included) and exit when nothing is left: --exit-when-idle 0")
    p.set_defaults(run=run)


def settings(args):
    """The WorkerSettings of the parsed options; ConfigError naming a bad one."""
    from vipr.jobs.kube import parse_quantity
    from vipr.jobs.worker import default_settings

    options = read_options(WorkerOptions, args)
    given = {} if options.cpus is None else {"cpus": options.cpus}
    if options.memory is not None:
        try:
            given["memory"] = parse_quantity(options.memory)
        except ValueError:
            given["memory"] = 0.0
        if not given["memory"] > 0:
            raise ConfigError(f"--memory must be a quantity such as 16Gi or 512Mi, got {options.memory!r}")
    idle = 0.0 if args.once else options.exit_when_idle
    return default_settings(**given, max_jobs=options.max_jobs, grace_s=options.grace, exit_when_idle=idle)


def run(args) -> int:
    from vipr.jobs.worker import Worker

    return Worker(settings(args)).run()
