"""Initial weights from a file: torchvision, timm and vipr state dicts load into vipr backbones, with a key report."""

import json

import pytest
import torch
import torchvision
import yaml

from vipr.cli.main import main
from vipr.errors import ConfigError
from vipr.models import create_backbone
from vipr.models.init_weights import REPORT_NAME, initialise, load_init_weights, read_state_dict

DATA = "builtin:shapes?train=40&test=20&size=16"


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    """A torchvision ResNet-18 state dict on disk (random weights: nothing is downloaded), and the model."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_every_backbone_weight_of_a_torchvision_resnet_matches(torchvision_resnet18):
    path, net = torchvision_resnet18
    model = create_backbone("resnet18")
    report = load_init_weights(model, read_state_dict(path), path, "resnet18")
    assert report.missing == [] and report.other_shape == []
    assert report.unexpected == ["fc.bias", "fc.weight"]
    assert len(report.matched) == len(model.state_dict())
    torch.testing.assert_close(model.stem[0].weight, net.conv1.weight)
    torch.testing.assert_close(model.stages[3][1].bn2.running_var, net.layer4[1].bn2.running_var)
    net.eval(), model.eval()
    x = torch.randn(2, 3, 64, 64)
    pooled = torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(
        net.maxpool(net.relu(net.bn1(net.conv1(x))))))))), 1)
    torch.testing.assert_close(model.forward_features(x), pooled)  # the same network, not just the same tensors


def test_the_small_stem_conv_is_reported_of_another_shape(torchvision_resnet18):
    path, _ = torchvision_resnet18
    report = load_init_weights(create_backbone("resnet18", small_stem=True), read_state_dict(path), path, "resnet18")
    assert report.missing == ["stem.0.weight"]
    assert report.other_shape == ["stem.0.weight: file (64, 3, 7, 7) vs model (64, 3, 3, 3)"]
    text = report.summary()
    assert text.splitlines()[0] == f"--init-weights {path}: 119 of 120 tensors of resnet18 loaded"
    assert "unexpected  2: fc.bias, fc.weight" in text and len(text.splitlines()) == 4


def test_a_file_matching_nothing_is_one_line(torchvision_resnet18):
    path, _ = torchvision_resnet18
    with pytest.raises(ConfigError, match=r"none of its 122 tensors fits tiny by name and shape") as err:
        load_init_weights(create_backbone("tiny"), read_state_dict(path), path, "tiny")
    assert "\n" not in str(err.value)


def test_a_vipr_checkpoint_of_another_resnet_shares_its_layers(tmp_path, torchvision_resnet18):
    from vipr.engine.checkpoint import FORMAT, save_atomic

    source = create_backbone("resnet18")
    path = tmp_path / "checkpoint.pt"
    save_atomic({"format": FORMAT, "card": {}, "backbone": source.state_dict()}, path)  # the backbone is all we read
    report = load_init_weights(create_backbone("resnet34"), read_state_dict(path), path, "resnet34")
    assert len(report.matched) == len(source.state_dict()) and report.unexpected == []
    assert "stages.0.2.conv1.weight" in report.missing  # resnet34's third block of stage 1


def test_timm_backbones_take_timm_keys_and_safetensors(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    net = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(net.state_dict(), path)
    model = create_backbone("timm:resnet18")
    report = load_init_weights(model, read_state_dict(path), path, "timm:resnet18")
    assert report.missing == [] and report.unexpected == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(model.model.conv1.weight, net.conv1.weight)


def test_wrapped_and_ddp_state_dicts_unwrap(tmp_path, torchvision_resnet18):
    _, net = torchvision_resnet18
    path = tmp_path / "train.pth"
    torch.save({"epoch": 90, "model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    assert set(read_state_dict(path)) == set(net.state_dict())


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a torch file", "cannot be read as a torch file"),
    ("object", "refused, it holds objects beyond tensors"),
    ("list", "holds no tensors by name"),
])
def test_bad_files_fail_in_one_line(content, message, tmp_path):
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "object":
        torch.save({"weights": torch.nn.Linear(2, 2)}, path)  # a pickled module: code on load
    elif content == "list":
        torch.save([1, 2, 3], path)
    with pytest.raises(ConfigError, match=message) as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_initialise_prints_one_block_and_writes_the_report(tmp_path, torchvision_resnet18, capsys):
    path, _ = torchvision_resnet18
    initialise(create_backbone("resnet18"), path, "resnet18", tmp_path)
    assert len(capsys.readouterr().err.strip().splitlines()) == 4
    saved = json.loads((tmp_path / REPORT_NAME).read_text())
    assert saved["unexpected"] == ["fc.bias", "fc.weight"] and len(saved["matched"]) == 120


def _tiny_weights(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "tiny.pth"
    torch.save(create_backbone("tiny").state_dict(), path)
    return path


def test_pretrain_starts_from_the_file_and_records_it(tmp_path, capsys, one_thread):
    weights, run = _tiny_weights(tmp_path), tmp_path / "run"
    assert main(["pretrain", "--data", DATA, "--backbone", "tiny", "--image-size", "16", "--epochs", "1",
                 "--batch-size", "20", "--out", str(run), "--no-progress", "--no-track", "--init-weights", str(weights),
                 "--set", "method.queue_size=20", "method.proj_hidden_dim=16", "method.proj_dim=8"]) == 0
    assert f"--init-weights {weights}: " in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_weights"] == str(weights)
    assert json.loads((run / REPORT_NAME).read_text())["missing"] == []


def test_finetune_and_nas_train_take_init_weights(tmp_path, capsys, one_thread):
    weights, out = _tiny_weights(tmp_path), tmp_path / "ft"
    assert main(["eval", "finetune", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16",
                 "--data", DATA, "--epochs", "1", "--min-steps", "1", "--batch-size", "20", "--out", str(out),
                 "--no-progress", "--no-track", "--init-weights", str(weights)]) == 0
    assert json.loads((out / REPORT_NAME).read_text())["other_shape"] == []
    assert json.loads((out / "eval_config.json").read_text())["init_weights"] == str(weights)
    from vipr.cli.main import build_parser
    from vipr.cli.nas_train_cmd import config_from_args

    args = build_parser().parse_args(["nas", "train", "--init-weights", "w.pth"])
    assert config_from_args(args).network.init_weights == "w.pth"


@pytest.mark.parametrize("argv", [
    ["pretrain", "--data", DATA, "--backbone", "tiny", "--no-track", "--batch-size", "20", "--set",
     "method.queue_size=20"],
    ["nas", "train", "--data", DATA, "--batch-size", "20"],
    ["eval", "finetune", "--checkpoint", "random", "--backbone", "tiny", "--image-size", "16", "--data", DATA,
     "--no-track"],
], ids=lambda argv: "-".join(argv[:2]))
def test_a_weights_file_of_another_model_stops_before_training(argv, tmp_path, capsys, torchvision_resnet18):
    from vipr.nas.genotype import DARTS_V2

    path, _ = torchvision_resnet18
    if argv[0] == "nas":
        argv = [*argv, str(DARTS_V2.save(tmp_path / "genotype.json")), "--channels", "4", "--layers", "3"]
    code = main([*argv, "--out", str(tmp_path / "run"), "--init-weights", str(path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "none of its 122 tensors fits" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
