"""Exact greedy k-center (lazy blocks, principal-axis and float32 pre-tests) against the
brute force: same selection index for index on random data, duplicates, exact ties, tiny
and degenerate inputs, any block size and test width, with or without reordering the
input in place; the row spool."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defectforge.bank._exact import pairwise_plan
from defectforge.bank._blocks import principal_rows
from defectforge.bank.coreset import greedy_kcenter, greedy_kcenter_bruteforce
from defectforge.bank.spool import RowSpool


def _data(kind: str, rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "duplicates":
        x = x[rng.integers(0, max(1, n // 4), n)]
    elif kind == "ties":  # small integer grid: many exactly equal distances
        x = rng.integers(0, 3, (n, d)).astype(np.float32)
    elif kind == "clusters":
        centres = rng.normal(0, 20, (5, d))
        x = (centres[rng.integers(5, size=n)] + rng.normal(0, 0.5, (n, d))).astype(np.float32)
    elif kind == "scaled":  # large offset and scale: rounding of the bounds matters
        x = (1e4 + 1e3 * x).astype(np.float32)
    return x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["normal", "duplicates", "ties", "clusters", "scaled"]),
       n=st.integers(1, 300), d=st.integers(1, 20), extra=st.integers(0, 5), seed=st.integers(0, 50),
       block=st.integers(1, 70), dim=st.integers(0, 24), overwrite=st.booleans(),
       data_seed=st.integers(0, 10_000), threads=st.sampled_from([1, 2]))
def test_same_selection_as_bruteforce(kind, n, d, extra, seed, block, dim, overwrite, data_seed, threads):
    """Also with two threads, where every visit shares its rows with the worker (``PAR_PAIRS``
    lowered to 1: small inputs would otherwise stay on one thread)."""
    import defectforge.bank._lazy as lazy

    x = _data(kind, np.random.default_rng(data_seed), n, d)
    k = int(np.random.default_rng(data_seed + 1).integers(1, n + 1)) + extra
    ref = greedy_kcenter_bruteforce(x, k, seed=seed)
    keep = x.copy()
    old = lazy.PAR_PAIRS
    lazy.PAR_PAIRS = 1
    try:
        stats: dict = {}
        fast = greedy_kcenter(x, k, seed=seed, block=block, dim=dim, overwrite_x=overwrite, threads=threads,
                              stats=stats)
    finally:
        lazy.PAR_PAIRS = old
    assert np.array_equal(fast, ref)
    assert stats["block_visits"] >= (1 if len(ref) > 1 else 0)
    if not overwrite:
        assert np.array_equal(x, keep)  # the input is never modified unless allowed


@pytest.mark.timeout(300, method="thread")  # a worker that never takes rows would leave the main thread waiting
def test_two_threads_share_the_visits_and_choose_the_same_rows():
    """With two threads the worker takes part of the rows of large visits (its exact
    distances are counted apart), and the choice is the one-thread choice, index for index.
    Whether the worker gets a core at all depends on the machine's load (``make test`` runs
    test files side by side), so the sharing is checked with ``WORKER_FIRST`` (the main thread
    waits in every shared visit until the worker has taken rows); the free-running runs must
    give the same choice and the same pairs, whoever did them."""
    import defectforge.bank._lazy as lazy

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6000, 48)) * rng.uniform(0.2, 3.0, 48)).astype(np.float32)
    one: dict = {}
    a = greedy_kcenter(x, 600, seed=2, threads=1, stats=one)
    assert one["worker_exact_distances"] == 0
    for first in (True, False, False):
        two: dict = {}
        lazy.WORKER_FIRST = first
        try:
            b = greedy_kcenter(x, 600, seed=2, threads=2, stats=two)
        finally:
            lazy.WORKER_FIRST = False
        assert np.array_equal(a, b)
        assert one["exact_distances"] == two["exact_distances"]  # the same pairs, shared out
        if first:
            assert two["worker_exact_distances"] > 0


@pytest.mark.parametrize("d", [127, 128, 129, 152, 300])
def test_wide_rows_use_numpys_summation_order(d):
    """Widths around and above NumPy's 128-term pairwise block give bit-identical distances."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((400, d)).astype(np.float32) * 3
    assert np.array_equal(greedy_kcenter(x, 120, seed=1, block=8), greedy_kcenter_bruteforce(x, 120, seed=1))


