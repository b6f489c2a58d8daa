"""ExDD / PatchCore end to end on toy data (random-init backbone, explicit opt-in)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from defectforge.data.sample import Sample
from defectforge.bank.backbone import RandomInitWarning
from defectforge.detect.exdd import EmptyDefectMaskWarning, ExDD, PatchCore
from defectforge.estimator import FORMAT_VERSION
from defectforge.errors import ConfigError, InputError
from defectforge.metrics import auroc, pixel_auroc, select_threshold

H, W = 64, 96
SMALL = dict(backbone="efficientnet_lite0", random_init=True, image_size=(H, W), projection_dim=16,
             normal_ratio=0.25, defect_ratio=0.5, batch_size=8)


def texture(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """A brushed-metal-like texture: horizontal streaks plus fine noise (uint8 RGB)."""
    streak = rng.normal(0, 1, (h, 1)) * 12 + rng.normal(0, 1, (1, w)) * 3
    img = 120 + streak + rng.normal(0, 6, (h, w))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def blob(rng: np.random.Generator, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """A textured image with a bright disc (the defect) and its mask."""
    img = texture(rng, h, w).astype(np.int16)
    cy, cx = rng.integers(14, h - 14), rng.integers(14, w - 14)
    r = int(rng.integers(5, 9))
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[mask] = np.clip(img[mask] + 110, 0, 255)
    return img.astype(np.uint8), mask


def toy_samples(seed: int, n_good: int, n_defect: int, split: str) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = [Sample(label="good", split=split, image_array=texture(rng), meta={"name": f"{split}_good_{i}"})
           for i in range(n_good)]
    for i in range(n_defect):
        img, m = blob(rng)
        out.append(Sample(label="blob", split=split, image_array=img, mask_array=m,
                          meta={"name": f"{split}_blob_{i}"}))
    return out


@pytest.fixture(scope="module")
def data():
    train = toy_samples(0, 14, 0, "train")
    defects = toy_samples(1, 0, 6, "train")
    test = toy_samples(2, 6, 6, "test")
    return train, defects, test


@pytest.fixture(scope="module")
def fitted(data):
    train, defects, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        exdd = ExDD(**SMALL).fit(train, defects)
        pc = PatchCore(**SMALL).fit(train)
    return exdd, pc


def _scores(model, test):
    p = model.predict(test)
    labels = [s.is_defect for s in test]
    return p, auroc(labels, p.pred_score), pixel_auroc([s.mask for s in test], p.anomaly_map)


def test_random_init_needs_opt_in_and_warns():
    with pytest.raises(ConfigError, match="no packaged weights"):
        ExDD(backbone="mobilenetv3_small_050").extractor
    with pytest.warns(RandomInitWarning):
        ExDD(backbone="mobilenetv3_small_050", random_init=True).extractor


def test_exdd_and_patchcore_localise_blobs(data, fitted):
    _, _, test = data
    exdd, pc = fitted
    for model in (exdd, pc):
        p, i_auc, p_auc = _scores(model, test)
        assert i_auc >= 0.85, type(model).__name__
        assert p_auc >= 0.85, type(model).__name__
        assert len(p.anomaly_map) == len(test) and p.anomaly_map[0].shape == (H, W)
        assert p.anomaly_map[0].dtype == np.float32 and p.pred_score.shape == (len(test),)
        assert p.pred_label.dtype == bool and p.pred_mask[0].dtype == bool
    assert exdd.fit_info_["bank_defect"] > 0 and exdd.fit_info_["n_defect_images_in_bank"] == 6
    assert pc.fit_info_["bank_defect"] == 0


def test_defect_bank_holds_only_masked_rows(data, fitted):
    """Rows of the defect bank come from inside the masks: each is nearer to some masked
    row of a defect image than to any normal-bank row."""
    _, defects, _ = data
    exdd, _ = fitted
    from defectforge.bank.features import mask_to_grid

    inside, outside = [], []
    for s in defects:
        rows = exdd._rows([s.rgb()])
        frac = mask_to_grid(s.mask, exdd.grid_).reshape(-1)
        inside.append(rows[frac >= 0.5])
        outside.append(rows[frac == 0])
    inside = np.concatenate(inside)
    outside = np.concatenate(outside)
    bank = exdd.bank_defect_
    d_in = np.linalg.norm(bank[:, None] - inside[None], axis=2).min(1)
    d_out = np.linalg.norm(bank[:, None] - outside[None], axis=2).min(1)
    assert np.all(d_in < 1e-4)
    assert np.all(d_out > 1e-4)


def test_deterministic_for_a_fixed_seed(data, fitted):
    train, defects, test = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        a = ExDD(**SMALL, seed=3).fit(train, defects)
        b = ExDD(**SMALL, seed=3).fit(train, defects)
    assert np.array_equal(a.bank_normal_, b.bank_normal_) and np.array_equal(a.bank_defect_, b.bank_defect_)
    pa, pb = a.predict(test[:4]), b.predict(test[:4])
    assert np.array_equal(pa.pred_score, pb.pred_score)
    assert all(np.array_equal(x, y) for x, y in zip(pa.anomaly_map, pb.anomaly_map))
    # another seed (the fixture's seed 0) gives another validation split and coreset
    assert fitted[0].config.seed == 0
    assert a.bank_normal_.shape != fitted[0].bank_normal_.shape or not np.array_equal(a.bank_normal_, fitted[0].bank_normal_)


def test_patchcore_equals_exdd_with_empty_defect_bank(data, fitted):
    train, _, test = data
    _, pc = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        one_bank = ExDD(**SMALL, weighting="patchcore", num_neighbors=9).fit(train, defects=None)
    p1, p2 = pc.predict(test), one_bank.predict(test)
    assert np.array_equal(p1.pred_score, p2.pred_score)
    assert all(np.array_equal(x, y) for x, y in zip(p1.anomaly_map, p2.anomaly_map))
    assert pc.threshold_ == one_bank.threshold_


def test_save_load_round_trip(tmp_path, data, fitted):
    _, _, test = data
    exdd, pc = fitted
    for model in (exdd, pc):
        path = model.save(tmp_path / f"{model.name}.dfm")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomInitWarning)
            back = ExDD.load(path)
        assert type(back) is type(model)
        assert back.get_params() == model.get_params()
        p1, p2 = model.predict(test), back.predict(test)
        assert np.array_equal(p1.pred_score, p2.pred_score)
        assert np.array_equal(p1.pred_label, p2.pred_label)
        assert all(np.array_equal(x, y) for x, y in zip(p1.anomaly_map, p2.anomaly_map))
        assert back.threshold_ == model.threshold_ and back.pixel_threshold_ == model.pixel_threshold_


def test_threshold_comes_from_the_validation_split_only(data):
    train, defects, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        # the paper's score needs no validation defects: the threshold is a quantile of good images
        exdd = ExDD(**SMALL, image_score="weighted").fit(train, defects)
    # reproduce the seeded split: the threshold is the 0.99 quantile of the VAL normals' scores
    perm = np.random.default_rng(exdd.config.seed).permutation(len(train))
    n_val = exdd.fit_info_["n_val_normal"]
    assert n_val >= 1
    val = [train[i] for i in sorted(perm[:n_val])]
    fit_part = [train[i] for i in sorted(perm[n_val:])]
    val_scores = exdd.predict(val).pred_score
    expected = select_threshold([False] * len(val), val_scores, method="quantile", quantile=0.99)
    assert exdd.threshold_ == pytest.approx(expected, rel=1e-9)
    # validation images are not in the normal bank: their rows are not all at distance 0
    assert exdd.predict(val).pred_score.min() > 0
    assert exdd.fit_info_["n_train_normal"] == len(fit_part)


def test_patchcore_uses_defects_for_an_f1_threshold_not_a_bank(data):
    train, defects, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        pc = PatchCore(**SMALL).fit(train, defects)
    assert pc.fit_info_["bank_defect"] == 0 and pc.fit_info_["n_val_defect"] == len(defects)
    assert np.isfinite(pc.threshold_)


def test_mixed_sizes_and_grey_images(fitted):
    exdd, _ = fitted
    rng = np.random.default_rng(5)
    big = texture(rng, 96, 160)
    grey = texture(rng, 50, 70)[..., 0]  # H x W grey
    grey1 = grey[..., None]  # H x W x 1
    p = exdd.predict([big, grey, grey1])
    assert [m.shape for m in p.anomaly_map] == [(96, 160), (50, 70), (50, 70)]
    assert np.array_equal(p.anomaly_map[1], p.anomaly_map[2])
    assert np.all(np.isfinite(p.pred_score))
    with pytest.raises(InputError, match="expected an H x W"):
        exdd.predict([np.zeros((4, 4, 2), np.uint8)])


def test_empty_defect_mask_is_skipped_with_a_warning(data):
    train, defects, _ = data
    empty = Sample(label="blob", image_array=defects[0].image, mask_array=np.zeros((H, W), bool),
                   meta={"name": "empty_one"})
    nomask = Sample(label="blob", image_array=defects[1].image, meta={"name": "no_mask"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        with pytest.warns(EmptyDefectMaskWarning) as rec:
            m = ExDD(**SMALL).fit(train, [empty, nomask, defects[2]])
    msgs = [str(w.message) for w in rec]
    assert any("empty_one: defect image has an empty mask; skipped" in t for t in msgs)
    assert any("no_mask: defect image has no mask; skipped" in t for t in msgs)
    assert m.fit_info_["n_defect_images_in_bank"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        with pytest.warns(EmptyDefectMaskWarning) as rec:
            m2 = ExDD(**SMALL).fit(train, [empty])
    assert any("defect bank is empty" in str(w.message) for w in rec)
    assert m2.bank_defect_.shape[0] == 0
    # (image, mask) pairs are accepted too; a mask of the wrong size is an InputError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        with pytest.raises(InputError, match="mask is"):
            ExDD(**SMALL).fit(train, [(defects[0].image, np.ones((10, 10), bool))])


def test_bad_model_files(tmp_path, fitted):
    import torch

    exdd, _ = fitted
    good = exdd.save(tmp_path / "m.dfm")
    raw = good.read_bytes()
    (tmp_path / "trunc.dfm").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="trunc.dfm: not a readable defectforge model file"):
        ExDD.load(tmp_path / "trunc.dfm")
    obj = torch.load(good, weights_only=True)
    obj["format_version"] = FORMAT_VERSION + 1
    torch.save(obj, tmp_path / "newer.dfm")
    with pytest.raises(InputError, match="newer.dfm: model format version .* upgrade defectforge"):
        ExDD.load(tmp_path / "newer.dfm")
    torch.save({"hello": 1}, tmp_path / "other.dfm")
    with pytest.raises(InputError, match="not a defectforge"):
        ExDD.load(tmp_path / "other.dfm")
    with pytest.raises(InputError, match="model file not found"):
        ExDD.load(tmp_path / "missing.dfm")


def test_fit_needs_enough_normals_and_predict_needs_fit():
    with pytest.raises(ConfigError, match="validation"):
        ExDD(**SMALL).fit([texture(np.random.default_rng(0))])
    with pytest.raises(ConfigError, match="not fitted"):
        ExDD(**SMALL).predict([texture(np.random.default_rng(0))])
    with pytest.raises(ConfigError, match="at least one normal"):
        ExDD(**SMALL).fit([])


def test_image_score_variants_and_no_validation(data):
    train, defects, test = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        m = ExDD(**SMALL, image_score="max", val_fraction=0.0)
        with pytest.warns(UserWarning, match="no validation split"):
            m.fit(train, defects)
    p = m.predict(test[:3])
    np.testing.assert_allclose(p.pred_score, [a.max() for a in p.anomaly_map], rtol=1e-5)
    assert m.threshold_ is None and not p.pred_label.any()


def test_eval_defaults_to_the_model_input_size(fitted):
    """Pixel metrics are computed at the model's input size, not at each image's own size
    (full-size maps of a real test split took 6 GB)."""
    from defectforge.detect.evaluate import evaluate_detector

    exdd, _ = fitted
    rng = np.random.default_rng(5)
    big = [Sample(label="good", split="test", image_array=texture(rng, 2 * H, 2 * W), meta={"name": f"g{i}"})
           for i in range(3)]
    for i in range(3):
        img, m = blob(rng, 2 * H, 2 * W)
        big.append(Sample(label="blob", split="test", image_array=img, mask_array=m, meta={"name": f"b{i}"}))
    res = evaluate_detector(exdd, big, split="test")
    assert tuple(res["eval_size"]) == tuple(exdd.input_size_) == (H, W)
    assert tuple(evaluate_detector(exdd, big, split="test", eval_size=(2 * H, 2 * W))["eval_size"]) == (2 * H, 2 * W)


def test_rows_of_one_image_per_pass_equal_a_batched_pass(data, fitted):
    """On the CPU ``_rows`` runs the backbone one image at a time (faster there); the rows are
    those of one batched forward pass up to float rounding (oneDNN may pick other kernels for
    another batch shape: ~5e-7 here; bit for bit at the default 256x632 on the project's CPU)."""
    import torch

    from defectforge.bank.features import embed, to_rows, to_tensor

    m = fitted[0]
    imgs = [s.rgb() for s in data[0][:3]]
    ex = m.extractor
    x = to_tensor(imgs, m.input_size_, ex.mean, ex.std).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        batched = to_rows(embed(ex(x), m.config.upsample))
    rows = m._rows(imgs)
    assert rows.shape == batched.shape
    np.testing.assert_allclose(rows, batched, rtol=0, atol=1e-5 * float(np.abs(batched).max()))


@pytest.mark.parametrize("which", [0, 1])
def test_scores_do_not_depend_on_the_batch(data, fitted, which):
    """The weighted image score's neighbour searches run once per batch (and the next batch is
    read ahead): every raw score and map is the same one image at a time."""
    model = fitted[which]
    test = data[2]
    old = model.batch_size
    try:
        raw_a, maps_a = model.set_params(batch_size=1)._score(test)
        raw_b, maps_b = model.set_params(batch_size=5)._score(test)
    finally:
        model.set_params(batch_size=old)
    for name in raw_a:
        np.testing.assert_array_equal(raw_a[name], raw_b[name])
    for a, b in zip(maps_a, maps_b):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(maps_a) == len(test)


def test_overlapped_stages_give_the_plain_scores(data, fitted, monkeypatch):
    """Scoring with the backbone of the next batch beside the search of this one
    (detect._overlap; forced here: the toy banks are too small for it to pay) gives the
    one-after-the-other scores and maps, to float rounding, and restores the thread count."""
    import torch

    from defectforge.detect import _overlap, exdd_predict

    model = fitted[0]
    test = data[2]
    used = []
    real = _overlap.overlapped

    def spy(featured, total):
        used.append(total)
        return real(featured, total)

    monkeypatch.setattr(_overlap, "overlapped", spy)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model.set_params(batch_size=2)
        monkeypatch.setattr(exdd_predict.PatchScoreMixin, "_overlap_pays", lambda self: False)
        raw_a, maps_a = model._score(test)
        assert used == []
        monkeypatch.setattr(exdd_predict.PatchScoreMixin, "_overlap_pays", lambda self: True)
        raw_b, maps_b = model._score(test)
        assert used == [6]  # 12 images in batches of 2
        assert torch.get_num_threads() == 2  # restored after the overlapped run
    finally:
        torch.set_num_threads(old)
        model.set_params(batch_size=SMALL["batch_size"])
    for name in raw_a:
        np.testing.assert_allclose(raw_a[name], raw_b[name], rtol=1e-5, atol=1e-6)
    for a, b in zip(maps_a, maps_b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_overlap_is_used_only_where_it_pays(fitted, monkeypatch):
    import torch

    from defectforge.detect import exdd_predict

    model = fitted[0]
    nn = model._nn_normal
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert not model._overlap_pays()  # a toy bank: far below the rows where it pays
        monkeypatch.setattr(nn, "backend", "screened")
        monkeypatch.setattr(exdd_predict, "OVERLAP_ROWS", (1, 10 ** 9))
        assert model._overlap_pays()
        torch.set_num_threads(1)
        assert not model._overlap_pays()  # one thread: nothing to split
        torch.set_num_threads(2)
        monkeypatch.setattr(nn, "backend", "faiss")
        assert not model._overlap_pays()  # not measured with other searches
    finally:
        torch.set_num_threads(old)
