"""ExDD's image score options (paper / max / topk / fusion / auto) and their choice on validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from test_detect_model import SMALL, H, W, toy_samples

from defectforge.detect.exdd import ExDD, PatchCore
from defectforge.detect.image_score import AUTO_CANDIDATES, choose, final_scores, fusion_score
from defectforge.errors import ConfigError
from defectforge.metrics import auroc


def _fit(train, defects, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ExDD(**{**SMALL, **kw}).fit(train, defects)


@pytest.fixture(scope="module")
def data():
    return toy_samples(0, 16, 0, "train"), toy_samples(1, 0, 12, "train"), toy_samples(2, 6, 6, "test")


@pytest.fixture(scope="module")
def auto(data):
    train, defects, _ = data
    return _fit(train, {"real": defects})


def test_auto_crossfits_real_defects_and_picks_the_best_on_validation(auto):
    info = auto.fit_info_["image_score"]
    # every real defect validates (out of fold) and every one is in the model's bank
    assert info["param"] == "auto" and info["n_val_defect"] == 12
    assert auto.fit_info_["defect_validation"] == {"mode": "crossfit", "folds": round(1 / 0.2), "by": "image"}
    assert info["n_val_normal"] == auto.fit_info_["n_val_normal"] >= 1
    assert auto.fit_info_["n_defect_images_in_bank"] == 12
    assert auto.fit_info_["defect_sets"][0]["validation"] == 12
    assert auto.fit_info_["defect_sets"][0]["images"] == 12
    assert set(info["val_auroc"]) == set(AUTO_CANDIDATES)
    best = max(v for v in info["val_auroc"].values() if v is not None)
    assert info["val_auroc"][info["chosen"]] == best and auto.image_score_ == info["chosen"]
    assert info["fusion"] is not None and len(info["fusion"]["coef"]) == 2


def test_the_choice_never_sees_test_images(data, monkeypatch):
    """Every image scored during fit is one of the training inputs; test images play no part."""
    train, defects, test = data
    seen: list[int] = []
    orig = ExDD._score

    def spy(self, items, *a, **k):
        seen.extend(id(x) for x in items)
        return orig(self, items, *a, **k)

    monkeypatch.setattr(ExDD, "_score", spy)
    m = _fit(train, {"real": defects})
    allowed = {id(x) for x in train + defects}
    assert seen and set(seen) <= allowed and not set(seen) & {id(x) for x in test}
    val_def = [d for d in defects if id(d) in set(seen)]
    assert len(val_def) == 12  # every real defect scored once, out of fold, as a positive
    assert sum(x in {id(d) for d in defects} for x in seen) == 12
    monkeypatch.setattr(ExDD, "_score", orig)
    again = _fit(train, {"real": defects})  # deterministic: the same choice without any test data
    assert again.fit_info_["image_score"] == m.fit_info_["image_score"]


def test_out_of_fold_defects_are_scored_by_a_bank_without_them(data, monkeypatch):
    """While a validation defect is scored, none of its own rows is in the defect bank in use;
    the model keeps a bank built from all of them."""
    train, defects, _ = data
    checked: list[int] = []
    orig = ExDD._score
    ids = {id(d): d for d in defects}

    def spy(self, items, *a, **k):
        for it in items:
            if id(it) in ids:
                own = self._defect_rows(it, 0)
                bank = {r.tobytes() for r in self.bank_defect_}
                assert own is not None and not any(r.tobytes() in bank for r in own)
                checked.append(id(it))
        return orig(self, items, *a, **k)

    monkeypatch.setattr(ExDD, "_score", spy)
    m = _fit(train, {"real": defects})
    assert sorted(checked) == sorted(ids)
    final = {r.tobytes() for r in m.bank_defect_}
    assert any(r.tobytes() in final for d in defects for r in m._defect_rows(d, 0))


def test_holdout_keeps_a_share_out_of_the_bank(data):
    train, defects, _ = data
    m = _fit(train, {"real": defects}, defect_val="holdout")
    info = m.fit_info_["image_score"]
    assert info["n_val_defect"] == round(0.2 * 12) == 2 and m.fit_info_["n_defect_images_in_bank"] == 10
    assert m.fit_info_["defect_sets"][0]["validation"] == 2 and m.fit_info_["defect_sets"][0]["images"] == 12
    assert m.fit_info_["defect_validation"] == {"mode": "holdout"}
    with pytest.raises(ConfigError, match="defect_val must be"):
        _fit(train, defects, defect_val="kfold")


def _grouped(defects, n_groups):
    return [d.with_(meta={**d.meta, "group": f"seq{i % n_groups}"}) for i, d in enumerate(defects)]


def test_crossfit_folds_keep_each_group_in_one_fold():
    from defectforge.detect.image_score import crossfit_folds

    defects = toy_samples(1, 0, 13, "train")
    g = _grouped(defects, 6)
    folds, by, why = crossfit_folds({"real": g}, 0.2, 0, "auto")
    assert by == "group" and why is None and len(folds) == 5
    owner = {}
    for f, fold in enumerate(folds):
        for _, i in fold:
            owner.setdefault(g[i].meta["group"], set()).add(f)
    assert all(len(v) == 1 for v in owner.values()) and len(owner) == 6
    assert sorted(i for fold in folds for _, i in fold) == list(range(13))
    assert max(map(len, folds)) - min(map(len, folds)) <= 3  # balanced by size (groups of 2-3)
    # image: the old draw, bit for bit; auto without groups is image; 1 group: no folds, said why
    old = np.random.default_rng([0, 15]).permutation(13)
    assert crossfit_folds({"real": g}, 0.2, 0, "image")[0] == [sorted(("real", int(j)) for j in old[f::5])
                                                             for f in range(5)]
    assert crossfit_folds({"real": defects}, 0.2, 0, "auto")[1] == "image"
    assert crossfit_folds({"real": _grouped(defects, 1)}, 0.2, 0, "auto")[1] == "image"
    with pytest.raises(ConfigError, match="has no group"):
        crossfit_folds({"real": g[:5] + defects[5:]}, 0.2, 0, "group")
    two, by2, _ = crossfit_folds({"real": _grouped(defects, 2)}, 0.2, 0, "group")
    assert by2 == "group" and len(two) == 2  # never more folds than groups


def test_exdd_cuts_grouped_defects_by_group_and_old_files_load_as_by_image(data, tmp_path):
    train, defects, _ = data
    m = _fit(train, {"real": _grouped(defects, 4)})
    assert m.fit_info_["defect_validation"] == {"mode": "crossfit", "folds": 4, "by": "group"}
    held = _fit(train, {"real": _grouped(defects, 4)}, defect_val="holdout")
    assert held.fit_info_["image_score"]["n_val_defect"] == 3  # one whole group of 3 (12 images, 4 groups)
    with pytest.raises(ConfigError, match="defect_val_split must be"):
        _fit(train, defects, defect_val_split="scene")
    path = m.save(tmp_path / "m.dfm")
    assert ExDD.load(path).defect_val_split == "auto"
    # a file written before the option: its params lack it -> loads as the cut it was fitted with
    from defectforge.estimator import Estimator

    entry = m.to_entry()
    entry["params"].pop("defect_val_split")
    assert ExDD.from_entry(entry).defect_val_split == "image"
    assert Estimator.legacy_params == {}


def test_synthetic_sets_are_never_validation(data):
    train, defects, _ = data
    m = _fit(train, {"real": defects[:5], "synthetic:x": defects[5:]})
    sets = {s["name"]: s for s in m.fit_info_["defect_sets"]}
    assert sets["synthetic:x"]["validation"] == 0 and sets["synthetic:x"]["in_bank"] == 7
    assert sets["real"]["validation"] == 5 and m.fit_info_["image_score"]["n_val_defect"] == 5
    # one real defect: no two folds, auto keeps the paper's formula and says why
    one = _fit(train, {"real": defects[:1], "synthetic:x": defects[5:]})
    assert one.image_score_ == "weighted" and "fewer than 2" in one.fit_info_["image_score"]["reason"]
    # in one plain list, generated samples (meta["generator"]) never validate either
    tagged = [d.with_(meta={**d.meta, "generator": "pitting"}) for d in defects[5:]]
    m2 = _fit(train, defects[:5] + tagged)
    assert m2.fit_info_["n_defect_images_in_bank"] == 12 and m2.fit_info_["image_score"]["n_val_defect"] == 5


def test_scores_follow_their_definitions(auto, data):
    _, _, test = data
    raw, maps = auto._score(test, keep_input_maps=True)
    k = int(np.ceil(0.01 * H * W))
    for i, m in enumerate(maps):
        assert raw["max"][i] == pytest.approx(float(m.max()), rel=1e-6)
        assert raw["topk"][i] == pytest.approx(float(np.sort(m.ravel())[-k:].mean()), rel=1e-6)
    cal = auto.fit_info_["image_score"]["fusion"]
    z = (np.log(np.c_[raw["nn_max"], raw["topk"]]) - cal["mean"]) / cal["scale"]
    np.testing.assert_allclose(fusion_score(raw, cal), z @ cal["coef"] + cal["intercept"], rtol=1e-9)
    p = auto.predict(test)
    np.testing.assert_allclose(p.pred_score, final_scores(auto.image_score_, raw, cal), rtol=1e-9)


def test_each_image_score_as_a_parameter(data):
    train, defects, test = data
    y = np.array([s.is_defect for s in test])
    paper = _fit(train, {"real": defects}, image_score="weighted")
    assert paper.image_score_ == "weighted" and paper.fit_info_["n_defect_images_in_bank"] == 12  # nothing held out
    raw, _ = paper._score(test, keep_input_maps=False)
    np.testing.assert_allclose(paper.predict(test).pred_score, raw["weighted"], rtol=1e-12)
    topk = _fit(train, {"real": defects}, image_score="topk", topk_fraction=0.05)
    assert topk.image_score_ == "topk" and auroc(y, topk.predict(test).pred_score) > 0.8
    fused = _fit(train, {"real": defects}, image_score="fusion")
    assert fused.image_score_ == "fusion" and fused.fit_info_["image_score"]["n_val_defect"] == 12
    with pytest.raises(ConfigError, match="fusion"):
        _fit(train, {"real": defects[:1]}, image_score="fusion")  # no validation defects to calibrate on
    with pytest.raises(ConfigError, match="image_score must be"):
        _fit(train, defects, image_score="best")
    with pytest.raises(ConfigError, match="topk_fraction"):
        _fit(train, defects, topk_fraction=0.0)


def test_choice_survives_save_and_load(auto, data, tmp_path):
    _, _, test = data
    back = ExDD.load(auto.save(tmp_path / "m.dfm"))
    assert back.image_score_ == auto.image_score_
    np.testing.assert_allclose(back.predict(test).pred_score, auto.predict(test).pred_score, rtol=1e-9)


def test_patchcore_keeps_its_reweighted_max():
    assert PatchCore().get_params()["image_score"] == "weighted"
    assert ExDD().get_params()["image_score"] == "auto"


def test_choose_without_validation_defects_keeps_the_paper_formula():
    info = choose("auto", None, None, reason="no validation split")
    assert info["chosen"] == "weighted" and info["reason"] == "no validation split"
    raw = {n: np.r_[0.1, 0.2, 0.3, 0.9, 1.0] for n in ("weighted", "max", "topk", "nn_max", "patch_max")}
    raw["max"] = np.r_[1.0, 0.9, 0.3, 0.2, 0.1]  # anti-correlated: worst
    y = np.array([0, 0, 0, 1, 1], bool)
    info = choose("auto", raw, y)
    assert info["val_auroc"]["max"] == 0.0 and info["chosen"] == "weighted"  # ties: the paper's first


def test_choose_breaks_auroc_ties_by_validation_ap():
    """Equal validation AUROC (few defects saturate it): the higher average precision wins, so
    the paper's formula is not kept merely for coming first in the list."""
    y = np.array([0, 0, 0, 1, 1], bool)
    raw = {
        "weighted": np.r_[0.9, 0.2, 0.1, 0.8, 0.7],  # N P P N N from the top: AUROC 4/6, AP 0.583
        "topk": np.r_[0.8, 0.7, 0.1, 0.9, 0.6],  # P N N P N: AUROC 4/6, AP 0.75
        "max": np.r_[1.0, 0.9, 0.8, 0.1, 0.2],  # worst
        "patch_max": np.r_[1.0, 0.9, 0.8, 0.1, 0.2],
    }
    raw["nn_max"] = raw["topk"].copy()
    info = choose("auto", raw, y)
    auc, ap = info["val_auroc"], info["val_ap"]
    assert auc["weighted"] == auc["topk"] and ap["topk"] > ap["weighted"]
    assert info["chosen"] != "weighted"
    best = max((auc[n], ap[n]) for n in AUTO_CANDIDATES if auc[n] is not None)
    assert (auc[info["chosen"]], ap[info["chosen"]]) == best
    if any(auc[n] == auc[info["chosen"]] for n in AUTO_CANDIDATES if n != info["chosen"]):
        assert "then highest validation AP" in info["reason"]
