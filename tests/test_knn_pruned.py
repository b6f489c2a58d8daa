"""The pruned exact nearest-neighbour search returns the flat search's neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from defectforge.bank import knn
from defectforge.bank.knn import NearestNeighbors
from defectforge.bank.knn_pruned import PrunedIndex
from defectforge.errors import ConfigError


def _brute(bank: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, :k]


def _true_dist(bank, q, idx):
    return np.sqrt(((q[:, None, :].astype(np.float64) - bank[idx].astype(np.float64)) ** 2).sum(-1))


def _data(rng, n, d, clusters=8, spread=0.3):
    cent = rng.normal(size=(clusters, d)) * 3
    return (cent[rng.integers(clusters, size=n)] + spread * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_pruned_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(50, 3000)), int(rng.integers(1, 48)), int(rng.integers(1, 6))
    bank = _data(rng, n, d)
    if seed % 2:
        bank = np.concatenate([bank, bank[: n // 3]])  # duplicates
    q = np.concatenate([_data(rng, 300, d), bank[:20]])  # incl. queries equal to bank rows
    index = PrunedIndex(bank, axes=int(rng.integers(1, 20)), cluster_size=int(rng.integers(4, 200)), seed=seed)
    d2, idx = index.search(q, k)
    want = _brute(bank, q, k)
    np.testing.assert_allclose(np.sqrt(d2), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_true_dist(bank, q, idx), want, rtol=1e-5, atol=1e-5)
    assert index.last_fraction < 1.0


def test_many_queries_at_once_equal_one_at_a_time():
    """Queries are searched in blocks, cluster by cluster, on two threads; the neighbours and
    distances must be those of each query searched alone (the order of the work changes the
    speed only), bit for bit, duplicates and ties included."""
    from defectforge.bank import knn_pruned

    rng = np.random.default_rng(7)
    bank = _data(rng, 2500, 24, clusters=12)
    bank = np.concatenate([bank, bank[:300], np.round(bank[:200])])  # duplicates and near-ties
    n_q = 2 * knn_pruned.QUERY_BLOCK + 300  # several blocks on each thread
    q = np.concatenate([_data(rng, n_q - 400, 24, clusters=12), bank[:200], np.round(bank[:200])])
    index = PrunedIndex(bank, cluster_size=32, seed=1)
    d2, idx = index.search(q, 3)
    some = np.concatenate([np.arange(0, len(q), 9), np.arange(len(q) - 400, len(q))])  # every block, all duplicates
    one = [index.search(q[i:i + 1], 3) for i in some]
    assert np.array_equal(d2[some], np.concatenate([d for d, _ in one]))
    assert np.array_equal(idx[some], np.concatenate([i for _, i in one]))
    np.testing.assert_allclose(np.sqrt(d2[:300]), _brute(bank, q[:300], 3), rtol=1e-5, atol=1e-5)


def test_exact_duplicates_go_to_the_lowest_index():
    rng = np.random.default_rng(0)
    row = rng.normal(size=(1, 16)).astype(np.float32)
    bank = np.concatenate([rng.normal(size=(500, 16)).astype(np.float32) + 5, row, row, row])
    d2, idx = PrunedIndex(bank, cluster_size=16).search(np.repeat(row, 3, 0), 2)
    assert (d2 == 0).all() and (idx == [500, 501]).all()


def test_equal_distances_go_to_the_lowest_original_index():
    """Ties between different rows (all at distance 1 from the query) resolve to the lowest
    index of the bank as given, whatever cluster order the index keeps internally."""
    rng = np.random.default_rng(1)
    d = 8
    ring = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32)  # 16 rows at distance 1 from 0
    far = (rng.normal(size=(400, d)) + 6).astype(np.float32)
    bank = np.concatenate([far, ring])[rng.permutation(416)]
    tied = np.flatnonzero(np.abs(np.linalg.norm(bank, axis=1) - 1) < 1e-6)
    d2, idx = PrunedIndex(bank, axes=3, cluster_size=8).search(np.zeros((70, d), np.float32), 4)
    assert (d2 == 1).all()
    assert (idx == np.sort(tied)[:4]).all()


@pytest.mark.parametrize("bank", [np.zeros((1, 5), np.float32), np.ones((40, 3), np.float32),
                                  np.arange(30, dtype=np.float32)[:, None]])
def test_degenerate_banks(bank):
    q = np.linspace(-2, 40, 70, dtype=np.float32)[:, None].repeat(bank.shape[1], 1)
    d2, idx = PrunedIndex(bank).search(q, 1)
    np.testing.assert_allclose(np.sqrt(d2[:, 0]), _brute(bank, q, 1)[:, 0], rtol=1e-5, atol=1e-5)


def test_auto_backend_picks_pruned_for_large_banks_and_agrees_with_faiss(monkeypatch):
    rng = np.random.default_rng(3)
    bank, q = _data(rng, 4000, 24), _data(rng, 500, 24)
    monkeypatch.setattr(knn, "PRUNED_MIN_ROWS", 1000)
    monkeypatch.setattr(knn, "SCREENED_MAX_ROWS", 1000)  # else the screened search comes first
    auto, flat = NearestNeighbors(bank, "auto"), NearestNeighbors(bank, "faiss")
    assert auto.backend == "pruned" and NearestNeighbors(bank[:999], "auto").backend == "faiss"
    (da, ia), (df, i_f) = auto.search(q, 3), flat.search(q, 3)
    np.testing.assert_allclose(da, df, rtol=1e-4, atol=1e-3)
    assert (ia == i_f).mean() > 0.99  # float32 ties may differ in the last bits
    with pytest.raises(ConfigError, match="nn backend"):
        NearestNeighbors(bank, "annoy")


def test_patchcore_predicts_the_same_with_pruned_and_faiss_search():
    """The detectors' default backend ("auto") uses the pruned search for large banks: same
    scores and maps as faiss's flat search, up to float32 rounding."""
    import warnings

    from defectforge.bank.backbone import RandomInitWarning
    from defectforge.detect.exdd import PatchCore
    from tests.test_detect_model import SMALL, toy_samples

    train, test = toy_samples(0, 10, 0, "train"), toy_samples(2, 3, 3, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        model = PatchCore(**{**SMALL, "normal_ratio": 0.5, "nn_backend": "pruned"}).fit(train)
    assert model._nn_normal.backend == "pruned"
    got = model.predict(test)
    ref = model.set_params(nn_backend="faiss").predict(test)
    assert model._nn_normal.backend == "faiss"
    np.testing.assert_allclose(got.pred_score, ref.pred_score, rtol=1e-4, atol=1e-5)
    for a, b in zip(got.anomaly_map, ref.anomaly_map):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_auto_uses_the_pruned_search_from_1024_rows_without_bfloat16(monkeypatch):
    """Without a bfloat16 screen, ``auto`` picks the pruned search from ``PRUNED_MIN_ROWS``
    (1,024) rows and faiss below; both return the same neighbours."""
    from defectforge.bank import knn_screened

    monkeypatch.setattr(knn_screened, "has_fast_bf16", lambda: False)
    rng = np.random.default_rng(5)
    bank, q = _data(rng, 1500, 16), _data(rng, 200, 16)
    big, small = NearestNeighbors(bank, "auto"), NearestNeighbors(bank[:knn.PRUNED_MIN_ROWS - 1], "auto")
    assert knn.PRUNED_MIN_ROWS == 1024
    assert (big.backend, small.backend) == ("pruned", "faiss")
    np.testing.assert_allclose(big.search(q, 2)[0], _brute(bank, q, 2), rtol=1e-5, atol=1e-5)
