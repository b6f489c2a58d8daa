"""ExDD image scores vs PatchCore on BSData test; the image score is chosen on validation inside fit.

usage: PYTHONPATH=src python docs/results/issue15/exdd_image_scores.py 0,1,2 OUT.json [exdd-only] [size=N] [pc_ratio=R]
Reduced settings by default: image_size=160, PatchCore normal_ratio=0.01 (ExDD keeps its defaults);
`size=256 pc_ratio=0.1` runs both at the README's defaults. Test AUROCs of every candidate are printed
for the record only; nothing is chosen from them.
"""
import json, sys, time, warnings
import numpy as np
from defectforge.data import load_dataset
from defectforge.detect.exdd import ExDD, PatchCore
from defectforge.detect.image_score import final_scores
from defectforge.metrics import auroc

ds = load_dataset("../shared/datasets/bsdata/split.csv")
train, test = ds.filter(split="train"), list(ds.filter(split="test"))
normal = [s for s in train if not s.is_defect]
defects = [s for s in train if s.is_defect]
y = np.array([s.is_defect for s in test])
opts = dict(a.split("=", 1) for a in sys.argv[3:] if "=" in a)
size, pc_ratio = int(opts.get("size", 160)), float(opts.get("pc_ratio", 0.01))
out = {}
for seed in [int(x) for x in sys.argv[1].split(",")]:
    row = {}
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ExDD(image_size=size, seed=seed).fit(normal, {"real": defects})
    row["exdd_fit_s"] = round(time.time() - t, 1)
    info = m.fit_info_["image_score"]
    row["chosen"] = info["chosen"]; row["val_auroc"] = info["val_auroc"]; row["val_ap"] = info.get("val_ap")
    row["reason"] = info["reason"]
    row["n_val"] = [info["n_val_normal"], info["n_val_defect"]]
    raw, _ = m._score(test, keep_input_maps=False)
    for name in ("weighted", "max", "patch_max", "topk", "nn_max"):
        row[f"test_{name}"] = round(float(auroc(y, raw[name])), 4)
    row["test_fusion"] = round(float(auroc(y, final_scores("fusion", raw, info["fusion"]))), 4)
    row["test_chosen"] = row[f"test_{info['chosen']}"]
    if "exdd-only" in sys.argv[3:]:
        out[seed] = row
        print(seed, json.dumps(row), flush=True)
        json.dump(out, open(sys.argv[2], "w"), indent=1)
        continue
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pc = PatchCore(image_size=size, normal_ratio=pc_ratio, seed=seed).fit(normal, defects)
    row["patchcore_test"] = round(float(auroc(y, pc.predict(test).pred_score)), 4)
    row["patchcore_s"] = round(time.time() - t, 1)
    out[seed] = row
    print(seed, json.dumps(row), flush=True)
    json.dump(out, open(sys.argv[2], "w"), indent=1)
