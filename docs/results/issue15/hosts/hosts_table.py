"""Table of hosts_b.json: C2ST and host-only AUC per set, and the paired difference (same
seed) of `hosts: similar` minus `hosts: all` for each generator, with a 95 % t-interval.

usage: python docs/results/issue15/hosts/hosts_table.py docs/results/issue15/hosts/hosts_b.json
"""
import json
import sys

import numpy as np
from scipy import stats

res = json.load(open(sys.argv[1]))
runs = {k: v for k, v in res.items() if "/s" in k}
seeds = sorted({int(k.split("/s")[1]) for k in runs})


def col(name, key):
    return np.array([runs[f"{name}/s{s}"][key] for s in seeds if f"{name}/s{s}" in runs], float)


def ci(d):
    m, h = d.mean(), stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{m:+.3f} [{m - h:+.3f}, {m + h:+.3f}]"


print(f"splits: {res.get('splits')}; split_by: {res.get('split_by')}; seeds {seeds}\n")
print("| generator | hosts | seeds | C2ST (mean ± std) | host-only (mean ± std) | similar minus all, paired: C2ST | host-only |")
print("|---|---|---|---|---|---|---|")
for gen in ("transplant", "fitted", "pitting"):
    for name, hosts in ((gen, "all"), (f"{gen}_similar", "similar")):
        c, h = col(name, "c2st_auc"), col(name, "c2st_host_auc")
        extra = "| | |"
        if hosts == "similar":
            extra = f"| {ci(c - col(gen, 'c2st_auc'))} | {ci(h - col(gen, 'c2st_host_auc'))} |"
        print(f"| `{gen}` | `{hosts}` | {len(c)} | {c.mean():.3f} ± {c.std(ddof=1):.3f} | "
              f"{h.mean():.3f} ± {h.std(ddof=1):.3f} {extra}")
