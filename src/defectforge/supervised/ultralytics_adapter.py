"""Ultralytics YOLO (``yolov8n``, ``yolo11n``) trained offline from scratch, scored with our mAP.

Ultralytics is AGPL-3.0, so it is only an optional extra (``pip install "defectforge[yolo]"``),
never a core dependency; it also pulls ``opencv-python``, which overwrites the
``opencv-python-headless`` files, so keep it in a separate virtual environment.

Offline use (nothing fetched at run time), set up by :func:`offline_environment` before the
package is imported:

- ``YOLO_OFFLINE=1`` (no connectivity probe, telemetry or self-update), ``YOLO_AUTOINSTALL=0``
  (no pip at run time), ``YOLO_CONFIG_DIR`` = a folder of the run;
- matplotlib's DejaVuSans copied to ``<config>/Ultralytics/Arial.ttf`` and
  ``Arial.Unicode.ttf``, the fonts ultralytics otherwise downloads in every train/val;
- ``sync=False`` in its settings, whose dataset/weights/runs folders also point into the
  config folder (nothing is written elsewhere).

Models are built from the bundled ``*.yaml`` configurations with random weights
(``pretrained=False``); a ``*.pt`` name is refused unless it is an existing local file (a bare
hub name would be downloaded). Training runs on the CPU with ``amp=False, workers=0,
plots=False``. Data are exported with our own YOLO writer; validation (early stopping and
best-epoch choice inside ultralytics) uses the split carved from TRAIN. The trained model is
wrapped in :class:`UltralyticsDetector` (``classes`` + ``predict(samples) -> boxes``), so
:func:`defectforge.supervised.train.evaluate_boxes` scores it with the same COCO mAP as the
other detectors. A run is not resumable mid-way: an interrupted run trains again from scratch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import Box, Sample
from defectforge.errors import ConfigError

#: short arch name -> the model configuration bundled with ultralytics
ULTRALYTICS_ARCHS: dict[str, str] = {"yolov8n": "yolov8n.yaml", "yolo11n": "yolo11n.yaml"}
INSTALL_HINT = 'pip install "defectforge[yolo]" (AGPL-3.0; best in a separate venv: it installs opencv-python)'
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
DATA_DIR, CONFIG_DIR, RUNS_DIR, MODEL, RUN_INFO = "yolo_data", "ultralytics_config", "ultralytics", "model.pt", "run.json"


def is_ultralytics_arch(arch: str) -> bool:
    """Whether ``arch`` names an ultralytics model (short name, ``*.yaml`` or ``*.pt``)."""
    return arch in ULTRALYTICS_ARCHS or Path(arch).suffix.lower() in (".yaml", ".yml", ".pt")


def resolve_model(arch: str) -> str:
    """The model spec handed to ``YOLO(...)``: a bundled ``*.yaml`` or an existing local ``*.pt``.

    Raises :class:`ConfigError` for anything that ultralytics would download (hub ``*.pt``
    names, URLs)."""
    if arch in ULTRALYTICS_ARCHS:
        return ULTRALYTICS_ARCHS[arch]
    if "://" in arch:
        raise ConfigError(f"{arch}: URLs are not allowed (nothing is downloaded); give a local file")
    suffix = Path(arch).suffix.lower()
    if suffix == ".pt":
        p = Path(arch)
        if not p.is_file():
            raise ConfigError(f"{arch}: no such local weights file; ultralytics would download it from its hub, "
                              f"which is not allowed (use {' or '.join(ULTRALYTICS_ARCHS)} to train from scratch)")
        return str(p.resolve())
    if suffix in (".yaml", ".yml"):
        p = Path(arch)
        return str(p.resolve()) if p.is_file() else arch  # bundled configs are found by name
    raise ConfigError(f"unknown ultralytics model {arch!r} (choose from {', '.join(ULTRALYTICS_ARCHS)}, "
                      "a model *.yaml or a local *.pt)")


def offline_environment(config_dir: str | Path) -> dict[str, str]:
    """Prepare ``config_dir`` and set the process environment so ultralytics works offline.

    Sets ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0`` and ``YOLO_CONFIG_DIR`` in ``os.environ``
    (ultralytics reads them at import time, so call this before importing it) and copies
    matplotlib's DejaVuSans to ``config_dir/Ultralytics/Arial.ttf`` and ``Arial.Unicode.ttf``.
    Returns the variables it set.
    """
    import matplotlib

    from defectforge._atomic import atomic_write_bytes

    cfg = Path(config_dir).resolve()
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.is_file():
        raise ConfigError(f"{font}: matplotlib's DejaVuSans font is missing (needed as ultralytics' offline font)")
    data = font.read_bytes()
    for name in FONT_NAMES:
        dst = cfg / "Ultralytics" / name
        if not dst.is_file() or dst.stat().st_size != len(data):
            atomic_write_bytes(dst, data)
    env = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(cfg)}
    os.environ.update(env)
    return env


def require_ultralytics() -> None:
    """Raise :class:`ConfigError` with the install command when ultralytics is not installed."""
    if sys.modules.get("ultralytics") is None and importlib.util.find_spec("ultralytics") is None:
        raise ConfigError(f"the {'/'.join(ULTRALYTICS_ARCHS)} detectors need the ultralytics package: {INSTALL_HINT}")


def import_ultralytics(config_dir: str | Path) -> Any:
    """``ultralytics.YOLO`` after :func:`offline_environment` and ``settings sync=False``."""
    require_ultralytics()
    offline_environment(config_dir)
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS
    except ImportError as exc:
        raise ConfigError(f"ultralytics cannot be imported ({exc}): {INSTALL_HINT}") from None
    cfg = Path(config_dir).resolve()
    want = {"sync": False, "datasets_dir": str(cfg / "datasets"), "weights_dir": str(cfg / "weights"),
            "runs_dir": str(cfg / "runs")}
    if any(SETTINGS.get(k) != v for k, v in want.items()):
        SETTINGS.update(want)
    return ultralytics.YOLO


# -- data ----------------------------------------------------------------------------------------------
def export_yolo_dataset(train: Sequence[Sample], val: Sequence[Sample], dst: str | Path) -> tuple[Path, list[str]]:
    """Write ``train`` / ``val`` as a YOLO detection folder with an absolute-path ``data.yaml``.

    Uses :func:`defectforge.data.yolo.write_yolo` (boxes from masks); an empty ``val`` reuses
    the train images for ultralytics' (then uninformative) validation. Returns the yaml
    path and the class names in class-id order (the ids the trained model predicts).
    """
    import yaml

    from defectforge._atomic import atomic_write_text
    from defectforge.data.sample import Dataset
    from defectforge.data.yolo import write_yolo

    if not train:
        raise ConfigError("no training samples to export")
    samples = ([dataclasses.replace(s, split="train") for s in train]
               + [dataclasses.replace(s, split="val") for s in val])
    root = write_yolo(Dataset(samples), Path(dst), mode="detect", overwrite=True).resolve()
    yml = root / "data.yaml"
    spec = yaml.safe_load(yml.read_text(encoding="utf-8"))
    spec = {"path": str(root), "train": "images/train", "val": "images/val" if val else "images/train",
            "nc": spec["nc"], "names": list(spec["names"])}
    atomic_write_text(yml, yaml.safe_dump(spec, sort_keys=False))
    return yml, spec["names"]


# -- predictor -----------------------------------------------------------------------------------------
class UltralyticsDetector:
    """A trained ultralytics model with our predictor interface (``classes_``, ``predict``
    returning a :class:`~defectforge.detect.base.Prediction` with ``boxes``)."""

    def __init__(self, weights: str | Path, classes: Sequence[str], image_size: int = 256,
                 config_dir: str | Path | None = None, conf: float = 0.05, max_det: int = 100):
        self.weights, self.classes_ = Path(weights), list(classes)
        self.image_size, self.conf, self.max_det = int(image_size), float(conf), int(max_det)
        self.config_dir = Path(config_dir) if config_dir is not None else self.weights.parent / CONFIG_DIR
        self.info_: dict[str, Any] = {}
        self._model: Any = None

    def _net(self) -> Any:
        if self._model is None:
            yolo = import_ultralytics(self.config_dir)
            self._model = yolo(str(self.weights))
        return self._model

    def predict(self, samples: Sequence[Sample | np.ndarray], batch_size: int = 4) -> Any:
        """Boxes with scores per image, in the images' original pixel coordinates."""
        from defectforge.data.image_io import as_rgb8
        from defectforge.supervised.detector import boxes_prediction

        net = self._net()
        out: list[list[Box]] = []
        for s in range(0, len(samples), batch_size):
            # ultralytics takes numpy images as BGR (OpenCV order)
            bgr = [np.ascontiguousarray((it.rgb() if isinstance(it, Sample) else as_rgb8(np.asarray(it)))[..., ::-1])
                   for it in samples[s:s + batch_size]]
            for res in net.predict(bgr, imgsz=self.image_size, conf=self.conf, max_det=self.max_det,
                                   device="cpu", verbose=False):
                b = res.boxes
                xyxy = np.asarray(b.xyxy.cpu() if hasattr(b.xyxy, "cpu") else b.xyxy, dtype=float).reshape(-1, 4)
                cls = np.asarray(b.cls.cpu() if hasattr(b.cls, "cpu") else b.cls).reshape(-1).astype(int)
                score = np.asarray(b.conf.cpu() if hasattr(b.conf, "cpu") else b.conf, dtype=float).reshape(-1)
                out.append([Box(float(x0), float(y0), float(x1), float(y1), self.classes_[c], float(p))
                            for (x0, y0, x1, y1), c, p in zip(xyxy.tolist(), cls.tolist(), score.tolist())])
        return boxes_prediction(out)

    @classmethod
    def load(cls, run_dir: str | Path) -> "UltralyticsDetector":
        """The model of a finished :func:`train_ultralytics` run folder."""
        from defectforge.errors import InputError

        run = Path(run_dir)
        try:
            info = json.loads((run / RUN_INFO).read_text())
        except (OSError, ValueError):
            raise InputError(run / RUN_INFO, "not a finished ultralytics run (run.json missing or unreadable)") from None
        det = cls(run / MODEL, info["classes"], info["image_size"], config_dir=run / CONFIG_DIR)
        det.info_ = info
        return det


