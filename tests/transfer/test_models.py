"""The transfer models (vipr.transfer.models): stage adapter, norms and frozen stages, detectors, segmenters."""

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from vipr.errors import ConfigError
from vipr.models.backbones import create_backbone
from vipr.transfer.models import (DEFAULT_NORM, TASK_KINDS, FeatureAdapter, apply_norm, build_detector,
                                  build_segmenter, create_transfer_model, derive_anchor_sizes, freeze_stages,
                                  list_transfer_models, transfer_parameters)

SIZE = 64  # px: every image here is SIZE x SIZE
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
LOSSES = {"faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
          "mask_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
          "retinanet": {"classification", "bbox_regression"}}
BACKBONES = {  # name: (kwargs, strides of the last three stages at small_stem)
    "resnet18": ({"small_stem": True}, [2, 4, 8]),
    "tiny": ({}, [2, 4, 8]),
    "timm:resnet18": ({}, [8, 16, 32]),  # timm keeps its stride-4 stem
    "darts_net": ({"channels": 4, "layers": 5}, [1, 2, 4]),  # three stages: all of them
}


def make_backbone(name: str) -> nn.Module:
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    return create_backbone(name, **BACKBONES[name][0])


def targets(masks: bool) -> list[dict]:
    """Two objects per image: boxes x1, y1, x2, y2 px, labels 1..2, and their uint8 masks."""
    out = []
    for shift in (0, 6):
        boxes = torch.tensor([[4.0 + shift, 6.0, 30.0 + shift, 28.0], [20.0, 30.0 + shift, 60.0, 60.0]])
        t = {"boxes": boxes, "labels": torch.tensor([1, 2])}
        if masks:
            t["masks"] = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
            for m, (x1, y1, x2, y2) in zip(t["masks"], boxes.int().tolist()):
                m[y1:y2, x1:x2] = 1
        out.append(t)
    return out


