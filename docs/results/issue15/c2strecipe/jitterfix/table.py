"""Paired old-vs-new table of the jitter_mask fix (protocol B, 10 seeds; protocol A fitted, 3 seeds)."""
import json, sys
import numpy as np
from scipy import stats
D = sys.argv[1]
o = json.load(open(f"{D}/placement_b_old_1eeaf8d.json")); n = json.load(open(f"{D}/placement_b_new.json"))
def row(name, a, b, ha=None, hb=None):
    d = b - a; k = len(d); m = d.mean(); h = stats.t.ppf(0.975, k - 1) * d.std(ddof=1) / np.sqrt(k)
    print(f"| {name} | {k} | {a.mean():.3f} ± {a.std(ddof=1):.3f} | {b.mean():.3f} ± {b.std(ddof=1):.3f} | "
          f"{m:+.3f} [{m - h:+.3f}, {m + h:+.3f}] | {int((d < 0).sum())} of {k} |")
print("| set | seeds | C2ST before (1eeaf8d) | after | after minus before [95 % t-interval] | seeds lower after |")
print("|---|---|---|---|---|---|")
for s, label in (("random", "`transplant`, defaults (protocol B)"), ("nojitter", "`transplant`, no jitter (protocol B)"),
                 ("fitted_context", "`fitted`, defaults (protocol B)")):
    a = np.array([o[f"{s}/s{i}"]["c2st_auc"] for i in range(10)]); b = np.array([n[f"{s}/s{i}"]["c2st_auc"] for i in range(10)])
    row(label, a, b)
a = np.array([json.load(open(f"{D}/cards_old_1eeaf8d/realism_fitted_s{S}.json"))["c2st_auc"] for S in range(3)])
b = np.array([json.load(open(f"{D}/cards_new/realism_fitted_s{S}.json"))["c2st_auc"] for S in range(3)])
row("`fitted`, defaults (protocol A, synth card)", a, b)
