"""``detect predict`` as a job: chunks of image paths scored by a model loaded once per
worker, each worker writing its heatmap panels and masks atomically; the driver appends
each finished chunk's rows to ``scores.csv`` (flushed and fsync'ed, so an interrupted run
resumes: rows whose panel and mask exist are kept and their images skipped) and rewrites
it at the end in input order.

The same :class:`PredictTask` runs on every engine (:mod:`defectforge.engine`): in this
process with the already loaded model, in local worker processes or on Ray actors (each
loads the model file by path). Chunks are the same on every engine, so the model sees the
same batches and writes the same bytes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Sequence

#: images per item (one item = one model call; the model batches inside)
CHUNK = 16
SCORE_HEADER = ["file", "score", "anomalous", "threshold", "heatmap", "mask"]
#: the run's settings beside scores.csv: a resume must use the same model and options
RUN_FILE = "predict.json"


RUNTIME_PARAMS = ("nn_backend",)


class DetectorTask:
    """Base of the tasks that need a fitted 2D detector: the driver's already loaded model
    is used in this process; a worker of another process loads ``model_path`` once
    (:meth:`setup`), because the model itself is never pickled."""

    def __init__(self, model_path: str | Path | None, model: Any = None, device: str = "cpu"):
        self.model_path = None if model_path is None else str(model_path)
        self.model = model
        self.device = device
        # run-time choices set on the driver's model after loading (``--nn-backend``) reach the workers' copies
        self.runtime = {k: getattr(model, k) for k in RUNTIME_PARAMS if model is not None and hasattr(model, k)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["model"] = None  # workers load the model file themselves
        return state

    def setup(self) -> None:
        if self.model is None:
            from defectforge.detect.base import load_detector

            self.model = load_detector(self.model_path, device=self.device, **self.runtime)


#: ``--heatmaps``: the panel's file format, or none
HEATMAPS = ("png", "jpg", "none")
#: zlib level of the PNG panels: 1 encodes ~3x faster than 6 for ~27 % larger files (same pixels;
#: docs/bench/predict_outputs.md)
PANEL_PNG_LEVEL = 1
#: JPEG quality of ``--heatmaps jpg`` panels
PANEL_JPEG_QUALITY = 90
#: threads that write a chunk's panels and masks (None: the worker's torch thread count)
PANEL_THREADS: int | None = None


def check_heatmaps(heatmaps: str) -> str:
    """``png`` | ``jpg`` | ``none`` (a one-line error otherwise)."""
    from defectforge.errors import ConfigError

    if heatmaps not in HEATMAPS:
        raise ConfigError(f"heatmaps must be one of {', '.join(HEATMAPS)}, got {heatmaps!r}")
    return heatmaps


class PredictTask(DetectorTask):
    """Scores one chunk of ``(path, name)`` pairs and writes ``heatmaps/<name>.png`` (panel
    image | map | predicted mask | colour bar, on the run's one colour ``scale``; ``.jpg`` with
    ``heatmaps="jpg"``, none with ``"none"``) and ``masks/<name>.png`` into ``out``; returns the
    chunk's CSV rows. The thresholds and the scale are fixed by the driver
    (:func:`~defectforge.report.panels.run_thresholds`)."""

    def __init__(self, model_path: str | Path, out: str | Path, thresholds: tuple[Any, Any, Any], model: Any = None,
                 device: str = "cpu", heatmaps: str = "png"):
        super().__init__(model_path, model, device)
        self.out = Path(out)
        self.img_thr, self.px_thr, self.scale = thresholds
        self.heatmaps = check_heatmaps(heatmaps)

    def __call__(self, chunk: Sequence[tuple[str, str]]) -> list[list[str]]:
        from defectforge.data.sample import Sample

        return self.write(chunk, self.model.predict([Sample(path=Path(p)) for p, _ in chunk]))

    def write(self, chunk: Sequence[tuple[str, str]], pred: Any) -> list[list[str]]:
        """Writes the panels and masks of ``chunk`` from its prediction ``pred``; its CSV rows."""
        import numpy as np

        from concurrent.futures import ThreadPoolExecutor

        import torch

        from defectforge.data.image_io import read_image, write_image, write_mask
        from defectforge.report.panels import prediction_panel

        thr = "" if self.img_thr is None else f"{self.img_thr:.6g}"

        def one(item: tuple[tuple[str, str], Any, Any]) -> list[str]:
            (path, name), score, amap = item
            lab = self.img_thr is not None and score >= self.img_thr
            mask = amap >= self.px_thr if self.px_thr is not None else np.zeros(amap.shape, bool)
            hm, mk = "" if self.heatmaps == "none" else f"heatmaps/{name}.{self.heatmaps}", f"masks/{name}.png"
            if hm:
                write_image(self.out / hm, prediction_panel(read_image(path), amap, self.scale, mask),
                            quality=PANEL_JPEG_QUALITY, png_level=PANEL_PNG_LEVEL)
            write_mask(self.out / mk, mask)
            return [str(path), f"{float(score):.6g}", str(int(bool(lab))), thr, hm, mk]

        items = list(zip(chunk, pred.pred_score, pred.anomaly_map))
        # the encoders release the GIL: the images of a chunk are written on this worker's threads
        threads = min(len(items), max(1, PANEL_THREADS or torch.get_num_threads()))
        if threads < 2:
            return [one(it) for it in items]
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, items))  # input order


def done_rows(out: Path) -> list[list[str]]:
    """Complete rows of an earlier, interrupted run into ``out`` (a torn last line and rows
    whose heatmap or mask is missing are dropped)."""
    from defectforge.errors import InputError

    path = out / "scores.csv"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")[:-1]  # the part after the last newline is torn (or empty)
    rows = list(csv.reader(lines))
    if not rows or rows[0] != SCORE_HEADER:
        raise InputError(path, "exists but is not a scores file of 'detect predict'; choose another --out")
    done = [r for r in rows[1:] if len(r) == len(SCORE_HEADER)
            and (not r[4] or (out / r[4]).is_file()) and (out / r[5]).is_file()]
    return done


def run_settings(model_path: str | Path, model: Any, thresholds: tuple[Any, Any, Any],
                 heatmaps: str = "png") -> dict[str, Any]:
    """What a resumed run must share with the rows already written (``predict.json``): the
    model file's bytes, the thresholds, the nearest-neighbour search and the panels' format."""
    import hashlib

    h = hashlib.sha256()
    with open(model_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"model_sha256": h.hexdigest(), "threshold": thresholds[0], "pixel_threshold": thresholds[1],
            "nn_backend": getattr(model, "nn_backend", None), "heatmaps": heatmaps}


_WHAT = {"model_sha256": "model (the model file differs)", "threshold": "image threshold",
         "pixel_threshold": "pixel threshold", "nn_backend": "nearest-neighbour search (--nn-backend)",
         "heatmaps": "heatmap format (--heatmaps)"}


def check_resume(out: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The settings stored by the earlier run into ``out`` (None where it wrote none: an
    older version, or no row yet); a one-line error where they differ from ``settings``."""
    import json

    from defectforge.errors import InputError

    path = out / RUN_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict):
        return None
    diff = [k for k in settings if stored.get(k) != settings[k]]
    if "model_sha256" in diff:  # another model: its thresholds differ too, say the one cause
        diff = ["model_sha256"]
    if diff:
        what = "; ".join(f"{_WHAT[k]}: {stored.get(k)!r} then, {settings[k]!r} now" if k != "model_sha256"
                         else _WHAT[k] for k in diff)
        raise InputError(path, f"the rows in this folder were scored with another {what}; "
                               f"choose another --out or rerun with the same model and options")
    return stored


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def predict_files(model_path: str | Path, files: Sequence[Path], out: str | Path, engine: Any = None,
                  model: Any = None, progress: Callable[[str, int, int | None], None] | None = None,
                  threshold: float | None = None, pixel_threshold: float | None = None, chunk: int = CHUNK,
                  device: str = "cpu", on_resume: Callable[[int, int], None] | None = None,
                  heatmaps: str = "png") -> Path:
    """Score ``files`` with the model in ``model_path`` into ``out`` (``heatmaps/``,
    ``masks/``, ``scores.csv``), resuming an interrupted run; ``engine`` default: this
    process (with ``model`` if it is already loaded). ``threshold`` / ``pixel_threshold``
    override the model's; ``on_resume(done, total)`` is told when earlier rows are kept;
    ``heatmaps``: the panels' format, ``png`` (lossless), ``jpg`` (about a third of png's
    writing time, a quarter of its bytes) or ``none`` (masks and scores only).
    Returns the path of ``scores.csv``."""
    import os

    from defectforge._atomic import atomic_write_json, atomic_write_text
    from defectforge.data._files import unique_name
    from defectforge.engine.local import LocalEngine
    from defectforge.report.panels import run_thresholds
    from defectforge.runfolder import check_scoring_out, remove_leftovers

    out = Path(out)
    earlier = (out / "scores.csv").is_file()  # written before any image: an earlier run's folder has it
    check_scoring_out(out, files, lambda name: earlier and name in ("scores.csv", RUN_FILE, "heatmaps", "masks"),
                      "detect predict")
    if model is None:
        from defectforge.detect.base import load_detector

        model = load_detector(model_path, device=device)
    thresholds = run_thresholds(model, threshold, pixel_threshold)
    thr = "" if thresholds[0] is None else f"{thresholds[0]:.6g}"
    settings = run_settings(model_path, model, thresholds, check_heatmaps(heatmaps))
    done = done_rows(out)
    stored = check_resume(out, settings) if done else None
    if done and stored is None and any(r[3] != thr for r in done):  # an earlier version's folder: only its
        from defectforge.errors import InputError  # threshold can be compared

        raise InputError(out / "scores.csv", "was written with another model (threshold differs); choose another --out")
    if stored and stored.get("scale") and thresholds[2] is None:  # the earlier rows' colour scale
        from defectforge.report.panels import MapScale

        thresholds = (thresholds[0], thresholds[1], MapScale(**stored["scale"]))
    seen = {r[0] for r in done}
    used: set[str] = {Path(r[5]).stem.lower() for r in done}  # the mask column: never empty
    todo = [(str(f), unique_name(Path(f).stem, "", used)) for f in files if str(f) not in seen]
    atomic_write_text(out / "scores.csv", _csv_text([SCORE_HEADER, *done]))  # drops a torn line of an earlier run
    if done and on_resume:
        on_resume(len(done), len(done) + len(todo))
    chunks = [tuple(todo[s:s + chunk]) for s in range(0, len(todo), chunk)]
    first = None
    if thresholds[2] is None and chunks:  # no pixel threshold: the first chunk's maps fix the colour scale
        from defectforge.data.sample import Sample

        first = model.predict([Sample(path=Path(p)) for p, _ in chunks[0]])
        thresholds = run_thresholds(model, threshold, pixel_threshold, first.anomaly_map)
    if not done:  # before any new row: what a resume must match (a resume keeps the stored file)
        atomic_write_json(out / RUN_FILE, {**settings, "scale": None if thresholds[2] is None
                                           else thresholds[2].to_dict()})
    task = PredictTask(model_path, out, thresholds, model, device, heatmaps)
    runner = engine if engine is not None else LocalEngine(1)
    rows: dict[str, list[list[str]]] = {}
    n, total = len(done), len(done) + len(todo)
    if progress:
        progress("predict", n, total)
    with open(out / "scores.csv", "a", encoding="utf-8", newline="") as fh:

        def append(part: Sequence[tuple[str, str]], part_rows: list[list[str]]) -> None:
            nonlocal n
            rows[part[0][1]] = part_rows
            fh.write(_csv_text(part_rows))
            fh.flush()
            os.fsync(fh.fileno())
            n += len(part)
            if progress:
                progress("predict", n, total)

        if first is not None:  # scored above for the scale: written here, not scored twice
            append(chunks[0], task.write(chunks[0], first))
        for part, part_rows in runner.map(task, chunks[1:] if first is not None else chunks):
            append(part, part_rows)
    for sub in ("heatmaps", "masks"):  # what a worker killed mid-write left behind
        if (out / sub).is_dir():
            remove_leftovers(out / sub)
    # input order, whatever order the chunks finished in
    return atomic_write_text(out / "scores.csv", _csv_text([SCORE_HEADER, *done,
                                                            *(r for c in chunks for r in rows[c[0][1]])]))
