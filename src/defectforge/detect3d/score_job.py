"""Scoring 3D clouds as a job on an engine (:mod:`defectforge.engine`): the body of
``detect3d predict`` and of :func:`~defectforge.detect3d.evaluate.evaluate_detector3d`.

Items are chunks of clouds (by path); a :class:`CloudScoreTask` loads the model file
once per worker and scores **each cloud on its own** (``predict([cloud])``), so a
cloud's score never depends on which other clouds were scored with it and every engine
gives the same numbers. With an output folder the worker writes ``<stem>.txt`` and
``<stem>.ply`` itself (atomically) and returns the cloud's ``scores.csv`` row; without
one it returns the object score and the per-point scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

#: clouds per item
CHUNK = 4
SCORE_HEADER = ["file", "score", "label", "n_points", "n_flagged_points"]


class CloudScoreTask:
    """Scores one chunk of ``(category, cloud, name)`` (``cloud``: a path or a
    ``Cloud3DSample``) with ``models[category]``. In this process the driver's ``models``
    are used; a worker of another process loads ``model_path`` itself, with the run-time
    settings ``runtime`` (e.g. ``{"device": "cuda"}``; not stored in the model file)."""

    def __init__(self, model_path: str | Path | None, models: dict[str, Any] | None = None,
                 out: str | Path | None = None, runtime: dict[str, Any] | None = None):
        self.model_path = None if model_path is None else str(model_path)
        self.runtime = dict(runtime or {})
        self.models = models
        self.out = None if out is None else Path(out)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "models": None}

    def setup(self) -> None:
        if self.models is None:
            from defectforge.detect3d import load_models3d

            self.models = load_models3d(self.model_path, **self.runtime)

    def __call__(self, chunk: Sequence[tuple[str, Any, str]]) -> list[Any]:
        from defectforge.synth3d.cloud_io import read_cloud

        done = []
        for category, ref, name in chunk:
            cloud = ref.load() if hasattr(ref, "load") else read_cloud(Path(ref))
            pred = self.models[category].predict([cloud])  # type: ignore[index]
            score, amap = float(pred.pred_score[0]), np.asarray(pred.anomaly_map[0])
            if self.out is None:
                done.append((score, amap))
                continue
            import io

            from defectforge._atomic import atomic_write_text
            from defectforge.detect3d.cli import write_score_ply

            tb = io.StringIO()
            np.savetxt(tb, np.column_stack([cloud.points, amap]), fmt="%.6f %.6f %.6f %.6g")
            atomic_write_text(self.out / f"{name}.txt", tb.getvalue())
            write_score_ply(self.out / f"{name}.ply", cloud.points, amap)
            done.append([str(ref), f"{score:.6g}", int(pred.pred_label[0]), len(amap), int(pred.pred_mask[0].sum())])
        return done


def scored(task: CloudScoreTask, items: Sequence[tuple[str, Any, str]], engine: Any, chunk: int,
           progress: Callable[[str, int, int | None], None] | None, stage: str) -> list[Any]:
    """``task``'s result for each item, in order, chunks of ``chunk`` items on ``engine``
    (default: this process; an engine of other processes needs ``task.model_path``)."""
    from defectforge.engine.local import LocalEngine
    from defectforge.errors import ConfigError

    if engine is not None and engine.name != "local" and task.model_path is None:
        raise ConfigError(f"the {engine.name} engine loads the model in its workers: pass model_path")
    chunks = [tuple(items[s:s + chunk]) for s in range(0, len(items), max(1, int(chunk)))]
    done: list[Any] = []
    if progress:
        progress(stage, 0, len(items))
    for _, part in (engine if engine is not None else LocalEngine(1)).map_ordered(task, chunks):
        done += part
        if progress:
            progress(stage, len(done), len(items))
    return done


def predict_clouds(model_path: str | Path, category: str, clouds: Sequence[Path], out: str | Path,
                   models: dict[str, Any] | None = None, engine: Any = None, chunk: int = CHUNK,
                   progress: Callable[[str, int, int | None], None] | None = None,
                   runtime: dict[str, Any] | None = None) -> Path:
    """Score ``clouds`` with ``models[category]`` of ``model_path`` into ``out`` (per cloud
    ``<stem>.txt`` and ``<stem>.ply``, ``<stem>_1`` for a second cloud of one stem; ``scores.csv`` in input
    order; the folder must be new, empty or an earlier run's; workers of other
    processes load the model with ``runtime``, e.g. ``{"device": "cuda"}``). Returns its path."""
    import csv
    import io

    from defectforge._atomic import atomic_write_text
    from defectforge.data._files import unique_name
    from defectforge.errors import InputError
    from defectforge.runfolder import check_scoring_out, remove_leftovers

    out = Path(out)
    used: set[str] = set()  # two clouds of one stem (other folders) get two names, not one file
    items = [(category, str(p), unique_name(Path(p).stem, "", used)) for p in clouds]
    own = {"scores.csv", *(f"{name}{ext}" for _, _, name in items for ext in (".txt", ".ply"))}
    check_scoring_out(out, clouds, own.__contains__, "detect3d predict")
    scores = out / "scores.csv"
    if scores.is_file():
        with open(scores, encoding="utf-8", errors="replace") as fh:
            if fh.readline().rstrip("\r\n") != ",".join(SCORE_HEADER):
                raise InputError(scores, "exists but is not a scores file of 'detect3d predict'; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    rows = scored(CloudScoreTask(model_path, models, out, runtime), items, engine, chunk, progress, "predict")
    remove_leftovers(out)  # temporary files a killed worker left behind
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([SCORE_HEADER, *rows])
    return atomic_write_text(out / "scores.csv", buf.getvalue())


def score_samples3d(samples: Sequence[tuple[str, Any, str]], models: dict[str, Any] | None, engine: Any = None,
                    model_path: str | Path | None = None, chunk: int = CHUNK,
                    progress: Callable[[str, int, int | None], None] | None = None,
                    runtime: dict[str, Any] | None = None) -> list[tuple[float, np.ndarray]]:
    """``(object score, point scores)`` of each ``(category, sample, name)``, in order."""
    return scored(CloudScoreTask(model_path, models, runtime=runtime), samples, engine, chunk, progress, "score")
