"""Evaluate fitted 3D detectors on a 3D dataset's test split (the library function behind
``defectforge detect3d eval``): per-category and mean O-AUROC, P-AUROC, O-AUPR and
P-AUPR, plus an HTML report section with each cloud coloured by score beside its ground
truth. Nothing here fits or tunes anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defectforge.errors import InputError


@dataclass
class Eval3D:
    """Metrics (``metrics``: :func:`~defectforge.detect3d.metrics.evaluate_3d` plus
    ``objects``) and what the report shows, one entry per evaluated cloud."""

    metrics: dict[str, Any]
    categories: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    point_labels: list[np.ndarray] = field(default_factory=list)
    point_scores: list[np.ndarray] = field(default_factory=list)
    clouds: list[Any] = field(default_factory=list)


def evaluate_detector3d(models: dict[str, Any], dataset: Any, split: str = "test",
                        source: str | Path | None = None, engine: Any = None,
                        model_path: str | Path | None = None, progress: Any = None,
                        runtime: dict[str, Any] | None = None) -> Eval3D:
    """Score the ``split`` clouds of every category of ``dataset`` (a
    :class:`~defectforge.detect3d.data.Dataset3D`) with ``models[category]`` (a
    ``{category: detector}`` mapping, e.g. from :func:`~defectforge.detect3d.load_models3d`;
    ``source`` names the model file in errors). Each cloud is scored on its own, on
    ``engine`` (default: this process; an engine of other processes loads ``model_path``
    with the run-time settings ``runtime``, e.g. ``{"device": "cuda"}``);
    ``progress("score", done, total)`` follows :mod:`defectforge.progress`."""
    from defectforge.detect3d.metrics import evaluate_3d
    from defectforge.detect3d.score_job import score_samples3d

    ev = Eval3D(metrics={})
    todo = []
    for c in dataset.categories:
        test = dataset.filter(category=c, split=split).samples
        if test and c not in models:
            raise InputError(source, f"no detector for class {c!r} of {dataset.root} (has {', '.join(models)})")
        todo += [(c, s, s.name) for s in test]
    scored = score_samples3d(todo, models, engine, model_path, progress=progress, runtime=runtime)
    for (c, s, _), (sc, amap) in zip(todo, scored):
        cl = s.load()
        ev.categories.append(c)
        ev.labels.append(bool(s.is_defect))
        ev.scores.append(float(sc))
        ev.point_labels.append(cl.labels.astype(bool))
        ev.point_scores.append(amap)
        ev.clouds.append(cl)
        ev.names.append(f"{c}/{s.name} ({s.label})")
    if not ev.categories:
        raise InputError(dataset.root, f"no {split} clouds to evaluate")
    ev.metrics = evaluate_3d(ev.categories, ev.labels, ev.scores, ev.point_labels, ev.point_scores)
    ev.metrics["objects"] = [{"name": n, "label": lb, "score": s} for n, lb, s in zip(ev.names, ev.labels, ev.scores)]
    return ev


def one_sided_categories(categories: list[str], labels: list[bool]) -> dict[str, str]:
    """``{category: "good" | "defective"}`` for categories whose test clouds are all of one
    kind (their object metrics are undefined)."""
    kinds: dict[str, set[bool]] = {}
    for c, lb in zip(categories, labels):
        kinds.setdefault(c, set()).add(bool(lb))
    return {c: ("defective" if True in k else "good") for c, k in sorted(kinds.items()) if len(k) < 2}


def add_eval3d_section(report: Any, ev: Eval3D, max_renders: int = 12) -> None:
    """Metrics table and, per category, the ``max_renders`` highest-scoring clouds rendered
    by score (left) and ground truth (right)."""
    from defectforge.detect3d.metrics import metrics_table
    from defectforge.report.visual import side_by_side
    from defectforge.synth3d.render import render_cloud

    report.section("metrics", "Metrics per category").table(metrics_table(ev.metrics))
    for c in sorted(set(ev.categories)):
        idx = [i for i, x in enumerate(ev.categories) if x == c]
        idx = sorted(idx, key=lambda i: -ev.scores[i])[:max_renders]
        g = report.section(f"clouds-{c}", f"{c}: score (left) and ground truth (right), highest scores first")
        items = []
        for i in idx:
            pts = ev.clouds[i].points
            left = render_cloud(pts, scores=ev.point_scores[i], size=(320, 240))
            right = render_cloud(pts, mask=ev.point_labels[i], size=(320, 240))
            items.append((side_by_side(left, right), f"{ev.names[i]} score {ev.scores[i]:.4g}"))
        g.gallery(items)
