"""``vipr model register|list|show|alias|delete|export|profile``: the model registry of the workspace."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from vipr.cli.parser import add_json_flag

HELP = """Named, versioned models in the workspace's MLflow registry (./.vipr, $VIPR_HOME, or the
server in $VIPR_TRACKING_URI).

  register RUN_DIR|CHECKPOINT --name NAME [--alias ALIAS]   a new version, with lineage
  list                                                     registered models
  show NAME[@ALIAS|/VERSION]                               tags, metrics, parent, versions, and the chain
                                                           dataset version -> job -> run -> model -> deployments
  alias NAME VERSION ALIAS                                 point NAME@ALIAS at VERSION
  delete NAME/VERSION [--force]                            remove one version (the last: the name too)
  export NAME[@ALIAS|/VERSION] --format onnx|torchscript --out FILE [--quantize int8]
  profile NAME[@ALIAS|/VERSION]|FILE                       parameters, FLOPs, CPU latency and throughput

NAME alone means its latest version. A classifier from `vipr eval linear --out`, or a detection /
segmentation model from `vipr transfer ... --out`, names the registered version of the checkpoint
it started from (parent_model). Detection and segmentation models export to ONNX only (a
detector's file takes one image per call; see vipr.serve.dense_export)."""


def add_parser(sub) -> None:
    p = sub.add_parser("model", help="model registry: register, list, show, alias, delete, export, profile",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    reg = actions.add_parser("register", help="register a run folder's checkpoint as a new model version")
    reg.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    reg.add_argument("--name", required=True, help="model name (letters, digits, '.', '_', '-')")
    reg.add_argument("--alias", help="also point NAME@ALIAS at the new version (e.g. champion)")
    lst = actions.add_parser("list", help="registered models and their aliases")
    show = actions.add_parser("show", help="one version: tags, metrics, lineage")
    show.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]")
    alias = actions.add_parser("alias", help="point NAME@ALIAS at a version")
    alias.add_argument("name", metavar="NAME")
    alias.add_argument("version", type=int, metavar="VERSION", help="version number, >= 1")
    alias.add_argument("alias", metavar="ALIAS")
    delete = actions.add_parser("delete", help="delete one version (NAME/VERSION); refused for a parent unless --force")
    delete.add_argument("ref", metavar="NAME/VERSION")
    delete.add_argument("--force", action="store_true",
                        help="delete a version even if registered children name it as their parent")
    export = actions.add_parser("export", help="export to ONNX or TorchScript with its preprocessing metadata")
    export.add_argument("ref", metavar="NAME[@ALIAS|/VERSION]|CHECKPOINT")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"], dest="fmt")
    export.add_argument("--out", required=True, metavar="FILE", help="output file (metadata also in FILE.json)")
    from vipr.cli import model_quantize_cmd as quantize

    quantize.add_quantize_flags(export)
    profile = quantize.add_profile_parser(actions)
    for parser, fn in ((reg, run_register), (lst, run_list), (show, run_show), (alias, run_alias),
                       (delete, run_delete), (export, run_export), (profile, quantize.run_profile)):
        add_json_flag(parser)
        parser.set_defaults(run=_registry_errors(fn))


def _registry_errors(fn):
    """MLflow's own failures (unreachable server, invalid value) as a vipr message, not a traceback."""

    @functools.wraps(fn)
    def wrapper(args) -> int:
        from vipr.errors import RegistryError
        from vipr.platform import workspace

        try:
            return fn(args)
        except Exception as err:
            mlflow_errors = sys.modules.get("mlflow.exceptions")  # not imported: not MLflow's (and no slow import)
            if mlflow_errors is None or not isinstance(err, mlflow_errors.MlflowException):
                raise
            ws = workspace.current()
            hint = "" if ws.home else "; check that the server is up, or unset VIPR_TRACKING_URI for the local workspace"
            raise RegistryError(f"{ws.describe()}: {err.message}{hint}") from None

    return wrapper


def run_register(args) -> int:
    from vipr.errors import RegistryError
    from vipr.platform import registry

    if not Path(args.target).exists():  # before the workspace is opened (MLflow's start-up takes seconds)
        raise RegistryError(f"{args.target} not found; pass a run folder or a checkpoint .pt file")
    record = registry.register(args.target, args.name, alias=args.alias)
    parent = f"; parent {record['parent_model']}" if record["parent_model"] else ""
    aliases = f" (@{', @'.join(record['aliases'])})" if record["aliases"] else ""
    print(f"registered {record['name']} version {record['version']}{aliases} from {args.target}{parent}")
    return _print_json(args, record)


def run_list(args) -> int:
    from vipr.platform import registry, workspace

    rows = registry.list_models()
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no registered models in {workspace.current().describe()}; "
              f"register one: vipr model register RUN_DIR --name NAME")
    else:
        print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    header = ("NAME", "VERSIONS", "LATEST", "ALIASES", "TASK", "OUTPUT", "BACKBONE", "UPDATED")
    lines = [header] + [(r["name"], str(r["versions"]), str(r["latest"] or "-"),
                         ", ".join(f"{a}->{v}" for a, v in r["aliases"].items()) or "-", r["task"] or "-",
                         r["output"] or "-", r["backbone"] or "-", r["updated"] or "-") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def run_show(args) -> int:
    from vipr.platform import chain, registry

    record = registry.show(args.ref)
    record["chain"] = chain.build_chain(record)  # dataset version -> job -> run -> model -> deployments
    if args.json:
        print(json.dumps(record))
        return 0
    aliases = f"  @{', @'.join(record['aliases'])}" if record["aliases"] else ""
    print(f"{record['name']}/{record['version']}{aliases}")
    versions = ", ".join(f"{v['version']}" + (f" (@{', @'.join(v['aliases'])})" if v["aliases"] else "")
                         for v in record["versions"])
    fields = {"task": record["task"], "output": record["output"], "uri": record["uri"], "source": record["source"],
              "run": f"{record['run_id']} ({record['run_name']})",
              "created": record["created"], "parent": record["parent_model"] or "-",
              "derived": ", ".join(record["derived"]) or "-", "versions": versions}
    _print_section(None, fields)
    _print_section("tags", record["tags"])
    _print_section("metrics", {k: f"{v:.6g}" for k, v in sorted(record["metrics"].items())})
    print("\n".join(chain.format_chain(record["chain"])))
    return 0


def _print_section(title: str | None, values: dict) -> None:
    indent = "  "
    if title:
        print(f"  {title}:")
        indent = "    "
    width = max((len(k) for k in values), default=0)
    for key, value in values.items():
        print(f"{indent}{key.ljust(width)}  {value}")


def run_alias(args) -> int:
    from vipr.cli.options import AliasOptions, read_options
    from vipr.platform import registry

    version = read_options(AliasOptions, args, names={"version": "VERSION"}).version
    result = registry.set_alias(args.name, version, args.alias)
    print(f"{result['name']}@{result['alias']} -> version {result['version']}")
    return _print_json(args, result)


def run_delete(args) -> int:
    from vipr.platform import registry

    record = registry.delete_version(args.ref, force=args.force)
    gone = f"; it was the last version, so the name {record['name']} is removed too" if record["model_removed"] else ""
    print(f"deleted {record['name']} version {record['version']} (its run and artifacts stay in the tracking store){gone}")
    return _print_json(args, record)


def run_export(args) -> int:
    from vipr.cli.paths import check_out_file
    from vipr.cli.model_quantize_cmd import check_quantize_flags, run_quantized_export
    from vipr.platform import registry
    from vipr.serve.export import export_model

    check_quantize_flags(args)
    check_out_file(args.out)  # before the export and its check against PyTorch
    if Path(args.ref).exists():
        path, name, version = Path(args.ref), None, None
    else:
        found = registry.get_version(args.ref)
        path, name, version = registry.resolve_model(f"{found.name}/{found.version}"), found.name, found.version
    if args.quantize:
        return _print_json(args, run_quantized_export(args, path, name, version))
    result = export_model(path, args.fmt, args.out, name=name, version=version)
    label = f"{name}/{version}" if name else str(path)
    compared = f" px over {result['detections_compared']} detections" if "detections_compared" in result else ""
    print(f"exported {label} to {args.out} ({args.fmt}, {result['output']}; max |diff| vs PyTorch "
          f"{result['max_abs_diff']:.2g}{compared}); metadata in {args.out}.json")
    return _print_json(args, result)


def _print_json(args, result: dict) -> int:
    if args.json:
        print(json.dumps(result))
    return 0
