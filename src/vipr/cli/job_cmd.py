"""``vipr job submit|list|show|logs|cancel|retry|delete`` and ``vipr job queue create``: training jobs on a queue.

A backend is a class in BACKENDS (or a ``module:Class`` path, imported when used) built from the
parsed args, with submit(spec), list(), show(ref), logs(ref, follow), cancel(ref), retry(ref),
delete(ref), and the lines the CLI prints (submitted_line, table, show_text, ...).
"""

from __future__ import annotations

import argparse
import importlib
import json

from vipr.cli.parser import Parser, add_json_flag
from vipr.errors import ConfigError

HELP = """Run a vipr training or evaluation command as a job: on this machine's queue (the default,
run by `vipr worker`) or on Kubernetes with Volcano (gang-scheduled pods, torchrun across nodes).

  vipr job submit SPEC.yaml [--set KEY=VALUE ...] [--dry-run]
  vipr job submit [--name NAME] [--set KEY=VALUE ...] -- vipr pretrain ...
  vipr job list | show ID|NAME | logs ID|NAME [-f] | cancel ID|NAME | retry ID|NAME | delete ID|NAME
  (add --backend volcano [--namespace NS] [--image IMG] for the cluster)
  vipr job queue create NAME --weight W --capability cpu=8,memory=32Gi [--dry-run]

SPEC.yaml keys: name, command, inputs, outputs, resources, queue, priority, priority_class,
retry, timeout, env, volumes, image (see vipr.jobs.spec); --set overrides any of them
(resources.cpu=2). Local jobs live in WORKSPACE/vipr.db (or $VIPR_DB_URL, e.g. PostgreSQL),
their logs in WORKSPACE/jobs/ID.log; submit starts a worker when none is alive. --dry-run
prints the resolved spec (local) or the validated manifest (volcano) and submits nothing. The
cluster commands need the kubernetes client (pip install 'vipr[cluster]') and a kubeconfig."""
BACKENDS = {"local": "vipr.jobs.local:LocalBackend", "volcano": "vipr.jobs.volcano_backend:VolcanoBackend"}
ACTIONS = {  # action -> (help, what its argument names)
    "show": ("one job: state, attempts, exit code, run folder, tracking run, log", "ID|NAME"),
    "logs": ("the job's log (local: every attempt's; volcano: the master pod's)", "ID|NAME"),
    "cancel": ("stop a job: queued ones at once, running ones by SIGTERM (vipr saves its checkpoint), "
               "SIGKILL after the worker's grace period", "ID|NAME"),
    "retry": ("queue a failed or cancelled job again, resuming its run folder (local only)", "ID|NAME"),
    "delete": ("remove a job that is not running, and its log (volcano: the same as cancel)", "ID|NAME"),
}


def backend(args):
    entry = BACKENDS[args.backend]
    if isinstance(entry, str):  # imported when used: `vipr --help` need not load the database layer
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    return entry(args)


def add_parser(sub) -> None:
    p = sub.add_parser("job", help="training jobs on a queue: submit, list, show, logs, cancel, retry, delete",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=lambda args: p.print_help() or 0)
    actions = p.add_subparsers(dest="job_command", metavar="ACTION", parser_class=Parser)
    submit = actions.add_parser("submit", help="submit SPEC.yaml, or `-- vipr COMMAND ...`", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("words", nargs="*", metavar="SPEC.yaml|COMMAND", help="a spec file, or `-- vipr COMMAND ...`")
    submit.add_argument("--name", help="job name (a DNS-1123 label; default: the command and the time)")
    submit.add_argument("--image", help="container image with vipr installed (volcano; overrides the spec's image)")
    submit.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override a spec key, e.g. resources.cpu=2 (repeatable)")
    submit.add_argument("--dry-run", action="store_true", help="print the resolved spec (local) or the validated "
                                                               "manifest (volcano); submit nothing")
    parsers = {"submit": (submit, run_submit), "list": (actions.add_parser("list", help="the jobs, in queue order, "
                                                                            "with their state"), run_list)}
    for action, (text, metavar) in ACTIONS.items():
        parser = actions.add_parser(action, help=text, description=text)
        parser.add_argument("job", metavar=metavar)
        parsers[action] = (parser, RUNS[action])
    parsers["logs"][0].add_argument("--follow", "-f", action="store_true",
                                    help="keep streaming until the job ends (local: a final state; volcano: the pod "
                                         "stops)")
    for action, (parser, run) in parsers.items():
        parser.add_argument("--backend", choices=("local", "volcano"), default="local",
                            help="local (the default: this machine's queue, run by `vipr worker`) | volcano")
        _add_namespace(parser)
        if action != "logs":  # a log is text, not a record
            add_json_flag(parser)
        parser.set_defaults(run=run)
    _add_queue_parser(actions)


def _add_namespace(parser) -> None:
    parser.add_argument("--namespace", "-n", metavar="NS",
                        help="Kubernetes namespace (volcano; default: the kubeconfig context's; --dry-run: default)")


def _add_queue_parser(actions) -> None:
    queue = actions.add_parser("queue", help="Volcano queues: create")
    queue.set_defaults(run=lambda args: queue.print_help() or 0)
    commands = queue.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=Parser)
    create = commands.add_parser("create", help="create a Volcano queue (cluster-scoped)")
    create.add_argument("queue", metavar="NAME")
    create.add_argument("--weight", metavar="W", default="1",
                        help="share of the cluster against other queues, an integer >= 1 (default 1)")
    create.add_argument("--capability", default="", metavar="RES=QTY,...",
                        help="most the queue's jobs may hold together, e.g. cpu=8,memory=32Gi,nvidia.com/gpu=2")
    create.add_argument("--dry-run", action="store_true", help="print the validated Queue; create nothing")
    add_json_flag(create)
    create.set_defaults(run=run_queue_create)


