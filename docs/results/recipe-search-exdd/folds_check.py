"""Validation-only diagnostic: the chosen recipe (trial 4) vs real only on two more guide/validation splits."""
import json, time, yaml
from pathlib import Path
from defectforge.data import load_dataset
from defectforge.recipe.search import SearchSettings, carve_splits, score_folds
ds = load_dataset("../shared/datasets/bsdata")
st = SearchSettings(detector="exdd", image_size=128, max_good=60, max_val_good=40, seed=0)
summ = json.load(open("/tmp/recipe/bs/search/search.json"))
import optuna
study = optuna.load_study(study_name="recipe-search", storage="sqlite:////tmp/recipe/bs/search/study.db")
recipe = study.trials[4].user_attrs["recipe"]
out = {}
for k in (1, 2):
    sp = carve_splits(ds, st, k)
    for name, rec in (("real only", None), ("trial 4 recipe", recipe)):
        t = time.time()
        m, n = score_folds(rec, [sp], st, str(Path("../shared/datasets/bsdata").resolve()), Path("/tmp/recipe/bs/fw"), 4000 + k)
        m["n_synthetic"] = n; m["seconds"] = round(time.time() - t, 1)
        out[f"fold{k} {name}"] = m
        print(k, name, m, flush=True)
json.dump(out, open("/tmp/recipe/bs/folds_check.json", "w"), indent=1)
