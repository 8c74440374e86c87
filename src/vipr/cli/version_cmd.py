"""``vipr version``: what this vipr runs on, read from the installed packages' metadata (nothing imported).

Also the cheapest job a queue or cluster can run (``vipr job submit -- vipr version``): it checks
that a worker or a pod starts this vipr, and prints where (host, Python, packages), in well under
a second, since it imports neither torch nor any other heavy package.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from vipr import __version__
from vipr.fsutil import atomic_write_text

PACKAGES = ("torch", "torchvision", "timm", "kornia", "onnxruntime", "mlflow", "sqlalchemy")
HELP = """Print vipr's version, the Python and host it runs on, and the installed versions of the packages
it builds on (from their metadata: no package is imported, so it answers in a fraction of a second).
As a job (vipr job submit -- vipr version) it checks that a worker or a cluster's image runs vipr."""


def add_parser(sub) -> None:
    p = sub.add_parser("version", help="vipr's version, Python, host and package versions", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--out", metavar="DIR", help="also write the report to DIR/version.json (a job's run folder)")
    p.set_defaults(run=run)


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def report() -> dict:
    return {"vipr": __version__, "python": platform.python_version(), "executable": sys.executable,
            "host": platform.node(), "platform": platform.platform(),
            "packages": {name: installed(name) for name in PACKAGES}}


def run(args) -> int:
    facts = report()
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "version.json", json.dumps(facts, indent=1) + "\n")
    if args.json:
        print(json.dumps(facts))
        return 0
    print(f"vipr {facts['vipr']} on Python {facts['python']} ({facts['executable']}), host {facts['host']}, "
          f"{facts['platform']}")
    for name, version in facts["packages"].items():
        print(f"  {name:<12} {version or 'not installed'}")
    return 0
