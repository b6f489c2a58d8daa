"""ExDD's ``synthetic_filter``: synthetic defect-bank rows that lie as close to the normal
bank as the validation good patches do are dropped before the defect bank's coreset; real
rows are kept as annotated; the model records the floor and what was dropped."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from defectforge.bank.knn import NearestNeighbors
from defectforge.data.sample import Sample
from defectforge.detect.exdd import ExDD
from defectforge.errors import ConfigError

from test_detect_model import SMALL, blob, texture, toy_samples
from test_detect_scale import app, folders  # noqa: F401  (the module fixture of synthetic folders)

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


def _plain(seed: int, n: int, generator: str | None = None) -> list[Sample]:
    """Defect-free textures with a disc-shaped 'defect' mask over unchanged surface: a
    synthetic defect that looks exactly like a good part."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        _, m = blob(rng)
        meta = {"name": f"plain_{i}"} | ({"generator": generator} if generator else {})
        out.append(Sample(label="blob", split="train", image_array=texture(rng), mask_array=m, meta=meta))
    return out


def _fit(defects, **kw) -> ExDD:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ExDD(**{**SMALL, "defect_ratio": 1.0, "image_score": "weighted", **kw}).fit(
            toy_samples(0, 10, 0, "train"), defects)


@pytest.fixture(scope="module")
def sets():
    return {"real": toy_samples(1, 0, 3, "train"), "plain": _plain(2, 3), "bright": toy_samples(3, 0, 3, "train")}


def test_normal_looking_synthetic_rows_are_dropped_real_rows_kept(sets):
    as_real = _fit({"real": sets["real"], "plain": sets["plain"]})
    as_syn = _fit({"real": sets["real"], "synthetic:plain": sets["plain"]})
    off = _fit({"real": sets["real"], "synthetic:plain": sets["plain"]}, synthetic_filter=None)
    # the same rows as a real set (kept as given) and with the filter off
    assert len(as_real.bank_defect_) == len(off.bank_defect_)
    assert as_real.fit_info_["synthetic_filter"] is None and off.fit_info_["synthetic_filter"] is None
    info = as_syn.fit_info_
    f = info["synthetic_filter"]
    assert f["quantile"] == 0.99 and f["rows_dropped"] > f["rows_kept"] >= 0
    dropped = {s["name"]: s["rows_dropped"] for s in info["defect_sets"]}
    assert dropped == {"real": 0, "synthetic:plain": f["rows_dropped"]}
    assert len(as_syn.bank_defect_) == len(off.bank_defect_) - f["rows_dropped"]


def test_kept_rows_are_exactly_those_at_or_above_the_floor(sets):
    m = _fit({"real": sets["real"], "synthetic:bright": sets["bright"], "synthetic:plain": sets["plain"]})
    f = m.fit_info_["synthetic_filter"]
    nn = NearestNeighbors(m.bank_normal_, "torch")
    rows = [m._defect_rows(s, k) for k, s in enumerate(sets["bright"] + sets["plain"])]
    d = np.concatenate([nn.search(r, 1)[0][:, 0] for r in rows if r is not None])
    assert f["rows_kept"] + f["rows_dropped"] == len(d)
    assert f["rows_dropped"] == int((d < f["floor"] - 1e-4).sum()) == int((d < f["floor"] + 1e-4).sum())
    # a bright disc is far from every good patch: its rows stay; the plain surface's do not all
    per_set = {s["name"]: (s["in_bank"], s["rows_dropped"]) for s in m.fit_info_["defect_sets"]}
    assert per_set["synthetic:bright"][0] == 3
    assert per_set["synthetic:plain"][1] > 0
    real_rows = sum(len(m._defect_rows(s, k)) for k, s in enumerate(sets["real"]))
    assert len(m.bank_defect_) == real_rows + f["rows_kept"]  # defect_ratio 1: every kept row is in the bank


def test_samples_made_by_a_generator_are_filtered_in_any_set(sets):
    tagged = _fit({"real": sets["real"] + _plain(2, 3, generator="transplant")})
    assert tagged.fit_info_["synthetic_filter"]["rows_dropped"] > 0
    assert tagged.fit_info_["defect_sets"][0]["rows_dropped"] == tagged.fit_info_["synthetic_filter"]["rows_dropped"]


def test_no_filter_without_validation_images_or_synthetic_sets(sets):
    assert _fit({"synthetic:plain": sets["plain"]}, val_fraction=0.0).fit_info_["synthetic_filter"] is None
    only_real = _fit({"real": sets["real"]})
    assert only_real.fit_info_["synthetic_filter"] is None
    assert "rows_dropped" not in only_real.fit_info_["defect_sets"][0]
    # quantile 0 keeps every row at or above the closest good patch
    low = _fit({"synthetic:plain": sets["plain"]}, synthetic_filter=0.0)
    high = _fit({"synthetic:plain": sets["plain"]}, synthetic_filter=0.99)
    assert low.fit_info_["synthetic_filter"]["floor"] < high.fit_info_["synthetic_filter"]["floor"]
    assert low.fit_info_["synthetic_filter"]["rows_dropped"] < high.fit_info_["synthetic_filter"]["rows_dropped"]


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.5"])
def test_bad_synthetic_filter_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="synthetic_filter"):
        ExDD(**SMALL, synthetic_filter=bad).fit(toy_samples(0, 3, 0, "train"))


def test_default_and_old_model_files(tmp_path):
    assert ExDD().synthetic_filter == 0.99
    m = _fit(None)
    assert ExDD.load(m.save(tmp_path / "m.dfm")).synthetic_filter == 0.99
    entry = m.to_entry()
    entry["params"].pop("synthetic_filter")  # a file written before the option: fitted without it
    assert ExDD.from_entry(entry).synthetic_filter is None


def test_cli_synthetic_filter(tmp_path, folders):  # noqa: F811
    def fit(*extra):
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}.dfm"
        r = CliRunner().invoke(app, ["detect", "fit", str(folders / "real"), "--synthetic", str(folders / "synth"),
                                     "--out", str(out), "--random-init", "--image-size", "64x96", *extra])
        return r, out

    r, out = fit("--synthetic-filter", "none")
    assert r.exit_code == 0, r.output
    assert ExDD.load(out).synthetic_filter is None and ExDD.load(out).fit_info_["synthetic_filter"] is None
    r, out = fit("--synthetic-filter", "0.5")
    assert r.exit_code == 0, r.output
    assert ExDD.load(out).fit_info_["synthetic_filter"]["quantile"] == 0.5
    for bad in ("1", "x"):
        r, out = fit("--synthetic-filter", bad)
        assert r.exit_code == 2 and "--synthetic-filter" in r.output and len(r.output.strip().splitlines()) == 1
        assert not out.exists()
