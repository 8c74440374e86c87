"""`vipr transfer`: each task trains through the engine, resumes exactly, scores, predicts; its inputs are checked."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vipr.cli.main import main
from vipr.engine import checkpoint as ckpt
from vipr.engine.trainer import Trainer
from vipr.errors import CheckpointError
from vipr.models.loading import load_backbone
from vipr.transfer.build import load_transfer_model
from vipr.transfer.metrics import metric_names

DATA = "builtin:scenes?size=64&train=16&test=8&classes=3&objects=3"
TINY = ["--data", DATA, "--backbone", "tiny", "--batch-size", "4", "--no-track", "--no-progress",
        "--set", "train.num_threads=1", "eval.batch_size=4"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run per task (4 steps each), shared by the tests below."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = {}
    for task in ("detect", "instance", "segment"):
        out = tmp_path_factory.mktemp("runs") / task
        assert main(["transfer", task, "--out", str(out), "--epochs", "1", *TINY]) == 0
        runs[task] = out
    torch.set_num_threads(threads)
    return runs


@pytest.mark.parametrize("task", ["detect", "instance", "segment"])
def test_each_task_trains_and_scores_every_named_figure(trained, task):
    metrics = json.loads((trained[task] / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["task"] == task
    assert set(metric_names(task)) <= set(metrics)
    values = [metrics[name] for name in metric_names(task) if metrics[name] is not None]
    assert values and all(0 <= v <= 100 for v in values)
    model, card = load_transfer_model(trained[task])
    assert card.task == task and card.classes[0] == "background" and card.num_classes == 4
    assert card.evaluation[metric_names(task)[0]] == metrics[metric_names(task)[0]]
    steps = [json.loads(line) for line in (trained[task] / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in record and "step" in record for record in steps)  # metrics per iteration


def test_detection_losses_are_torchvisions_and_finite(trained):
    epoch = [json.loads(line) for line in (trained["instance"] / "metrics.jsonl").read_text().splitlines()
             if "epoch_seconds" in line][-1]
    for name in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"):
        assert np.isfinite(epoch[f"{name}_mean"]), name


def test_eval_reproduces_the_runs_figures(trained, capsys):
    assert main(["transfer", "eval", "--checkpoint", str(trained["instance"]), "--batch-size", "4", "--no-progress",
                 "--json"]) == 0
    again = last_json(capsys)
    saved = json.loads((trained["instance"] / "metrics.json").read_text())
    for name in metric_names("instance"):
        assert again[name] == pytest.approx(saved[name]) if saved[name] is not None else again[name] is None


def test_resume_after_interrupt_is_exact(tmp_path, monkeypatch):
    args = ["transfer", "detect", "--iters", "3", *TINY]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    original = Trainer.train_step

    def stop_at_step_2(self, batch):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", stop_at_step_2)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.setattr(Trainer, "train_step", original)
    assert ckpt.load(tmp_path / "cut")["state"]["step"] == 2
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    full, cut = ckpt.load(tmp_path / "full")["backbone"], ckpt.load(tmp_path / "cut")["backbone"]
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)


def test_predict_writes_coco_results_in_source_pixels_and_pictures(trained, tmp_path, capsys):
    image = tmp_path / "wide.png"  # 120 x 60: letterboxed to 64 x 32 on the canvas, boxes scaled back x1.875
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 120, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    assert main(["transfer", "predict", str(image), "--checkpoint", str(trained["instance"]), "--out", str(out),
                 "--score-thresh", "0", "--json"]) == 0
    summary = last_json(capsys)
    results = json.loads((out / "predictions.json").read_text())
    assert summary["predictions"] == len(results) > 0
    for r in results:
        x, y, w, h = r["bbox"]
        assert -1e-3 <= x and x + w <= 120 + 1e-3 and y + h <= 60 + 1e-3 and r["file_name"] == str(image)
        assert r["segmentation"]["size"] == [60, 120] and r["category_id"] in (1, 2, 3)
    assert Image.open(out / "wide.png").size == (120, 60)
    assert main(["transfer", "predict", str(image), "--checkpoint", str(trained["segment"]), "--out",
                 str(tmp_path / "seg")]) == 0
    labels = np.asarray(Image.open(tmp_path / "seg" / "wide_labels.png"))
    assert labels.shape == (60, 120) and labels.max() < 4


def test_starts_from_a_pretraining_run_and_reports_its_keys(tmp_path, capsys):
    pre = tmp_path / "pre"
    assert main(["pretrain", "--data", "builtin:shapes?train=32&test=8&size=16", "--backbone", "tiny", "--epochs",
                 "1", "--batch-size", "16", "--out", str(pre), "--no-track", "--no-progress", "--set",
                 "train.num_threads=1", "method.queue_size=32", "method.proj_hidden_dim=16", "method.proj_dim=8"]) == 0
    out = tmp_path / "det"
    assert main(["transfer", "detect", "--checkpoint", str(pre), "--data", DATA, "--iters", "1", "--batch-size", "4",
                 "--out", str(out), "--no-track", "--no-progress"]) == 0
    report = json.loads((out / "init_weights.json").read_text())
    assert report["matched"] and not report["other_shape"]
    card = load_transfer_model(out)[1]
    assert card.method == "moco_v2" and card.parent.checkpoint == str((pre / "checkpoint.pt").resolve())
    backbone, _ = load_backbone(pre)
    first = next(k for k in backbone.state_dict() if k.endswith("weight"))
    detector = ckpt.load(out)["backbone"]
    assert any(k.endswith(first) for k in detector)  # the backbone's tensors live on inside the detector


def test_a_state_dict_file_needs_matching_keys(tmp_path, capsys):
    weights = tmp_path / "foreign.pth"
    torch.save({"nothing.like.this": torch.zeros(3)}, weights)
    assert main(["transfer", "detect", "--checkpoint", str(weights), *TINY, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "none of its 1 tensors fits tiny" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--model", "fcn"], "model.kind fcn does not do detect; valid: faster_rcnn, retinanet"),
    (["--checkpoint", "no-such-model@prod"], "no such file or folder"),
    (["--norm", "group"], "--norm (model.norm) must be one of frozen, bn, syncbn"),
    (["--set", "data.scales=[9]"], "data.scales must be factors in [0.25, 4]"),
    (["--set", "batch_size=2"], "did you mean 'train.batch_size'"),
])
def test_bad_input_is_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIPR_HOME", str(tmp_path / "home"))
    out = tmp_path / "never"
    assert main(["transfer", "detect", *TINY, "--out", str(out), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (out / "checkpoint.pt").exists()


def test_a_transfer_checkpoint_is_no_backbone_and_no_initial_backbone(trained, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="vipr transfer eval"):
        load_backbone(trained["detect"])
    assert main(["transfer", "detect", "--checkpoint", str(trained["detect"]), *TINY,
                 "--out", str(tmp_path / "o")]) == 1
    assert "already a detect model" in capsys.readouterr().err


@pytest.mark.slow  # two processes of torch on 2 busy cores: ~40 s (benchmarks/run_slow.sh)
@pytest.mark.parametrize("task", ["instance", "segment"])
def test_two_process_transfer(task, tmp_path):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "vipr.cli.main", "transfer", task, "--data", DATA, "--backbone", "tiny",
           "--iters", "2", "--batch-size", "4", "--out", str(tmp_path), "--nproc-per-node", "2", "--no-progress",
           "--no-track", "--json", "--set", "eval.batch_size=4"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 2
    assert json.loads((tmp_path / "env.json").read_text())["world_size"] == 2
    assert len(ckpt.load(tmp_path)["state"]["rng"]) == 2


def test_a_nas_trained_network_is_a_starting_backbone(tmp_path, one_thread):
    from vipr.nas.genotype import DARTS_V2

    genotype = DARTS_V2.save(tmp_path / "g.json")
    nas = tmp_path / "nas"
    assert main(["nas", "train", str(genotype), "--data", "builtin:shapes?size=16&train=16&test=8", "--epochs", "1",
                 "--channels", "4", "--layers", "5", "--batch-size", "8", "--out", str(nas), "--no-progress",
                 "--no-track"]) == 0
    out = tmp_path / "seg"
    assert main(["transfer", "segment", "--checkpoint", str(nas), "--data", DATA, "--iters", "1", "--batch-size", "4",
                 "--out", str(out), "--no-progress", "--no-track", "--set", "eval.batch_size=4"]) == 0
    card = load_transfer_model(out)[1]
    assert card.architecture_kwargs["backbone"] == "darts_net" and card.method == "supervised"


def test_data_export_writes_a_coco_tree_that_reads_back(tmp_path, capsys):
    from vipr.data.dense.sources import open_dense

    out = tmp_path / "coco"
    assert main(["data", "export", DATA, "--out", str(out)]) == 0
    original, again = open_dense(DATA), open_dense(f"coco:{out}", cache_dir=tmp_path / "cache")
    assert len(again.train) == 16 and len(again.test) == 8 and list(again.classes) == list(original.classes)
    assert len(again.train.instances) == len(original.train.instances)
    np.testing.assert_allclose(again.train.instances.boxes, original.train.instances.boxes, atol=1e-3)
    assert main(["data", "export", "builtin:shapes", "--out", str(tmp_path / "no")]) == 1
    assert "not a detection / segmentation source" in capsys.readouterr().err
