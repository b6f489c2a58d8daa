"""Feature-matched placement (issue 15, a diagnostic that chooses nothing): could a finer
surround match than the 16 px grey template of ``placement: context`` bring transplanted real
pits near real ones in the C2ST? Each real TRAIN pit (one synthetic defect per component, no
jitter, blend ``normal``, label = the real mask at its new place) goes to a host at one of
``K`` candidate places drawn uniformly in the host's ROI (the crop, with a margin of half its
side, free of the host's own pits), picked by one of:

  random    the first candidate (= the ladder's ``other`` / ``good`` rungs)
  surround  the candidate whose defect-free host crop (the C2ST's crop there, before pasting)
            has the backbone embedding nearest to the pit's own crop with the pit removed
            (``cv2.inpaint`` of the image's pits): a placement a generator could use
  oracle    the candidate whose crop *after pasting* has the embedding nearest to the real
            pit's own crop: the best any placement among these candidates can do in the test's
            own feature space (an upper bound, circular by design: not a method)

Hosts: ``other`` = another real defect image (the same worn surfaces), ``good`` = a TRAIN
good image. The embedder is the C2ST's own backbone (EfficientNet-Lite0 at 96 px), so
``surround`` and ``oracle`` optimise the feature space the test reads: read their numbers as
how much placement *can* explain, not as realism reached. TEST is never read.

usage (repo root): PYTHONPATH=src python docs/results/issue15/c2strecipe/feature_placement.py \
    SEEDS HOSTS PICKS K OUT.json
  e.g. 0,1,2 other,good random,surround,oracle 48 feature_placement.json
"""
import json
import os
import sys
import time

import cv2
import numpy as np

from defectforge.data import load_dataset
from defectforge.data.sample import Sample
from defectforge.filter.c2st import c2st
from defectforge.filter.c2st_crops import _crop, crop_side, crops_and_stats
from defectforge.filter.embed import default_embedder
from defectforge.synth2d import masks as mk
from defectforge.synth2d.transplant import paste_defect

CONTEXT = 4  # the transplant generator's default blend reach (px)
seeds = [int(x) for x in sys.argv[1].split(",")]
hosts_kinds, picks, K, out_path = sys.argv[2].split(","), sys.argv[3].split(","), int(sys.argv[4]), sys.argv[5]
ds = load_dataset("../shared/datasets/bsdata/split.csv")
real = [s for s in ds.filter(split="train") if s.is_defect]
goods = [s for s in ds.filter(split="train") if not s.is_defect]
emb = default_embedder(size=96)
out = json.load(open(out_path)) if os.path.exists(out_path) else {}
scene = {s.name: s.meta["group"] for s in ds}

rgb = [s.rgb() for s in real]
masks = [np.asarray(s.mask, bool) for s in real]
clean = [cv2.inpaint(img, cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)), 5, cv2.INPAINT_TELEA)
         for img, m in zip(rgb, masks)]


def geometry(m, y0, x0):
    """``(centre y, centre x, side)`` of the C2ST's defect-centred crop of mask ``m`` at ``(y0, x0)``."""
    ys, xs = np.nonzero(m)
    box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    return (box[1] + box[3]) // 2, (box[0] + box[2]) // 2, crop_side(box, None)


def crop_at(img, m, y0, x0):
    """The C2ST's defect-centred crop of mask ``m`` placed at ``(y0, x0)`` in ``img``."""
    return _crop(img, *geometry(m, y0, x0))


def free_at(hmask, m, y0, x0):
    """No pit of the host within the crop plus half a crop (``hmask`` None: a good host)."""
    cy, cx, side = geometry(m, y0, x0)
    return hmask is None or not hmask[max(0, cy - side):cy + side + 1, max(0, cx - side):cx + side + 1].any()


