"""``vipr runs list|show|compare|plot``: the workspace's past runs, from its MLflow store."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from vipr.cli.parser import Parser, add_json_flag
from vipr.config import Range

HELP = """Past runs of the workspace (pre-training, evaluation, NAS search and training alike), as the
MLflow store holds them: `vipr ui` browses the same runs. RUN is a run id (or its first 8
characters), a run name (the run folder's name) or a run folder."""


@dataclass(frozen=True)
class ListOptions:
    limit: Annotated[int, Range(1, 10**6)] = 50  # newest runs shown


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="past runs: list, show, compare, plot", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=lambda args: p.print_help() or 0)
    commands = p.add_subparsers(dest="runs_command", metavar="COMMAND", parser_class=Parser)
    ls = commands.add_parser("list", help="newest runs first: id, kind, command, status, started, duration, key metric")
    ls.add_argument("--kind", help="only runs of this kind (pretrain, eval, eval-knn, nas, nas-search, ...)")
    ls.add_argument("--limit", type=int, metavar="N", help=f"runs shown (default {ListOptions.limit})")
    show = commands.add_parser("show", help="one run: params, metrics, artifacts and its run folder")
    show.add_argument("ref", metavar="RUN")
    compare = commands.add_parser("compare", help="runs side by side: the params they differ in, their metrics")
    compare.add_argument("refs", nargs="+", metavar="RUN")
    plot = commands.add_parser("plot", help="one metric of several runs overlaid in a PNG")
    plot.add_argument("refs", nargs="+", metavar="RUN")
    plot.add_argument("--metric", default="loss", help="metric of metrics.jsonl (default loss; e.g. lr, "
                                                       "images_per_s, knn_top1, val_acc)")
    plot.add_argument("--out", required=True, metavar="FILE.png", help="the figure to write")
    for parser, run in ((ls, run_list), (show, run_show), (compare, run_compare), (plot, run_plot)):
        add_json_flag(parser)
        parser.set_defaults(run=run)


def run_list(args) -> int:
    from vipr.cli.options import read_options
    from vipr.platform import runs

    options = read_options(ListOptions, args)
    rows = [runs.summarise(r) for r in runs.search(kind=args.kind, limit=options.limit)]
    if args.json:
        print(json.dumps([row.to_dict() for row in rows]))
        return 0
    if not rows:
        print(f"no runs{f' of kind {args.kind}' if args.kind else ''} in {_where()}")
        return 0
    print(table(["id", "kind", "command", "status", "started", "duration", "key metric"],
                [[row.id[:8], row.kind, _cut(row.command, 48), row.status, _time(row.started),
                  _duration(row.duration_s), _metric(row.metric, row.value)] for row in rows]))
    return 0


def run_show(args) -> int:
    from vipr.platform import runs

    info = runs.details(runs.find(args.ref))
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"run {info['id']} ({info['name']}): {info['kind']}, {info['status']}, started {_time(info['started'])}, "
          f"took {_duration(info['duration_s'])}")
    print(f"command:    {info['command']}")
    print(f"run folder: {info['run_dir'] or '-'}")
    for title, mapping in (("params", info["params"]), ("metrics", info["metrics"])):
        print(f"{title}:")
        print(table(None, [[k, _value(v)] for k, v in mapping.items()], indent="  ") or "  (none)")
    print("artifacts:  " + (", ".join(info["artifacts"]) or "-"))
    print("files:      " + (", ".join(info["files"]) or "-"))
    return 0


def run_compare(args) -> int:
    from vipr.platform import runs

    found = [runs.find(ref) for ref in args.refs]
    infos = [runs.details(r) for r in found]
    differing = sorted({k for i in infos for k in i["params"]
                        if len({i2["params"].get(k) for i2 in infos}) > 1})
    metrics = sorted({k for i in infos for k in i["metrics"]})
    if args.json:
        print(json.dumps({"runs": [{k: i[k] for k in ("id", "name", "kind", "status", "command", "run_dir",
                                                      "duration_s")} for i in infos],
                          "params": {k: [i["params"].get(k) for i in infos] for k in differing},
                          "metrics": {k: [i["metrics"].get(k) for i in infos] for k in metrics}}))
        return 0
    rows = [["kind", *(i["kind"] for i in infos)], ["status", *(i["status"] for i in infos)],
            ["duration", *(_duration(i["duration_s"]) for i in infos)]]
    rows += [[k, *(_value(i["params"].get(k, "-")) for i in infos)] for k in differing]
    rows += [[k, *(_value(i["metrics"].get(k, "-")) for i in infos)] for k in metrics]
    print(table(["", *(f"{i['id'][:8]} {i['name']}" for i in infos)], rows))
    if not differing:
        print("(the runs have the same params)")
    return 0


def run_plot(args) -> int:
    from vipr.cli.paths import check_out_file
    from vipr.platform import runs
    from vipr.plots import overlay_runs

    out = Path(args.out)
    check_out_file(out)
    if out.suffix.lower() != ".png":
        from vipr.errors import ConfigError

        raise ConfigError(f"--out {args.out} must name a .png file (the figure is a PNG)")
    folders = {}
    for ref in args.refs:
        found = runs.summarise(runs.find(ref))
        if not found.run_dir or not Path(found.run_dir).is_dir():
            from vipr.errors import ViprError

            raise ViprError(f"run {found.id[:8]} ({found.name}) has no run folder here ({found.run_dir or 'none'}); "
                            f"its curves come from RUN/metrics.jsonl")
        folders[f"{found.id[:8]} {found.name}"] = Path(found.run_dir)
    overlay_runs(folders, args.metric, out)
    print(json.dumps({"plot": str(out), "metric": args.metric, "runs": list(folders)}) if args.json else
          f"plotted {args.metric} of {len(folders)} run(s): {out}")
    return 0


def table(header: list[str] | None, rows: list[list[str]], indent: str = "") -> str:
    """Left-aligned columns, two spaces apart, under ``header`` if given ('' when there are no rows)."""
    if not rows:
        return ""
    cells = [header, *rows] if header else rows
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(cells[0]))]
    return "\n".join(indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _where() -> str:
    from vipr.platform import workspace

    return workspace.current().describe()


def _time(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _metric(name: str | None, value: float | None) -> str:
    return "-" if name is None else f"{name} {_value(value)}"


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
