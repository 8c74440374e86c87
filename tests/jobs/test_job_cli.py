"""``vipr job``: --dry-run prints YAML that validates, the local backend's refusals, the backend dispatch (the local
queue's own commands: test_local_cli.py)."""

import json
from pathlib import Path

import pytest
import yaml

from vipr.cli import job_cmd
from vipr.cli.main import main
from vipr.jobs.validate import job_problems, queue_problems

SPECS = Path(__file__).parent / "specs"


@pytest.fixture(autouse=True)
def _no_tracking_server(monkeypatch):
    monkeypatch.delenv("VIPR_TRACKING_URI", raising=False)


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_of_a_spec_file_prints_a_valid_job(capsys):
    code, out, err = run_cli(["job", "submit", str(SPECS / "two_node.yaml"), "--backend", "volcano", "--dry-run",
                              "--namespace", "ml"], capsys)
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert job_problems(manifest) == [] and manifest["metadata"] == {
        "name": "pretrain-2x2", "namespace": "ml", "labels": {"app.kubernetes.io/managed-by": "vipr"}}


def test_dry_run_of_a_command_line_with_overrides(capsys):
    code, out, err = run_cli(["job", "submit", "--name", "quick", "--backend", "volcano", "--dry-run", "--image", "v:1",
                              "--set", "resources.nodes=2", "volumes.workspace_pvc=ws", "--",
                              "vipr", "pretrain", "--data", "builtin:shapes", "--epochs", "3"], capsys)
    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert job_problems(manifest) == [] and manifest["metadata"]["namespace"] == "default"
    assert [t["replicas"] for t in manifest["spec"]["tasks"]] == [1, 1]
    assert "pretrain --data builtin:shapes --epochs 3 --out runs/quick" in \
           manifest["spec"]["tasks"][0]["template"]["spec"]["containers"][0]["command"][-1]


def test_the_local_backend_refuses_what_one_machine_cannot_run_on_one_line(capsys):
    code, out, err = run_cli(["job", "submit", str(SPECS / "two_node.yaml")], capsys)
    assert (code, out) == (1, "")
    assert err.strip().splitlines() == ["vipr job submit: error: resources.nodes is 2, but the local queue runs a job "
                                        "on this one machine; set resources.nodes=1, or submit it with --backend "
                                        "volcano"]
    code, out, _ = run_cli(["job", "submit", str(SPECS / "cpu_1node.yaml"), "--dry-run"], capsys)  # the resolved spec
    assert code == 0 and yaml.safe_load(out)["command"][-2:] == ["--out", "runs/pretrain-cpu"]


@pytest.mark.parametrize("argv, message", [
    (["--", "vipr", "pretrain", "--epoch", "3"], "'command' does not parse: vipr pretrain: unrecognized argument: "
                                                 "--epoch (did you mean --epochs?)"),
    (["--", "vipr", "serve"], "'command' must be a vipr training or evaluation command"),
    (["--set", "resources.memory=8m", "--", "vipr", "pretrain"], "'resources.memory' must be a memory quantity"),
    ([], "vipr job submit needs SPEC.yaml or `-- vipr COMMAND ...`"),
    (["--name", "x", "missing.yaml"], "config file not found: missing.yaml"),
    (["--name", "Bad_Name", "--", "vipr", "pretrain"], "'name' must be a DNS-1123 label"),
    (["--", "vipr", "pretrain", "--data", "/no/such/data"], None),  # a path with no input entry is the command's own
])
def test_bad_submissions_fail_on_one_line(argv, message, capsys):
    code, out, err = run_cli(["job", "submit", "--backend", "volcano", "--dry-run", "--image", "v:1",
                              "--set", "volumes.workspace_pvc=ws", *argv], capsys)
    if message is None:
        assert code == 0
        return
    assert code == 1 and len(err.strip().splitlines()) == 1 and message in err, err


