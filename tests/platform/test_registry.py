"""The model registry: versions, aliases, show/list/delete, lineage and clear errors; and its CLI."""

import json

import pytest
import torch

from vipr.cli.main import main
from vipr.engine.card import Parent, make_card
from vipr.engine.checkpoint import FORMAT, save_atomic
from vipr.errors import CheckpointError, RegistryError
from vipr.models import create_backbone
from vipr.models.loading import load_backbone
from vipr.platform import registry, tracking


@pytest.fixture(scope="module")
def registered(client, pretrain_run, linear_run):
    """The pre-trained backbone as ``moco-tiny`` (@champion), then its linear classifier as ``linear-tiny``."""
    backbone = registry.register(pretrain_run, "moco-tiny", alias="champion", mlflow_client=client)
    classifier = registry.register(linear_run / "classifier.pt", "linear-tiny", mlflow_client=client)
    return backbone, classifier


def test_register_records_version_alias_and_lineage_tags(registered, pretrain_run):
    backbone, _ = registered
    assert (backbone["name"], backbone["version"], backbone["aliases"]) == ("moco-tiny", 1, ["champion"])
    tags = backbone["tags"]
    assert tags["checkpoint_sha256"] == tracking.file_sha256(pretrain_run / "checkpoint.pt")
    assert tags["run_dir"] == str(pretrain_run.resolve()) and tags["dataset_digest"] and tags["config_hash"]
    assert backbone["metrics"]["steps"] == 4 and backbone["uri"] == "models:/moco-tiny/1"


def test_classifier_names_its_registered_parent(registered, pretrain_run):
    backbone, classifier = registered
    assert classifier["parent_model"] == "moco-tiny/1" and classifier["tags"]["parent_model"] == "moco-tiny/1"
    assert classifier["tags"]["parent_checkpoint"] == str((pretrain_run / "checkpoint.pt").resolve())
    assert classifier["metrics"]["top1"] >= 0 and classifier["tags"]["num_classes"] == "10"
    assert "linear-tiny/1" in registry.show("moco-tiny/1")["derived"]


def test_registered_run_folder_is_reused(registered, pretrain_run, client):
    again = registry.register(pretrain_run, "moco-tiny", mlflow_client=client)
    assert again["version"] == 2 and again["run_id"] == registered[0]["run_id"]
    assert int(registry.get_version("moco-tiny").version) == 2  # NAME alone: the latest


def test_resolve_model_gives_a_loadable_checkpoint_without_resume_state(registered, tmp_path):
    path = registry.resolve_model("moco-tiny@champion")
    ckpt = torch.load(path, weights_only=True)  # plain data only
    assert ckpt["format"] == FORMAT and "state" not in ckpt  # the run folder keeps the resume state
    local = registry.resolve_model("models:/linear-tiny/1")
    model, card = load_backbone(local)
    assert card.num_classes == 10 and model.num_classes == 10
    source = registry.get_version("linear-tiny/1").source  # what a remote store would have to fetch
    fetched = registry.download(source, tmp_path / "cache" / "linear-tiny" / "1", "unused-for-file-uris")
    assert fetched.name == "classifier.pt" and fetched.read_bytes() == local.read_bytes()


def test_aliases_move_and_unknown_references_list_what_exists(registered, client):
    registry.register(registered[0]["tags"]["run_dir"], "alias-demo", mlflow_client=client)
    registry.register(registered[0]["tags"]["run_dir"], "alias-demo", mlflow_client=client)
    assert registry.set_alias("alias-demo", 1, "prod")["version"] == 1
    registry.set_alias("alias-demo", 2, "prod")
    assert int(registry.get_version("alias-demo@prod").version) == 2
    with pytest.raises(RegistryError, match=r"no registered model 'nope'.*alias-demo.*moco-tiny"):
        registry.show("nope")
    with pytest.raises(RegistryError, match=r"no version 7; its versions: 1, 2"):
        registry.show("alias-demo/7")
    with pytest.raises(RegistryError, match=r"no alias 'staging'; its aliases: prod -> 2"):
        registry.resolve_model("alias-demo@staging")
    with pytest.raises(RegistryError, match="no version 9"):
        registry.set_alias("alias-demo", 9, "prod")
    with pytest.raises(RegistryError, match="cannot set alias 'v3'"):
        registry.set_alias("alias-demo", 1, "v3")  # MLflow reserves v<number>
    with pytest.raises(RegistryError, match="not a model reference"):
        registry.parse_ref("a/b/c")


def test_delete_a_version_takes_its_aliases(registered, client):
    registry.register(registered[0]["tags"]["run_dir"], "delete-demo", alias="old", mlflow_client=client)
    registry.register(registered[0]["tags"]["run_dir"], "delete-demo", mlflow_client=client)
    with pytest.raises(RegistryError, match=r"delete-demo/VERSION \(versions of 'delete-demo': 1, 2\)"):
        registry.delete_version("delete-demo")
    assert registry.delete_version("delete-demo/1")["version"] == 1
    assert [v["version"] for v in registry.show("delete-demo")["versions"]] == [2]
    with pytest.raises(RegistryError, match="no alias 'old'"):
        registry.get_version("delete-demo@old")


def loose_checkpoint(path, seed=0, parent=None):
    """A small checkpoint of its own content (``seed``), optionally derived from ``parent`` (a file)."""
    torch.manual_seed(seed)
    card = make_card(architecture="tiny", architecture_kwargs={}, image_size=16, mean=[0.5] * 3, std=[0.25] * 3,
                     method="none", dataset="x", dataset_digest="abc123",
                     parent=None if parent is None else Parent(str(parent), tracking.file_sha256(parent)))
    save_atomic({"format": FORMAT, "card": card.to_dict(), "backbone": create_backbone("tiny").state_dict()}, path)
    return path


