"""Combining anomaly scores: the point network with the FPFH bank, and the network's
prototype score with its supervised head.

FPFH fusion (:func:`fuse_scores`). Each detector's scores are first put on a common scale
with statistics of its **held-out good** scores (``score_stats``: leave-one-cloud-out
clouds of the training set, never test data), chosen by ``norm``:

- ``"threshold"``: divide by the largest held-out good object score (objects) and the
  99.9th percentile of held-out good point scores (points): "1 = the largest good score".
- ``"zscore"``: subtract the held-out good mean and divide by the standard deviation
  (objects and points separately).

The fused point map is ``net + weight x fpfh`` (normalised maps). The object score is
either a sum of the two detectors' normalised *object* scores (``object="sum"``) or, with
``object="map"``, the mean of the top ``object_frac`` of the fused point map, so an
object scores high only where the two detectors' maps agree spatially, not where each
fires on its own part of a good cloud. The sum is ``net + weight x fpfh`` (the point
weight) or, with ``object_share`` s, ``(1 - s) x net + s x fpfh``: the object ranking
then has its own weight, and ``s = 1`` is exactly the FPFH bank's own object ranking
(the network still shapes the point map). ``norm``, ``object``, ``object_frac``,
``object_share`` and the weight are chosen on validation splits
(``bench/bench_detect3d.py --split val --sweep``; :func:`gated_choice` is the rule that
keeps the FPFH ranking unless validation shows a reliable gain).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from defectforge.detect3d.common import knn_smooth, topk_mean
from defectforge.errors import ConfigError

FPFH_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Weights of the FPFH bank's normalised scores tried when choosing ``fpfh_weight`` on validation."""
HEAD_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
NORMS = ("threshold", "zscore")
OBJECTS = ("sum", "map")
OBJECT_FRACS = (0.002, 0.005, 0.01, 0.02)
"""Top fractions of the fused map tried for ``object="map"`` on validation."""
OBJECT_SHARES = (1.0, 0.95, 0.9, 0.8, 0.67, 0.5, 0.0)
"""FPFH shares of the summed object score tried on validation (1: the FPFH bank's own ranking)."""


def score_stats(object_scores: Sequence[float], point_scores: Sequence[np.ndarray]) -> dict[str, float]:
    """Statistics of held-out good scores used to normalise a detector's scores."""
    o = np.asarray(object_scores, dtype=np.float64)
    p = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in point_scores]) if len(point_scores) else np.zeros(0)
    if not len(o) or not len(p):
        return stats_from_thresholds(float("inf"), float("inf"))
    return {"object_max": float(o.max()), "object_mean": float(o.mean()), "object_std": float(o.std()),
            "point_q999": float(np.quantile(p, 0.999)), "point_mean": float(p.mean()), "point_std": float(p.std())}


def stats_from_thresholds(object_threshold: float, point_threshold: float) -> dict[str, float]:
    """Stats of a detector that recorded thresholds only (older model files): z-scores then
    reduce to the threshold normalisation."""
    return {"object_max": float(object_threshold), "object_mean": 0.0, "object_std": float(object_threshold),
            "point_q999": float(point_threshold), "point_mean": 0.0, "point_std": float(point_threshold)}


def _scale(v: float) -> float:
    return float(v) if np.isfinite(v) and v > 0 else 1.0


def normalise(values, stats: dict[str, float], level: str, norm: str) -> np.ndarray:
    """``values`` (object or point scores, ``level`` "object"/"point") on the common scale."""
    v = np.asarray(values, dtype=np.float64)
    if norm == "threshold":
        return v / _scale(stats["object_max" if level == "object" else "point_q999"])
    if norm == "zscore":
        mean = stats[f"{level}_mean"]
        return (v - (mean if np.isfinite(mean) else 0.0)) / _scale(stats[f"{level}_std"])
    raise ConfigError(f"fusion norm must be one of {', '.join(NORMS)}, got {norm!r}")


def top_fraction_mean(values: np.ndarray, frac: float) -> float:
    """Mean of the ``ceil(frac x n)`` largest values."""
    return topk_mean(values, max(1, int(math.ceil(frac * len(values)))))


def object_weights(weight: float, object_share: float | None) -> tuple[float, float]:
    """(network, FPFH) weights of the summed normalised object scores."""
    if object_share is None:
        return 1.0, float(weight)
    if not 0.0 <= object_share <= 1.0:
        raise ConfigError(f"object_share must be in [0, 1] (or None), got {object_share}")
    return 1.0 - float(object_share), float(object_share)


def fuse_scores(net_obj, net_maps, fpfh_obj, fpfh_maps, net_stats: dict[str, float], fpfh_stats: dict[str, float],
                weight: float, norm: str = "threshold", object: str = "sum", object_frac: float = 0.005,
                object_share: float | None = None):
    """(object scores, point maps) of network + ``weight`` x FPFH (see the module docstring)."""
    if object not in OBJECTS:
        raise ConfigError(f"fusion object must be one of {', '.join(OBJECTS)}, got {object!r}")
    maps = [(normalise(a, net_stats, "point", norm) + weight * normalise(b, fpfh_stats, "point", norm)).astype(np.float32)
            for a, b in zip(net_maps, fpfh_maps)]
    if object == "map":
        obj = np.array([top_fraction_mean(m, object_frac) for m in maps], dtype=np.float64)
    else:
        wn, wf = object_weights(weight, object_share)
        obj = wn * normalise(net_obj, net_stats, "object", norm) + wf * normalise(fpfh_obj, fpfh_stats, "object", norm)
    return obj, maps


