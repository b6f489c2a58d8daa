"""Paired differences of an `experiment synsur-regimes` run (its journal), per seed, with a 95 %
t interval over the seeds (n - 1 degrees of freedom). Reads only the journal; chooses nothing.

usage: python docs/results/issue15/box_equal_steps/summarize.py RUN_FOLDER[,RUN_FOLDER...] [OUT.json]
(several folders: the same settings run for other seeds, their journals pooled)
"""
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

recs = [json.loads(x) for run in sys.argv[1].split(",")
        for x in (Path(run) / ".run" / "journal.jsonl").read_text().splitlines() if x.strip()]
by = {(r["condition"], r["seed"]): r for r in recs}
pairs = [("real only", "real + synthetic x1"), ("10 real", "10 real + 50 synthetic")]
out = {"runs": recs, "differences": {}}
for base, other in pairs:
    seeds = sorted(s for (c, s) in by if c == base and (other, s) in by)
    if not seeds:
        continue
    for metric in ("map50", "map50_95"):
        a = np.array([by[(base, s)][metric] for s in seeds])
        b = np.array([by[(other, s)][metric] for s in seeds])
        d = b - a
        n = len(d)
        half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        row = {"seeds": seeds, "base_mean": a.mean(), "base_std": a.std(ddof=1) if n > 1 else float("nan"),
               "other_mean": b.mean(), "other_std": b.std(ddof=1) if n > 1 else float("nan"),
               "diff_mean": d.mean(), "ci95": [d.mean() - half, d.mean() + half], "per_seed": d.tolist()}
        out["differences"][f"{other} vs {base}: {metric}"] = row
        print(f"{other} vs {base} [{metric}] seeds {seeds}: {a.mean():.3f} ± {row['base_std']:.3f} -> "
              f"{b.mean():.3f} ± {row['other_std']:.3f}; diff {d.mean():+.3f} [{d.mean() - half:+.3f}, "
              f"{d.mean() + half:+.3f}]; per seed {' / '.join(f'{x:+.3f}' for x in d)}")
for r in recs:
    print(f"  {r['condition']:<24} seed {r['seed']}: mAP50 {r['map50']:.3f}  mAP50:95 {r['map50_95']:.3f}  "
          f"best val mAP50 {r['best_val_map50']:.3f}  epochs {r['epochs_run']}  {r['seconds']} s")
if len(sys.argv) > 2:
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1, default=float))
