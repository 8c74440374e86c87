"""``vipr job submit|list|show|logs|cancel`` and ``vipr job queue create``: training jobs on a queue.

A backend is a class in BACKENDS built from the parsed args, with submit(spec), list(),
show(name), logs(name, follow) and cancel(name); the local queue plugs in there later.
"""

from __future__ import annotations

import argparse
import json

from vipr.cli.parser import Parser, add_json_flag
from vipr.errors import ConfigError, ViprError

HELP = """Run a vipr training or evaluation command as a job: on a local queue (not built yet) or on
Kubernetes with Volcano (gang-scheduled pods, torchrun across nodes).

  vipr job submit SPEC.yaml --backend volcano [--namespace NS] [--image IMG] [--dry-run]
  vipr job submit [--name NAME] --backend volcano [--set KEY=VALUE ...] -- vipr pretrain ...
  vipr job list | show NAME | logs NAME [--follow] | cancel NAME  --backend volcano [--namespace NS]
  vipr job queue create NAME --weight W --capability cpu=8,memory=32Gi [--dry-run]

SPEC.yaml keys: name, command, inputs, outputs, resources, queue, priority, priority_class,
retry, timeout, env, volumes, image (see vipr.jobs.spec); --set overrides any of them
(resources.nodes=2). --dry-run prints the validated manifest and submits nothing. The
cluster commands need the kubernetes client (pip install 'vipr[cluster]') and a kubeconfig."""
LOCAL_NOT_BUILT = "the local job queue is not built yet; use --backend volcano (or --dry-run)"


class VolcanoBackend:
    """Jobs as Volcano Jobs in one namespace of the current kubeconfig's cluster."""

    def __init__(self, args):
        from vipr.jobs.cluster import VolcanoCluster

        self.cluster, self.image = VolcanoCluster(args.namespace), getattr(args, "image", None)

    def submit(self, spec) -> dict:
        manifest = render_volcano(spec, self.cluster.namespace, self.image)
        self.cluster.submit(manifest)
        return {"name": spec.name, "namespace": self.cluster.namespace, "queue": spec.queue, "state": "queued",
                "pods": spec.resources.nodes, "processes_per_pod": spec.resources.processes_per_node}

    def list(self) -> list[dict]:
        return self.cluster.list()

    def show(self, name: str) -> dict:
        return self.cluster.show(name)

    def logs(self, name: str, follow: bool) -> None:
        self.cluster.logs(name, follow=follow)

    def cancel(self, name: str) -> None:
        self.cluster.cancel(name)


BACKENDS = {"volcano": VolcanoBackend}  # "local": the local queue's backend, once it exists


def backend(args):
    if args.backend not in BACKENDS:
        raise ViprError(LOCAL_NOT_BUILT)
    return BACKENDS[args.backend](args)


def render_volcano(spec, namespace: str, image: str | None) -> dict:
    """The validated Volcano Job of ``spec`` (every manifest passes the offline checks before it leaves)."""
    from vipr.jobs.validate import validate_job
    from vipr.jobs.volcano import render_job

    manifest = render_job(spec, namespace=namespace, image=image)
    validate_job(manifest)
    return manifest


def add_parser(sub) -> None:
    p = sub.add_parser("job", help="training jobs on a queue: submit, list, show, logs, cancel (Volcano)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=lambda args: p.print_help() or 0)
    actions = p.add_subparsers(dest="job_command", metavar="ACTION", parser_class=Parser)
    submit = actions.add_parser("submit", help="submit SPEC.yaml, or `-- vipr COMMAND ...`", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    submit.add_argument("words", nargs="*", metavar="SPEC.yaml|COMMAND", help="a spec file, or `-- vipr COMMAND ...`")
    submit.add_argument("--name", help="job name (a DNS-1123 label; default: the command and the time)")
    submit.add_argument("--image", help="container image with vipr installed (overrides the spec's image)")
    submit.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override a spec key, e.g. resources.nodes=2 (repeatable)")
    submit.add_argument("--dry-run", action="store_true", help="print the validated manifest; submit nothing")
    ls = actions.add_parser("list", help="the jobs of the namespace, with their state")
    show = actions.add_parser("show", help="one job: state, Volcano phase, retries, pods")
    logs = actions.add_parser("logs", help="the master pod's log")
    logs.add_argument("--follow", "-f", action="store_true", help="keep streaming until the pod stops")
    cancel = actions.add_parser("cancel", aliases=["delete"], help="stop a job and delete it (pods get SIGTERM)")
    for parser, run in ((submit, run_submit), (ls, run_list), (show, run_show), (logs, run_logs), (cancel, run_cancel)):
        if parser in (show, logs, cancel):
            parser.add_argument("job", metavar="NAME")
        parser.add_argument("--backend", choices=("local", "volcano"), default="local",
                            help="local (the default; not built yet) | volcano")
        _add_namespace(parser)
        if parser is not logs:  # a log is text, not a record
            add_json_flag(parser)
        parser.set_defaults(run=run)
    _add_queue_parser(actions)


def _add_namespace(parser) -> None:
    parser.add_argument("--namespace", "-n", metavar="NS",
                        help="Kubernetes namespace (default: the kubeconfig context's; --dry-run: default)")


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

            return _print_manifest(to_dict(spec), args.json)
        return _print_manifest(render_volcano(spec, args.namespace or "default", args.image), args.json)
    done = backend(args).submit(spec)
    if args.json:
        print(json.dumps(done))
        return 0
    print(f"submitted job {done['name']} to queue {done['queue']} in namespace {done['namespace']}: "
          f"{done['pods']} pod(s) x {done['processes_per_pod']} process(es); follow it with `vipr job logs "
          f"{done['name']} --backend {args.backend} --namespace {done['namespace']} --follow`")
    return 0


def _print_manifest(manifest: dict, as_json: bool) -> int:
    from vipr.jobs.volcano import to_yaml

    print(json.dumps(manifest) if as_json else to_yaml(manifest), end="\n" if as_json else "")
    return 0


def run_list(args) -> int:
    from vipr.cli.runs_cmd import table

    jobs = backend(args).list()
    if args.json:
        print(json.dumps(jobs))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(table(["name", "state", "phase", "queue", "retries", "created"],
                [[j["name"], j["state"], j["phase"] or "-", j["queue"], j["retries"], j["created"] or "-"]
                 for j in jobs]))
    return 0


def run_show(args) -> int:
    job = backend(args).show(args.job)
    if args.json:
        print(json.dumps(job))
        return 0
    pods = ", ".join(f"{count} {phase}" for phase, count in job["pods"].items() if count) or "none yet"
    print(f"job {job['name']} (namespace {job['namespace']}, queue {job['queue']}): {job['state']} "
          f"(Volcano phase {job['phase'] or '-'}), {job['retries']} retries, pods: {pods}")
    if job.get("message"):
        print(f"message: {job['message']}")
    return 0


def run_logs(args) -> int:
    backend(args).logs(args.job, follow=args.follow)
    return 0


def run_cancel(args) -> int:
    backend(args).cancel(args.job)
    print(json.dumps({"name": args.job, "state": "cancelled"}) if args.json else
          f"cancelled job {args.job}: deleted, its pods are stopping (SIGTERM: vipr saves its checkpoint)")
    return 0


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
