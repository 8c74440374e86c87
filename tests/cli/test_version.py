"""``vipr version``: the installed versions from package metadata, without importing torch or MLflow (the no-op job)."""

import json
import subprocess
import sys
from importlib import metadata

from vipr import __version__
from vipr.cli.main import main
from vipr.jobs.spec import command_name, spec_from_command


def test_version_reports_what_the_metadata_says(capsys, tmp_path):
    assert main(["version", "--json", "--out", str(tmp_path / "run")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["vipr"] == __version__ and facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["packages"]["torch"] == metadata.version("torch")
    assert json.loads((tmp_path / "run" / "version.json").read_text()) == facts
    assert main(["version"]) == 0
    assert f"torch        {metadata.version('torch')}" in capsys.readouterr().out


def test_version_imports_no_heavy_package():
    probe = ("import sys; from vipr.cli.main import main; main(['version', '--json']); "
             "print(sorted(m for m in ('torch', 'torchvision', 'mlflow', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_version_is_a_job_command_with_a_run_folder():
    spec = spec_from_command(["vipr", "version"], "check", ())
    assert command_name(spec.command) == ("version",) and spec.command[-2] == "--out"
