"""Mean +- std over seeds of transplant_ladder.json (or another ladder file): one row per
rung / blend / label (and tag). usage: python ladder_table.py LADDER.json"""
import json
import sys
from collections import defaultdict

import numpy as np

d = json.load(open(sys.argv[1]))
rows = defaultdict(dict)
for k, v in d.items():
    if "/s" not in k:
        continue
    parts = k.split("/")
    seed = [p for p in parts if p.startswith("s") and p[1:].isdigit()][0]
    rows["/".join(p for p in parts if p != seed)][seed] = v
print("| rung / blend / label | seeds | C2ST AUC (mean ± std) | per seed (95 % interval) | backbone / appearance (mean) |")
print("|---|---|---|---|---|")
for name, by in rows.items():
    a = np.array([v["auc"] for v in by.values()])
    per = "; ".join(f"{v['auc']:.3f} ({v['ci'][0]:.3f}-{v['ci'][1]:.3f})" for _, v in sorted(by.items()))
    bb = np.mean([v["backbone"] for v in by.values()])
    ap = np.mean([v["appearance"] for v in by.values()])
    print(f"| {name} | {len(a)} | {a.mean():.3f} ± {a.std():.3f} | {per} | {bb:.3f} / {ap:.3f} |")
