"""``vipr transfer eval`` and ``vipr transfer predict``: score or apply a trained detection / segmentation model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vipr.cli.parser import add_device_flag, add_json_flag

MAX_BATCH = 4096  # images per forward pass; more only exhausts memory

EVAL_HELP = """Score a `vipr transfer` checkpoint on a dense source's test split.

Detection: the 12 COCO statistics (pycocotools) as bbox_AP, bbox_AP50, ... (and segm_* for
Mask R-CNN) and VOC mAP@0.5; segmentation: mIoU, pixel and mean accuracy and the IoU of every
class (dataset-level counts, 255 ignored). All in percent. --data defaults to the data the
model was trained on; the figures are written to OUT/metrics.json when --out is given."""

PREDICT_HELP = """Apply a `vipr transfer` checkpoint to image files.

Writes OUT/predictions.json (COCO result dicts in each image's own pixels: bbox xywh, score,
category_id, RLE masks; for segmentation the label-map PNG of each image) and OUT/<name>.png
with the boxes, labels, scores and masks (or the label map) drawn over the image."""


def add_parsers(tasks) -> None:
    p = tasks.add_parser("eval", help="score a transfer checkpoint (COCO AP, VOC mAP, mIoU)", description=EVAL_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="a `vipr transfer` run folder or checkpoint.pt")
    p.add_argument("--data", metavar="SRC", help="dense source with a test split (default: the model's training data)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per forward pass (default 8)")
    p.add_argument("--out", metavar="DIR", help="also write DIR/metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_eval)
    p = tasks.add_parser("predict", help="draw and write a transfer model's predictions on images",
                         description=PREDICT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--checkpoint", metavar="DIR", required=True, help="a `vipr transfer` run folder or checkpoint.pt")
    p.add_argument("--out", metavar="DIR", default="predictions", help="output folder (default predictions)")
    p.add_argument("--score-thresh", type=float, default=0.5, metavar="S",
                   help="keep detections scoring at least S (default 0.5)")
    add_device_flag(p)
    add_json_flag(p)
    p.set_defaults(run=run_predict)


def run_eval(args) -> int:
    from vipr.engine.device import resolve_device
    from vipr.engine.rundir import write_metrics
    from vipr.errors import ConfigError
    from vipr.transfer.build import load_transfer_model
    from vipr.transfer.evaluate import evaluate
    from vipr.transfer.run import open_task_data, summary_line

    if not 1 <= args.batch_size <= MAX_BATCH:
        raise ConfigError(f"--batch-size must be an integer in [1, {MAX_BATCH}], got {args.batch_size}")
    device = resolve_device(args.device or "auto")
    model, card = load_transfer_model(args.checkpoint)
    source = args.data or card.dataset
    ds = open_task_data(source, card.task, card.image_size)
    if list(ds.classes) != list(card.classes):
        raise ConfigError(f"{source} has classes {ds.classes[1:]} but the model was trained on {list(card.classes[1:])}; "
                          "score it on data with the same classes")
    figures = evaluate(model.to(device), ds, card.task, args.batch_size, device, progress=not args.no_progress)
    metrics = {"task": card.task, "model": card.architecture, "checkpoint": str(args.checkpoint), "data": source,
               **figures}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_metrics(Path(args.out), metrics)
    print(summary_line(metrics, where=f"on {source}"))
    if args.json:
        print(json.dumps(metrics))
    return 0


def run_predict(args) -> int:
    from vipr.engine.device import resolve_device
    from vipr.errors import ConfigError
    from vipr.transfer.build import load_transfer_model
    from vipr.transfer.predict import predict_files

    if not 0 <= args.score_thresh <= 1:
        raise ConfigError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    device = resolve_device(args.device or "auto")
    model, card = load_transfer_model(args.checkpoint)
    summary = predict_files(model.to(device), card, args.images, Path(args.out), device, args.score_thresh)
    print(f"{summary['predictions']} predictions on {summary['images']} images: {summary['file']}, "
          f"pictures in {args.out}")
    if args.json:
        print(json.dumps(summary))
    return 0
