"""The bfloat16-screened exact nearest-neighbour search: the pruned search's neighbours and
distances, whatever the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defectforge.bank import knn, knn_screened
from defectforge.bank.knn import NearestNeighbors
from defectforge.bank.knn_pruned import PrunedIndex
from defectforge.bank.knn_screened import ScreenedIndex, _key, _thr_key, screen_bound
from defectforge.errors import ConfigError


def _data(rng, n, d, clusters=8, spread=0.3, offset=0.0):
    cent = rng.normal(size=(clusters, d)) * 3 + offset
    return (cent[rng.integers(clusters, size=n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


def _brute64(bank, q, k):
    d = ((q[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1)
    return np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("seed", range(6))
def test_screened_equals_pruned_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(50, 3000)), int(rng.integers(1, 200)), int(rng.integers(1, 6))
    # offset: rows far from the origin, so the nearest distance is small against |q| |b|
    # (the hard case for a screen whose error scales with the norms)
    bank = _data(rng, n, d, offset=float(rng.choice([0.0, 20.0])))
    if seed % 2:
        bank = np.concatenate([bank, bank[: n // 3]])  # exact duplicates
    q = np.concatenate([_data(rng, 300, d), bank[:20], bank[-5:] + 1e-3])
    index = ScreenedIndex(bank)
    index._block = int(rng.integers(7, 200))  # several blocks of queries (speed only)
    d2, idx = index.search(q, k)
    p2, pidx = PrunedIndex(bank).search(q, k)
    assert np.array_equal(idx, pidx) and np.array_equal(d2, p2)  # same kernel for the distances
    np.testing.assert_allclose(d2, _brute64(bank, q, k), rtol=1e-4, atol=1e-4)
    assert 1.0 <= index.last_candidates < len(bank)


def test_ties_and_duplicates_go_to_the_lowest_index():
    rng = np.random.default_rng(1)
    d = 8
    ring = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32)  # 16 rows at distance 1 from 0
    far = (rng.normal(size=(400, d)) + 6).astype(np.float32)
    bank = np.concatenate([far, ring])[rng.permutation(416)]
    tied = np.sort(np.flatnonzero(np.abs(np.linalg.norm(bank, axis=1) - 1) < 1e-6))
    d2, idx = ScreenedIndex(bank).search(np.zeros((70, d), np.float32), 4)
    assert (d2 == 1).all() and (idx == tied[:4]).all()
    row = bank[:1]
    dup = np.concatenate([bank, row, row])
    d2, idx = ScreenedIndex(dup).search(row, 3)
    assert (d2 == 0).all() and list(idx[0]) == [0, 416, 417]


@pytest.mark.parametrize("bank", [np.zeros((1, 5), np.float32), np.ones((40, 3), np.float32),
                                  np.arange(30, dtype=np.float32)[:, None], -np.arange(30, dtype=np.float32)[:, None]])
def test_degenerate_banks(bank):
    q = np.linspace(-40, 40, 70, dtype=np.float32)[:, None].repeat(bank.shape[1], 1)
    d2, idx = ScreenedIndex(bank).search(q, 1)
    np.testing.assert_allclose(d2[:, 0], _brute64(bank, q, 1)[:, 0], rtol=1e-5, atol=1e-5)


def test_integer_keys_order_like_the_floats_and_thresholds_round_up():
    rng = np.random.default_rng(2)
    f = np.concatenate([rng.normal(size=5000) * 10.0 ** rng.integers(-6, 6, size=5000), [0.0, -0.0, 1.0, -1.0]])
    bits = torch.from_numpy(f.astype(np.float32)).to(torch.bfloat16).view(torch.int16).numpy()
    vals = torch.from_numpy(bits).view(torch.bfloat16).float().numpy()
    keys = np.array([_key(b) for b in bits])
    order = np.lexsort((vals, keys))  # by key
    assert np.all(np.diff(vals[order]) >= 0)  # key order is float order (+0 and -0 equal)

    def value(key):  # the bfloat16 value of a key
        b = np.int16(key) if key >= 0 else np.int16(key ^ 0x7FFF)
        return float(torch.from_numpy(np.array([b], np.int16)).view(torch.bfloat16).float()[0])

    for t in np.concatenate([rng.normal(size=300) * 100, vals[:50]]).astype(np.float32):
        tk = int(_thr_key(np.float32(t), np.empty(1, np.float32)))
        assert value(tk) >= t and value(tk - 1) < t  # the smallest bfloat16 at or above t


def test_the_bound_holds_and_a_product_that_breaks_it_is_refused(monkeypatch):
    rng = np.random.default_rng(3)
    bank = _data(rng, 2000, 152, offset=5.0)
    index = ScreenedIndex(bank)
    q = _data(rng, 200, 152, offset=5.0)
    a = (index._screen(q).view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    b64, q64 = bank.astype(np.float64), q.astype(np.float64)
    exact = (b64 * b64).sum(1)[None] - 2 * q64 @ b64.T
    bound = screen_bound(np.linalg.norm(q64, axis=1), index.b_max)
    assert np.all(np.abs(a - exact).max(1) <= bound)
    monkeypatch.setattr(knn_screened, "screen_bound", lambda qn, bm: np.zeros_like(np.asarray(qn, np.float64)))
    with pytest.raises(RuntimeError, match="bfloat16"):
        ScreenedIndex(bank)
    with pytest.raises(ConfigError, match="screened"):
        NearestNeighbors(bank, "screened")
    monkeypatch.setattr(knn, "SCREENED_MIN_ROWS", 100)
    monkeypatch.setattr(knn_screened, "has_fast_bf16", lambda: True)
    assert NearestNeighbors(bank, "auto").backend == "pruned"  # auto falls back to the search without the screen
    monkeypatch.setattr(knn, "PRUNED_MIN_ROWS", 4096)
    assert NearestNeighbors(bank, "auto").backend == "faiss"  # (the flat one below PRUNED_MIN_ROWS)


def test_auto_picks_screened_where_bf16_is_native(monkeypatch):
    rng = np.random.default_rng(4)
    bank, q = _data(rng, 3000, 24), _data(rng, 400, 24)
    monkeypatch.setattr(knn, "SCREENED_MIN_ROWS", 1000)
    monkeypatch.setattr(knn_screened, "has_fast_bf16", lambda: True)
    auto = NearestNeighbors(bank, "auto")
    assert auto.backend == "screened" and NearestNeighbors(bank[:999], "auto").backend == "faiss"
    (da, ia), (dp, ip) = auto.search(q, 2), NearestNeighbors(bank, "pruned").search(q, 2)
    assert np.array_equal(da, dp) and np.array_equal(ia, ip)
    monkeypatch.setattr(knn, "SCREENED_MAX_ROWS", 2000)  # very large banks: the pruned search
    monkeypatch.setattr(knn, "PRUNED_MIN_ROWS", 2000)
    assert NearestNeighbors(bank, "auto").backend == "pruned"
    monkeypatch.setattr(knn, "PRUNED_MIN_ROWS", 20000)
    monkeypatch.setattr(knn_screened, "has_fast_bf16", lambda: False)
    assert NearestNeighbors(bank, "auto").backend == "faiss"


def test_auto_screens_larger_banks_only_with_amx(monkeypatch):
    """Without AMX tiles (AVX512-BF16 alone) the screened search is used up to
    ``SCREENED_MAX_ROWS_AVX512`` rows, with them up to ``SCREENED_MAX_ROWS``; past that the pruned
    search (the same neighbours either way)."""
    rng = np.random.default_rng(6)
    bank = _data(rng, 3000, 8)
    monkeypatch.setattr(knn, "SCREENED_MIN_ROWS", 1000)
    monkeypatch.setattr(knn, "SCREENED_MAX_ROWS_AVX512", 2500)
    monkeypatch.setattr(knn_screened, "has_fast_bf16", lambda: True)
    monkeypatch.setattr(knn_screened, "has_amx", lambda: True)
    assert knn.screened_max_rows() == knn.SCREENED_MAX_ROWS
    assert NearestNeighbors(bank, "auto").backend == "screened"
    monkeypatch.setattr(knn_screened, "has_amx", lambda: False)
    assert knn.screened_max_rows() == 2500
    assert NearestNeighbors(bank, "auto").backend == "pruned"
    assert NearestNeighbors(bank[:2499], "auto").backend == "screened"
    assert knn.SCREENED_MAX_ROWS_AVX512 <= knn.SCREENED_MAX_ROWS
