"""Classifier two-sample test (C2ST) of realism: known distributions, crops, CLI, synth card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from defectforge.data import Dataset, Sample
from defectforge.errors import ConfigError
from defectforge.filter.c2st import (DEFECT_SCALE, c2st, crops_and_stats, real_floor, realism_c2st, set_realism,
                                     source_groups, summary_lines, window_from_boxes)


def test_c2st_same_distribution_near_half_shifted_high():
    same = []
    for seed in range(6):  # under the null the out-of-fold AUC scatters around 0.5
        rng = np.random.default_rng(100 + seed)
        same.append(c2st(rng.normal(size=(80, 6)), rng.normal(size=(80, 6)), seed=seed, n_boot=200))
    assert all(r["reason"] is None and r["folds"] == 5 for r in same)
    assert 0.4 < np.mean([r["auc"] for r in same]) < 0.56
    assert sum(r["ci_low"] < 0.5 < r["ci_high"] for r in same) >= 4
    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 6))
    c = rng.normal(size=(80, 6)) + np.r_[1.2, np.zeros(5)]
    shifted = c2st(a, c, seed=0, n_boot=300)
    assert shifted["auc"] > 0.75 and shifted["ci_low"] > 0.6
    assert shifted["ci_low"] <= shifted["auc"] <= shifted["ci_high"]
    assert c2st(a, c, seed=0, n_boot=300) == shifted  # seeded: the same numbers again


def test_c2st_groups_are_images_and_bootstrap_resamples_images():
    """Crops of one image share an image-specific offset: split across folds, the classifier
    would learn the image; grouped, sets from one distribution stay near 0.5."""
    rng = np.random.default_rng(1)

    def images(n_img, per):
        offs = rng.normal(scale=3.0, size=(n_img, 4))
        x = np.repeat(offs, per, axis=0) + rng.normal(scale=0.1, size=(n_img * per, 4))
        return x, np.repeat(np.arange(n_img), per)

    xa, ga = images(12, 6)
    xb, gb = images(12, 6)
    grouped = c2st(xa, xb, ga, gb, seed=0, n_boot=200)
    assert grouped["images_a"] == grouped["images_b"] == 12 and grouped["n_a"] == 72
    assert grouped["auc"] < 0.75
    # resampling whole images: the interval is wider than a per-crop bootstrap would give
    per_crop = c2st(xa, xb, None, None, seed=0, n_boot=200)
    assert (grouped["ci_high"] - grouped["ci_low"]) > (per_crop["ci_high"] - per_crop["ci_low"])


def test_c2st_too_few_crops_says_why_in_one_line():
    rng = np.random.default_rng(2)
    r = c2st(rng.normal(size=(5, 3)), rng.normal(size=(40, 3)))
    assert r["auc"] is None and r["ci_low"] is None
    assert "too few defect crops" in r["reason"] and "5 vs 40" in r["reason"] and "\n" not in r["reason"]
    one_image = c2st(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), np.zeros(20), np.arange(20))
    assert one_image["auc"] is None and "1 vs 20 images" in one_image["reason"]
    with pytest.raises(ConfigError):
        c2st(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), folds=1)


def _surface(rng, h=96, w=128):
    base = 128 + rng.normal(0, 1, (h, 1)) * 10 + rng.normal(0, 5, (h, w))
    return np.repeat(np.clip(base, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _pit(rng, r, delta, gen=None, split="train", host_shift=0, keep=10):
    """A disc of radius ``r`` (grey offset ``delta``) on a noisy surface; ``host_shift`` is
    added to the surface everywhere except in the square of half-side ``keep`` around it."""
    img = _surface(rng).astype(np.int16)
    h, w = img.shape[:2]
    cy, cx = int(rng.integers(r + 2, h - r - 2)), int(rng.integers(r + 2, w - r - 2))
    yy, xx = np.mgrid[:h, :w]
    m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[m] += delta
    img[(np.abs(yy - cy) > keep) | (np.abs(xx - cx) > keep)] += host_shift
    meta = {"name": f"s{rng.integers(1 << 30)}"}
    if gen:
        meta["generator"] = gen
    return Sample(label="pit", split=split, image_array=np.clip(img, 0, 255).astype(np.uint8), mask_array=m, meta=meta)


class MeanStd:
    """A tiny stand-in for the backbone: grey mean and std of the crop's centre and whole."""

    def __init__(self):
        self.calls = 0

    def embed(self, crops):
        self.calls += 1
        out = []
        for c in crops:
            g = c[..., 0].astype(float)
            h, w = g.shape
            ctr = g[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
            out.append([ctr.mean(), ctr.std(), g.mean(), g.std()])
        return np.array(out)


def test_crops_use_one_window_from_the_real_boxes_at_native_scale():
    rng = np.random.default_rng(3)
    real = [_pit(rng, 4, -60) for _ in range(5)]
    big = _pit(rng, 12, -60)
    boxes = [(0, 0, 9, 9)] * 5
    win = window_from_boxes(boxes)
    assert win == 32  # 2 x 9 = 18 -> at least 32
    assert window_from_boxes([(0, 0, 30, 20), (0, 0, 40, 10)]) == round(2 * np.quantile([30, 40], 0.9))
    crops, stats, groups = crops_and_stats(real + [big], win)
    assert all(c.shape == (win, win, 3) for c in crops) and groups.tolist() == [0, 1, 2, 3, 4, 5]
    # same zoom: the big synthetic disc covers about 9x the dark area of a real one in its crop
    dark = [(c[..., 0] < 100).sum() for c in crops]
    assert dark[-1] > 5 * np.mean(dark[:5])
    assert stats[-1, 0] > stats[0, 0]  # log area
    assert stats[0, 3] < -40  # grey contrast inside vs the ring: a dark pit


def test_defect_centred_crops_are_sized_to_each_defect():
    rng = np.random.default_rng(7)
    small, big = _pit(rng, 3, -60), _pit(rng, 12, -60)
    crops, stats, groups = crops_and_stats([small, big], None)
    assert [c.shape[0] for c in crops] == [max(16, int(np.ceil(DEFECT_SCALE * 7))), int(np.ceil(DEFECT_SCALE * 25))]
    # the defect is the main content of both: about the same dark fraction (pi r^2 / (2 x 2r)^2 ~ 0.2)
    dark = [(c[..., 0] < 100).mean() for c in crops]
    assert dark[1] == pytest.approx(np.pi / 16, abs=0.05) and abs(dark[0] - dark[1]) < 0.1
    assert stats[1, 0] > stats[0, 0] + 2  # size is still seen: by the appearance statistics


def test_host_shift_is_seen_by_the_host_only_test_and_not_by_the_defect_centred_crop():
    """Same pits, but the synthetic set's images are brighter everywhere except the pit's
    immediate surround: the fixed window and the host-only test see it, the defect crop not."""
    emb, defect_aucs = MeanStd(), []
    for seed in range(3):  # under the null the out-of-fold AUC scatters around 0.5: look at several draws
        rng = np.random.default_rng(seed)
        real = [_pit(rng, 4, -60) for _ in range(24)]
        shifted = [_pit(rng, 4, -60, host_shift=40) for _ in range(24)]
        defect = realism_c2st(real, shifted, embedder=emb, seed=seed, n_boot=200)
        window = realism_c2st(real, shifted, embedder=emb, seed=seed, n_boot=200, crop="window")
        assert defect["window"] is None and window["window"] == 32 and defect["crop_px"] == [18, 18, 18]
        assert defect["overall"]["ci_low"] < 0.5
        defect_aucs.append(defect["overall"]["auc"])
        assert window["overall"]["auc"] > 0.95
        for r in (defect, window):
            assert r["host"]["auc"] > 0.95 and r["host"]["ci_low"] > 0.8
            assert r["host"]["n_a"] == 48 and r["host"]["images_b"] == 24  # 2 defect-free crops per image
    assert np.mean(defect_aucs) < 0.62
    # defects that differ on identical hosts: the defect test sees it, the host-only test not
    blotch = [_pit(rng, 4, +60) for _ in range(24)]
    r = realism_c2st(real, blotch, embedder=emb, seed=0, n_boot=200)
    assert r["overall"]["auc"] > 0.95 and r["parts"]["appearance"]["auc"] > 0.95
    assert r["host"]["auc"] < 0.8 and r["host"]["ci_low"] < 0.5
    flat = summary_lines(r)
    assert {"c2st_host_auc", "c2st_host_ci", "c2st_backbone_auc", "c2st_appearance_auc"} <= set(flat)
    assert "defect-centred" in flat["c2st_crop"] and "c2st_window_px" not in flat
    assert summary_lines(window)["c2st_window_px"] == 32
    with pytest.raises(ConfigError):
        realism_c2st(real, blotch, embedder=emb, crop="tight")


def test_crops_are_grouped_by_scene_when_the_samples_name_one(monkeypatch):
    """Near-duplicate photos of one scene (``meta['group']``) stay on one side of every fold,
    the floor halves scenes, and synthetic crops take their host's scene."""
    rng = np.random.default_rng(9)
    real = [_pit(rng, 4, -60) for _ in range(24)]
    for k, s in enumerate(real):
        s.meta["group"] = f"scene{k % 6}"
    hosts = {f"host{k}": f"h{k % 4}" for k in range(20)}
    synth = [_pit(rng, 4, -60) for _ in range(20)]
    for k, s in enumerate(synth):
        s.meta["source"] = f"host{k}"
    emb = MeanStd()
    by_scene = realism_c2st(real, synth, embedder=emb, seed=0, n_boot=50, host_groups=hosts)
    assert by_scene["overall"]["images_a"] == 6 and by_scene["overall"]["images_b"] == 4
    assert by_scene["floor"]["images_a"] == by_scene["floor"]["images_b"] == 3
    assert by_scene["host"]["images_a"] == 6 and by_scene["host"]["images_b"] == 4
    # a scene with real and synthetic crops is one fold group: its two sides are never split
    from sklearn.model_selection import StratifiedGroupKFold

    seen = []
    orig = StratifiedGroupKFold.split

    def spy(self, X, y, groups):
        seen.append(np.asarray(groups))
        return orig(self, X, y, groups)

    monkeypatch.setattr(StratifiedGroupKFold, "split", spy)
    ga = np.array([f"s{k % 4}" for k in range(20)])
    x = np.random.default_rng(10).normal(size=(20, 3))
    c2st(x, x + 1.0, ga, ga, seed=0, n_boot=0, shared_groups=True)
    c2st(x, x + 1.0, ga, ga, seed=0, n_boot=0)
    assert len(np.unique(seen[0])) == 4 and (seen[0][:20] == seen[0][20:]).all()
    assert len(np.unique(seen[1])) == 8
    seen.clear()
    realism_c2st(real, real[:12], embedder=emb, seed=0, n_boot=0, host=False,
                 parts=False, floor=False)
    assert len(np.unique(seen[0])) == 6  # the same 6 scenes on both sides: shared
    monkeypatch.undo()
    by_image = realism_c2st(real, synth, embedder=emb, seed=0, n_boot=50, group_key=None)
    assert by_image["overall"]["images_a"] == 24 and by_image["overall"]["images_b"] == 20
    # a synthetic set whose hosts are not all known: grouped by image
    part = realism_c2st(real, synth, embedder=emb, seed=0, n_boot=50, host_groups={"host0": "h0"})
    assert part["overall"]["images_b"] == 20
    assert source_groups(real)["" + real[0].name] == "scene0" and source_groups(synth) == {}


def test_realism_c2st_tells_pale_blobs_from_pits_and_not_pits_from_pits():
    rng = np.random.default_rng(4)
    real = [_pit(rng, 4, -60) for _ in range(24)]
    synth = ([_pit(rng, 4, -60, gen="alike") for _ in range(20)]
             + [_pit(rng, 11, +50, gen="blotch") for _ in range(20)])
    emb = MeanStd()
    r = realism_c2st(real, synth, embedder=emb, seed=0, n_boot=200)
    assert set(r["per_generator"]) == {"alike", "blotch"}
    alike, blotch = r["per_generator"]["alike"], r["per_generator"]["blotch"]
    assert blotch["auc"] > 0.95 and blotch["ci_low"] > 0.8
    assert alike["auc"] < 0.8 and alike["ci_low"] < 0.5
    assert r["floor"]["auc"] is not None and r["floor"]["n_a"] + r["floor"]["n_b"] == 24
    # the floor is two disjoint halves of the real images
    f = real_floor(np.hstack([emb.embed(crops_and_stats(real, r["window"])[0]),
                              crops_and_stats(real, r["window"])[1]]), np.arange(24), seed=0, n_boot=200)
    assert f["auc"] == pytest.approx(r["floor"]["auc"])
    flat = summary_lines(r)
    assert flat["c2st_auc[blotch]"] == round(blotch["auc"], 4) and len(flat["c2st_ci[alike]"]) == 2
    assert "c2st_floor_auc" in flat and flat["c2st_n_real"] == 24


def test_report_shows_the_host_only_and_feature_group_rows(tmp_path):
    from defectforge.report import Report
    from defectforge.report.realsynth import add_realism

    rng = np.random.default_rng(11)
    real = [_pit(rng, 4, -60) for _ in range(16)]
    out = set_realism(real, [_pit(rng, 4, +60) for _ in range(16)], embedder=MeanStd(), n_boot=50)
    assert "defect-centred" in out["c2st_method"] and "groups = images" in out["c2st_method"]
    rep = Report("t", tmp_path)
    add_realism(rep, out)
    html = rep.render()
    for row in ("host-only: defect-free crops, real vs synthetic images", "backbone features only",
                "appearance statistics only", "real vs real (floor)", "defect-centred crops"):
        assert row in html, row


def test_too_few_crops_skip_the_backbone():
    rng = np.random.default_rng(5)

    class Boom:
        def embed(self, crops):
            raise AssertionError("the backbone must not run for a test that cannot run")

    r = realism_c2st([_pit(rng, 4, -60) for _ in range(3)], [_pit(rng, 4, -60) for _ in range(30)], embedder=Boom())
    flat = summary_lines(r)
    assert "too few defect crops" in flat["c2st_reason"] and "c2st_auc" not in flat
    out = set_realism([_pit(rng, 4, -60) for _ in range(3)], [_pit(rng, 4, -60) for _ in range(2)], embedder=Boom())
    assert "c2st_reason" in out and "kid" not in out


def test_filter_quality_cli_reports_c2st(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from defectforge.data.formats import write_dataset
    from defectforge.filter import cli as fcli

    monkeypatch.setattr("defectforge.filter.embed.default_embedder", lambda size=128, device="cpu": MeanStd())
    rng = np.random.default_rng(6)
    rp = write_dataset(Dataset([_pit(rng, 4, -60) for _ in range(20)]), tmp_path / "real", "manifest")
    sp = write_dataset(Dataset([_pit(rng, 11, +50, gen="blotch") for _ in range(12)]), tmp_path / "syn", "manifest")
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    fcli.register(app)
    r = CliRunner().invoke(app, ["filter", "quality", str(rp), str(sp), "--k", "2", "--subsets", "5",
                                 "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["c2st_auc"] > 0.9 and q["c2st_ci"][0] <= q["c2st_auc"] <= q["c2st_ci"][1]
    assert "c2st_floor_auc" in q and "kid_mean" in q and "c2st_auc" in r.output
    r = CliRunner().invoke(app, ["filter", "quality", str(rp), str(sp), "--no-c2st", "--k", "2", "--subsets", "5",
                                 "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0 and "c2st_auc" not in json.loads((tmp_path / "p.json").read_text())
    r = CliRunner().invoke(app, ["filter", "quality", str(rp), str(sp), "--c2st-crop", "window", "--k", "2",
                                 "--subsets", "5", "--json", str(tmp_path / "w.json")])
    w = json.loads((tmp_path / "w.json").read_text())
    assert r.exit_code == 0 and w["c2st_window_px"] == 32 and "c2st_host_auc" in w and "c2st_host_auc" in q
    r = CliRunner().invoke(app, ["filter", "quality", str(rp), str(sp), "--c2st-crop", "tight"])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError) and "--c2st-crop" in str(r.exception)


def test_synth_card_and_report_carry_the_realism(tmp_path, monkeypatch):
    from test_synth2d_pipeline import _cfg, make_dataset

    from defectforge.synth2d.pipeline import synthesize

    monkeypatch.setattr("defectforge.filter.embed.default_embedder", lambda size=128, device="cpu": MeanStd())
    data = make_dataset(tmp_path / "data")
    synthesize(_cfg(data, n=3), tmp_path / "o", workers=1)
    card = json.loads((tmp_path / "o" / "dataset_card.json").read_text())
    assert "too few defect crops" in card["realism"]["c2st_reason"]  # 2 real defects: cannot run
    assert "## Realism" in (tmp_path / "o" / "dataset_card.md").read_text()
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Realism: can a classifier tell synthetic from real defects?" in html and "not run" in html


def test_filter_quality_groups_synthetic_crops_by_their_hosts_scene(tmp_path):
    """``filter quality REAL SYNTH``: a synthetic sample whose host is one of REAL's images
    takes that image's scene (the ``group`` column), as the synth card does."""
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.data.image_io import write_image, write_mask
    from defectforge.synth2d import parse_config, synthesize

    rng = np.random.default_rng(5)
    root = tmp_path / "real"
    rows = ["file,split,label,mask,group"]
    for i in range(6):
        write_image(root / "images" / f"good{i}.png", _surface(rng))
        rows.append(f"images/good{i}.png,train,good,,seq{i % 3}")
    for i in range(6):
        s = _pit(rng, 4, -60)
        write_image(root / "images" / f"pit{i}.png", s.image_array)
        write_mask(root / "masks" / f"pit{i}.png", s.mask_array)
        rows.append(f"images/pit{i}.png,train,pit,masks/pit{i}.png,seq{i % 3}")
    (root / "split.csv").write_text("\n".join(rows) + "\n")
    cfg = parse_config({"source": {"path": str(root), "roi": "border", "roi_margin": 4},
                        "generators": [{"name": "transplant"}], "n": 8, "seed": 0})
    synthesize(cfg, tmp_path / "syn", workers=1)
    r = CliRunner().invoke(app, ["filter", "quality", str(root), str(tmp_path / "syn"), "--k", "2", "--subsets", "5",
                                 "--json", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["c2st_grouped_by"] == "scenes", q
