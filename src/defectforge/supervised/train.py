"""Training, checkpoints, resume, prediction and mAP evaluation of box detectors.

Training data are :class:`~defectforge.data.Sample` s: defect samples give boxes (explicit
``boxes`` or one per connected component of the mask), ``good`` samples are negatives.
Images are resized once (shorter side = ``image_size``) and kept in memory as uint8.

Determinism and resume: model initialisation and every epoch run inside
``torch.random.fork_rng`` seeded from ``(seed, epoch)`` (torchvision's samplers use the
global generator; forking keeps the caller's global state untouched), and the shuffling /
flip generator state is saved with each checkpoint. So a run interrupted after epoch k
and restarted continues from epoch k+1 and ends with the same weights as an uninterrupted
run. ``out_dir`` holds ``checkpoint.pt`` (every epoch, atomic), ``best.pt`` (best
validation mAP@0.5, ties broken by mAP@0.5:0.95), ``model.pt`` (final = best) and
``history.json``.

Early stopping and model choice use a validation split carved from TRAIN (stratified into
defect and good images); test data are only used by :func:`evaluate_boxes`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from defectforge.data.sample import Sample
from defectforge.errors import ConfigError, InputError
from defectforge.supervised.train_data import (  # noqa: F401  (gt_boxes, split_train_val: re-exported)
    _batch, _fingerprint, _Item, _prepare, check_memory, gt_boxes, split_train_val)

if TYPE_CHECKING:
    from defectforge.supervised.detector import BoxDetector

CKPT, BEST, FINAL, HISTORY = "checkpoint.pt", "best.pt", "model.pt", "history.json"
RUN_OUTPUTS = (CKPT, BEST, FINAL, HISTORY, "metrics.json", "report.html", "assets")


@dataclass
class TrainConfig:
    """Parameters of a training run (stored in every checkpoint)."""

    arch: str = "fasterrcnn-lite0"
    image_size: int = 256
    epochs: int = 20
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    val_fraction: float = 0.2
    val_split: str = "auto"
    """How validation is carved from TRAIN: ``auto`` (whole groups, ``meta["group"]``, where
    the samples have them), ``group`` or ``image`` (:mod:`defectforge.data.splits`)."""
    patience: int = 5
    neg_per_pos: float | None = 1.0
    hflip: bool = True
    vflip: bool = False
    trainable_stages: int = 0
    score_thresh: float = 0.05
    random_init: bool = False
    seed: int = 0
    steps_per_epoch: int | None = None
    """Optimiser steps per epoch, whatever the data (the epoch's images are drawn by cycling
    seeded permutations of the defect images and sampled good images). ``None``: one pass,
    ``ceil((defects + goods) / batch_size)`` steps, so a run with more images takes more
    steps. Set it to compare training sets at equal optimiser steps."""
    ema: float | None = None
    """Decay of an exponential moving average of the weights (e.g. 0.999; :mod:`.ema`), used for
    validation, the best epoch and the saved model. ``None``: the raw weights."""

    def check(self) -> None:
        from defectforge.supervised.models import ARCHS

        if self.arch not in ARCHS:
            from defectforge.supervised.ultralytics_adapter import is_ultralytics_arch

            if is_ultralytics_arch(self.arch):
                raise ConfigError(f"{self.arch} is trained by ultralytics' own loop, which only "
                                  f"`defectforge train-detector --arch {self.arch}` runs (choose from "
                                  f"{', '.join(ARCHS)} here)")
            raise ConfigError(f"unknown detector architecture {self.arch!r} (choose from {', '.join(ARCHS)})")
        self.check_values()

    def check_values(self) -> None:
        """The checks that do not depend on the architecture (also used for ultralytics runs)."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        from defectforge.data.splits import check_val_split

        check_val_split(self.val_split)
        if not 0 < self.lr < math.inf:  # NaN too: it would train weights that are all NaN
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.image_size < 32:
            raise ConfigError(f"image_size must be >= 32, got {self.image_size}")
        if self.patience < 1:
            raise ConfigError(f"patience must be >= 1, got {self.patience}")
        if self.steps_per_epoch is not None and (isinstance(self.steps_per_epoch, bool)
                                                 or not isinstance(self.steps_per_epoch, int)
                                                 or self.steps_per_epoch < 1):
            raise ConfigError(f"steps_per_epoch must be a positive integer or None, got {self.steps_per_epoch!r}")
        if self.ema is not None and (isinstance(self.ema, bool) or not 0.0 < float(self.ema) < 1.0):
            raise ConfigError(f"ema must be a decay in (0, 1) or None, got {self.ema!r}")

    def resume_key(self) -> dict[str, Any]:
        """Fields that must match to resume (epochs/patience may change)."""
        d = asdict(self)
        d.pop("epochs")
        d.pop("patience")
        d.pop("val_split")  # the run key holds the validation set's fingerprint itself
        if d["ema"] is None:
            d.pop("ema")  # runs from before the option resume
        return d