def fused_thresholds(net_stats: dict[str, float], fpfh_stats: dict[str, float], weight: float,
                     norm: str, object_share: float | None = None) -> tuple[float, float]:
    """(object, point) thresholds of the fused scores: the sum of each part's largest held-out
    good score after normalisation (an upper bound of the fused held-out good scores; for
    ``object="map"`` the point bound is used, as the object is a mean of map values)."""
    def part(stats, level, key):
        return float(normalise([stats[key]], stats, level, norm)[0])

    wn, wf = object_weights(weight, object_share)
    obj = wn * part(net_stats, "object", "object_max") + wf * part(fpfh_stats, "object", "object_max")
    pt = part(net_stats, "point", "point_q999") + weight * part(fpfh_stats, "point", "point_q999")
    return obj, pt


def select_head_weight(points: list[np.ndarray], proto: list[np.ndarray], head: list[np.ndarray],
                       masks: list[np.ndarray], smooth_k: int, top_k: int,
                       weights: Iterable[float] = HEAD_WEIGHTS) -> tuple[float, list[dict[str, float]]]:
    """The head weight ``w`` (score = prototype + w x head) with the best mean of object and
    pooled point AUROC on the given validation clouds (ties: the smaller weight).

    Inputs are per-cloud arrays over network points; clouds with an empty mask are the good
    ones. Returns ``(w, table)`` with one row per weight. Pure function of its inputs, so
    it can only see the validation data it is given.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.array([bool(np.any(m)) for m in masks])
    pl = np.concatenate(masks).astype(bool)
    trees = [cKDTree(p) for p in points]
    table, best = [], (-np.inf, 0.0)
    for w in weights:
        sm = [knn_smooth(p, pr + w * h, smooth_k, t) for p, pr, h, t in zip(points, proto, head, trees)]
        o = roc_auc_score(labels, [topk_mean(v, top_k) for v in sm]) if 0 < labels.sum() < len(labels) else float("nan")
        pa = roc_auc_score(pl, np.concatenate(sm)) if 0 < pl.sum() < len(pl) else float("nan")
        crit = float(np.nanmean([o, pa])) if np.isfinite([o, pa]).any() else -np.inf
        table.append({"head_weight": float(w), "o_auroc": float(o), "p_auroc": float(pa)})
        if crit > best[0] + 1e-9:
            best = (crit, float(w))
    return best[1], table


def _auroc_pairs(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of positive vs negative scores (ties count one half): the project's rank AUROC."""
    from defectforge.metrics import auroc

    return auroc(np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)], np.r_[pos, neg])


def gated_choice(labels: Sequence[Sequence[bool]], candidates: dict[str, Sequence[Sequence[float]]], reference: str,
                 n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[str, dict]:
    """Choose an object score on validation, keeping ``reference`` unless another wins reliably.

    ``labels[g]`` are the defective flags of the clouds of validation group ``g`` (e.g. one
    class of one protocol); ``candidates[name][g]`` their object scores under candidate
    ``name``. A candidate's score is its mean O-AUROC over the groups. The best candidate
    (ties: the first in ``candidates``' order) replaces ``reference`` only if its gain over
    the reference is positive in at least ``confidence`` of ``n_boot`` stratified paired
    bootstrap resamples (good and defective clouds drawn with replacement within each group,
    the same draw for both). Small validation splits then cannot swap a training-free
    ranking for one that won by a pair or two. Returns ``(name, info)``.
    """
    if reference not in candidates:
        raise ConfigError(f"reference {reference!r} is not among the candidates")
    ys = [np.asarray(y, dtype=bool) for y in labels]
    if not ys or any(y.all() or not y.any() for y in ys):
        raise ConfigError("every validation group needs good and defective clouds")
    cand = {k: [np.asarray(v, dtype=np.float64) for v in vals] for k, vals in candidates.items()}
    for k, vals in cand.items():
        if len(vals) != len(ys) or any(len(v) != len(y) for v, y in zip(vals, ys)):
            raise ConfigError(f"candidate {k!r}: one score per validation cloud is required")
    scores = {k: float(np.mean([_auroc_pairs(v[y], v[~y]) for v, y in zip(vals, ys)])) for k, vals in cand.items()}
    best = next(iter(scores))
    for k, s in scores.items():
        if s > scores[best] + 1e-12:
            best = k
    info = {"scores": scores, "best": best, "reference": reference, "p_gain": float("nan")}
    if best == reference:
        return reference, info
    rng = np.random.default_rng(seed)
    pos = [np.flatnonzero(y) for y in ys]
    neg = [np.flatnonzero(~y) for y in ys]
    wins = 0
    for _ in range(n_boot):
        gain = 0.0
        for g in range(len(ys)):
            ip, ineg = rng.choice(pos[g], len(pos[g])), rng.choice(neg[g], len(neg[g]))
            b, r = cand[best][g], cand[reference][g]
            gain += _auroc_pairs(b[ip], b[ineg]) - _auroc_pairs(r[ip], r[ineg])
        wins += gain > 1e-12
    info["p_gain"] = wins / n_boot
    return (best if info["p_gain"] >= confidence else reference), info
