"""Diagnostic (chooses nothing by itself): what the C2ST sees in other crop designs, seed by seed.

variants, all on BSData TRAIN pitting (real) vs out/c2st_<NAME>_s<SEED>:
  scaleX    defect-centred crops of X x the box side (backbone + appearance)
  blurS     scale-2 crops, every crop (both sets) Gaussian-blurred with sigma S px at native resolution
  jpegQ     scale-2 crops, every crop (both sets) JPEG-encoded at quality Q and decoded
  pairedX   the same, but the backbone part is the crop's features minus those of a reference crop
            of the same size from the same image at the nearest defect-free place (host-controlled)
usage: PYTHONPATH=src python docs/results/issue15/c2strecipe/crop_variants.py SEEDS NAMES VARIANTS OUT.json
"""
import json
import os
import sys

import numpy as np

import defectforge.filter.c2st_crops as cc
from defectforge.data import load_dataset
from defectforge.filter.c2st import c2st, real_floor
from defectforge.filter.embed import default_embedder


def reference_crops(samples, max_per_image=4):
    """per instance: a same-size crop at the nearest defect-free place (rings of 8 directions)."""
    out = []
    for s in samples:
        m = s.mask
        if m is None or not m.any():
            continue
        rgb = s.rgb()
        h, w = m.shape
        for _, box in cc.instances(m, max_per_image):
            side = cc.crop_side(box, None)
            cy, cx = (box[1] + box[3]) // 2, (box[0] + box[2]) // 2
            got = None
            for r in np.arange(1.0, 8.0, 0.5):
                for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
                    y, x = int(cy + dy * r * side), int(cx + dx * r * side)
                    if not (0 <= y < h and 0 <= x < w):
                        continue
                    if m[max(0, y - side):y + side + 1, max(0, x - side):x + side + 1].any():
                        continue
                    got = cc._crop(rgb, y, x, side)
                    break
                if got is not None:
                    break
            out.append(got if got is not None else cc._crop(rgb, cy, cx, side))
    return out


def post(crops, v):
    import cv2

    if v.startswith("blur"):
        s = float(v[4:])
        return [cv2.GaussianBlur(c, (0, 0), s) for c in crops]
    if v.startswith("jpeg"):
        q = int(v[4:])
        return [cv2.imdecode(cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)
                for c in crops]
    return crops


seeds = [int(x) for x in sys.argv[1].split(",")]
names, variants, out_path = sys.argv[2].split(","), sys.argv[3].split(","), sys.argv[4]
real = [s for s in load_dataset("../shared/datasets/bsdata/split.csv").filter(split="train") if s.is_defect]
emb = default_embedder(size=96)
out = json.load(open(out_path)) if os.path.exists(out_path) else {}
for v in variants:
    cc.DEFECT_SCALE = 2.0 if v.startswith(("blur", "jpeg")) else float(v.lstrip("scalepaired"))
    rc, rs, rg = cc.crops_and_stats(real, None)
    fr = emb.embed(post(rc, v))
    if v.startswith("paired"):
        fr = fr - emb.embed(reference_crops(real))
    for seed in seeds:
        fl = real_floor(np.hstack([fr, rs]), rg, seed=seed)
        out[f"floor/{v}/s{seed}"] = round(fl["auc"], 4)
        print(v, seed, "floor", out[f"floor/{v}/s{seed}"], flush=True)
    for name in names:
        for seed in seeds:
            syn = [s for s in load_dataset(f"out/c2st_{name}_s{seed}") if s.is_defect]
            sc, ss, sg = cc.crops_and_stats(syn, None)
            fs = emb.embed(post(sc, v))
            if v.startswith("paired"):
                fs = fs - emb.embed(reference_crops(syn))
            r = {"all": c2st(np.hstack([fr, rs]), np.hstack([fs, ss]), rg, sg, seed=seed)["auc"],
                 "backbone": c2st(fr, fs, rg, sg, seed=seed, n_boot=0)["auc"]}
            out[f"{name}/{v}/s{seed}"] = {k: round(x, 4) for k, x in r.items()}
            print(v, name, seed, out[f"{name}/{v}/s{seed}"], flush=True)
            json.dump(out, open(out_path, "w"), indent=1)
