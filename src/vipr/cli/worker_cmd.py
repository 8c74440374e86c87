"""``vipr worker``: run the local job queue on this machine (vipr.jobs.worker)."""

from __future__ import annotations

import argparse
import os

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


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="run the local job queue on this machine", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpus", type=float, metavar="N",
                   help=f"cores the running jobs may hold together (default: all, {os.cpu_count()})")
    p.add_argument("--memory", metavar="QTY", help="memory the running jobs may hold together, e.g. 16Gi "
                                                   "(default: this machine's RAM)")
    p.add_argument("--max-jobs", type=int, metavar="N", help="jobs at once (default: as many as fit)")
    p.add_argument("--grace", type=float, metavar="SECONDS", default=30.0,
                   help="between a job's SIGTERM and its SIGKILL (default 30)")
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

    given = {}
    if args.cpus is not None:
        if not args.cpus > 0:
            raise ConfigError(f"--cpus must be > 0 cores, got {args.cpus:g}")
        given["cpus"] = args.cpus
    if args.memory is not None:
        try:
            given["memory"] = parse_quantity(args.memory)
        except ValueError:
            raise ConfigError(f"--memory must be a quantity such as 16Gi or 512Mi, got {args.memory!r}") from None
    if args.max_jobs is not None and args.max_jobs < 1:
        raise ConfigError(f"--max-jobs must be >= 1, got {args.max_jobs}")
    if not args.grace >= 0:
        raise ConfigError(f"--grace must be >= 0 seconds, got {args.grace:g}")
    idle = 0.0 if args.once else args.exit_when_idle
    if idle is not None and not idle >= 0:
        raise ConfigError(f"--exit-when-idle must be >= 0 seconds, got {idle:g}")
    return default_settings(**given, max_jobs=args.max_jobs, grace_s=args.grace, exit_when_idle=idle)


def run(args) -> int:
    from vipr.jobs.worker import Worker

    return Worker(settings(args)).run()
