"""The Python API takes what the CLI takes: ``model.predict`` accepts image paths, folders,
glob patterns, numpy arrays, PIL images and Samples, one or a list."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from defectforge.data import Dataset, Sample, write_image
from defectforge.data.inputs import as_items
from defectforge.errors import InputError

pytestmark = [pytest.mark.filterwarnings("ignore::defectforge.bank.backbone.RandomInitWarning"),
              pytest.mark.filterwarnings("ignore:val_fraction=0")]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.jpg", "sub/c.png"):
        p = tmp_path / "imgs" / name
        write_image(p, rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        paths.append(p)
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    return tmp_path / "imgs", paths


def test_as_items_expands_paths_folders_globs_and_keeps_arrays(files):
    root, (a, b, c) = files
    assert [s.path for s in as_items(str(a))] == [a]  # one path, as str
    assert [s.path for s in as_items([a, b])] == [a, b]
    assert [s.path for s in as_items(root)] == [a, b]  # folder: its images, not sub-folders or .txt
    assert [s.path for s in as_items(str(root / "**" / "*.png"))] == [a, c]
    arr = np.zeros((5, 6, 3), np.uint8)
    assert as_items(arr)[0] is arr  # one H x W x C array is one image, not 5 rows
    assert len(as_items(np.zeros((4, 5, 6, 3), np.uint8))) == 4
    pil = as_items(Image.fromarray(arr))[0]
    assert isinstance(pil, np.ndarray) and pil.shape == (5, 6, 3)
    smp = Sample(path=a)
    assert as_items([smp, arr])[0] is smp and len(as_items(Dataset([smp, smp]))) == 2
    with pytest.raises(InputError, match="missing.png: file not found"):
        as_items([a, root / "missing.png"])
    with pytest.raises(InputError, match="matches no image files"):
        as_items(str(root / "*.bmp"))
    with pytest.raises(InputError, match="notes.txt: not an image file"):
        as_items(root / "notes.txt")
    with pytest.raises(InputError, match="cannot predict on a dict"):
        as_items([{"x": 1}])


def test_model_predict_accepts_paths_like_the_cli(files):
    from defectforge.detect.base import get_detector
    from defectforge.data.image_io import read_image

    root, (a, b, c) = files
    rng = np.random.default_rng(1)
    normal = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(6)]
    det = get_detector("patchcore", random_init=True, image_size=(32, 32), val_fraction=0).fit(normal)
    by_path = det.predict([str(a)])
    by_array = det.predict([read_image(a)])
    assert np.allclose(by_path.pred_score, by_array.pred_score)
    assert len(det.predict(root)) == 2 and len(det.predict(str(a))) == 1
    assert len(det.predict(Image.open(b))) == 1


def test_prediction_items_plot_save_and_to_dict(files, tmp_path):
    import json

    from defectforge.data.image_io import read_image
    from defectforge.detect.base import get_detector

    root, (a, b, c) = files
    rng = np.random.default_rng(1)
    normal = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(10)]
    det = get_detector("patchcore", random_init=True, image_size=(32, 32), val_fraction=0.3).fit(normal)
    pred = det.predict(root)
    assert len(pred) == 2 and [it.name for it in pred] == ["a", "b"]
    last = pred[-1]
    assert last.index == 1 and last.score == pred.pred_score[1]
    d = last.to_dict()
    json.dumps(d)
    assert d["name"] == "b" and d["mask_pixels"] == int(pred.pred_mask[1].sum())
    assert d["map_max"] == pytest.approx(float(pred.anomaly_map[1].max()))
    pic = last.plot()
    assert pic.ndim == 3 and pic.shape[1] > 3 * 32  # image | map | mask | colour bar
    out = last.save(tmp_path / "b_pred.png")
    assert np.array_equal(read_image(out)[..., :3], pic)
    with pytest.raises(IndexError):
        pred[2]


def test_dataset_repr_is_a_summary():
    from defectforge.datasets import load_sample

    ds = load_sample()
    r = repr(ds)
    assert len(r) < 300 and r.startswith("Dataset(90 samples, format='manifest'")
    assert "train/good: 40" in r and "test/pitting: 20" in r
    assert repr(Dataset([])) == "Dataset(0 samples, format='memory', root=None)"


def test_box_detector_predict_accepts_paths(tmp_path):
    from test_supervised_train import _cfg, _data

    from defectforge.data import write_dataset
    from defectforge.data.formats import load_dataset
    from defectforge.supervised import train_detector

    det = train_detector(_data(8), tmp_path / "run", _cfg(epochs=1))
    root = write_dataset(Dataset(_data(3, seed=4, split="test")), tmp_path / "ds", "manifest")
    files = [s.path for s in load_dataset(root)]
    by_path = det.predict([str(f) for f in files])
    by_sample = det.predict(list(load_dataset(root)))
    assert len(by_path) == 3
    assert [[b.xywh() for b in bs] for bs in by_path.boxes] == [[b.xywh() for b in bs] for bs in by_sample.boxes]
