"""Diagnostic: the real-vs-real floor of the C2ST on BSData TRAIN pitting (defect-centred crops),
with halves and folds by image or by scene (wear sequence). Prints one line per seed.

usage: PYTHONPATH=src python docs/results/issue15/c2strecipe/scene_floor_probe.py
"""
import numpy as np
from defectforge.data import load_dataset
from defectforge.filter.c2st import c2st, real_floor
from defectforge.filter.c2st_crops import crops_and_stats
from defectforge.filter.embed import default_embedder
ds = load_dataset("../shared/datasets/bsdata/split.csv")
real = [s for s in ds.filter(split="train") if s.is_defect]
emb = default_embedder(size=96)
rc, rs, rg = crops_and_stats(real, None)
fr = np.hstack([emb.embed(rc), rs]); scene = np.array([real[i].meta["group"] for i in rg])
for seed in [0, 1, 2]:
    f = real_floor(fr, rg, seed=seed)
    imgs = np.unique(rg); half = set(np.random.default_rng(seed).permutation(imgs)[: len(imgs) // 2].tolist())
    a = np.array([int(g) in half for g in rg])
    g2 = c2st(fr[a], fr[~a], scene[a], scene[~a], seed=seed)
    sc = np.unique(scene); hs = set(np.random.default_rng(seed).permutation(sc)[:3].tolist()); b = np.array([s in hs for s in scene])
    g3 = c2st(fr[b], fr[~b], rg[b], rg[~b], seed=seed)
    print(seed, "halves by image, folds by image", round(f["auc"], 3), "| folds by scene", round(g2["auc"], 3), "| halves by scene (3 vs 3), folds by image", round(g3["auc"], 3))
print("halves by scene, folds by scene:")
for seed in range(6):
    sc = np.unique(scene); hs = set(np.random.default_rng(seed).permutation(sc)[:3].tolist()); b = np.array([s in hs for s in scene])
    g4 = c2st(fr[b], fr[~b], scene[b], scene[~b], seed=seed)
    print(seed, sorted(hs), round(g4["auc"], 3), g4["folds"], [round(g4["ci_low"], 3), round(g4["ci_high"], 3)])
