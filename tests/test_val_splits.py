"""Validation splits that hold out whole groups (``defectforge.data.splits``): the box
trainer's ``split_train_val``, the experiments and the recipe search's ``carve_splits``."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.data import Sample
from defectforge.data.splits import holdout, sample_group, split_by
from defectforge.errors import ConfigError
from defectforge.supervised.train import TrainConfig, split_train_val


def _samples(groups: list[str | None], label: str = "pitting") -> list[Sample]:
    out = []
    for i, g in enumerate(groups):
        meta = {"name": f"{label}{i}"}
        if g is not None:
            meta["group"] = g
        out.append(Sample(image_array=np.zeros((8, 8, 3), np.uint8), label=label, split="train", meta=meta))
    return out


def _old_split(samples, val_fraction, seed):
    """The split before groups were read (kept here to pin ``image`` to it, draw for draw)."""
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for group in ([s for s in samples if s.is_defect], [s for s in samples if not s.is_defect]):
        n_val = int(round(val_fraction * len(group)))
        if val_fraction > 0 and len(group) >= 2:
            n_val = max(1, n_val)
        n_val = min(n_val, len(group) - 1) if group else 0
        perm = rng.permutation(len(group))
        va += [group[i] for i in sorted(perm[:n_val])]
        tr += [group[i] for i in sorted(perm[n_val:])]
    return tr, va


def _grouped(seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes_d, sizes_g = rng.integers(1, 9, 6), rng.integers(2, 30, 15)
    d = _samples([f"s{j}" for j, n in enumerate(sizes_d) for _ in range(n)])
    g = _samples([f"s{j}" for j, n in enumerate(sizes_g) for _ in range(n)], label="good")
    return d + g


@pytest.mark.parametrize("seed", range(8))
def test_group_split_never_puts_a_group_on_both_sides_of_a_stratum(seed):
    data = _grouped(seed)
    tr, va = split_train_val(data, 0.2, seed)
    for defect in (True, False):
        gt = {sample_group(s) for s in tr if s.is_defect == defect}
        gv = {sample_group(s) for s in va if s.is_defect == defect}
        assert gv and gt and not gt & gv
    assert sorted(s.name for s in tr + va) == sorted(s.name for s in data)
    # seeded: the same seed gives the same split, the draw moves with the seed
    assert [s.name for s in va] == [s.name for s in split_train_val(data, 0.2, seed)[1]]


def test_group_split_holds_out_the_prefix_nearest_the_target_count():
    items = _samples(["a"] * 5 + ["b"] * 1 + ["c"] * 3 + ["d"] * 7)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        names = sorted({"a", "b", "c", "d"})
        order = [names[i] for i in np.random.default_rng(seed).permutation(4)]
        val, tr = holdout(items, 4, rng, "group")
        size = {"a": 5, "b": 1, "c": 3, "d": 7}
        prefix = np.cumsum([size[g] for g in order])[:-1]
        assert len(val) == prefix[int(np.argmin(np.abs(prefix - 4)))]
        held = {sample_group(items[i]) for i in val}
        assert held == set(order[:len(held)]) and 1 <= len(held) <= 3 and tr


def test_image_mode_is_the_old_split_draw_for_draw():
    data = _grouped(3)
    for seed in (0, 1, 7):
        a = split_train_val(data, 0.2, seed, val_split="image")
        b = _old_split(data, 0.2, seed)
        assert [s.name for s in a[0]] == [s.name for s in b[0]] and [s.name for s in a[1]] == [s.name for s in b[1]]
    # auto on data without groups is the image split too
    plain = _samples([None] * 9) + _samples([None] * 20, label="good")
    assert [s.name for s in split_train_val(plain, 0.2, 4)[1]] == [s.name for s in _old_split(plain, 0.2, 4)[1]]


def test_auto_falls_back_to_images_and_group_mode_names_the_sample():
    partly = _samples(["a", "b", None, "c"])
    assert split_by(partly, "auto") == "image"
    assert split_by(_samples(["a"] * 5), "auto") == "image"  # one group: nothing to hold out whole
    assert split_by(_samples(["a", "a", "b"]), "auto") == "group"
    with pytest.raises(ConfigError, match="pitting2"):
        split_by(partly, "group", "defect")
    with pytest.raises(ConfigError, match="1 group"):
        split_by(_samples(["a"] * 5), "group", "defect")
    with pytest.raises(ConfigError, match="val_split"):
        TrainConfig(val_split="scenes").check()


def test_recipe_search_validation_defects_come_from_groups_the_guide_does_not_use(tmp_path):
    pytest.importorskip("optuna")
    from defectforge.data.formats import load_dataset
    from defectforge.recipe.search import SearchSettings, carve_splits
    from tests.test_recipe_search import make_data

    root = make_data(tmp_path / "data", n_good=12, n_def=8)
    lines = (root / "split.csv").read_text().splitlines()
    out = [lines[0] + ",group"]
    for i, line in enumerate(lines[1:]):  # two photos per spot: pit0/pit1 share a group, and so on
        name = line.split(",")[0]
        k = int(name.rsplit("pit" if "pit" in name else "good", 1)[1].split(".")[0])
        out.append(f"{line},spot{k // 2}")
    (root / "split.csv").write_text("\n".join(out) + "\n")
    ds = load_dataset(root)
    for seed in range(4):
        st = SearchSettings(detector="exdd", seed=seed)
        sp = carve_splits(ds, st)
        assert sp.by == {"defect": "group", "good": "group"}
        gv, gg = {sample_group(s) for s in sp.val_defects}, {sample_group(s) for s in sp.guide}
        assert gv and gg and not gv & gg
        assert not {sample_group(s) for s in sp.val_good} & {sample_group(s) for s in sp.fit_good}
        assert "whole groups" in sp.describe()["defect"]
        img = carve_splits(ds, SearchSettings(detector="exdd", seed=seed, val_split="image"))
        assert img.by == {"defect": "image", "good": "image"} and "by image" in img.describe()["defect"]
