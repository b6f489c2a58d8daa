"""The opt-in chunked coreset: per chunk exactly the brute-force greedy choice, chunks on
image boundaries, one chunk = the exact choice, and ExDD / the CLI wiring."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from defectforge.bank.chunked import ChunkedKCenter, chunk_bounds
from defectforge.bank.coreset import coreset_size, greedy_kcenter, greedy_kcenter_bruteforce
from defectforge.bank.features import random_projection
from defectforge.detect.exdd import ExDD, PatchCore
from defectforge.errors import ConfigError

from test_detect_model import SMALL, toy_samples

pytestmark = pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning")


@pytest.mark.parametrize("n,chunk", [(1, 5), (7, 3), (10, 3), (402, 100), (400, 100), (5, 1), (3, 100)])
def test_chunk_bounds_cover_every_image_in_balanced_chunks(n, chunk):
    b = chunk_bounds(n, chunk)
    assert b[0] == 0 and b[-1] == n and len(b) - 1 == max(1, round(n / chunk))
    sizes = np.diff(b)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


def _feed(ch: ChunkedKCenter, x: np.ndarray, batches) -> np.ndarray:
    s = 0
    for size in batches:
        ch.add(x[s:s + size])
        s += size
    ch.add(x[s:])
    return ch.finish()


@pytest.mark.parametrize("seed", [0, 3])
def test_each_chunk_is_the_bruteforce_choice_of_its_rows(seed):
    rng = np.random.default_rng(seed)
    n_img, rpi = 10, 7
    x = rng.standard_normal((n_img * rpi, 5)).astype(np.float32)
    x[5:9] = x[4]  # duplicates inside a chunk
    ch = ChunkedKCenter(n_img, rpi, chunk_images=3, ratio=0.3, seed=seed)
    got = _feed(ch, x, [4, 11, 1, 30])  # batches that cross chunk ends
    bounds = [b * rpi for b in chunk_bounds(n_img, 3)]
    want = []
    for j, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        sj = seed if j == 0 else int(np.random.default_rng([seed, j]).integers(2 ** 31))
        want.append(np.sort(greedy_kcenter_bruteforce(x[s:e], coreset_size(e - s, 0.3), seed=sj)) + s)
    np.testing.assert_array_equal(got, np.concatenate(want))
    assert ch.n_chunks == 3 and np.all(np.diff(got) > 0)


def test_one_chunk_is_the_exact_choice_over_all_rows():
    x = np.random.default_rng(1).standard_normal((6 * 9, 4)).astype(np.float32)
    ch = ChunkedKCenter(6, 9, chunk_images=50, ratio=0.2, seed=4)
    got = _feed(ch, x, [9, 9])
    np.testing.assert_array_equal(got, np.sort(greedy_kcenter(x, coreset_size(len(x), 0.2), seed=4)))


def test_minimum_is_shared_and_misuse_is_refused():
    x = np.zeros((4 * 3, 2), np.float32)
    x[:, 0] = np.arange(12)
    ch = ChunkedKCenter(4, 3, chunk_images=2, ratio=0.01, minimum=4)
    assert len(_feed(ch, x, [])) == 4  # ceil(4 * 6 / 12) = 2 per chunk
    ch = ChunkedKCenter(4, 3, chunk_images=2, ratio=0.5)
    with pytest.raises(ValueError, match="more rows than planned"):
        ch.add(np.zeros((13, 2), np.float32))
    ch.add(x[:6])
    with pytest.raises(ValueError, match="planned"):
        ch.finish()
    with pytest.raises(ValueError):
        ChunkedKCenter(4, 3, chunk_images=0, ratio=0.5)


def test_exdd_chunked_bank_is_the_union_of_the_chunks_choices():
    train = toy_samples(0, 9, 0, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ExDD(**{**SMALL, "normal_ratio": 0.2}, val_fraction=0.0, coreset_chunk=4).fit(train)
        exact = ExDD(**{**SMALL, "normal_ratio": 0.2}, val_fraction=0.0).fit(train)
        one = ExDD(**{**SMALL, "normal_ratio": 0.2}, val_fraction=0.0, coreset_chunk=20).fit(train)
    rows = np.concatenate([m._rows([s.rgb()]) for s in train])
    y = rows @ random_projection(rows.shape[1], SMALL["projection_dim"], 0)
    rpi = len(rows) // len(train)
    bounds = [b * rpi for b in chunk_bounds(len(train), 4)]
    want = np.concatenate([
        np.sort(greedy_kcenter_bruteforce(y[s:e], coreset_size(e - s, 0.2),
                                          seed=0 if j == 0 else int(np.random.default_rng([0, j]).integers(2 ** 31)))) + s
        for j, (s, e) in enumerate(zip(bounds[:-1], bounds[1:]))])
    assert m.bank_normal_.shape == (len(want), rows.shape[1])
    np.testing.assert_allclose(m.bank_normal_, rows[want], rtol=0, atol=1e-5)
    assert m.fit_info_["coreset"] == {"mode": "chunked", "chunk_images": 4, "chunks": 2, "max": 16384,
                                      "capped": False}
    assert exact.fit_info_["coreset"] == {"mode": "exact", "max": 16384, "capped": False}
    assert not np.array_equal(m.bank_normal_, exact.bank_normal_)  # a different (approximate) choice
    np.testing.assert_array_equal(one.bank_normal_, exact.bank_normal_)  # one chunk: the exact choice


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_bad_coreset_chunk_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="coreset_chunk"):
        PatchCore(**SMALL, coreset_chunk=bad).fit(toy_samples(0, 3, 0, "train"))


def test_chunked_model_round_trips(tmp_path):
    from defectforge.detect.base import load_detector

    train = toy_samples(2, 8, 0, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = PatchCore(**SMALL, coreset_chunk=3).fit(train)
        m.save(tmp_path / "m.pt")
        back = load_detector(tmp_path / "m.pt")
        test = toy_samples(3, 2, 2, "test")
        np.testing.assert_allclose(back.predict(test).pred_score, m.predict(test).pred_score, rtol=1e-6)
    assert back.coreset_chunk == 3 and back.fit_info_["coreset"]["mode"] == "chunked"


def cli_fit(tmp_path, n_images: int, *args: str):
    """``detect fit`` of a PatchCore (random weights, 64x96) on ``n_images`` good textures
    written once to ``tmp_path / "d"``, with ``args``; the CliRunner result."""
    from typer.testing import CliRunner

    from defectforge.cli import app
    from defectforge.data.image_io import write_image
    from test_detect_model import texture

    rng = np.random.default_rng(0)
    for i in range(n_images):
        path = tmp_path / "d" / "train" / "good" / f"g{i}.png"
        if not path.exists():
            write_image(path, texture(rng))
    return CliRunner().invoke(app, ["detect", "fit", str(tmp_path / "d"), "--model", "patchcore", "--random-init",
                                    "--image-size", "64x96", *args])


def test_cli_coreset_chunk_is_recorded_and_bad_values_are_one_line_errors(tmp_path):
    r = cli_fit(tmp_path, 7, "--coreset-chunk", "3", "--out", str(tmp_path / "m.dfm"))
    assert r.exit_code == 0, r.output
    assert "chosen in 2 chunks of about 3 images" in r.output
    assert PatchCore.load(tmp_path / "m.dfm").fit_info_["coreset"] == {"mode": "chunked", "chunk_images": 3, "chunks": 2,
                                                                  "max": 163840, "capped": False}
    r = cli_fit(tmp_path, 7, "--coreset-chunk", "-2", "--out", str(tmp_path / "x.dfm"))
    assert r.exit_code == 2 and "coreset-chunk" in r.output and not (tmp_path / "x.dfm").exists()
