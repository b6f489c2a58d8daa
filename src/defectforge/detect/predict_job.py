"""``detect predict`` as a job: chunks of image paths scored by a model loaded once per
worker, each worker writing its heatmap overlays and masks atomically; the driver writes
``scores.csv`` (input order) at the end.

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
CSV_HEADER = ["file", "score", "anomalous", "threshold", "heatmap", "mask"]


class DetectorTask:
    """Base of the tasks that need a fitted 2D detector: the driver's already loaded model
    is used in this process; a worker of another process loads ``model_path`` once
    (:meth:`setup`), because the model itself is never pickled."""

    def __init__(self, model_path: str | Path | None, model: Any = None):
        self.model_path = None if model_path is None else str(model_path)
        self.model = model

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["model"] = None  # workers load the model file themselves
        return state

    def setup(self) -> None:
        if self.model is None:
            from defectforge.detect.base import load_detector

            self.model = load_detector(self.model_path)


class PredictTask(DetectorTask):
    """Scores one chunk of ``(path, name)`` pairs and writes ``heatmaps/<name>.png`` (panel
    image | map | predicted mask | colour bar, on the run's one colour ``scale``) and
    ``masks/<name>.png`` into ``out``; returns the chunk's CSV rows. The thresholds and the
    scale are fixed by the driver (:func:`~defectforge.report.panels.run_thresholds`)."""

    def __init__(self, model_path: str | Path, out: str | Path, thresholds: tuple[Any, Any, Any], model: Any = None):
        super().__init__(model_path, model)
        self.out = Path(out)
        self.img_thr, self.px_thr, self.scale = thresholds

    def __call__(self, chunk: Sequence[tuple[str, str]]) -> list[list[str]]:
        import numpy as np

        from defectforge.data.image_io import read_image, write_image, write_mask
        from defectforge.data.sample import Sample
        from defectforge.report.panels import prediction_panel

        thr = "" if self.img_thr is None else f"{self.img_thr:.6g}"
        pred = self.model.predict([Sample(path=Path(p)) for p, _ in chunk])
        rows = []
        for (path, name), score, amap in zip(chunk, pred.pred_score, pred.anomaly_map):
            lab = self.img_thr is not None and score >= self.img_thr
            mask = amap >= self.px_thr if self.px_thr is not None else np.zeros(amap.shape, bool)
            hm, mk = f"heatmaps/{name}.png", f"masks/{name}.png"
            write_image(self.out / hm, prediction_panel(read_image(path), amap, self.scale, mask))
            write_mask(self.out / mk, mask)
            rows.append([str(path), f"{float(score):.6g}", str(int(bool(lab))), thr, hm, mk])
        return rows


def output_names(files: Sequence[Path]) -> list[str]:
    """One output stem per input (the file stem, made unique case-insensitively)."""
    from defectforge.data._files import unique_name

    used: set[str] = set()
    return [unique_name(Path(f).stem, "", used) for f in files]


def predict_files(model_path: str | Path, files: Sequence[Path], out: str | Path, engine: Any = None,
                  model: Any = None, progress: Callable[[int, int], None] | None = None,
                  threshold: float | None = None, pixel_threshold: float | None = None) -> Path:
    """Score ``files`` with the model in ``model_path`` into ``out`` (``heatmaps/``,
    ``masks/``, ``scores.csv``); ``engine`` default: this process (with ``model`` if it is
    already loaded). ``threshold`` / ``pixel_threshold`` override the model's. Returns the
    path of ``scores.csv``."""
    from defectforge._atomic import atomic_write_text
    from defectforge.runfolder import remove_leftovers
    from defectforge.engine.local import LocalEngine

    from defectforge.report.panels import run_thresholds

    out = Path(out)
    names = output_names(files)
    pairs = [(str(f), nm) for f, nm in zip(files, names)]
    chunks = [tuple(pairs[s:s + CHUNK]) for s in range(0, len(pairs), CHUNK)]
    if model is None:
        from defectforge.detect.base import load_detector

        model = load_detector(model_path)
    thresholds = run_thresholds(model, threshold, pixel_threshold)
    if thresholds[2] is None and chunks:  # no pixel threshold: the first chunk's maps fix the colour scale
        from defectforge.data.sample import Sample

        first = model.predict([Sample(path=Path(p)) for p, _ in chunks[0]]).anomaly_map
        thresholds = run_thresholds(model, threshold, pixel_threshold, first)
    runner = engine if engine is not None else LocalEngine(1)
    rows: dict[str, list[list[str]]] = {}
    done = 0
    if progress:
        progress(0, len(files))
    for chunk, chunk_rows in runner.map(PredictTask(model_path, out, thresholds, model), chunks):
        rows[chunk[0][1]] = chunk_rows
        done += len(chunk)
        if progress:
            progress(done, len(files))
    for sub in ("heatmaps", "masks"):  # what a worker killed mid-write left behind
        if (out / sub).is_dir():
            remove_leftovers(out / sub)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(CSV_HEADER)
    for chunk in chunks:
        wr.writerows(rows[chunk[0][1]])
    return atomic_write_text(out / "scores.csv", buf.getvalue())
