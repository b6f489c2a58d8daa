"""Image scores of the memory-bank detectors (ExDD / PatchCore), and their choice on validation.

For every image the scorer computes these raw scores from the same nearest-neighbour
distances (``d-`` to the normal bank, ``d+`` to the defect bank, patch map ``d- / (d+ + eps)``,
just ``d-`` without a defect bank; ``map`` = that patch map upsampled and smoothed):

- ``weighted`` — **the ExDD paper's formula** ``w- s-* / (w+ s+* + eps)`` with the
  neighbourhood-aware weights (PatchCore's re-weighted max when ``weighting="patchcore"``);
- ``max`` — the maximum of the smoothed ratio map;
- ``patch_max`` — the maximum of the unsmoothed patch ratio map;
- ``topk`` — the mean of the top ``topk_fraction`` of the smoothed ratio map's pixels
  (at least one pixel): a dual-bank score less driven by a single pixel;
- ``nn_max`` — PatchCore-style nearest-normal score ``max_p d-(p)`` (no defect bank involved);
- ``fusion`` — a calibrated fusion of ``nn_max`` and ``topk``: logistic regression on
  ``(log nn_max, log topk)`` standardised, fitted on the **validation** split only (good
  validation images held out of the normal bank; real defect images scored out of fold by
  defect banks built without them, :func:`crossfit_folds`, or held out of the defect bank,
  :func:`hold_out_real_defects`: ExDD's ``defect_val``); its decision function (a log-odds)
  is the score.

``image_score="auto"`` picks, on that validation split, the one of ``weighted``, ``max``,
``topk`` and ``fusion`` with the highest AUROC (``fusion``'s AUROC is out-of-fold:
stratified k-fold on validation, so it is not judged on the images it was calibrated on).
A handful of validation defects often saturates the AUROC (several candidates at 0.99-1.0),
so ties go to the higher validation average precision (out-of-fold for ``fusion`` too), which
also weighs how far above the good images the defects rank; only then to the earlier name
in that order. Test data are never involved: the choice is made
inside ``fit``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE_SCORES = ("weighted", "max", "patch_max", "topk", "fusion", "auto")
#: what "auto" chooses among, in tie-break order (the paper's formula first)
AUTO_CANDIDATES = ("weighted", "max", "topk", "fusion")
#: scores that need a validation split with defect images
NEED_VALIDATION = ("fusion", "auto")


def _is_synthetic(item: Any) -> bool:
    """A sample made by a defectforge generator (its ``meta`` names the generator)."""
    meta = getattr(item, "meta", None)
    return isinstance(meta, dict) and bool(meta.get("generator"))


def _real(def_sets: dict[str, list[Any]]) -> list[tuple[str, int]]:
    """``(set name, index)`` of the real defect images: not in sets named ``synthetic*``, and
    without a ``meta["generator"]`` (which synthetic samples carry)."""
    return [(name, i) for name, items in def_sets.items() if not name.startswith("synthetic")
            for i, it in enumerate(items) if not _is_synthetic(it)]


def crossfit_folds(def_sets: dict[str, list[Any]], fraction: float, seed: int, split: str = "image"):
    """``round(1 / fraction)`` seeded folds of the real defect images (fewer when there are
    fewer images, or fewer groups; every fold gets at least one): a list of sorted
    ``(set name, index)`` lists, how they were cut (``"group"`` or ``"image"``), and a reason
    when there are none (fewer than 2 real images or groups, or ``fraction`` 0).

    By image (``split="image"``, and ``auto`` without groups) the folds are every k-th image of
    a seeded permutation, as before groups were read. By group (``meta["group"]``: one wear
    sequence, near-duplicate photos) whole groups go to one fold each, so an image is never
    scored by a defect bank holding a near-copy of it: the groups in a seeded order, each
    into the fold with the fewest images so far (the largest groups first)."""
    from defectforge.data.splits import sample_group, split_by

    real = _real(def_sets)
    by = split_by([def_sets[n][i] for n, i in real], split, "real defect")  # "image" below 2 images
    groups = [sample_group(def_sets[n][i]) for n, i in real] if by == "group" else []
    units = len(set(groups)) if by == "group" else len(real)
    k = int(min(round(1.0 / fraction), units)) if fraction > 0 else 0
    if k < 2:
        what = "group(s) of " if by == "group" else ""
        return [], by, (f"{units} {what}real defect image(s) and defect_val_fraction {fraction:g}: fewer than 2 "
                        "validation folds, so none is scored out of fold")
    rng = np.random.default_rng([int(seed), 15])
    if by == "image":
        order = rng.permutation(len(real))
        return [sorted(real[j] for j in order[f::k]) for f in range(k)], by, None
    names = sorted(set(groups))
    names = [names[j] for j in rng.permutation(len(names))]
    names.sort(key=lambda g: -groups.count(g))  # stable: the seeded order among equal sizes
    folds: list[list[tuple[str, int]]] = [[] for _ in range(k)]
    for g in names:
        f = min(range(k), key=lambda j: (len(folds[j]), j))
        folds[f] += [r for r, gg in zip(real, groups) if gg == g]
    return [sorted(f) for f in folds], by, None


def hold_out_real_defects(def_sets: dict[str, list[Any]], fraction: float, seed: int, split: str = "image"):
    """Hold ``fraction`` of the **real** defect images (not in sets named ``synthetic*``, and
    without a ``meta["generator"]``, which synthetic samples carry) out of
    the defect bank for validation (seeded), when that is at least 2 images and leaves one;
    by whole groups under ``split`` (:func:`defectforge.data.splits.holdout`).
    Returns ``(sets left for the bank, held-out images, held per set, reason when none)``."""
    from defectforge.data.splits import holdout, split_by

    real = _real(def_sets)
    n_hold = int(round(fraction * len(real)))
    if n_hold < 2 or len(real) - n_hold < 1:
        return def_sets, [], {}, (f"{len(real)} real defect image(s): a {fraction:g} validation share is "
                                  f"{n_hold} (< 2), so none is held out of the defect bank")
    rng = np.random.default_rng([int(seed), 15])
    items = [def_sets[n][i] for n, i in real]  # (by image: the draw before groups were read, bit for bit)
    pick = {real[j] for j in holdout(items, n_hold, rng, split_by(items, split, "real defect"))[0]}
    kept = {name: [it for i, it in enumerate(items) if (name, i) not in pick] for name, items in def_sets.items()}
    val = [def_sets[n][i] for n, i in sorted(pick)]
    held = {name: sum(1 for n, _ in pick if n == name) for name in def_sets}
    return kept, [d[0] if isinstance(d, (tuple, list)) else d for d in val], held, None


def raw_scores(full_map: np.ndarray, patch_map: np.ndarray, dn: np.ndarray, weighted: float,
               topk_fraction: float) -> dict[str, float]:
    """The raw scores of one image (see the module doc)."""
    from defectforge.detect3d.common import topk_mean

    flat = np.asarray(full_map, np.float64).reshape(-1)
    return {"weighted": float(weighted), "max": float(flat.max()), "patch_max": float(np.max(patch_map)),
            "topk": topk_mean(flat, int(np.ceil(topk_fraction * flat.size))), "nn_max": float(np.max(dn))}


def _fusion_features(raw: dict[str, np.ndarray]) -> np.ndarray:
    return np.log(np.maximum(np.c_[raw["nn_max"], raw["topk"]], 1e-12))


def fit_fusion(raw: dict[str, np.ndarray], labels: np.ndarray, C: float = 1.0) -> dict[str, Any]:
    """Calibration of ``fusion`` on validation scores: ``{"mean", "scale", "coef", "intercept"}``."""
    from sklearn.linear_model import LogisticRegression

    x = _fusion_features(raw)
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-12)
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=1000).fit((x - mean) / scale, labels)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": clf.coef_[0].tolist(),
            "intercept": float(clf.intercept_[0])}


def fusion_score(raw: dict[str, np.ndarray], cal: dict[str, Any]) -> np.ndarray:
    x = (_fusion_features(raw) - np.asarray(cal["mean"])) / np.asarray(cal["scale"])
    return x @ np.asarray(cal["coef"]) + float(cal["intercept"])


def oof_fusion_scores(raw: dict[str, np.ndarray], labels: np.ndarray, seed: int = 0, folds: int = 5
                      ) -> np.ndarray | None:
    """``fusion`` scores of the validation images with out-of-fold calibration (stratified
    k-fold; each image scored by a fusion fitted without it); ``None`` with < 2 per class."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, bool)
    k = int(min(folds, y.sum(), (~y).sum()))
    if k < 2:
        return None
    s = np.empty(len(y))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y):
        s[te] = fusion_score({n: v[te] for n, v in raw.items()}, fit_fusion({n: v[tr] for n, v in raw.items()}, y[tr]))
    return s


