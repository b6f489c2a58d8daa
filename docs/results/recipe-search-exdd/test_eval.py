"""Once, after the search's choices: ExDD real-only vs real + best-recipe synthetic on BSData TEST."""
import json, sys, time
from defectforge.data import load_dataset
from defectforge.detect import ExDD, evaluate_detector
from defectforge.synth2d.config import load_config
from defectforge.synth2d.engine import prepare

search, max_good = sys.argv[1], int(sys.argv[2])
ds = load_dataset("../shared/datasets/bsdata")
train = [s for s in ds if s.split == "train"]
goods = [s for s in train if not s.is_defect][:max_good]
defs = [s for s in train if s.is_defect]
cfg = load_config(f"{search}/best_recipe.yaml")
res = {}
t = time.time()
eng, _ = prepare(cfg, None)
syn = eng.samples(cfg.n)
res["n_synthetic"] = len(syn); res["synth_s"] = round(time.time() - t, 1)
for name, extra in (("real only", []), ("real + recipe", syn)):
    t = time.time()
    m = ExDD(image_size=128, seed=0).fit(goods, defects=defs + extra)
    r = evaluate_detector(m, ds, split="test")["metrics"]
    res[name] = {k: float(r[k]) for k in ("image_auroc", "aupro", "pixel_auroc")} | {"seconds": round(time.time() - t, 1)}
    print(name, res[name], flush=True)
json.dump(res, open(f"{search}/test_eval.json", "w"), indent=1)
