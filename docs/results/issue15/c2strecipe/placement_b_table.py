"""Paired summary of placement_b.json: per set mean +- std over the seeds it has, and the paired
difference to `random` (plain transplant; for `fitted*` sets: to `fitted`) (same seed: same split, same folds) with a 95 % t-interval.
usage: python placement_b_table.py placement_b.json"""
import json
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

d = json.load(open(sys.argv[1]))
auc, host = defaultdict(dict), defaultdict(dict)
for k, v in d.items():
    if "/s" in k and v.get("c2st_auc") is not None:
        name, s = k.split("/s")
        auc[name][int(s)], host[name][int(s)] = v["c2st_auc"], v.get("c2st_host_auc")
print("| set (protocol B) | seeds | C2ST AUC (mean ± std) | host-only (mean) | minus `random` (or `fitted`), paired [95 % t-interval] |")
print("|---|---|---|---|---|")
for name, by in auc.items():
    a = np.array(list(by.values()))
    line = f"| {name} | {len(a)} | {a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} | {np.mean(list(host[name].values())):.3f} |"
    base = "fitted" if name.startswith("fitted") else "random"
    common = sorted(set(by) & set(auc[base]))
    if name != base and len(common) > 1:
        diff = np.array([by[s] - auc[base][s] for s in common])
        h = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
        line += f" {diff.mean():+.3f} [{diff.mean() - h:+.3f}, {diff.mean() + h:+.3f}] ({len(diff)} seeds) |"
    else:
        line += " |"
    print(line)
