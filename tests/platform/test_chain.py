"""Lineage from data to deployed model: a run on NAME:V1 inside a job, its model's tags, `vipr serve`'s rows, the chain."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from vipr.cli.main import main
from vipr.engine import checkpoint
from vipr.engine.card import make_card
from vipr.engine.checkpoint import FORMAT, save_atomic
from vipr.eval.runner import run_eval
from vipr.models import create_backbone
from vipr.platform import chain, deployments, registry, tracking
from vipr.platform.dataset_register import register

SHAPES = "builtin:shapes?train=64&test=16&size=16"
PRETRAIN = ["--backbone", "tiny", "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--no-progress",
            "--precision", "fp32", "--set", "method.queue_size=32", "method.proj_hidden_dim=16", "method.proj_dim=8",
            "train.num_threads=1"]


@pytest.fixture
def workspace(client, monkeypatch):
    """The session workspace (MLflow is slow to set up), tracked; its metadata database is VIPR_HOME/vipr.db."""
    monkeypatch.delenv("VIPR_DB_URL", raising=False)
    monkeypatch.setenv("VIPR_TRACKING", "1")
    return client


def test_a_run_on_a_dataset_version_in_a_job_leads_to_its_deployments(workspace, tmp_path, monkeypatch, capsys,
                                                                        one_thread):
    version, _ = register(SHAPES, "chain-shapes")
    run = tmp_path / "pretrain"
    monkeypatch.setenv("VIPR_JOB_ID", "7")
    monkeypatch.setenv("VIPR_JOB_NAME", "pretrain-small")  # what the job worker sets
    assert main(["pretrain", "--data", "chain-shapes:V1", "--out", str(run), *PRETRAIN]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["source"] == "chain-shapes:V1"
    assert json.loads((run / "env.json").read_text())["job"] == {"id": "7", "name": "pretrain-small"}
    card = checkpoint.load_card(run / "checkpoint.pt")
    assert (card.dataset, card.dataset_digest) == ("chain-shapes:V1", version.digest)
    tracked = workspace.get_run(json.loads((run / tracking.MARKER).read_text())[workspace.tracking_uri]["run_id"])
    assert {k: tracked.data.tags.get(k) for k in ("dataset_name", "dataset_version", "job_id", "job_name")} == \
        {"dataset_name": "chain-shapes", "dataset_version": "V1", "job_id": "7", "job_name": "pretrain-small"}
    monkeypatch.delenv("VIPR_JOB_ID")
    monkeypatch.delenv("VIPR_JOB_NAME")  # registered later, outside the job: env.json still names it
    knn = tmp_path / "knn"
    assert main(["eval", "knn", "--checkpoint", str(run), "--data", "chain-shapes:V1", "--k", "5", "--out", str(knn),
                 "--no-progress", "--no-track"]) == 0
    assert json.loads((knn / "eval_config.json").read_text())["data"] == "chain-shapes:V1"
    assert main(["model", "register", str(run), "--name", "chain-moco"]) == 0
    tags = registry.show("chain-moco/1", workspace)["tags"]
    assert (tags["dataset_name"], tags["dataset_version"], tags["job_id"], tags["job_name"]) == \
        ("chain-shapes", "V1", "7", "pretrain-small")
    linear = tmp_path / "linear"
    run_eval("linear", checkpoint=str(run), data="chain-shapes:V1", out=linear, epochs=2, batch_size=16,
             precision="fp32", progress=False)
    assert registry.register(linear / "classifier.pt", "chain-linear", mlflow_client=workspace)["parent_model"] \
        == "chain-moco/1"
    capsys.readouterr()

    served = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: served.append(deployments.of_model("chain-moco", 1)))
    assert main(["serve", "chain-moco/1", "--runtime", "torch", "--device", "cpu", "--port", "18765"]) == 0
    assert [(d["status"], d["port"]) for d in served[0]] == [("running", 18765)]  # while serving
    killed = deployments.start("chain-moco", 1, "0.0.0.0", 18766)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    with deployments.db.engine_for(deployments.DEPLOYMENTS).begin() as conn:  # a server killed outright
        conn.execute(deployments.DEPLOYMENTS.update().where(deployments.DEPLOYMENTS.c.id == killed)
                     .values(pid=int(dead.stdout)))
    capsys.readouterr()

    assert main(["model", "show", "chain-moco/1"]) == 0
    out = capsys.readouterr().out
    assert (f"    dataset      chain-shapes:V1 (digest {version.digest})\n"
            "    job          7 (pretrain-small)\n") in out
    assert f"    run          {run.resolve()} (MLflow run {tracked.info.run_id}, pretrain)\n" in out
    assert f"dataset chain-shapes:V1 -> job 7 -> run {tracked.info.run_id[:8]} -> model chain-moco/1 -> " \
           "0 of 2 deployments running" in out
    assert "0.0.0.0:18766 on " in out and "stopped (its process is gone)" in out
    assert "127.0.0.1:18765 on " in out and ", stopped 20" in out
    child = json.loads(_last_line(["model", "show", "chain-linear/1", "--json"], capsys))["chain"]
    assert (child["dataset"]["ref"], child["parent"], child["job"], child["deployments"]) == \
        ("chain-shapes:V1", "chain-moco/1", None, [])
    assert "-> model chain-linear/1 -> parent chain-moco/1 -> 0 of 0 deployments running" in \
        "\n".join(chain.format_chain(child))


def test_data_given_as_a_path_is_named_by_its_registered_digest(workspace, tmp_path):
    data = "builtin:shapes?train=24&test=8&size=16"  # opened as itself, registered afterwards
    version, _ = register(data, "tiny-shapes")
    torch.manual_seed(21)  # weights of its own: no other test's checkpoint
    card = make_card(architecture="tiny", architecture_kwargs={}, image_size=16, mean=[0.5] * 3, std=[0.25] * 3,
                     method="none", dataset=data, dataset_digest=version.digest)
    save_atomic({"format": FORMAT, "card": card.to_dict(), "backbone": create_backbone("tiny").state_dict()},
                tmp_path / "loose.pt")
    tags = registry.register(tmp_path / "loose.pt", "by-digest", mlflow_client=workspace)["tags"]
    assert (tags["dataset_name"], tags["dataset_version"]) == ("tiny-shapes", "V1") and "job_id" not in tags
    found = chain.build_chain(registry.show("by-digest", workspace))["dataset"]
    assert (found["ref"], found["registered"], found["source"]) == ("tiny-shapes:V1", True, data)


def test_unregistered_data_shows_its_source_and_digest():
    lines = chain.format_chain({"dataset": {"ref": None, "registered": False, "digest": "ab12", "source": "/d"},
                                "job": None, "run": {"dir": None, "id": None, "name": None}, "model": "m/1",
                                "parent": None, "deployments": []})
    assert lines[1] == "    dataset /d -> run - -> model m/1 -> 0 of 0 deployments running"
    assert "    dataset      /d (digest ab12; not a registered dataset version)" in lines
    assert "    deployments  none (vipr serve m/1)" in lines


def _last_line(argv, capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]
