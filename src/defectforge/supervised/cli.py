"""``defectforge train-detector DATA --arch ...``: train a box detector, evaluate on test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def train_detector_cmd(
    data: Path = typer.Argument(..., metavar="DATA", help="Dataset (YOLO, COCO, manifest, MVTec, labelme); boxes from masks when needed."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoints, model.pt, metrics.json, report.html)."),
    arch: str = typer.Option("fasterrcnn-lite0", help="fasterrcnn-lite0 | retinanet-lite0 | fcos-lite0 | yolox-nano | "
                             "yolox-tiny (needs yolox-datamint) | yolov8n | yolo11n (ultralytics, extra \\[yolo])"),
    synthetic: Optional[List[Path]] = typer.Option(None, help="Extra synthetic set(s) added to TRAIN (never to val/test)."),
    image_size: str = typer.Option("256", "--image-size", help="N: the shorter image side (HxW is not taken here)."),
    epochs: int = typer.Option(20),
    batch_size: int = typer.Option(4),
    lr: float = typer.Option(0.01),
    val_fraction: float = typer.Option(0.2, help="Validation share carved from TRAIN (early stopping)."),
    val_split: str = typer.Option("auto", "--val-split", help="auto | group | image: hold out whole groups (the "
                                  "dataset's group column) where the samples have them, or images."),
    patience: int = typer.Option(5, help="Epochs without validation improvement before stopping."),
    trainable_stages: int = typer.Option(0, help="Unfreeze the last k backbone stages (0 = FPN + heads only)."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1,
                                                  help="Optimiser steps per epoch whatever the data (default: one "
                                                       "pass over the images); compare training sets at equal steps."),
    ema: Optional[float] = typer.Option(None, "--ema", help="Validate, pick the best epoch with and save an "
                                        "exponential moving average of the weights with this decay (e.g. 0.999; "
                                        "default: off, the raw weights)."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, help="Discard a checkpoint of a different run in --out."),
    device: str = typer.Option("cpu", "--device", help="Where the network trains and predicts: auto, cpu, cuda[:N] "
                                                       "(not part of the run: a run resumes on another device)."),
) -> None:
    """Train a detector on TRAIN (validation carved from it), resume if interrupted, and report
    mAP@0.5 / mAP@0.5:0.95 on TEST. Ultralytics models (yolov8n, yolo11n) train offline
    from scratch in ultralytics' own loop (its optimizer and learning rate; not resumable)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from defectforge._atomic import atomic_write_text
    from defectforge.data import load_dataset
    from defectforge.supervised.train import TrainConfig, evaluate_boxes, gt_boxes, split_train_val, train_detector
    from defectforge.supervised.ultralytics_adapter import is_ultralytics_arch

    from defectforge._cliutil import parse_image_size

    con = Console(highlight=False)
    image_size = parse_image_size(image_size, square_ok=False)
    ultra = is_ultralytics_arch(arch)
    cfg = TrainConfig(arch=arch, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
                      val_fraction=val_fraction, val_split=val_split, patience=patience, trainable_stages=trainable_stages, seed=seed,
                      steps_per_epoch=steps_per_epoch, ema=ema)
    if ultra:
        from defectforge.supervised.ultralytics_adapter import require_ultralytics, resolve_model

        resolve_model(arch)
        if ema is not None:
            from defectforge.errors import ConfigError

            raise ConfigError(f"--ema applies to defectforge's own training loop; {arch} trains in ultralytics' "
                              "loop, which keeps its own weight average")
        require_ultralytics()
        cfg.check_values()
    else:
        cfg.check()
    from defectforge.runfolder import check_no_overlap

    check_no_overlap(out, [data, *(synthetic or [])])  # the run folder never touches its inputs
    ds = load_dataset(data)
    real_train = list(ds.filter(split="train"))
    test = list(ds.filter(split="test"))
    if not real_train:
        from defectforge.errors import InputError

        raise InputError(data, "dataset has no train split")
    tr, va = split_train_val(real_train, val_fraction, seed, val_split)
    classes = sorted({b.label for s in real_train for b in gt_boxes(s)})
    for sp in synthetic or []:
        from defectforge.experiments.data import check_synthetic

        tr += check_synthetic(list(load_dataset(sp)), classes, sp)
    if ultra:
        from defectforge.supervised.ultralytics_adapter import train_ultralytics

        con.print(f"{arch}: ultralytics, trained from scratch on {device} (its own optimizer and learning "
                  "rate: --lr and --trainable-stages do not apply)")
        det = train_ultralytics(tr, out, arch, val=va, image_size=image_size, epochs=epochs,
                                batch_size=batch_size, patience=patience, seed=seed, overwrite=overwrite,
                                device=device)
    else:
        with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), transient=True) as prog:
            task = prog.add_task("train", total=None, epoch=1)
            state = {"epoch": 1}

            def on_batch(_stage: str, done: int, total: int) -> None:
                prog.update(task, completed=done, total=total, epoch=state["epoch"])

            def on_epoch(ep: int, rec: dict) -> None:
                state["epoch"] = ep + 1
                con.print(f"epoch {ep}: loss {rec['loss']:.4f}"
                          + (f", val mAP50 {rec['val_map50']:.4f}" if rec.get("val_map50") is not None else ""))

            det = train_detector(tr, out, cfg, val=va, classes=classes, overwrite=overwrite, progress=on_batch,
                                 on_epoch=on_epoch, device=device)
    metrics: dict = {"arch": arch, "n_train": len(tr), "n_val": len(va),
                     "classes": list(det.classes_) if ultra else classes,
                     "history": det.info_.get("history", [])}
    if test:
        m = evaluate_boxes(det, test)
        metrics["test"] = {k: m.get(k) for k in ("map50", "map50_95", "map_small", "map_medium", "map_large",
                                                 "per_class", "n_images", "n_gt_boxes")}
        con.print(f"test mAP@0.5 {m['map50']:.4f}  mAP@0.5:0.95 {m['map50_95']:.4f}  ({len(test)} images)")
    else:
        con.print("no test split: skipped evaluation")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    from defectforge.report.training import write_training_report

    html = write_training_report(out, metrics, det, va)
    con.print(f"model: {out / 'model.pt'}\nreport: {html}")


def register(app: typer.Typer) -> None:
    """Add ``defectforge train-detector``."""
    app.command("train-detector")(train_detector_cmd)