def test_queue_create_dry_run_prints_a_valid_queue(capsys):
    code, out, err = run_cli(["job", "queue", "create", "team-a", "--weight", "3", "--capability",
                              "cpu=8,memory=32Gi,nvidia.com/gpu=2", "--dry-run"], capsys)
    assert code == 0, err
    queue = yaml.safe_load(out)
    assert queue_problems(queue) == [] and queue["spec"] == {
        "weight": 3, "capability": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}}
    for bad, message in ((["--capability", "cpu"], "--capability item 'cpu' must look like NAME=QUANTITY"),
                         (["--weight", "0"], "--weight must be an integer >= 1, got 0"),
                         (["--weight", "heavy"], "--weight must be an integer >= 1, got 'heavy'")):
        code, _, err = run_cli(["job", "queue", "create", "team-a", *bad, "--dry-run"], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and message in err, err


class FakeCluster:
    """Stands in for VolcanoCluster: records what the CLI asks of it."""

    asked: list = []

    def __init__(self, namespace=None):
        self.namespace = namespace or "ml"

    def submit(self, manifest):
        FakeCluster.asked.append(("submit", manifest))

    def list(self):
        return [{"name": "a", "state": "running", "phase": "Running", "queue": "default", "retries": 0,
                 "created": "2025-01-01T00:00:00Z"}]

    def show(self, name):
        return {"name": name, "namespace": self.namespace, "queue": "default", "state": "succeeded",
                "phase": "Completed", "retries": 1, "pods": {"pending": 0, "running": 0, "succeeded": 2, "failed": 0},
                "message": None}

    def cancel(self, name):
        FakeCluster.asked.append(("cancel", name))


@pytest.fixture
def fake_cluster(monkeypatch):
    import vipr.jobs.cluster

    FakeCluster.asked = []
    monkeypatch.setattr(vipr.jobs.cluster, "VolcanoCluster", FakeCluster)
    return FakeCluster


def test_submit_list_show_cancel_go_through_the_volcano_backend(fake_cluster, capsys):
    code, out, err = run_cli(["job", "submit", str(SPECS / "two_node.yaml"), "--backend", "volcano", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out) == {"name": "pretrain-2x2", "namespace": "ml", "queue": "team-a", "state": "queued",
                               "pods": 2, "processes_per_pod": 2}
    kind, manifest = fake_cluster.asked[0]
    assert kind == "submit" and job_problems(manifest) == [] and manifest["metadata"]["namespace"] == "ml"
    code, out, _ = run_cli(["job", "list", "--backend", "volcano", "--json"], capsys)
    assert code == 0 and [j["state"] for j in json.loads(out)] == ["running"]
    code, out, _ = run_cli(["job", "show", "a", "--backend", "volcano"], capsys)
    assert code == 0 and out.startswith("job a (namespace ml, queue default): succeeded (Volcano phase Completed)")
    code, out, _ = run_cli(["job", "delete", "a", "--backend", "volcano", "-n", "research"], capsys)
    assert code == 0 and fake_cluster.asked[-1] == ("cancel", "a") and out.startswith("cancelled job a")
    code, out, err = run_cli(["job", "cancel", "b", "--backend", "volcano"], capsys)
    assert code == 0 and fake_cluster.asked[-1] == ("cancel", "b")
    code, _, err = run_cli(["job", "retry", "a", "--backend", "volcano"], capsys)  # Volcano retries by the policy
    assert code == 1 and err.strip() == ("vipr job retry: error: retry is not supported on volcano: Volcano retries a "
                                         "job by its spec's retry policy; to run a again, `vipr job delete a --backend "
                                         "volcano` and submit its spec again")


def test_a_backend_plugs_in_by_name(monkeypatch, capsys):
    class Local:
        def __init__(self, args):
            pass

        def list(self):
            return []

    monkeypatch.setitem(job_cmd.BACKENDS, "local", Local)
    assert run_cli(["job", "list"], capsys)[:2] == (0, "no jobs\n")
