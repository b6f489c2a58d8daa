"""Transplant ladder (issue 15, a diagnostic that chooses nothing): why are transplanted *real*
defects still told apart from real ones? Each rung moves BSData's real TRAIN pits a step further
from where they were, through the transplant generator's own code path
(:meth:`Transplant.cut_patch` + :func:`paste_defect`), and runs the project's C2ST (defect-centred
crops, grouped by scene, a scene's real and synthetic crops in one fold) against the real pits.

Rungs (one synthetic defect per real component, 75 components of the 63 images):
  own_raw     the component's own pixels pasted back at its own place, no resampling (sanity: ~ real)
  own         the code path with zero jitter (rotate 0, scale 1, flip off, colour 0) at its own place
  shift       the same, on its own image, moved along the row or column by 1.5-3 crop sides
              (the new crop, with a margin of half its side, holds none of that image's pits)
  other       on another real defect image (the same worn hosts), at a random place in the ROI
  good        on a random TRAIN good image, at a random place in the ROI (= protocol A, no jitter)
  good_jitter as `good` with the generator's default jitter (= plain `transplant`, random places)
  scene_context  on another photo of the same scene (BSData's wear sequences: photos of one spot;
              pits persist, so the same place is taken), with `placement: context`
  shift_raw   the own_raw cut (no resampling) moved on its own image like `shift`; shift_raw8 /
              shift_raw4: the same moves rounded to whole multiples of 8 / 4 px, so that the pit
              keeps its place on the JPEG 8 x 8 block grid (is the grid phase a giveaway?)
  *_context   as the rung named, with `placement: context` (the host place drawn among those whose
              surround matches the defect's own; options from the env LADDER_CONTEXT as JSON, and
              LADDER_TAG appended to their keys)
Labels: `defect` = the real mask at its new place; `derived` = the engine's label (derive_label:
visibly changed pixels inside the blend support); `support` (own rungs only, where nothing
changes visibly) = the blend support itself, the largest label the engine can give.
The seed drives hosts, places, jitter and the C2ST's folds and bootstrap. TEST is never read.

usage (repo root): PYTHONPATH=src python docs/results/issue15/c2strecipe/transplant_ladder.py \
    SEEDS RUNGS BLENDS LABELS OUT.json
  e.g. 0 own_raw,own,shift,other,good,good_jitter normal,mixed,alpha,matched defect,derived,support ladder.json
"""
import json
import os
import sys
import time

import cv2
import numpy as np

from defectforge.data import load_dataset
from defectforge.filter.c2st import c2st
from defectforge.filter.c2st_crops import APPEARANCE, crop_side, crops_and_stats
from defectforge.filter.embed import default_embedder
from defectforge.data.sample import Sample
from defectforge.synth2d import masks as mk
from defectforge.synth2d.base import RealDefect
from defectforge.synth2d.labels import derive_label
from defectforge.synth2d.placement import cut_surround
from defectforge.synth2d.transplant import Transplant, mk_disk, paste_defect

CONTEXT = 12  # px cut around a component, as real_defects_from does
CONTEXT_OPTS = json.loads(os.environ.get("LADDER_CONTEXT", "{}"))  # e.g. {"top": 0.05}: placement options
seeds = [int(x) for x in sys.argv[1].split(",")]
rungs, blends, labels, out_path = sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4].split(","), sys.argv[5]
ds = load_dataset("../shared/datasets/bsdata/split.csv")
real = [s for s in ds.filter(split="train") if s.is_defect]
goods = [s for s in ds.filter(split="train") if not s.is_defect]
emb = default_embedder(size=96)
out = json.load(open(out_path)) if os.path.exists(out_path) else {}

rgb = [s.rgb() for s in real]
masks = [np.asarray(s.mask, bool) for s in real]
comps = []  # (image index, RealDefect, (y0, x0) of the cut in the image)
for i, (img, m) in enumerate(zip(rgb, masks)):
    H, W = m.shape
    for comp, (y0, x0, y1, x1) in mk.components(m):
        ya, xa, yb, xb = max(0, y0 - CONTEXT), max(0, x0 - CONTEXT), min(H, y1 + CONTEXT), min(W, x1 + CONTEXT)
        cm = np.zeros((yb - ya, xb - xa), bool)
        cm[y0 - ya:y1 - ya, x0 - xa:x1 - xa] = comp
        comps.append((i, RealDefect(np.ascontiguousarray(img[ya:yb, xa:xb]), cm, real[i].name,
                                    surround=cut_surround(img, m, comp, (y0, x0, y1, x1))), (ya, xa)))
