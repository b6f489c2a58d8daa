"""The bank-size cap (``coreset_max``): a capped bank is the first rows of the uncapped
greedy order (still exact), ExDD / PatchCore defaults, chunked shares, model files written
before the cap, config errors and the CLI option."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from defectforge.bank.chunked import ChunkedKCenter
from defectforge.bank.coreset import coreset_size, greedy_kcenter, greedy_kcenter_bruteforce
from defectforge.detect.exdd import ExDD, PatchCore
from defectforge.errors import ConfigError

from test_detect_model import SMALL, toy_samples

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


@pytest.mark.parametrize("n,ratio,mn,mx,want", [
    (1_000_000, 0.01, 0, 16384, 10000),     # under the cap: the ratio
    (2_000_000, 0.01, 0, 16384, 16384),     # over it: the cap
    (2_000_000, 0.01, 0, None, 20000),      # no cap
    (100, 0.01, 5, 16384, 5),               # the minimum still applies
    (100, 0.01, 0, 0, 1),                   # never below one row
    (10, 1.0, 0, 50, 10),                   # never above the rows
])
def test_coreset_size_with_a_cap(n, ratio, mn, mx, want):
    assert coreset_size(n, ratio, mn, mx) == want


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_greedy_choice_is_a_prefix_rule_so_a_capped_bank_is_exact(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(700, 12)).astype(np.float32)
    x[300:320] = x[10]  # duplicates: ties go to the lowest index in both runs
    long = greedy_kcenter(x, 150, seed=seed)
    for k in (1, 7, 64, 149):
        short = greedy_kcenter(x, k, seed=seed)
        np.testing.assert_array_equal(short, long[:k])
        np.testing.assert_array_equal(short, greedy_kcenter_bruteforce(x, k, seed=seed))


def test_chunked_shares_of_the_cap_add_up_to_at_most_the_cap():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10 * 30, 6)).astype(np.float32)
    ch = ChunkedKCenter(n_images=10, rows_per_image=30, chunk_images=3, ratio=0.5, seed=0, maximum=40)
    ch.add(x)
    idx = ch.finish()
    assert len(idx) <= 40 and len(idx) >= 40 - ch.n_chunks  # floor of each proportional share
    free = ChunkedKCenter(n_images=10, rows_per_image=30, chunk_images=3, ratio=0.5, seed=0)
    free.add(x)
    assert len(free.finish()) == 150


def _fit(cls, train, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(**{**SMALL, "val_fraction": 0.0, **kw}).fit(train)


def _rows(bank: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(bank)}


@pytest.mark.parametrize("cls", [ExDD, PatchCore])
def test_a_capped_bank_is_a_subset_of_the_uncapped_bank(cls):
    train = toy_samples(5, 8, 0, "train")
    free = _fit(cls, train, coreset_max=None)
    cap = len(free.bank_normal_) // 3
    capped = _fit(cls, train, coreset_max=cap)
    assert len(capped.bank_normal_) == cap < len(free.bank_normal_)
    assert _rows(capped.bank_normal_) <= _rows(free.bank_normal_)
    assert capped.fit_info_["coreset"] == {"mode": "exact", "max": cap, "capped": True}
    assert free.fit_info_["coreset"] == {"mode": "exact", "max": None, "capped": False}
    # a cap above the ratio's size changes nothing, and 0 means no cap
    for big in (len(free.bank_normal_), 0):
        same = _fit(cls, train, coreset_max=big)
        np.testing.assert_array_equal(same.bank_normal_, free.bank_normal_)
        assert same.fit_info_["coreset"]["capped"] is False


def test_the_cap_also_bounds_the_defect_bank_and_the_chunked_choice():
    train = toy_samples(6, 6, 6, "train")
    normal = [s for s in train if not s.is_defect]
    defects = [s for s in train if s.is_defect]
    free = _fit(ExDD, normal, coreset_max=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = ExDD(**{**SMALL, "val_fraction": 0.0, "image_score": "weighted"}, coreset_max=None).fit(normal, defects)
        cap = min(len(both.bank_defect_), len(both.bank_normal_)) // 2
        capped = ExDD(**{**SMALL, "val_fraction": 0.0, "image_score": "weighted"}, coreset_max=cap).fit(normal,
                                                                                                      defects)
    assert len(capped.bank_defect_) == cap and _rows(capped.bank_defect_) <= _rows(both.bank_defect_)
    chunked = _fit(ExDD, normal, coreset_max=len(free.bank_normal_) // 2, coreset_chunk=2)
    assert len(chunked.bank_normal_) <= len(free.bank_normal_) // 2


def test_defaults_and_old_model_files(tmp_path):
    assert ExDD().coreset_max == 16384 and PatchCore().coreset_max == 163840
    assert PatchCore().normal_ratio * 1_638_400 == PatchCore().coreset_max  # both reached at the same rows
    assert ExDD().normal_ratio * 1_638_400 == ExDD().coreset_max
    m = _fit(PatchCore, toy_samples(7, 5, 0, "train"))
    assert PatchCore.load(m.save(tmp_path / "m.dfm")).coreset_max == 163840
    entry = m.to_entry()
    entry["params"].pop("coreset_max")  # a file written before the cap: fitted without one
    assert PatchCore.from_entry(entry).coreset_max is None


@pytest.mark.parametrize("bad", [-1, 2.5, True, "100"])
def test_bad_coreset_max_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="coreset_max"):
        PatchCore(**SMALL, coreset_max=bad).fit(toy_samples(0, 3, 0, "train"))
    with pytest.raises(ConfigError, match="must not exceed coreset_max"):
        PatchCore(**SMALL, coreset_min=50, coreset_max=10).fit(toy_samples(0, 3, 0, "train"))


def test_cli_coreset_max_caps_the_bank_and_says_so(tmp_path):
    from test_bank_chunked import cli_fit

    r = cli_fit(tmp_path, 5, "--coreset-max", "20", "--out", str(tmp_path / "m.dfm"))
    assert r.exit_code == 0, r.output
    assert "capped at 20 rows" in r.output
    m = PatchCore.load(tmp_path / "m.dfm")
    assert len(m.bank_normal_) == 20 and m.coreset_max == 20
    r = cli_fit(tmp_path, 5, "--coreset-max", "0", "--out", str(tmp_path / "n.dfm"))
    assert r.exit_code == 0 and "capped" not in r.output
    assert len(PatchCore.load(tmp_path / "n.dfm").bank_normal_) > 20
    r = cli_fit(tmp_path, 5, "--coreset-max", "-3", "--out", str(tmp_path / "x.dfm"))
    assert r.exit_code == 2 and "coreset-max" in r.output and not (tmp_path / "x.dfm").exists()
