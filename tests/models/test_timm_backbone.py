"""timm:NAME backbones beyond the contract: names, local weights, input sizes, a pre-training run."""

import pytest
import torch

from vipr.errors import ConfigError
from vipr.models import TIMM_PATTERN, create_backbone, list_backbones

pytest.importorskip("timm")

TINY_DATA = "builtin:shapes?train=40&test=20&size=16"


def test_list_backbones_names_the_timm_pattern():
    names = list_backbones()
    assert names[-1] == TIMM_PATTERN and {"resnet18", "tiny", "darts_net"} <= set(names)


def test_unknown_timm_model_suggests_a_close_name():
    with pytest.raises(ConfigError, match=r"did you mean 'timm:resnet18'\?"):
        create_backbone("timm:resnet81")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_load_by_name(suffix, tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_backbone("timm:mobilenetv3_small_100")
    state = {**source.model.state_dict(), "classifier.weight": torch.zeros(10, 1024)}  # a head the backbone lacks
    path = tmp_path / f"weights{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    torch.manual_seed(1)
    loaded = create_backbone("timm:mobilenetv3_small_100", small_stem=True, weights=str(path))
    for key, value in source.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    report = capsys.readouterr().err
    assert f": {len(source.model.state_dict())} of {len(source.model.state_dict())} tensors" in report
    assert "unexpected  1: classifier.weight" in report


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="absent.pt does not exist"):
        create_backbone("timm:resnet18", weights=str(tmp_path / "absent.pt"))


def test_vit_image_size():
    dynamic = create_backbone("timm:vit_tiny_patch16_224")  # any size its 16 px patches divide
    assert dynamic.forward_intermediates(torch.randn(1, 3, 48, 48), [0])[0].shape == (1, 192, 3, 3)
    fixed = create_backbone("timm:vit_tiny_patch16_224", img_size=32)
    assert fixed.model.pos_embed.shape[1] == 1 + 4  # class token + 2x2 patches
    with pytest.raises(ConfigError, match="takes 32x32 px images, got 48x48"):
        fixed.forward_features(torch.randn(1, 3, 48, 48))


def test_timm_backbone_pretrains_evaluates_and_reloads(tmp_path):
    from vipr.eval.runner import run_eval
    from vipr.models.loading import load_backbone
    from vipr.pretrain import build_config, run_pretrain

    config = build_config({"data": {"source": TINY_DATA, "image_size": 16},
                           "model": {"backbone": "timm:resnet18"},
                           "method": {"name": "moco_v2", "queue_size": 40, "proj_hidden_dim": 16, "proj_dim": 8},
                           "train": {"epochs": 1, "batch_size": 20, "progress": False, "precision": "bf16"}})
    metrics = run_pretrain(config, tmp_path / "pretrain")
    assert metrics["steps"] == 2
    model, card = load_backbone(tmp_path / "pretrain")
    assert card.architecture == "timm:resnet18" and card.architecture_kwargs == {"small_stem": True}
    assert model.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, 512)
    knn = run_eval("knn", checkpoint=str(tmp_path / "pretrain"), data=TINY_DATA, k=5, precision="fp32",
                   progress=False)
    assert knn["backbone"] == "timm:resnet18" and 0 <= knn["top1"] <= 100