@pytest.mark.parametrize("name", list(BACKBONES))
def test_adapter_returns_the_ordered_stage_maps_with_their_channels_and_strides(name, one_thread):
    backbone = make_backbone(name)
    bn = next(m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    adapter = FeatureAdapter(backbone, probe_size=SIZE)
    assert torch.equal(bn.running_mean, stats)  # the stride probe ran in eval mode
    maps = adapter(torch.rand(2, 3, SIZE, SIZE))
    assert list(maps) == ["0", "1", "2"]
    assert adapter.in_channels_list == list(backbone.stage_dims[-3:])
    assert adapter.strides == BACKBONES[name][1]
    for m, channels, stride in zip(maps.values(), adapter.in_channels_list, adapter.strides):
        assert tuple(m.shape) == (2, channels, SIZE // stride, SIZE // stride)


def test_adapter_takes_chosen_stages_and_names(one_thread):
    adapter = FeatureAdapter(make_backbone("tiny"), indices=(0, -1), names=("a", "b"), probe_size=SIZE)
    assert adapter.indices == (0, 3) and adapter.strides == [1, 8] and adapter.in_channels_list == [16, 64]
    assert list(adapter(torch.rand(1, 3, 32, 32))) == ["a", "b"]
    with pytest.raises(ConfigError, match="increasing"):
        FeatureAdapter(make_backbone("tiny"), indices=(2, 1))


def _batch_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_norm_replaces_every_bn_and_equals_the_bn_eval_output(one_thread):
    backbone = make_backbone("tiny").train()
    with torch.no_grad():
        for _ in range(3):  # move the running statistics off their 0 / 1 start
            backbone.forward_features(torch.rand(4, 3, 16, 16) * 3 + 1)
    count = len(_batch_norms(backbone))
    x = torch.rand(2, 3, 16, 16)
    expected = backbone.eval().forward_intermediates(x, [-1])[0]
    frozen = apply_norm(copy.deepcopy(backbone), "frozen").train()  # train mode: frozen BN ignores it
    assert not _batch_norms(frozen)
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == count
    assert torch.equal(frozen.stem[1].running_var, backbone.stem[1].running_var)
    torch.testing.assert_close(frozen.forward_intermediates(x, [-1])[0], expected)


def test_frozen_norm_keeps_timm_bn_activations(one_thread):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    backbone = create_backbone("timm:mobilenetv3_small_100").eval()
    x = torch.rand(1, 3, 32, 32)
    expected = backbone.forward_features(x)
    frozen = apply_norm(copy.deepcopy(backbone), "frozen").train()
    assert not _batch_norms(frozen)
    torch.testing.assert_close(frozen.forward_features(x), expected)


def test_bn_and_syncbn_without_a_process_group_leave_plain_trainable_bn():
    assert DEFAULT_NORM == "syncbn" and not torch.distributed.is_initialized()
    for norm in ("bn", "syncbn"):
        backbone = make_backbone("tiny")
        norms = _batch_norms(backbone)
        assert apply_norm(backbone, norm) is backbone
        assert _batch_norms(backbone) == norms and all(type(m) is nn.BatchNorm2d for m in norms)
        assert all(p.requires_grad for p in backbone.parameters())
    with pytest.raises(ConfigError, match="did you mean 'frozen'"):
        apply_norm(make_backbone("tiny"), "frozn")


def _trainable(module: nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def _params_under(module: nn.Module, *prefixes: str) -> set[str]:
    return {name for name, _ in module.named_parameters() if name.startswith(prefixes)}


def test_freeze_stages_trains_exactly_the_last_stages(one_thread):
    tiny = freeze_stages(make_backbone("tiny"), 2)
    assert _trainable(tiny) == _params_under(tiny, "stages.2.", "stages.3.")
    assert all(isinstance(m, FrozenBatchNorm2d) for m in (tiny.stem[1], tiny.stages[1][1]))
    tiny.train()
    stats = tiny.stages[3][1].running_mean.clone()
    tiny.forward_features(torch.rand(2, 3, 16, 16))
    assert not torch.equal(tiny.stages[3][1].running_mean, stats)  # a trainable stage's BN still learns
    darts = freeze_stages(make_backbone("darts_net"), 1)  # stages end at cells 0, 2, 4
    assert _trainable(darts) == _params_under(darts, "cells.3.", "cells.4.")
    everything = {name for name, _ in make_backbone("tiny").named_parameters()}
    assert _trainable(freeze_stages(make_backbone("tiny"), 4)) == everything  # N == stages trains the stem
    assert _trainable(freeze_stages(make_backbone("tiny"), None)) == everything
    assert _trainable(freeze_stages(make_backbone("tiny"), 0)) == set()
    with pytest.raises(ConfigError, match=r"0\.\.4"):
        freeze_stages(make_backbone("tiny"), 5)


def test_freeze_stages_splits_a_timm_model_at_its_feature_modules(one_thread):
    model = freeze_stages(make_backbone("timm:resnet18"), 2)  # stages: act1 (the stem), layer1..4
    assert _trainable(model) == _params_under(model, "model.layer3.", "model.layer4.")
    stem_only = freeze_stages(make_backbone("timm:resnet18"), 4)
    assert _trainable(stem_only) == {n for n, _ in stem_only.named_parameters()} - _params_under(
        stem_only, "model.conv1.", "model.bn1.")


@pytest.mark.parametrize("kind", ["faster_rcnn", "mask_rcnn", "retinanet"])
def test_detector_trains_and_detects(kind, one_thread):
    torch.manual_seed(0)
    model = create_transfer_model(kind, make_backbone("tiny"), 3, SIZE, mean=MEAN, std=STD).train()
    images = [torch.rand(3, SIZE, SIZE) for _ in range(2)]
    losses = model(images, targets(masks=kind == "mask_rcnn"))
    assert set(losses) == LOSSES[kind] and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    groups = transfer_parameters(model)
    assert groups["backbone"] and all(p.grad is not None for p in groups["backbone"])
    assert all(p.grad is not None for p in groups["heads"] if p.dim() > 1)  # conv and linear weights
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2
    for d in detections:
        assert set(d) == {"boxes", "labels", "scores"} | ({"masks"} if kind == "mask_rcnn" else set())
        n = len(d["boxes"])
        assert d["boxes"].shape == (n, 4) and d["labels"].shape == d["scores"].shape == (n,)
        if kind == "mask_rcnn":
            assert d["masks"].shape == (n, 1, SIZE, SIZE)


def test_detector_with_no_trainable_stage_gives_no_backbone_gradient(one_thread):
    torch.manual_seed(0)
    backbone = make_backbone("resnet18")
    model = build_detector(backbone, "faster_rcnn", 3, SIZE, mean=MEAN, std=STD, trainable_stages=0).train()
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,))  # strides 2, 4, 8 and "pool" 16
    assert model.transform._skip_resize
    losses = model([torch.rand(3, SIZE, SIZE) for _ in range(2)], targets(masks=False))
    sum(losses.values()).backward()
    assert transfer_parameters(model)["backbone"] == []
    assert all(p.grad is None for p in backbone.parameters())
    assert not _batch_norms(backbone)  # a frozen stage's BN is a FrozenBatchNorm2d


def test_detector_transform_keeps_training_images_at_their_scale():
    model = create_transfer_model("faster_rcnn", make_backbone("tiny"), 3, SIZE, mean=MEAN, std=STD)
    image = torch.rand(3, 96, 96)  # a x1.5 multi-scale batch
    assert model.transform.train()([image])[0].tensors.shape[-2:] == (96, 96)
    assert model.transform.eval()([image])[0].tensors.shape[-2:] == (SIZE, SIZE)


@pytest.mark.parametrize("head", ["fcn", "aspp"])
def test_segmenter_logits_have_the_input_size_and_sgd_lowers_the_loss(head, one_thread):
    torch.manual_seed(0)
    model = create_transfer_model(head, make_backbone("tiny"), 4, 32).train()
    assert tuple(model(torch.rand(2, 3, 48, 40))["out"].shape) == (2, 4, 48, 40)
    image = torch.rand(1, 3, 32, 32).expand(2, -1, -1, -1)  # ASPP's pooled BN needs two images
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:24, 4:20], labels[:, 20:, 20:] = 1, 3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(image)["out"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_segmenter_reads_the_chosen_stage_with_scaled_atrous_rates():
    model = build_segmenter(make_backbone("tiny"), 3, head="aspp", image_size=SIZE, stage=-2, channels=8)
    assert model.backbone.indices == (2,) and model.backbone.strides == [4]
    rates = [conv[0].dilation[0] for conv in model.classifier[0].convs[1:4]]
    assert rates == [3, 6, 9]  # DeepLab's 6, 12, 18 at 33 x 33, scaled to a 16 x 16 map
    used = [p for name, p in model.backbone.backbone.named_parameters() if not name.startswith("stages.3.")]
    assert transfer_parameters(model)["backbone"] == used  # stage 3 never runs: frozen


@pytest.mark.parametrize("image_size, strides", [(64, [2, 4, 8, 16]), (64, [8, 16, 32, 64]), (256, [8, 16, 32, 64]),
                                                 (64, [2, 4, 8, 16, 32]), (32, [1, 2, 4]), (512, [4, 8, 16, 32])])
def test_anchor_sizes_increase_one_per_level_within_bounds(image_size, strides):
    sizes = derive_anchor_sizes(image_size, strides)
    assert len(sizes) == len(strides)
    assert all(b > a for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] >= 8 and sizes[-1] <= image_size
    if 4 * strides[-1] <= image_size and 4 * strides[0] >= 8:  # inside the bounds: 4 x the stride
        assert list(sizes) == [4 * s for s in strides]
    assert derive_anchor_sizes(64, [16, 16, 16]) == (64, 64, 64)  # a ViT's equal strides
    with pytest.raises(ConfigError, match="at least 16"):
        derive_anchor_sizes(12, strides)


def test_registry_names_the_kinds_and_unknown_kinds_fail_with_the_choices():
    assert list_transfer_models() == ["faster_rcnn", "mask_rcnn", "retinanet", "fcn", "aspp"]
    assert all(kind in list_transfer_models() for kinds in TASK_KINDS.values() for kind in kinds)
    with pytest.raises(ConfigError, match="did you mean 'faster_rcnn'.*retinanet"):
        create_transfer_model("fastr_rcnn", None, 3, SIZE)
    with pytest.raises(ConfigError, match="'yolo'; valid: aspp, faster_rcnn, fcn, mask_rcnn, retinanet"):
        create_transfer_model("yolo", None, 3, SIZE)
