"""Projected rows in a file mapping of bounded residency (bank.mapped): the data survives a
release, the file goes on close, the coreset choice over mapped rows released between pieces
is the in-memory (and brute-force) choice, the pieces of the setup equal the one-go setup,
and ExDD uses the mapping past its size rule with the same bank."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import defectforge.detect.exdd_fit as exdd_fit
from defectforge.bank._blocks import permute_rows, principal_rows
from defectforge.bank.coreset import greedy_kcenter, greedy_kcenter_bruteforce
from defectforge.bank.mapped import MappedRows, resident_file_bytes
from defectforge.detect.exdd import ExDD, PatchCore

from test_detect_model import SMALL, toy_samples

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


def test_rows_survive_a_release_and_the_file_goes_on_close(tmp_path):
    x = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    m = MappedRows(*x.shape, dir=str(tmp_path), budget=0)
    assert os.path.dirname(m.path) == str(tmp_path) and os.path.getsize(m.path) == x.nbytes
    m.array[:] = x
    assert m.release() and m.releases == 1  # budget 0: any resident page is over it
    np.testing.assert_array_equal(m.array, x)
    path = m.path
    m.close()
    assert not os.path.exists(path) and not list(tmp_path.iterdir())


def test_release_under_budget_keeps_the_pages():
    with MappedRows(16, 4, budget=1 << 40) as m:
        m.array[:] = 1.0
        if resident_file_bytes() is None:
            pytest.skip("the system does not report resident file pages")
        assert not m.release() and m.releases == 0
        assert m.release(force=True) and m.releases == 1


def test_release_drops_the_resident_pages():
    if resident_file_bytes() is None:
        pytest.skip("the system does not report resident file pages")
    n = 64 << 20  # bytes
    with MappedRows(n // 4 // 64, 64) as m:
        before = resident_file_bytes()
        m.array[:] = 1.0
        filled = resident_file_bytes()
        m.release(force=True)
        after = resident_file_bytes()
        assert filled - before > n // 2 and filled - after > n // 2
        assert float(m.array[::4096].sum()) == m.array[::4096].size  # read back from the cache


@pytest.mark.parametrize("N,d,n,seed", [(4000, 24, 150, 0), (2500, 6, 400, 3), (600, 128, 40, 1), (1, 4, 1, 0),
                                        (300, 3, 300, 2)])
def test_mapped_choice_released_in_pieces_is_the_exact_choice(tmp_path, N, d, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, d)).astype(np.float32)
    x[::7] = x[0]  # duplicates and tied distances
    x[1::11] = np.round(x[1::11])
    want = greedy_kcenter_bruteforce(x, n, seed=seed)
    with MappedRows(N, d, dir=str(tmp_path), budget=0) as m:
        m.array[:] = x
        got = greedy_kcenter(m, n, seed=seed, block=16)
        assert m.releases >= 3  # setup chunks, the permutation, the first pass, the choices
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(greedy_kcenter(x, n, seed=seed, block=16), want)
    assert not list(tmp_path.iterdir())  # the permutation's files and the mapping are gone


@pytest.mark.parametrize("N,chunk,bucket", [(257, 10, 16), (1000, 64, 1000), (5, 1, 1), (300, 1 << 16, 7)])
def test_permutation_by_sequential_passes(tmp_path, N, chunk, bucket):
    rng = np.random.default_rng(N)
    x = rng.standard_normal((N, 3)).astype(np.float32)
    perm = np.concatenate([np.arange(3), 3 + rng.permutation(N - 3)])  # with fixed points
    with MappedRows(N, 3, dir=str(tmp_path), budget=0) as m:
        m.array[:] = x
        m.permute(perm, chunk_rows=chunk, bucket_rows=bucket)
        np.testing.assert_array_equal(m.array, x[perm])
        with pytest.raises(ValueError, match="perm must have"):
            m.permute(perm[:-1])
    assert not list(tmp_path.iterdir())
    y = x.copy()
    permute_rows(y, perm)
    np.testing.assert_array_equal(y, x[perm])


@pytest.mark.parametrize("N", [1000, 45_001])  # the second: a stride-2 sample read in chunks
def test_principal_rows_by_chunk_with_release_are_the_same(N):
    x = np.random.default_rng(5).standard_normal((N, 12)).astype(np.float32)
    calls = []
    y1, e1 = principal_rows(x, 4, chunk=97, release=lambda: calls.append(1))
    y2, e2 = principal_rows(x, 4, chunk=1 << 20)  # one chunk
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(e1, e2)
    assert len(calls) >= 2 * (N // 97)  # the sample's chunks and the projection's


@pytest.mark.parametrize("cls", [ExDD, PatchCore])
def test_fit_maps_large_projected_rows_and_keeps_the_bank(cls, monkeypatch, tmp_path):
    train = toy_samples(0, 8, 0, "train")
    defects = toy_samples(1, 0, 3, "train") if cls is ExDD else None
    made = []

    class Spy(MappedRows):
        def __init__(self, *a, **k):
            super().__init__(*a, **{**k, "budget": 0})
            made.append(self)

    def fit():
        return cls(**SMALL).fit(train, defects) if defects else cls(**SMALL).fit(train)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fit()
        monkeypatch.setattr("defectforge.bank.mapped.MappedRows", Spy)
        assert fit() is not None and not made  # under the size rule: in memory
        monkeypatch.setattr(exdd_fit, "MAP_ROWS_ABOVE", 0)
        mapped = fit()
    assert len(made) == 1 and made[0].releases > 0  # the normal bank only
    assert not os.path.exists(made[0].path)
    np.testing.assert_array_equal(mapped.bank_normal_, plain.bank_normal_)
    if cls is ExDD:
        np.testing.assert_array_equal(mapped.bank_defect_, plain.bank_defect_)


def _no_space(*a, **k):
    raise OSError(28, "No space left on device")


def test_no_disk_for_the_permutation_falls_back_to_the_in_place_one(tmp_path, monkeypatch):
    x = np.random.default_rng(2).standard_normal((900, 5)).astype(np.float32)
    want = greedy_kcenter_bruteforce(x, 60, seed=0)
    monkeypatch.setattr(MappedRows, "_scatter", _no_space)
    with MappedRows(*x.shape, dir=str(tmp_path), budget=0) as m:
        m.array[:] = x
        assert m.permute(np.arange(900)[::-1]) is False
        np.testing.assert_array_equal(m.array, x)  # untouched
        with pytest.warns(ResourceWarning, match="no free space"):
            got = greedy_kcenter(m, 60, seed=0, block=16)
    np.testing.assert_array_equal(got, want)
    assert not list(tmp_path.iterdir())


def test_fit_keeps_the_rows_in_memory_when_the_mapping_cannot_be_made(monkeypatch):
    train = toy_samples(0, 6, 0, "train")

    class Full(MappedRows):
        __init__ = _no_space

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = PatchCore(**SMALL).fit(train)
    monkeypatch.setattr(exdd_fit, "MAP_ROWS_ABOVE", 0)
    monkeypatch.setattr("defectforge.bank.mapped.MappedRows", Full)
    with pytest.warns(ResourceWarning, match="cannot hold the projected rows .*No space left"):
        again = PatchCore(**SMALL).fit(train)
    np.testing.assert_array_equal(again.bank_normal_, plain.bank_normal_)
