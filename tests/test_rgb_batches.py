"""Images read a batch ahead (bank.features.rgb_batches): same arrays, same order, an
unreadable file raises its one-line error when its batch is reached."""

import numpy as np
import pytest
from PIL import Image

from defectforge.bank.features import rgb_batches, to_rgb
from defectforge.errors import InputError


def _write(tmp_path, n):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (5 + i, 7, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("n,size", [(0, 3), (1, 3), (3, 3), (7, 3), (7, 1), (5, 10)])
def test_batches_in_order_and_complete(tmp_path, n, size):
    from defectforge.data.sample import Sample

    items = [Sample(path=p) for p in _write(tmp_path, n)]
    got = list(rgb_batches(items, size))
    assert [len(b) for b in got] == [min(size, n - s) for s in range(0, n, size)]
    flat = [a for b in got for a in b]
    assert len(flat) == n
    for it, a in zip(items, flat):
        np.testing.assert_array_equal(a, to_rgb(it))


def test_an_unreadable_image_raises_at_its_batch(tmp_path):
    from defectforge.data.sample import Sample

    paths = _write(tmp_path, 5)
    paths[3].write_bytes(b"not an image")
    it = rgb_batches([Sample(path=p) for p in paths], 2)
    assert len(next(it)) == 2  # batch 0 is fine while batch 1 (with the bad file) is read ahead
    with pytest.raises(InputError, match="im3.png"):
        next(it)
