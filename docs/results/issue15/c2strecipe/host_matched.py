"""Host-matched C2ST (a diagnostic of the test, chooses nothing): synthetic defects are made on
the *real defect images* instead of the good images, so both sides share the host domain.

Per seed the 63 BSData TRAIN pitting images are split at random into halves A and B. Real side:
the defect-centred crops of A's real pits (the generators fit on A, as in protocol A). Synthetic
side: N samples made on B's images as hosts (B's own pits unlabelled; a synthetic sample is
dropped when its crop, with a margin of half its side, touches one of B's real pits). Crops are
grouped by host image. Floors: real A vs real B (real pits on both sides), and the host-only test
between A and B (defect-free crops) to check that the hosts match.

usage: PYTHONPATH=src python docs/results/issue15/c2strecipe/host_matched.py SEEDS NAMES N OUT.json [GROUPS]
  GROUPS: image (A's crops by image, synthetic crops by host photo; host_matched.json) or scene
  (both by scene, a scene's real and synthetic crops in one fold: the test's default now)
"""
import json
import os
import sys
import time

import numpy as np

from defectforge.data import load_dataset
from defectforge.filter.c2st import c2st, host_c2st
from defectforge.filter.c2st_crops import crop_side, crops_and_stats, instances
from defectforge.filter.embed import default_embedder
from defectforge.synth2d.engine import generate_samples

SETS = {"pitting": ("pitting", {}), "transplant": ("transplant", {"defect_type": "pitting"}),
        "fitted": ("fitted", {"defect_type": "pitting", "placement": "prior"}),  # the default before 2026-12-04 23:50
        "fitted_context": ("fitted", {"defect_type": "pitting", "placement": "context"}),
        "transplant_matched": ("transplant", {"defect_type": "pitting", "blend": "matched"}),
        "transplant_context": ("transplant", {"defect_type": "pitting", "placement": "context"}),
        "transplant_matched2_context": ("transplant", {"defect_type": "pitting", "blend": "matched", "context": 2,
                                                       "placement": "context"}),
        "best_recipe": ("pitting", {"defect_type": "pitting", "mask": "real", "darkness": [0.1141, 0.1902]})}
seeds = [int(x) for x in sys.argv[1].split(",")]
names, n, out_path = sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
real = [s for s in load_dataset("../shared/datasets/bsdata/split.csv").filter(split="train") if s.is_defect]
emb = default_embedder(size=96)
by_scene = (sys.argv[5] if len(sys.argv) > 5 else "image") == "scene"
out = json.load(open(out_path)) if os.path.exists(out_path) else {}


def rnd(r):
    return {"auc": round(r["auc"], 4), "ci": [round(r["ci_low"], 4), round(r["ci_high"], 4)], "n": [r["n_a"], r["n_b"]],
            "images": [r["images_a"], r["images_b"]]}


for seed in seeds:
    perm = np.random.default_rng(seed).permutation(len(real))
    A = [real[i] for i in perm[: len(real) // 2 + 1]]
    B = [real[i] for i in perm[len(real) // 2 + 1:]]
    ac, ast, ag = crops_and_stats(A, None)
    if by_scene:
        ag = np.array([A[i].meta["group"] for i in ag])
    fa = np.hstack([emb.embed(ac), ast])
    if f"floor/s{seed}" not in out:
        bc, bst, bg = crops_and_stats(B, None)
        if by_scene:
            bg = np.array([B[i].meta["group"] for i in bg])
        out[f"floor/s{seed}"] = rnd(c2st(fa, np.hstack([emb.embed(bc), bst]), ag, bg, seed=seed, shared_groups=by_scene))
        out[f"host_floor/s{seed}"] = rnd(host_c2st(A, B, emb, None, seed=seed, group_key="group" if by_scene else None))
        print("floor A vs B", seed, out[f"floor/s{seed}"], "host-only A vs B", out[f"host_floor/s{seed}"], flush=True)
    bmask = {s.name: s.mask for s in B}
    bscene = {s.name: s.meta["group"] for s in B}
    for name in names:
        key = f"{name}/s{seed}"
        if key in out:
            continue
        t = time.time()
        gen, params = SETS[name]
        syn = generate_samples(B, gen, n, seed=seed, real_defects=A, **params)
        keep = []
        for s in syn:
            m = bmask[s.meta["source"]]
            ok = True
            for _, box in instances(s.mask, 4):
                side = crop_side(box, None)
                cy, cx = (box[1] + box[3]) // 2, (box[0] + box[2]) // 2
                ok &= not m[max(0, cy - side):cy + side + 1, max(0, cx - side):cx + side + 1].any()
            if ok:
                keep.append(s)
        sc, sst, sg = crops_and_stats(keep, None)
        host = np.array([keep[i].meta["source"] for i in sg])
        hg = np.array([bscene[h] for h in host]) if by_scene else np.unique(host, return_inverse=True)[1]
        fs = np.hstack([emb.embed(sc), sst])
        r = rnd(c2st(fa, fs, ag, hg, seed=seed, shared_groups=by_scene))
        r["backbone"] = round(c2st(fa[:, :-10], fs[:, :-10], ag, hg, seed=seed, n_boot=0, shared_groups=by_scene)["auc"], 4)
        r["appearance"] = round(c2st(fa[:, -10:], fs[:, -10:], ag, hg, seed=seed, n_boot=0, shared_groups=by_scene)["auc"], 4)
        r["made"], r["kept"], r["seconds"] = len(syn), len(keep), round(time.time() - t, 1)
        out[key] = r
        print(key, r, flush=True)
        json.dump(out, open(out_path, "w"), indent=1)
json.dump(out, open(out_path, "w"), indent=1)