class BoxPredictor(Protocol):
    """What :func:`evaluate_boxes` scores: class names (``classes_``) and a
    :class:`~defectforge.detect.base.Prediction` with ``boxes`` per image (a
    :class:`~defectforge.supervised.detector.BoxDetector`, an ultralytics
    ``UltralyticsDetector``, ...)."""

    classes_: list[str]

    def predict(self, samples: Sequence[Sample], batch_size: int = 4) -> Any: ...


def evaluate_boxes(detector: BoxPredictor, samples: Sequence[Sample], batch_size: int = 4) -> dict[str, Any]:
    """COCO mAP@0.5 and mAP@0.5:0.95 of ``detector`` on ``samples`` (good images count as
    images without ground truth: their detections are false positives)."""
    from defectforge.metrics import mean_average_precision

    if not samples:
        raise InputError(None, "no samples to evaluate")
    preds = detector.predict(list(samples), batch_size).boxes
    gts = [gt_boxes(s) for s in samples]
    res = mean_average_precision(gts, preds, classes=detector.classes_, nan_on_undefined=True)
    res["n_gt_boxes"] = sum(len(g) for g in gts)
    return res


def _on_cpu(obj: Any) -> Any:
    """``obj`` (nested dicts/lists of tensors) with every tensor on the CPU (checkpoints load anywhere)."""
    if hasattr(obj, "detach"):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def negatives_per_epoch(n_pos: int, n_neg: int, neg_per_pos: float | None) -> int:
    """Good images sampled per epoch next to ``n_pos`` defect images (all when ``None``)."""
    return n_neg if neg_per_pos is None else min(n_neg, int(round(neg_per_pos * n_pos)))


def one_pass_steps(n_pos: int, n_neg: int, batch_size: int, neg_per_pos: float | None = 1.0) -> int:
    """Optimiser steps of one epoch without ``steps_per_epoch``: one pass over the defect
    images and the good images sampled with them."""
    return max(1, math.ceil((n_pos + negatives_per_epoch(n_pos, n_neg, neg_per_pos)) / batch_size))