def choose(param: str, raw: dict[str, np.ndarray] | None, labels: np.ndarray | None, seed: int = 0,
           reason: str | None = None) -> dict[str, Any]:
    """Resolve ``param`` into the score to use: ``{"param", "chosen", "val_auroc", "fusion",
    "n_val_normal", "n_val_defect", "reason"}`` (and ``val_ap``). ``raw`` / ``labels`` are the validation
    split's raw scores and labels (``None``: no validation defects, then ``auto`` keeps the
    paper's ``weighted`` and ``fusion`` is refused by the caller; ``reason`` says why)."""
    from defectforge.metrics import auroc, average_precision

    info: dict[str, Any] = {"param": param, "chosen": param, "val_auroc": {}, "val_ap": {}, "fusion": None,
                            "n_val_normal": 0, "n_val_defect": 0, "reason": reason}
    if raw is None or labels is None or not 0 < int(np.sum(labels)) < len(labels):
        if param == "auto":
            info["chosen"] = "weighted"
        return info
    y = np.asarray(labels, bool)
    info["n_val_normal"], info["n_val_defect"] = int((~y).sum()), int(y.sum())
    scores = {n: raw[n] for n in AUTO_CANDIDATES if n != "fusion"}
    oof = oof_fusion_scores(raw, y, seed)
    if oof is not None:
        scores["fusion"] = oof
    aucs = {n: float(auroc(y, scores[n])) if n in scores else float("nan") for n in AUTO_CANDIDATES}
    aps = {n: float(average_precision(y, scores[n])) if n in scores else float("nan") for n in AUTO_CANDIDATES}
    info["val_auroc"] = {n: (round(v, 6) if np.isfinite(v) else None) for n, v in aucs.items()}
    info["val_ap"] = {n: (round(v, 6) if np.isfinite(v) else None) for n, v in aps.items()}
    if param in ("fusion", "auto"):
        info["fusion"] = fit_fusion(raw, y)
    if param == "auto":
        def key(n: str) -> tuple[float, float, int]:
            return (np.nan_to_num(aucs[n], nan=-1.0), np.nan_to_num(aps[n], nan=-1.0), -AUTO_CANDIDATES.index(n))

        best = max(AUTO_CANDIDATES, key=key)
        info["chosen"] = best
        tied = [n for n in AUTO_CANDIDATES if n != best and aucs[n] == aucs[best]]
        info["reason"] = (f"highest validation AUROC ({aucs[best]:.3f})" if not tied else
                          f"highest validation AUROC ({aucs[best]:.3f}, tied with {', '.join(tied)}), "
                          f"then highest validation AP ({aps[best]:.3f})")
    return info


def final_scores(chosen: str, raw: dict[str, np.ndarray], fusion: dict[str, Any] | None) -> np.ndarray:
    """The image scores of the chosen kind from the raw scores."""
    if chosen == "fusion":
        return fusion_score(raw, fusion)
    return np.asarray(raw[chosen], np.float64)
