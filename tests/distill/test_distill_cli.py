"""``vipr distill``: two-step CPU runs of every method, exact resume, the card, and bad input in one line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vipr.pretrain
from vipr.cli.main import main
from vipr.config import apply_overrides
from vipr.engine import checkpoint as ckpt
from vipr.engine.trainer import Interrupted, Trainer
from vipr.models.loading import load_backbone
from vipr.nas.genotype import DARTS_V2
from vipr.pretrain import build_config

from .conftest import DATA, FAST

RUNS = {  # name -> (method, teacher fixture, extra --set)
    "seed": ("seed", "teacher", []),
    "bingo": ("bingo", "teacher", ["method.warmup_epochs=0", "method.neighbours=4"]),  # the bag from step 1
    "kd": ("kd", "classifier_teacher", []),
    "feature": ("feature", "teacher", ["method.stages=[1,-1]"]),
    "feature+kd": ("feature", "classifier_teacher", ["method.kd_weight=0.5"]),
}


def distill(out, teacher, *args, student="tiny", method="seed", sets=()):
    return main(["distill", "--teacher", str(teacher), "--student", str(student), "--method", method, "--data", DATA,
                 "--out", str(out), "--epochs", "1", "--batch-size", "32", *FAST, *args,
                 "--set", "train.log_every=1", *sets])


@pytest.mark.parametrize("name", list(RUNS))
def test_every_method_runs_two_steps_and_ships_a_backbone_eval_reads(name, request, tmp_path, capsys):
    method, fixture, sets = RUNS[name]
    teacher = request.getfixturevalue(fixture)
    assert distill(tmp_path / "run", teacher, "--json", method=method, sets=sets) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["steps"] == 2 and torch.isfinite(torch.tensor(metrics["loss_mean"]))
    if name == "bingo":
        assert metrics["positive_rate"] == 1.0  # the teacher's bank gave every image its neighbours
    backbone, card = load_backbone(tmp_path / "run")
    assert card.task == "backbone" and card.method == method and card.architecture == "tiny"
    assert card.parent.checkpoint == str(ckpt.resolve_path(teacher).resolve())
    assert card.extra["teacher"]["source"] == str(teacher) and card.extra["teacher"]["feature_dim"] == 64
    assert card.config["method"]["teacher"] == str(teacher)
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "run"), "--data", DATA, "--k", "10",
                 "--no-progress"]) == 0


def test_a_genotype_student_becomes_its_darts_net(teacher, tmp_path):
    genotype = DARTS_V2.save(tmp_path / "genotype.json")
    assert distill(tmp_path / "run", teacher, student=genotype,
                   sets=["method.student_channels=4", "method.student_layers=3"]) == 0
    network, card = load_backbone(tmp_path / "run")  # rebuilt from the card alone
    assert card.architecture == "darts_net" and card.architecture_kwargs["layers"] == 3
    assert card.architecture_kwargs["genotype"] == DARTS_V2.to_dict()
    assert card.extra["params"] == sum(p.numel() for p in network.parameters())
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "run"), "--data", DATA, "--k", "10",
                 "--no-progress"]) == 0
    # the README's slimming path beyond distillation: a head on the student, then INT8 for serving
    assert main(["eval", "linear", "--checkpoint", str(tmp_path / "run"), "--data", DATA, "--out",
                 str(tmp_path / "linear"), "--no-progress"]) == 0
    int8 = tmp_path / "student.int8.onnx"
    assert main(["model", "export", str(tmp_path / "linear" / "classifier.pt"), "--format", "onnx", "--quantize",
                 "int8", "--out", str(int8)]) == 0
    report = json.loads(int8.with_name(int8.name + ".json").read_text())
    assert report["quantization"]["accuracy"]["metric"] == "top1"


def _seed_config(teacher):
    return build_config(apply_overrides({}, [
        f"data.source={DATA}", "data.image_size=16", "model.backbone=tiny", "method.name=seed",
        f"method.teacher={teacher}", "train.epochs=2", "train.batch_size=16", "train.progress=false",
        "train.precision=fp32"]))


def test_seed_resumes_exactly(teacher, tmp_path, monkeypatch):
    from vipr.distill.run import run_distill

    run_distill(_seed_config(teacher), tmp_path / "full")
    full = ckpt.load(tmp_path / "full" / "checkpoint.pt")["state"]["model"]
    original = Trainer.train_step

    def interrupt_at_step_2(self, batch):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_2)
    with pytest.raises(Interrupted, match="step 2"):
        run_distill(_seed_config(teacher), tmp_path / "cut")
    monkeypatch.setattr(Trainer, "train_step", original)
    run_distill(_seed_config(teacher), tmp_path / "cut", resume=True)
    resumed = ckpt.load(tmp_path / "cut" / "checkpoint.pt")["state"]["model"]
    assert resumed.keys() == full.keys() and "queue" in full and len(full["queue"]) == 16  # 64 images / 4
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def test_resume_refuses_another_teacher_file(teacher, tmp_path, capsys):
    copy = tmp_path / "teacher.pt"
    saved = ckpt.load(teacher)
    torch.save(saved, copy)
    assert distill(tmp_path / "run", copy) == 0
    saved["backbone"] = {k: v + 1 if v.is_floating_point() else v for k, v in saved["backbone"].items()}
    torch.save(saved, copy)  # same path, other weights
    capsys.readouterr()
    assert distill(tmp_path / "run", copy, "--resume") == 1
    assert "not the file this run started with" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("case, argv, words", [
    ("image size", ["--image-size", "32"], ["16 px", "32", "--image-size 16"]),
    ("unknown student", ["--student", "tinny"], ["tinny", "did you mean 'tiny'"]),
    ("not a genotype", ["--student", "{bad}"], ["not a genotype file", "vipr-genotype/1"]),
    ("kd, backbone teacher", ["--method", "kd"], ["classifier teacher", "vipr eval linear"]),
    ("kd_weight, backbone teacher", ["--method", "feature", "--set", "method.kd_weight=1"], ["classifier teacher"]),
    ("not a distillation method", ["--method", "moco_v2"], ["not a distillation method", "vipr pretrain"]),
    ("teacher not there", ["--teacher", "{tmp}/nothere"], ["nothere", "no such file"]),
    ("bad number", ["--batch-size", "0"], ["--batch-size (train.batch_size)"]),
])
def test_bad_input_fails_early_in_one_line(case, argv, words, teacher, tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    argv = [a.format(bad=tmp_path / "bad.json", tmp=tmp_path) for a in argv]
    base = ["distill", "--teacher", str(teacher), "--student", "tiny", "--data", DATA, "--out", str(tmp_path / "never"),
            "--no-track"]
    assert main([*base, *argv]) == 1
    line = _one_error_line(capsys)
    assert all(word in line for word in words), line
    assert not (tmp_path / "never").exists()  # refused before the run folder


def test_a_missing_teacher_is_named(tmp_path, capsys):
    assert main(["distill", "--student", "tiny", "--data", DATA, "--out", str(tmp_path / "never"), "--no-track"]) == 1
    assert "no teacher given; pass --teacher" in _one_error_line(capsys)


def test_labels_of_other_classes_cannot_supervise_kd(classifier_teacher, tmp_path, capsys):
    assert main(["distill", "--teacher", str(classifier_teacher), "--student", "tiny", "--method", "kd",
                 "--data", "builtin:digits", "--image-size", "16", "--out", str(tmp_path / "never"),
                 "--no-track", "--no-progress"]) == 1
    assert "method.alpha=1" in _one_error_line(capsys)
    assert not (tmp_path / "never").exists()


def test_distill_reads_the_encoded_store_as_pretraining_does(teacher, tmp_path, monkeypatch):
    """data.store, shuffle_buffer and cache_gb reach distillation: the same opener as `vipr pretrain`."""
    rng = np.random.default_rng(0)
    for label in range(2):
        (tmp_path / "photos" / f"c{label}").mkdir(parents=True)
        for i in range(32):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                tmp_path / "photos" / f"c{label}" / f"{i}.jpg")
    monkeypatch.setenv("VIPR_CACHE", str(tmp_path / "cache"))
    kinds, real = [], vipr.pretrain.open_training_dataset

    def spy(*args, **kwargs):  # the store kind each open picked, the data opened once
        dataset, kind = real(*args, **kwargs)
        kinds.append(kind)
        return dataset, kind

    monkeypatch.setattr(vipr.pretrain, "open_training_dataset", spy)
    assert main(["distill", "--teacher", str(teacher), "--student", "tiny", "--method", "seed",
                 "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--batch-size", "32", *FAST, "--set", "data.store=encoded", "data.shuffle_buffer=16",
                 "data.cache_gb=0.001"]) == 0
    assert kinds[0] == "encoded"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 2
