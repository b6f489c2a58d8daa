"""The estimator contract, checked for every registered detector: 2D anomaly detectors
(``DETECTORS``), 3D detectors (``DETECTORS3D``) and box detectors (one per registered
architecture in ``BOX_ARCHS``).

For each: parameters round-trip (``get_params`` / ``set_params`` / ``clone``, unchanged by
``fit``), ``fit`` returns ``self``, ``predict`` and ``save`` before ``fit`` raise
``NotFittedError``, save -> load gives the same class, parameters and identical
predictions, and foreign, newer, truncated or round-1 files are answered as documented
(refused with one line naming the file and, for versions, the version; round-1 files load).

A new registered name without tiny settings in ``TINY`` fails here on purpose: add them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

from defectforge.data.sample import Sample
from defectforge.detect.base import DETECTORS, Detector, load_detector
from defectforge.detect3d import DETECTORS3D, Detector3D, load_models3d
from defectforge.errors import ConfigError, InputError
from defectforge.estimator import FORMAT_VERSION, NotFittedError, clone, is_fitted
from defectforge.supervised import BOX_ARCHS, BoxDetector

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# -- tiny settings per registered name (seconds to fit) -----------------------------------------------
_2D = dict(random_init=True, image_size=(32, 48), projection_dim=8, normal_ratio=0.5, defect_ratio=0.5,
           batch_size=8, val_fraction=0.25)
_BOX = dict(image_size=48, epochs=1, batch_size=4, warmup_iters=1, val_fraction=0.0, neg_per_pos=None,
            random_init=True)
TINY: dict[str, dict[str, dict[str, Any]]] = {
    "2d": {"exdd": _2D, "patchcore": _2D},
    "3d": {"fpfh": dict(ks=(20, 40), n_groups=128, group_size=16, voxel=0.04, smooth_k=6, top_k=10),
           "pointnet": dict(channels=8, n_layers=1, k=8, net_points=300, steps=3, top_k=5, voxel=0.04)},
    "boxes": {a: dict(_BOX, arch=a) for a in ("fasterrcnn-lite0", "retinanet-lite0", "fcos-lite0",
                                              "yolox-nano", "yolox-tiny")},
}


def _textures(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(120 + rng.normal(0, 1, (40, 1)) * 12 + rng.normal(0, 6, (40, 56)), 0, 255)
            .astype(np.uint8)[..., None].repeat(3, axis=2) for _ in range(n)]


def _defects2d() -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for img in _textures(2, 7):
        m = np.zeros(img.shape[:2], bool)
        m[10:22, 20:34] = True
        img = img.copy()
        img[m] = 20
        out.append((img, m))
    return out


def _clouds(n: int, seed: int) -> list[np.ndarray]:
    from defectforge.synth3d.parts import make_part

    return [make_part("flange", 1500, seed + i).points for i in range(n)]


def _boxes(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = (rng.random((48, 64, 3)) * 40 + 110).astype(np.uint8)
        m = np.zeros(img.shape[:2], bool)
        y, x = rng.integers(4, 28, 2)
        m[y:y + 14, x:x + 14] = True
        img[m] = 15
        out.append(Sample(label="pit", split="train", image_array=img, mask_array=m, meta={"name": f"b{i}"}))
    return out


@dataclass
class Family:
    """How the contract drives one detector family."""

    key: str
    base: type
    names: Callable[[], list[str]]
    make: Callable[[str, dict], Any]
    fit: Callable[[Any, Any], Any]
    test_input: Callable[[], Any]
    load: Callable[..., Any]


FAMILIES = {
    "2d": Family("2d", Detector, DETECTORS.names, lambda n, kw: DETECTORS.get(n)(**kw),
                 lambda est, tmp: est.fit(_textures(5, 0), _defects2d()), lambda: _textures(2, 1),
                 load_detector),
    "3d": Family("3d", Detector3D, DETECTORS3D.names, lambda n, kw: DETECTORS3D.get(n)(**kw),
                 lambda est, tmp: est.fit(_clouds(2, 0)), lambda: _clouds(1, 5),
                 lambda p, **rt: load_models3d(p, **rt)["default"]),
    "boxes": Family("boxes", BoxDetector, BOX_ARCHS.names, lambda n, kw: BoxDetector(**kw),
                    lambda est, tmp: est.fit(_boxes(4, 0), out_dir=tmp), lambda: _boxes(2, 9),
                    BoxDetector.load),
}
CASES = [(fam, name) for fam, f in FAMILIES.items() for name in f.names()]


def _make(fam: str, name: str):
    if name not in TINY[fam]:
        pytest.fail(f"registered {fam} detector {name!r} has no tiny settings in TINY: add them")
    try:
        est = FAMILIES[fam].make(name, dict(TINY[fam][name]))
        if fam == "boxes":  # an optional architecture whose package is not installed
            from defectforge.supervised.models import build_detector

            build_detector(name, 1, image_size=48)
    except ConfigError as exc:
        if "pip install" in str(exc):
            pytest.skip(f"{name}: {exc}")
        raise
    return est


_FITTED: dict[tuple[str, str], Any] = {}


def _fitted(fam: str, name: str, tmp_path_factory) -> Any:
    if (fam, name) not in _FITTED:
        est = _make(fam, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = FAMILIES[fam].fit(est, tmp_path_factory.mktemp(f"{fam}-{name}"))
        assert out is est, "fit must return self"
        _FITTED[(fam, name)] = est
    return _FITTED[(fam, name)]


def _same_predictions(a, b) -> None:
    np.testing.assert_array_equal(a.pred_score, b.pred_score)
    np.testing.assert_array_equal(a.pred_label, b.pred_label)
    for attr in ("anomaly_map", "pred_mask", "boxes"):
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None) == (y is None), attr
        if x is not None:
            assert len(x) == len(y)
            for u, v in zip(x, y):
                if isinstance(u, np.ndarray):
                    np.testing.assert_array_equal(u, v)
                else:
                    assert u == v


def _load(fam: str, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FAMILIES[fam].load(path)


def _one_line(exc: pytest.ExceptionInfo, path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


# -- the contract ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fam,name", CASES)
def test_parameters_round_trip(fam, name):
    est = _make(fam, name)
    params = est.get_params()
    for k, v in TINY[fam][name].items():
        assert params[k] == v
    assert isinstance(est, FAMILIES[fam].base) and not is_fitted(est)
    again = clone(est)
    assert type(again) is type(est) and again is not est and again.get_params() == params
    assert type(est)(**params).get_params() == params
    assert est.set_params(seed=3) is est and est.get_params()["seed"] == 3
    with pytest.raises(ConfigError, match="unknown parameter"):
        est.set_params(no_such_parameter=1)


@pytest.mark.parametrize("fam,name", CASES)
def test_predict_and_save_before_fit_raise(fam, name, tmp_path):
    est = _make(fam, name)
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(FAMILIES[fam].test_input())
    with pytest.raises(NotFittedError, match="not fitted"):
        est.save(tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("fam,name", CASES)
def test_fit_keeps_params_and_save_load_predicts_identically(fam, name, tmp_path, tmp_path_factory):
    est = _fitted(fam, name, tmp_path_factory)
    assert is_fitted(est)
    expected = {**_make(fam, name).get_params()}
    assert est.get_params() == expected, "fit must not change the parameters"
    x = FAMILIES[fam].test_input()
    pred = est.predict(x)
    assert len(pred) == len(x)
    path = est.save(tmp_path / "m.pt")
    torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    back = _load(fam, path)
    assert type(back) is type(est)
    runtime = set(type(est).runtime_params)
    assert {k: v for k, v in back.get_params().items() if k not in runtime} == \
           {k: v for k, v in est.get_params().items() if k not in runtime}
    _same_predictions(pred, back.predict(x))


@pytest.mark.parametrize("fam,name", CASES)
def test_foreign_newer_and_truncated_files_are_refused_in_one_line(fam, name, tmp_path, tmp_path_factory):
    est = _fitted(fam, name, tmp_path_factory)
    path = est.save(tmp_path / "m.pt")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert obj["kind"] == est.model_kind and obj["format_version"] == FORMAT_VERSION
    assert obj["class"] == type(est).__name__ and set(obj) >= {"params", "state", "defectforge_version"}

    newer = tmp_path / "newer.pt"
    torch.save({**obj, "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(InputError) as exc:
        _load(fam, newer)
    assert f"format version {FORMAT_VERSION + 1}" in _one_line(exc, newer)

    for other_fam in FAMILIES:  # this file read as another family's model
        if other_fam != fam:
            with pytest.raises(InputError) as exc:
                _load(other_fam, path)
            assert "not a defectforge" in _one_line(exc, path)
    foreign = tmp_path / "foreign.pt"
    torch.save({**obj, "kind": "acme.model"}, foreign)
    with pytest.raises(InputError) as exc:
        _load(fam, foreign)
    assert "not a defectforge" in _one_line(exc, foreign)

    unknown = tmp_path / "unknown-class.pt"
    torch.save({**obj, "class": "NoSuchDetector"}, unknown)
    with pytest.raises(InputError) as exc:
        _load(fam, unknown)
    assert "NoSuchDetector" in _one_line(exc, unknown)

    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError) as exc:
        _load(fam, cut)
    assert "truncated or corrupt" in _one_line(exc, cut)

    pickled = tmp_path / "pickled.pt"  # arbitrary objects are never unpickled
    torch.save({**obj, "state": {"x": Family}}, pickled)
    with pytest.raises(InputError) as exc:
        _load(fam, pickled)
    _one_line(exc, pickled)


def _round1(fam: str, obj: dict) -> dict:
    """The same model in the round-1 (format 1 / unversioned) layout of its family."""
    if fam == "2d":
        st = obj["state"]
        cfg = {**obj["params"], "layers": list(st["layers"])}
        return {"kind": "defectforge.detect.exdd", "format_version": 1, "class": obj["class"], "config": cfg,
                **{k: v for k, v in st.items() if k != "layers"}, "defectforge_version": "0.1.0"}
    if fam == "3d":
        return {"kind": "defectforge.detect3d", "format_version": 1, "defectforge_version": "0.1.0",
                "models": {"default": {"class": obj["class"], "config": obj["params"], **obj["state"]}}}
    return {"config": obj["params"], "classes": obj["state"]["classes"], "model": obj["state"]["model"],
            "info": obj["state"]["info"]}


@pytest.mark.parametrize("fam,name", CASES)
def test_round1_files_load_or_name_their_version(fam, name, tmp_path, tmp_path_factory):
    est = _fitted(fam, name, tmp_path_factory)
    obj = torch.load(est.save(tmp_path / "m.pt"), map_location="cpu", weights_only=True)
    old = tmp_path / "round1.pt"
    torch.save(_round1(fam, obj), old)
    back = _load(fam, old)
    assert type(back) is type(est)
    x = FAMILIES[fam].test_input()
    _same_predictions(est.predict(x), back.predict(x))
    if fam != "boxes":  # an old version this code cannot read is named
        bad = _round1(fam, obj)
        bad["format_version"] = 0
        torch.save(bad, old)
        with pytest.raises(InputError) as exc:
            _load(fam, old)
        assert "version 0" in _one_line(exc, old)


def test_every_family_has_tiny_settings_for_exactly_its_registered_names():
    for fam, f in FAMILIES.items():
        assert set(TINY[fam]) == set(f.names()), fam