ac, ast, ai = crops_and_stats(real, None)
ag = np.array([real[i].meta["group"] for i in ai])
fa = np.hstack([emb.embed(ac), ast])
scene = {s.name: s.meta["group"] for s in ds}


def free_at(hmask, m, y0, x0):
    """The defect's crop, with a margin of half its side, holds none of the host's own pits."""
    ys, xs = np.nonzero(m)
    box = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    side = crop_side(box, None)
    cy, cx = (box[1] + box[3]) // 2, (box[0] + box[2]) // 2
    return hmask is None or not hmask[max(0, cy - side):cy + side + 1, max(0, cx - side):cx + side + 1].any()


def fits(shape, m, y0, x0, roi=None):
    H, W = shape[:2]
    ph, pw = m.shape
    if y0 < 0 or x0 < 0 or y0 + ph > H or x0 + pw > W:
        return False
    return roi is None or roi[y0:y0 + ph, x0:x0 + pw][m].all()


def shifted(host, hmask, m, y0, x0, rng, snap=None):
    """``(y0, x0)`` moved along the row or column by 1.5-3 crop sides, to the first of the moves
    (in a random order) where the defect fits and its crop holds none of the host's pits; with
    ``snap`` the move is rounded to a multiple of ``snap`` px (``None``: the `shift` rung's own
    rounding, kept so that its numbers reproduce). ``None`` when no move fits."""
    side = crop_side((0, 0, m.shape[1], m.shape[0]), None)
    cand = [(f * side * dy, f * side * dx) for f in (1.5, 2.0, 3.0) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    for c in rng.permutation(len(cand)):
        if snap is None:
            ny, nx = int(y0 + cand[c][0]), int(x0 + cand[c][1])
        else:
            ny = y0 + int(round(int(cand[c][0]) / snap)) * snap
            nx = x0 + int(round(int(cand[c][1]) / snap)) * snap
        if fits(host.shape, m, ny, nx) and free_at(hmask, m, ny, nx):
            return ny, nx
    return None


def make(rung, blend, label, seed):
    """One synthetic Sample per real component (or None where no host place was found)."""
    rng = np.random.default_rng([seed, rungs_all.index("shift_raw" if rung in SHIFTED else rung)])
    jit = {} if "jitter" in rung else {"rotate": 0.0, "scale": (1.0, 1.0), "flip": False, "color": 0.0}
    gen = Transplant(defect_type="pitting", blend=blend, placement="context" if "context" in rung else "random",
                     **CONTEXT_OPTS, **jit)
    made, skipped = [], 0
    for i, r, (ya, xa) in comps:
        if rung in RAW:  # the cut itself, trimmed as cut_patch trims it, no warp
            ys, xs = np.nonzero(r.mask)
            pad = gen.config.context + 2
            ta, tb = max(0, ys.min() - pad), min(r.mask.shape[0], ys.max() + 1 + pad)
            la, lb = max(0, xs.min() - pad), min(r.mask.shape[1], xs.max() + 1 + pad)
            m, patch = r.mask[ta:tb, la:lb], r.image[ta:tb, la:lb]
            y0, x0 = ya + ta, xa + la
            host, hname, hmask = rgb[i], real[i].name, None
        else:
            m, patch, _ = gen.cut_patch(r, rng)
            # where the (possibly warped) mask's centroid matches the component's own centroid
            ys, xs = np.nonzero(r.mask)
            my, mx = np.nonzero(m)
            y0 = int(round(ya + ys.mean() - my.mean()))
            x0 = int(round(xa + xs.mean() - mx.mean()))
            if rung in ("own", "shift"):
                host, hname, hmask = rgb[i], real[i].name, masks[i]
            elif rung == "scene_context":  # another photo of the same scene (a wear sequence), matched place
                same = [k for k in range(len(real)) if k != i and real[k].meta["group"] == real[i].meta["group"]]
                if not same:
                    skipped += 1
                    continue
                j = int(rng.choice(same))
                host, hname, hmask = rgb[j], real[j].name, masks[j]
            elif rung.startswith("other"):
                j = int(rng.choice([k for k in range(len(real)) if k != i]))
                host, hname, hmask = rgb[j], real[j].name, masks[j]
            else:
                j = int(rng.integers(len(goods)))
                host, hname, hmask = goods[j].rgb(), goods[j].name, None
            if rung == "shift":
                got = shifted(host, hmask, m, y0, x0, rng)
                if got is None:
                    skipped += 1
                    continue
                y0, x0 = got
            elif "context" in rung:
                roi = mk.auto_roi(host, 8)
                if hmask is not None:  # keep the crop and its margin off the host's own pits
                    side = crop_side((0, 0, m.shape[1], m.shape[0]), None)
                    roi &= cv2.dilate(hmask.astype(np.uint8), np.ones((2 * side + 1,) * 2, np.uint8)) == 0
                others = [comps[int(q)][1] for q in rng.choice(len(comps), gen.config.candidates - 1, replace=False)]
                got = gen._context_place(host, [r] + others, roi, rng)  # candidates > 1: may pick another defect
                if got is None:
                    skipped += 1
                    continue
                y0, x0, _, m, patch, _ = got
            elif rung in ("other", "good", "good_jitter"):
                roi = mk.auto_roi(host, 8)
                for _ in range(50):
                    y0, x0 = mk.place(m, roi, rng, min_inside=1.0)
                    if free_at(hmask, m, y0, x0):
                        break
                else:
                    skipped += 1
                    continue
        if rung in SHIFTED:  # the raw cut moved along its own image, optionally on the JPEG grid
            host, hmask = rgb[i], masks[i]
            got = shifted(host, hmask, m, y0, x0, rng, snap=RAW[rung])
            if got is None:
                skipped += 1
                continue
            y0, x0 = got
        if not fits(host.shape, m, y0, x0):
            skipped += 1
            continue
        new, changed = paste_defect(host, m, patch, y0, x0, blend, gen.config.context)
        if label == "defect":
            lab = np.zeros(host.shape[:2], bool)
            lab[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        elif label == "support":
            lab = np.zeros(host.shape[:2], bool)  # paste_defect's blend support: m dilated by `context`
            d = cv2.dilate(m.astype(np.uint8), mk_disk(gen.config.context)) > 0
            lab[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = d
        else:
            res = derive_label(host, new, changed, label="pitting")
            if not res.accepted:
                skipped += 1
                continue
            lab = res.mask
        made.append(Sample(label="pitting", meta={"source": hname}, image_array=new, mask_array=lab))
    return made, skipped


rungs_all = ["own_raw", "own", "shift", "other", "good", "good_jitter", "other_context", "good_context",
             "good_jitter_context", "scene_context", "shift_raw", "shift_raw8", "shift_raw4"]
RAW = {"own_raw": 1, "shift_raw": 1, "shift_raw8": 8, "shift_raw4": 4}  # rungs of the unwarped cut: grid step
SHIFTED = tuple(RAW)[1:]
# support only where nothing changes visibly (own place); derived labels elsewhere
ALLOWED = {"own_raw": ("defect",), "own": ("defect", "support")}
ALLOWED.update({r: ("defect", "derived") for r in rungs_all[2:]})
ALLOWED.update({r: ("defect",) for r in SHIFTED})


def rnd(r):
    return {"auc": round(r["auc"], 4), "ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)], "n": [r["n_a"], r["n_b"]]}


for seed in seeds:
    for rung in rungs:
        for blend in (["none"] if rung in RAW else blends):
            for label in labels:
                if label not in ALLOWED[rung]:
                    continue
                key = f"{rung}/{blend}/{label}/s{seed}" + (os.environ.get("LADDER_TAG", "") if "context" in rung else "")
                if key in out:
                    continue
                t = time.time()
                syn, skipped = make(rung, "normal" if blend == "none" else blend, label, seed)
                sc, sst, si = crops_and_stats(syn, None)
                sg = np.array([scene[syn[k].meta["source"]] for k in si])
                fs = np.hstack([emb.embed(sc), sst])
                r = rnd(c2st(fa, fs, ag, sg, seed=seed, shared_groups=True))
                r["backbone"] = round(c2st(fa[:, :-10], fs[:, :-10], ag, sg, seed=seed, n_boot=0, shared_groups=True)["auc"], 4)
                r["appearance"] = round(c2st(fa[:, -10:], fs[:, -10:], ag, sg, seed=seed, n_boot=0, shared_groups=True)["auc"], 4)
                r["median_stats_synth"] = {k: round(float(v), 2) for k, v in zip(APPEARANCE[:7], np.median(sst, 0))}
                r["made"], r["skipped"], r["seconds"] = len(syn), skipped, round(time.time() - t, 1)
                out[key] = r
                print(key, {k: r[k] for k in ("auc", "ci", "backbone", "appearance", "made", "skipped")}, flush=True)
                json.dump(out, open(out_path, "w"), indent=1)
out["median_stats_real"] = {k: round(float(v), 2) for k, v in zip(APPEARANCE[:7], np.median(ast, 0))}
json.dump(out, open(out_path, "w"), indent=1)