# -- training ------------------------------------------------------------------------------------------
def _read_results(csv_path: Path) -> list[dict[str, Any]]:
    """Ultralytics' per-epoch ``results.csv`` as a list of records (empty when absent)."""
    import csv

    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        rec: dict[str, Any] = {}
        for k, v in r.items():
            try:
                rec[k.strip()] = float(v)
            except (TypeError, ValueError):
                rec[k.strip()] = v
        out.append(rec)
    return out


def _ultralytics_device(device: str) -> str:
    """Our device name in ultralytics' spelling (``cpu``, or the CUDA index ``0``)."""
    from defectforge._device import resolve_device

    dev = resolve_device(device)
    return dev.split(":", 1)[1] if dev.startswith("cuda:") else ("0" if dev == "cuda" else dev)


def train_ultralytics(train: Sequence[Sample], out_dir: str | Path, arch: str = "yolov8n",
                      val: Sequence[Sample] = (), image_size: int = 256, epochs: int = 20, batch_size: int = 4,
                      patience: int = 5, seed: int = 0, overwrite: bool = False,
                      device: str = "cpu") -> UltralyticsDetector:
    """Train an ultralytics YOLO from scratch on ``train`` (validated on ``val``), offline, on
    ``device`` (auto, cpu, cuda[:N]; not part of the run's settings).

    ``out_dir`` gets ``yolo_data/`` (the exported set), ``ultralytics_config/``,
    ``ultralytics/train/`` (ultralytics' own run folder), ``model.pt`` (its best weights)
    and ``run.json``. A finished run of the same settings is reused; a run of other
    settings in ``out_dir`` raises :class:`ConfigError` unless ``overwrite``. Ultralytics
    chooses its optimizer and learning rate itself (``optimizer="auto"``).
    """
    from defectforge._atomic import atomic_write_bytes, atomic_write_text
    from defectforge.errors import InputError
    from defectforge.supervised.train_data import _fingerprint

    spec = resolve_model(arch)
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ConfigError("epochs, batch_size and patience must be >= 1")
    if image_size < 32:
        raise ConfigError(f"image_size must be >= 32, got {image_size}")
    train, val = list(train), list(val)
    if not any(s.is_defect for s in train):
        raise InputError(None, "training set has no defect samples (nothing to learn boxes from)")
    out = Path(out_dir).resolve()
    key = {"arch": arch, "model": spec, "image_size": int(image_size), "epochs": int(epochs),
           "batch_size": int(batch_size), "patience": int(patience), "seed": int(seed),
           "train": _fingerprint(train), "val": _fingerprint(val)}
    info_path = out / RUN_INFO
    if info_path.is_file() and not overwrite:
        try:
            old = json.loads(info_path.read_text())
        except ValueError:
            old = {}
        if old.get("run_key") != key:
            raise ConfigError(f"{out}: holds an ultralytics run of other settings or data; "
                              "use another folder or overwrite=True (--overwrite)")
        if (out / MODEL).is_file():
            return UltralyticsDetector.load(out)
    yolo = import_ultralytics(out / CONFIG_DIR)
    data_yaml, names = export_yolo_dataset(train, val, out / DATA_DIR)
    model = yolo(spec)
    args = dict(data=str(data_yaml), epochs=int(epochs), imgsz=int(image_size), batch=int(batch_size),
                patience=int(patience), seed=int(seed), deterministic=True, pretrained=False, amp=False,
                device=_ultralytics_device(device), workers=0, project=str(out / RUNS_DIR), name="train", exist_ok=True,
                plots=False, verbose=False)
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # ultralytics seeds the global generators: keep the caller's state untouched
        with torch.random.fork_rng(devices=[]):
            model.train(**args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    trainer = getattr(model, "trainer", None)
    best = next((Path(p) for p in (getattr(trainer, "best", None), getattr(trainer, "last", None))
                 if p and Path(p).is_file()), None)
    if best is None:
        raise ConfigError(f"{out / RUNS_DIR}: ultralytics finished without writing weights")
    atomic_write_bytes(out / MODEL, best.read_bytes())
    results = Path(getattr(trainer, "save_dir", out / RUNS_DIR / "train")) / "results.csv"
    info = {"run_key": key, "arch": arch, "model": spec, "classes": names, "image_size": int(image_size),
            "n_train": len(train), "n_val": len(val), "train_args": args, "results_csv": str(results),
            "history": _read_results(results)}
    atomic_write_text(info_path, json.dumps(info, indent=1, default=str))
    return UltralyticsDetector.load(out)