def test_deleting_the_last_version_removes_the_name(client, tmp_path, capsys):
    registry.register(loose_checkpoint(tmp_path / "one.pt", seed=11), "short-lived", mlflow_client=client)
    assert registry.delete_version("short-lived/1", client)["model_removed"]
    assert "short-lived" not in [row["name"] for row in registry.list_models(client)]
    with pytest.raises(RegistryError, match="no registered model 'short-lived'") as err:
        registry.show("short-lived")
    assert "registered: " in str(err.value) and "short-lived," not in str(err.value)
    client.create_registered_model("empty-leftover")  # as an older vipr left it: a name, no version
    assert "empty-leftover" not in [row["name"] for row in registry.list_models(client)]
    with pytest.raises(RegistryError) as err:
        registry.show("empty-leftove")
    assert "empty-leftover" not in str(err.value)  # never suggested
    assert main(["model", "list", "--json"]) == 0
    assert "empty-leftover" not in capsys.readouterr().out


def test_a_parent_is_deleted_only_with_force(client, tmp_path, capsys):
    parent = loose_checkpoint(tmp_path / "parent.pt", seed=12)
    registry.register(parent, "lineage-parent", mlflow_client=client)
    registry.register(loose_checkpoint(tmp_path / "child.pt", seed=13, parent=parent), "lineage-child",
                      mlflow_client=client)
    assert registry.show("lineage-child/1", client)["parent_model"] == "lineage-parent/1"
    assert main(["model", "delete", "lineage-parent/1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the parent of lineage-child/1" in err and "--force" in err
    assert registry.show("lineage-parent/1", client)["version"] == 1  # still there
    assert main(["model", "delete", "lineage-parent/1", "--force"]) == 0
    captured = capsys.readouterr()
    assert "warning: deleting lineage-parent/1, the parent of lineage-child/1" in captured.err
    assert "the name lineage-parent is removed too" in captured.out
    assert registry.show("lineage-child/1", client)["parent_model"] is None


def test_a_twin_of_the_parent_keeps_the_children_registered(client, tmp_path):
    parent = loose_checkpoint(tmp_path / "parent.pt", seed=14)
    registry.register(parent, "twin-parent", mlflow_client=client)
    registry.register(parent, "twin-parent", mlflow_client=client)  # the same content twice
    registry.register(loose_checkpoint(tmp_path / "child.pt", seed=15, parent=parent), "twin-child",
                      mlflow_client=client)
    registry.delete_version("twin-parent/1", client)  # version 2 holds the same checkpoint: no refusal
    assert registry.show("twin-child/1", client)["parent_model"] == "twin-parent/2"


def test_bare_checkpoint_and_bad_targets(client, tmp_path):
    model = create_backbone("tiny")
    card = make_card(architecture="tiny", architecture_kwargs={}, image_size=16, mean=[0.5] * 3, std=[0.25] * 3,
                     method="none", dataset="x", dataset_digest="abc123")
    save_atomic({"format": FORMAT, "card": card.to_dict(), "backbone": model.state_dict()}, tmp_path / "loose.pt")
    first = registry.register(tmp_path / "loose.pt", "loose", mlflow_client=client)
    second = registry.register(tmp_path / "loose.pt", "loose", mlflow_client=client)
    assert second["run_id"] == first["run_id"] and first["tags"].get("run_dir") is None  # one run per content
    with pytest.raises(RegistryError, match="not allowed"):
        registry.register(tmp_path / "loose.pt", "bad/name", mlflow_client=client)
    (tmp_path / "knn").mkdir()
    with pytest.raises(RegistryError, match="kNN evaluations have no model"):
        registry.register(tmp_path / "knn", "knn", mlflow_client=client)


def test_cli_list_show_alias_delete(registered, capsys):
    assert main(["model", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "VERSIONS", "LATEST", "ALIASES", "TASK", "OUTPUT", "BACKBONE", "UPDATED"]
    row = next(line for line in table if line.startswith("linear-tiny "))
    assert "classifier" in row and "logits" in row and "tiny" in row
    assert main(["model", "show", "linear-tiny/1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["parent_model"] == "moco-tiny/1" and "top1" in shown["metrics"]
    assert main(["model", "show", "moco-tiny@champion"]) == 0
    derived = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  derived"))
    assert "linear-tiny/1" in derived
    assert main(["model", "alias", "linear-tiny", "1", "champion"]) == 0
    assert "linear-tiny@champion -> version 1" in capsys.readouterr().out
    assert main(["model", "show", "linear-tiny@nope"]) == 1
    assert "no alias 'nope'" in capsys.readouterr().err


def test_cli_register_json(pretrain_run, capsys, client):
    assert main(["model", "register", str(pretrain_run / "checkpoint.pt"), "--name", "cli-moco", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("registered cli-moco version 1") and json.loads(out[-1])["name"] == "cli-moco"


class _WritesMarker:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):  # what unpickling would run
        return exec, (f"open({self.path!r}, 'w').close()",)


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(client, tmp_path):
    """A pickle that would run code on load (here: create a file) is refused by the registry's weights_only load."""
    marker = tmp_path / "pwned"
    torch.save({"format": FORMAT, "card": _WritesMarker(marker), "backbone": {}}, tmp_path / "crafted.pt")
    with pytest.raises(CheckpointError, match="may be unsafe") as err:
        registry.register(tmp_path / "crafted.pt", "crafted", mlflow_client=client)
    assert "\n" not in str(err.value) and not marker.exists()
    assert not any(m.name == "crafted" for m in client.search_registered_models())
