"""C2ST realism of a synthetic set against BSData's train defects: the numbers the synth card carries.

usage: PYTHONPATH=src python docs/results/issue15/c2st_card.py SYNTH_DIR SEEDS OUT.json   (SEEDS: 0,1,2)
"""
import json
import sys
import time

from defectforge.data import load_dataset
from defectforge.filter.c2st import set_realism

real = [s for s in load_dataset("../shared/datasets/bsdata/split.csv").filter(split="train") if s.is_defect]
syn = [s for s in load_dataset(sys.argv[1]) if s.is_defect]
out = {}
for seed in [int(x) for x in sys.argv[2].split(",")]:
    t = time.time()
    d = set_realism(real, syn, seed=seed)
    d["seconds"] = round(time.time() - t, 1)
    out[seed] = d
    print(seed, json.dumps(d), flush=True)
json.dump(out, open(sys.argv[3], "w"), indent=1)