def read_spec(args):
    """The JobSpec of SPEC.yaml or of the words after ``--``; its command parsed and its inputs resolved."""
    from vipr.jobs.inputs import check_inputs
    from vipr.jobs.spec import check_arguments, load_spec, spec_from_command

    words = list(args.words)
    if not words:
        raise ConfigError("vipr job submit needs SPEC.yaml or `-- vipr COMMAND ...` (e.g. -- vipr pretrain "
                          "--data builtin:shapes)")
    if len(words) == 1 and words[0] != "vipr":
        spec = load_spec(words[0], [*([f"name={args.name}"] if args.name else []), *args.set])
    else:
        spec = spec_from_command(words, args.name, args.set)
    check_arguments(spec.command)
    check_inputs(spec)
    return spec


def run_submit(args) -> int:
    spec = read_spec(args)
    if args.dry_run:
        if args.backend == "local":  # what the local queue will take: the resolved spec
            from vipr.config import to_dict
            from vipr.jobs.launch import check_local

            check_local(spec)
            return _print_manifest(to_dict(spec), args.json)
        from vipr.jobs.volcano_backend import render_volcano

        return _print_manifest(render_volcano(spec, args.namespace or "default", args.image), args.json)
    chosen = backend(args)
    done = chosen.submit(spec)
    print(json.dumps(done) if args.json else chosen.submitted_line(done))
    return 0


def _print_manifest(manifest: dict, as_json: bool) -> int:
    from vipr.jobs.volcano import to_yaml

    print(json.dumps(manifest) if as_json else to_yaml(manifest), end="\n" if as_json else "")
    return 0


def run_list(args) -> int:
    from vipr.cli.runs_cmd import table

    chosen = backend(args)
    jobs = chosen.list()
    if args.json:
        print(json.dumps(jobs))
    else:
        print(table(*chosen.table(jobs)) if jobs else "no jobs")
    return 0


def run_show(args) -> int:
    chosen = backend(args)
    job = chosen.show(args.job)
    print(json.dumps(job) if args.json else chosen.show_text(job))
    return 0


def run_logs(args) -> int:
    backend(args).logs(args.job, follow=args.follow)
    return 0


def _run_action(action: str, line: str):
    def run(args) -> int:
        chosen = backend(args)
        done = getattr(chosen, action)(args.job)
        print(json.dumps(done) if args.json else getattr(chosen, line)(done))
        return 0

    return run


RUNS = {"show": run_show, "logs": run_logs, "cancel": _run_action("cancel", "cancelled_line"),
        "retry": _run_action("retry", "retried_line"), "delete": _run_action("delete", "deleted_line")}


def parse_capability(text: str) -> dict[str, str]:
    """``cpu=8,memory=32Gi`` -> {"cpu": "8", "memory": "32Gi"}."""
    capability = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--capability item {item!r} must look like NAME=QUANTITY, e.g. cpu=8,memory=32Gi")
        capability[key.strip()] = value.strip()
    return capability


def run_queue_create(args) -> int:
    from vipr.jobs.validate import validate_queue
    from vipr.jobs.volcano import render_queue

    try:
        weight = int(args.weight)
    except ValueError:
        raise ConfigError(f"--weight must be an integer >= 1, got {args.weight!r}") from None
    manifest = render_queue(args.queue, weight, parse_capability(args.capability))
    validate_queue(manifest)
    if args.dry_run:
        return _print_manifest(manifest, args.json)
    from vipr.jobs.cluster import VolcanoCluster

    VolcanoCluster().create_queue(manifest)
    print(json.dumps({"queue": args.queue, "weight": weight, "capability": manifest["spec"].get("capability")})
          if args.json else f"created queue {args.queue} (weight {weight})")
    return 0