def test_ties_go_to_the_lowest_index():
    # four corners of a square around the start point: equal distances everywhere
    x = np.array([[0, 0], [1, 1], [-1, 1], [1, -1], [-1, -1], [0, 0]], np.float32)
    for seed in range(5):
        assert np.array_equal(greedy_kcenter(x, 6, seed=seed, block=2), greedy_kcenter_bruteforce(x, 6, seed=seed))


def test_degenerate_inputs():
    assert len(greedy_kcenter(np.zeros((0, 4), np.float32), 3)) == 0
    assert len(greedy_kcenter(np.ones((5, 3), np.float32), 0)) == 0
    assert np.array_equal(greedy_kcenter(np.ones((7, 3), np.float32), 4), greedy_kcenter_bruteforce(np.ones((7, 3)), 4))
    one = greedy_kcenter(np.array([[2.0, 3.0]], np.float32), 5)
    assert one.tolist() == [0]
    x = np.random.default_rng(0).standard_normal((50, 1)).astype(np.float32)  # one column
    assert np.array_equal(greedy_kcenter(x, 20, seed=3), greedy_kcenter_bruteforce(x, 20, seed=3))
    # float64 and float16 input: same rule on the values used
    x64 = np.random.default_rng(1).standard_normal((80, 5))
    assert np.array_equal(greedy_kcenter(x64, 30), greedy_kcenter_bruteforce(x64.astype(np.float32), 30))
    x16 = x64.astype(np.float16)
    assert np.array_equal(greedy_kcenter(x16, 30), greedy_kcenter_bruteforce(x16, 30))


def test_pretests_leave_few_exact_distances_and_progress_is_reported():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (40, 16))
    x = (centres[rng.integers(40, size=6000)] + rng.normal(0, 1, (6000, 16))).astype(np.float32)
    stats: dict = {}
    seen: list[int] = []
    idx = greedy_kcenter(x, 600, seed=0, stats=stats, progress=seen.append)
    assert np.array_equal(idx, greedy_kcenter_bruteforce(x, 600, seed=0))
    # the brute force computes 6000 exact distances per step; here the bounds rule out
    # almost every pair, and the block test whole centres
    assert stats["exact_distances"] < 0.05 * 6000 * 600
    assert stats["pairs_tested"] < 6000 * 600 and stats["centres_skipped"] > 0
    assert seen[-1] == 600 and seen == sorted(seen)


def test_principal_rows_never_lengthen_distances():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((500, 12)) * np.linspace(5, 0.1, 12)).astype(np.float32)
    y, eps = principal_rows(x, 4)
    i, j = rng.integers(0, 500, (2, 2000))
    full = np.linalg.norm(x[i].astype(np.float64) - x[j], axis=1)
    low = np.linalg.norm(y[i].astype(np.float64) - y[j], axis=1)
    assert np.all(low - eps[i] - eps[j] <= full) and np.all(eps > 0)
    assert np.mean(low > 0.5 * full) > 0.5  # and the bound is not empty
    assert pairwise_plan(300).shape[0] == 7  # blocks 72, 72, 72, 84 and 3 additions