comps = []  # (image index, mask cut, patch cut, (y0, x0), own crop embedding, own surround embedding)
for i, (img, m) in enumerate(zip(rgb, masks)):
    for comp, (y0, x0, y1, x1) in mk.components(m):
        pad = CONTEXT + 2
        ya, xa = max(0, y0 - pad), max(0, x0 - pad)
        yb, xb = min(m.shape[0], y1 + pad), min(m.shape[1], x1 + pad)
        cm = np.zeros((yb - ya, xb - xa), bool)
        cm[y0 - ya:y1 - ya, x0 - xa:x1 - xa] = comp
        patch = np.ascontiguousarray(img[ya:yb, xa:xb])
        comps.append((i, cm, patch, (ya, xa)))
own = emb.embed([crop_at(rgb[i], cm, ya, xa) for i, cm, _, (ya, xa) in comps])
own_clean = emb.embed([crop_at(clean[i], cm, ya, xa) for i, cm, _, (ya, xa) in comps])
ac, ast, ai = crops_and_stats(real, None)
ag = np.array([real[i].meta["group"] for i in ai])
fa = np.hstack([emb.embed(ac), ast])


def make(kind, pick, seed):
    """One synthetic Sample per component (or skipped where no candidate fits)."""
    rng = np.random.default_rng([seed, hosts_kinds.index(kind) if kind in hosts_kinds else 9])
    made, skipped, dist = [], 0, []
    for c, (i, m, patch, _) in enumerate(comps):
        if kind == "other":
            j = int(rng.choice([k for k in range(len(real)) if k != i]))
            host, hname, hmask = rgb[j], real[j].name, masks[j]
        else:
            j = int(rng.integers(len(goods)))
            host, hname, hmask = goods[j].rgb(), goods[j].name, None
        roi = mk.auto_roi(host, 8)
        cands = []
        for _ in range(20 * K):  # the same candidates for every pick (same rng stream)
            try:
                y0, x0 = mk.place(m, roi, rng, min_inside=1.0)
            except Exception:  # the patch does not fit this host's ROI
                break
            if free_at(hmask, m, y0, x0):
                cands.append((y0, x0))
                if len(cands) == K:
                    break
        if not cands:
            skipped += 1
            continue
        if pick == "random":
            best = 0
        elif pick == "surround":
            e = emb.embed([crop_at(host, m, y0, x0) for y0, x0 in cands])
            d = np.linalg.norm(e - own_clean[c], axis=1)
            best = int(np.argmin(d))
            dist.append(float(d[best]))
        else:  # oracle
            pasted = [paste_defect(host, m, patch, y0, x0, "normal", CONTEXT)[0] for y0, x0 in cands]
            e = emb.embed([crop_at(p, m, y0, x0) for p, (y0, x0) in zip(pasted, cands)])
            d = np.linalg.norm(e - own[c], axis=1)
            best = int(np.argmin(d))
            dist.append(float(d[best]))
        y0, x0 = cands[best]
        new, _ = paste_defect(host, m, patch, y0, x0, "normal", CONTEXT)
        lab = np.zeros(host.shape[:2], bool)
        lab[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        made.append(Sample(label="pitting", meta={"source": hname}, image_array=new, mask_array=lab))
    return made, skipped, dist


for seed in seeds:
    for kind in hosts_kinds:
        for pick in picks:
            key = f"{kind}/{pick}/K{K}/s{seed}"
            if key in out:
                continue
            t = time.time()
            syn, skipped, dist = make(kind, pick, seed)
            sc, sst, si = crops_and_stats(syn, None)
            sg = np.array([scene[syn[k].meta["source"]] for k in si])
            fs = np.hstack([emb.embed(sc), sst])
            r = c2st(fa, fs, ag, sg, seed=seed, shared_groups=True)
            res = {"auc": round(r["auc"], 4), "ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)],
                   "backbone": round(c2st(fa[:, :-10], fs[:, :-10], ag, sg, seed=seed, n_boot=0,
                                          shared_groups=True)["auc"], 4),
                   "appearance": round(c2st(fa[:, -10:], fs[:, -10:], ag, sg, seed=seed, n_boot=0,
                                            shared_groups=True)["auc"], 4),
                   "made": len(syn), "skipped": skipped, "seconds": round(time.time() - t, 1),
                   "mean_picked_distance": round(float(np.mean(dist)), 4) if dist else None}
            out[key] = res
            print(key, res, flush=True)
            json.dump(out, open(out_path, "w"), indent=1)