def _epoch_order(pool: list[int], length: int | None, gen: Any) -> list[int]:
    """One epoch's image order: a seeded permutation of ``pool``; with ``length``, seeded
    permutations one after another, cut at ``length`` (every image once before any twice)."""
    import torch

    n = len(pool) if length is None else length
    order: list[int] = []
    while pool and len(order) < n:
        order += [pool[i] for i in torch.randperm(len(pool), generator=gen).tolist()]
    return order[:n]


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    w = min(cfg.warmup_iters, max(1, total // 5))
    if step < w:
        return cfg.lr * (0.1 + 0.9 * step / w)
    t = (step - w) / max(1, total - w)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train_detector(train: Sequence[Sample], out_dir: str | Path, config: TrainConfig | None = None,
                   val: Sequence[Sample] | None = None, classes: Sequence[str] | None = None,
                   overwrite: bool = False, progress: Callable[[str, int, int], None] | None = None,
                   on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
                   device: str = "cpu") -> "BoxDetector":
    """Train (or resume training) a detector; returns the best model on validation.

    ``val=None`` carves ``config.val_fraction`` of ``train`` (stratified; whole groups
    under ``config.val_split``). ``classes``
    default to the sorted defect labels of ``train``. An existing ``checkpoint.pt`` in
    ``out_dir`` of the same run (same config and data) is resumed; one of another run
    raises :class:`ConfigError` unless ``overwrite``. ``progress(stage, done, total)`` is
    called per batch; ``on_epoch(epoch, record)`` after each epoch (an exception there
    interrupts the run after the epoch's checkpoint was written). The folder follows
    :mod:`defectforge.runfolder` (locked while training; ``overwrite`` clears only this
    command's files). ``device`` (auto, cpu, cuda[:N]) is where the network trains; it is
    not part of the run, so a run started on one device resumes on another.
    """
    cfg = config or TrainConfig()
    cfg.check()
    train = list(train)
    if not any(s.is_defect for s in train):
        raise InputError(None, "training set has no defect samples (nothing to learn boxes from)")
    if val is None:
        tr, va = split_train_val(train, cfg.val_fraction, cfg.seed, cfg.val_split)
    else:
        tr, va = train, list(val)
    cls = list(classes) if classes is not None else sorted({b.label for s in tr for b in gt_boxes(s)})
    if not cls:
        raise InputError(None, "training set has no labelled defect boxes")
    items = _prepare(tr, cls, cfg.image_size)
    check_memory(items, cfg)
    out = Path(out_dir)
    run_key = {"config": cfg.resume_key(), "classes": cls, "train": _fingerprint(tr), "val": _fingerprint(va)}
    with _open_run(out, run_key, overwrite) as rf:
        return _train(rf, cfg, items, cls, tr, va, run_key, progress, on_epoch, device)


def _open_run(out: Path, run_key: dict[str, Any], overwrite: bool):
    """The locked run folder (:mod:`defectforge.runfolder`): same run resumes, another is
    refused unless ``overwrite`` (which clears only this command's files)."""
    from defectforge.runfolder import STATE, RunFolder, load_state

    legacy = (out / CKPT).is_file() and not (out / STATE / "run.json").is_file()
    same = False
    if legacy:  # written before run folders kept their state: the checkpoint names its run
        same = load_state(out / CKPT, "checkpoint").get("run_key") == run_key
        if not same and not overwrite:
            raise ConfigError(f"{out}: holds a checkpoint of a different run (config, classes or data differ); "
                              "use another folder or overwrite=True (--overwrite)")
    return RunFolder.open(out, job="train-detector", config=run_key, outputs=RUN_OUTPUTS, overwrite=overwrite,
                          adopt=same)


def _train(rf, cfg: TrainConfig, items: list[_Item], cls: list[str], tr: list[Sample], va: list[Sample],
           run_key: dict[str, Any], progress, on_epoch, device: str = "cpu") -> "BoxDetector":
    import torch

    from defectforge._atomic import atomic_write_bytes, atomic_write_text
    from defectforge.runfolder import load_state
    from defectforge.supervised.detector import BoxDetector
    from defectforge.supervised.ema import WeightEMA

    out = rf.path
    pos = [i for i, it in enumerate(items) if len(it.boxes)]
    neg = [i for i, it in enumerate(items) if not len(it.boxes)]

    det = BoxDetector.from_config(cfg, cls, device=device)
    dev = det.torch_device()
    params = [p for p in det.model_.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    ema = WeightEMA(det.model_, cfg.ema) if cfg.ema is not None else None
    n_neg = negatives_per_epoch(len(pos), len(neg), cfg.neg_per_pos)
    iters_per_epoch = (cfg.steps_per_epoch if cfg.steps_per_epoch is not None
                       else one_pass_steps(len(pos), len(neg), cfg.batch_size, cfg.neg_per_pos))
    total = iters_per_epoch * cfg.epochs
    history: list[dict[str, Any]] = []
    best = (-1.0, -1.0)
    bad = 0
    start = 0
    ck = out / CKPT
    if ck.exists():
        st = load_state(ck, "checkpoint")
        if st.get("run_key") != run_key:  # not this run's (the run folder said it was)
            raise InputError(ck, "the checkpoint belongs to a different run than its run folder; use --overwrite")
        det.load_weights(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        if ema is not None:
            ema.load_state_dict(st["ema"])
        history, best, bad, start = st["history"], tuple(st["best"]), st["bad"], st["epoch"] + 1
        if st.get("finished") and (out / FINAL).exists():
            return BoxDetector.load(out / FINAL, device=device)
    det.info_["resumed_from_epoch"] = start if start else None

    stopped = False
    for epoch in range(start, cfg.epochs):
        if bad >= cfg.patience:
            stopped = True
            break
        t0 = time.perf_counter()
        negs = [neg[i] for i in torch.randperm(len(neg), generator=gen)[:n_neg].tolist()] if neg else []
        order = _epoch_order(pos + negs, iters_per_epoch * cfg.batch_size if cfg.steps_per_epoch else None, gen)
        flips = torch.rand(len(order), 2, generator=gen) < 0.5
        det.model_.train()
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed * 100003 + epoch)
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b:b + cfg.batch_size]
                fl = [(bool(flips[b + j, 0]) and cfg.hflip, bool(flips[b + j, 1]) and cfg.vflip) for j in range(len(idx))]
                imgs, tgts = _batch([items[i] for i in idx], fl)
                imgs = [x.to(dev) for x in imgs]
                tgts = [{k: v.to(dev) for k, v in t.items()} for t in tgts]
                step = epoch * iters_per_epoch + b // cfg.batch_size
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, total, cfg)
                try:
                    ld = det.model_(imgs, tgts)
                except RuntimeError as exc:
                    if "memory" in str(exc).lower():
                        raise ConfigError(f"the detector ran out of memory (batch {cfg.batch_size}, image size "
                                          f"{cfg.image_size}): lower --batch-size or --image-size") from None
                    raise
                loss = sum(ld.values())
                if not torch.isfinite(loss):
                    raise ConfigError(f"training diverged at epoch {epoch + 1} (loss {float(loss)}): lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                opt.step()
                if ema is not None:
                    ema.update(det.model_)
                losses.append(float(loss.detach()))
                if progress is not None:
                    progress("train", b // cfg.batch_size + 1, iters_per_epoch)
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                               "seconds_train": round(time.perf_counter() - t0, 2)}
        improved = True
        with ema.applied(det.model_) if ema is not None else contextlib.nullcontext():
            if va and any(s.is_defect for s in va):
                m = evaluate_boxes(det, va)
                rec["val_map50"], rec["val_map50_95"] = m["map50"], m["map50_95"]
                score = (float(np.nan_to_num(m["map50"], nan=0.0)), float(np.nan_to_num(m["map50_95"], nan=0.0)))
                improved = score > best
                if improved:
                    best = score
            if improved:
                bad = 0
                det.save(out / BEST)
            else:
                bad += 1
        history.append(rec)
        buf = io.BytesIO()
        torch.save({"run_key": run_key, "model": det.weights(), "optimizer": _on_cpu(opt.state_dict()),
                    "generator": gen.get_state(), "history": history, "best": list(best), "bad": bad,
                    "epoch": epoch, "finished": False, **({"ema": ema.state_dict()} if ema is not None else {})}, buf)
        atomic_write_bytes(ck, buf.getvalue())
        atomic_write_text(out / HISTORY, json.dumps(history, indent=1))
        if on_epoch is not None:
            on_epoch(epoch + 1, rec)
    final = BoxDetector.load(out / BEST, device=device) if (out / BEST).exists() else det
    final.info_.update({"history": history, "best_val": list(best), "early_stopped": stopped,
                       "n_train": len(tr), "n_val": len(va), "resumed_from_epoch": det.info_.get("resumed_from_epoch"),
                       "val_names": [s.name for s in va]})
    final.save(out / FINAL)
    st = load_state(ck, "checkpoint")
    st["finished"] = True
    buf = io.BytesIO()
    torch.save(st, buf)
    atomic_write_bytes(ck, buf.getvalue())
    return final