def test_row_spool_gathers_in_one_pass(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((1000, 7)).astype(np.float32)
    with RowSpool(7, dir=str(tmp_path)) as sp:
        for s in range(0, 1000, 137):
            sp.append(rows[s:s + 137])
        idx = np.array([0, 5, 136, 137, 500, 999])
        assert np.array_equal(sp.gather(idx, chunk_rows=100), rows[idx])
        with pytest.raises(ValueError):
            sp.gather(np.array([5, 3]))
        with pytest.raises(ValueError):
            sp.append(np.zeros((2, 3), np.float32))
        path = sp.path
    assert not list(tmp_path.iterdir()), path


@pytest.mark.parametrize("kind", ["normal", "scaled", "clusters", "duplicates", "near"])
@pytest.mark.parametrize("p", [16, 5, 0])
def test_the_matrix_product_bound_never_exceeds_the_distance(kind, p):
    """The visit's first test, ``|a|^2 + |c|^2 - 2 a.c`` less its rounding bound, all in
    float32 (16 axes: the vectorised kernel, other widths: the general one), is a lower bound
    of the squared distance of the float32 rows, also for rows far from the origin and for
    near-duplicates there (cancellation), and a close one; the group minima are the minima of
    the strided groups ``{g, g + ng, ...}``, padding columns included."""
    from defectforge.bank._lazy import LazyState
    from defectforge.bank._visit import _PAD, SLACK32, _row_bounds, _row_bounds16

    rng = np.random.default_rng(p)
    if kind == "near":  # all rows within 1e-2 of one point 1e4 away from the origin
        y = (1e4 + 1e-2 * rng.standard_normal((400, max(p, 1)))).astype(np.float32)[:, :p].copy()
    else:
        y = _data(kind, rng, 400, max(p, 1))[:, :p].copy()
    x = np.zeros((400, 3), np.float32)
    st = LazyState(x, np.arange(400), 10, 0, 64, y, np.zeros(400))
    cnt, ng = 300, 19  # 304 columns: 4 of padding
    cols = rng.integers(0, 400, cnt)
    YcT = np.zeros((max(p, 1), 16 * ng), np.float32)[:p]
    YcT[:, :cnt] = st.Y[cols].T
    nc = np.full(16 * ng, _PAD, np.float32)
    ncn = np.zeros(16 * ng, np.float32)
    nc[:cnt], ncn[:cnt] = st.sqn[cols], st.nrm[cols]
    lb = np.empty(16 * ng, np.float32)
    gmin = np.empty(ng, np.float32)
    exact = ((st.Y.astype(np.float64)[:, None, :] - st.Y.astype(np.float64)[cols][None]) ** 2).sum(-1)
    worst = 0.0
    fn = _row_bounds16 if p == 16 else _row_bounds
    for r in range(400):
        c2 = np.float32(2.0 * st.gam * st.nrm[r] * (1.0 + SLACK32))
        fn(st.Y, r, YcT, ng, nc, ncn, st.sqn[r], c2, lb, gmin)
        assert np.all(lb[:cnt] <= exact[r]), (r, np.max(lb[:cnt] - exact[r]))
        assert np.all(lb[cnt:] > 1e29)
        assert np.array_equal(gmin, lb.reshape(16, ng).min(0))
        worst = max(worst, float(np.max(exact[r] - lb[:cnt])))
    scale = float((st.Y.astype(np.float64) ** 2).sum(1).max()) if p else 1.0
    assert worst <= 1e-5 * scale + 1e-12  # the bound gives away only rounding


def test_a_fit_leaves_the_process_thread_count_alone():
    """The coreset kernel's numba threading layer must not reset the OpenMP thread count of
    the process: torch would then compute features with other threads after a fit than
    before it (or than a worker process), and the floats would differ (seen as Ray vs local
    mismatches). Run in a fresh interpreter, where no threading layer has started yet."""
    import subprocess
    import sys

    code = (
        "import warnings, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from defectforge.detect.exdd import ExDD\n"
        "rng = np.random.default_rng(0)\n"
        "imgs = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(6)]\n"
        "warnings.simplefilter('ignore')\n"
        "ExDD(random_init=True, image_size=(64, 96), val_fraction=0.34, batch_size=2).fit(imgs)\n"
        "print('threads', torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "threads 1" in out.stdout, out.stdout


@pytest.mark.parametrize("n", [1, 15, 16, 17, 9151, 16384, 16400, 163840, 182016])
def test_the_centres_scratch_rows_never_have_a_4k_multiple_stride(n):
    from defectforge.bank._lazy import _alias_free

    cols = _alias_free(n)
    assert n <= cols <= n + 32 and cols % 16 == 0 and (cols // 16) % 2 == 1  # an odd number of 64-byte lines
    assert (4 * cols) % 4096 != 0
