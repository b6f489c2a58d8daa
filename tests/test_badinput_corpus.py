"""The bad-input corpus (issue 18): every command against every kind of bad input.

Each case builds its bad input (small, generated here), runs one command through the real CLI
and asserts one of the three accepted outcomes:

- ``error``: exit code 2 and one line ``error: <file>: <problem>`` (no traceback), the line
  holding the given words (usually the offending file's name);
- ``check``: ``data check`` exit code 1, listing the problem;
- ``ok``: exit code 0 and a correct result (checked by the case).

Kinds of bad input: images (corrupt, decompression bomb, over the pixel limit), masks (wrong
size, empty), manifests (outside the root, missing column, not UTF-8, misspelt split,
duplicate rows), labelme, COCO, YOLO, point clouds (header bombs, garbage, NaN), instruction
files (not UTF-8, YAML tags that would run code), model files (corrupt, pickled code,
tampered), LLM replies, and output folders (read-only, a folder where a file is expected, a
file where a folder is expected). Generated inputs are 24x32 images and 2000-point clouds so
the whole corpus runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from badinput_kit import (check_lists, coco, image, invoke, labelme, mask, one_line_error, png_claiming,
                          small_manifest, yolo)

# ----------------------------------------------------------------------------- shared inputs


@dataclass
class World:
    base: Path
    good: Path  # manifest: train 4 good + 2 dent, test 2 good + 2 dent
    model: Path  # a fitted 2D detector (random backbone, 32x32)
    cloud: Path  # a good 2000-point part
    model3d: Path  # an FPFH detector fitted on that part (Real3D-AD layout flange/train/)
    readonly: Path | None  # an empty folder nobody may write into (None: cannot make one here)


def _good_dataset(root: Path) -> Path:
    rows = []
    for i in range(4):
        image(root / "images" / f"tg{i}.png", seed=i)
        rows.append((f"images/tg{i}.png", "train", "good", ""))
    for i in range(2):
        image(root / "images" / f"td{i}.png", seed=20 + i)
        mask(root / "masks" / f"td{i}.png")
        rows.append((f"images/td{i}.png", "train", "dent", f"masks/td{i}.png"))
    for i in range(2):
        image(root / "images" / f"g{i}.png", seed=40 + i)
        rows.append((f"images/g{i}.png", "test", "good", ""))
        image(root / "images" / f"d{i}.png", seed=60 + i)
        mask(root / "masks" / f"d{i}.png")
        rows.append((f"images/d{i}.png", "test", "dent", f"masks/d{i}.png"))
    from badinput_kit import manifest

    manifest(root, rows)
    return root


def _make_readonly(path: Path) -> bool:
    """An empty folder that refuses new files: chmod for ordinary users; root ignores modes,
    so there ``chattr +i`` (immutable) is tried. False when neither works here."""
    path.mkdir()
    path.chmod(0o555)
    if _blocks(path):
        return True
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        if _blocks(path):
            return True
    _undo_readonly(path)
    return False


def _blocks(path: Path) -> bool:
    try:
        (path / ".probe").write_text("x")
    except OSError:
        return True
    (path / ".probe").unlink()
    return False


def _undo_readonly(path: Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    good = _good_dataset(base / "good")
    res = invoke("detect", "fit", good, "--out", base / "m.dfm", "--random-init", "--image-size", "32x32")
    assert res.exit_code == 0, res.output
    res = invoke("parts", "--n", "1", "--part", "flange", "--points", "2000", "--out", base / "parts")
    assert res.exit_code == 0, res.output
    cloud = sorted((base / "parts").glob("*.ply"))[0]
    (base / "r3" / "flange" / "train").mkdir(parents=True)
    shutil.copyfile(cloud, base / "r3" / "flange" / "train" / "a.ply")
    res = invoke("detect3d", "fit", base / "r3", "--model", "fpfh", "--out", base / "m3.dfm")
    assert res.exit_code == 0, res.output
    ro = base / "readonly"
    readonly = ro if _make_readonly(ro) else None
    yield World(base, good, base / "m.dfm", cloud, base / "m3.dfm", readonly)
    if readonly is not None:
        _undo_readonly(readonly)


def _copy_good(w: World, tmp: Path) -> Path:
    dst = tmp / "ds"
    shutil.copytree(w.good, dst)
    return dst


def _append_rows(root: Path, *rows: str) -> None:
    with open(root / "split.csv", "a") as fh:
        for r in rows:
            fh.write(r + "\n")


# ----------------------------------------------------------------------------- bad inputs


# every good training image is broken the same way, so whichever a command reads first fails


def bad_corrupt_image(w, t):
    d = _copy_good(w, t)
    for i in range(4):
        (d / "images" / f"tg{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
    return d


def bad_bomb_image(w, t):
    d = _copy_good(w, t)
    for i in range(4):
        png_claiming(d / "images" / f"tg{i}.png", 100_000, 100_000)
    return d


def bad_huge_image(w, t):
    d = _copy_good(w, t)
    for i in range(4):
        png_claiming(d / "images" / f"tg{i}.png", 9000, 9000)
    return d


def bad_corrupt_defects(w, t):
    """Every defect image (train and test) corrupt: what the filter commands read."""
    d = _copy_good(w, t)
    for name in ("td0", "td1", "d0", "d1"):
        (d / "images" / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
    return d


def bad_huge_test(w, t):
    """Every test image over the pixel limit: what ``detect eval`` reads."""
    d = _copy_good(w, t)
    for name in ("g0", "g1", "d0", "d1"):
        png_claiming(d / "images" / f"{name}.png", 9000, 9000)
    return d


def bad_wrong_size_mask(w, t):
    d = _copy_good(w, t)
    mask(d / "masks" / "d1.png", box=(1, 1, 4, 4), hw=(10, 10))
    mask(d / "masks" / "td1.png", box=(1, 1, 4, 4), hw=(10, 10))
    return d


def bad_empty_mask(w, t):
    d = _copy_good(w, t)
    mask(d / "masks" / "d1.png", box=None)
    return d


def bad_outside_root(w, t):
    image(t / "secret.png", seed=5)
    d = _copy_good(w, t)
    _append_rows(d, "../secret.png,train,good,")
    return d


def bad_missing_column(w, t):
    d = _copy_good(w, t)
    (d / "split.csv").write_text("file,split\nimages/tg0.png,train\n")
    return d


def bad_not_utf8_manifest(w, t):
    d = _copy_good(w, t)
    (d / "split.csv").write_bytes((d / "split.csv").read_bytes() + b"images/\xff\xfe.png,train,good,\n")
    return d


def bad_misspelt_split(w, t):
    d = _copy_good(w, t)
    text = (d / "split.csv").read_text().replace("images/d1.png,test", "images/d1.png,Test")
    (d / "split.csv").write_text(text)
    return d


def bad_duplicate_row(w, t):
    d = _copy_good(w, t)
    _append_rows(d, "images/d0.png,test,dent,masks/d0.png")
    return d


def bad_labelme_nan(w, t):
    labelme(t / "lm", [[2, 2], [float("nan"), 2], [20, 15]])
    return t / "lm"


def bad_coco_string_id(w, t):
    coco(t / "c", [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                   {"id": 2, "file_name": "b.png", "width": 32, "height": 24}],
         [{"id": 1, "image_id": "1", "category_id": 1, "bbox": [2, 3, 10, 8]}])
    return t / "c"


def bad_coco_negative_box(w, t):
    coco(t / "c", [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
                   {"id": 2, "file_name": "b.png", "width": 32, "height": 24}],
         [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, -10, 8]}])
    return t / "c"


def bad_yolo_range(w, t):
    yolo(t / "y", "0 0.5 0.5 1.7 0.2\n")
    return t / "y"


def bad_yolo_class(w, t):
    yolo(t / "y", "4 0.5 0.5 0.2 0.2\n")
    return t / "y"


def _ply(path: Path, header_count: int, body: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex " + str(header_count).encode()
                     + b"\nproperty float x\nproperty float y\nproperty float z\nend_header\n" + body)
    return path


def bad_yolo_yaml_not_utf8(w, t):
    yolo(t / "y", "0 0.5 0.5 0.2 0.2\n")
    (t / "y" / "data.yaml").write_bytes(b"names: [d\xe9nt]\n")
    return t / "y"


def bad_synth_config(w, t):
    p = t / "synth.yaml"
    p.write_text(f"source: !!python/object/apply:os.system ['touch {t / 'PWNED'}']\n")
    return p


def bad_synth_config_not_utf8(w, t):
    p = t / "synth.yaml"
    p.write_bytes(b"source:\n  path: d\xe9\n")
    return p


def bad_ply_bomb(w, t):
    return _ply(t / "clouds" / "bomb.ply", 4_000_000_000, b"\0" * 24)


def bad_ply_garbage(w, t):
    p = t / "clouds" / "junk.ply"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\x00\x01 not a ply at all")
    return p


def bad_ply_nan(w, t):
    pts = np.random.default_rng(0).random((500, 3)).astype("<f4")
    pts[7, 1] = np.nan
    return _ply(t / "clouds" / "nan.ply", 500, pts.tobytes())


def bad_inst_not_utf8(w, t):
    p = t / "inst.yaml"
    p.write_bytes(b"defects:\n  - type: dent  # caf\xe9\n")
    return p


def bad_inst_python_tag(w, t):
    p = t / "inst.yaml"
    p.write_text(f"defects: !!python/object/apply:os.system ['touch {t / 'PWNED'}']\n")
    return p


def bad_model_corrupt(w, t):
    p = t / "bad.dfm"
    p.write_bytes(w.model.read_bytes()[:300])
    return p


def bad_model_pickled_code(w, t):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {t / 'PWNED'}",))

    p = t / "evil.dfm"
    torch.save({"kind": "defectforge-detector", "payload": Evil()}, p)
    return p


def bad_model_nan_bank(w, t):
    import torch

    obj = torch.load(w.model, map_location="cpu", weights_only=True)
    (obj["state"] if "state" in obj else obj)["bank_normal"][0, 0] = float("nan")
    torch.save(obj, t / "nan.dfm")
    return t / "nan.dfm"


def bad_model_huge_input(w, t):
    import torch

    obj = torch.load(w.model, map_location="cpu", weights_only=True)
    (obj["state"] if "state" in obj else obj)["input_size"] = [100000, 100000]
    torch.save(obj, t / "huge.dfm")
    return t / "huge.dfm"


def a_file(w, t):
    (t / "plain.txt").write_text("x")
    return t / "plain.txt"


def a_folder(w, t):
    (t / "folder").mkdir()
    return t / "folder"


def ro(w, t):
    if w.readonly is None:
        pytest.skip("cannot make a read-only folder on this machine (root without chattr)")
    return w.readonly


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    make: Callable  # (world, tmp) -> Path: the bad input
    argv: Callable  # (world, tmp, bad) -> list of CLI words
    expect: str  # "error" | "check" | "ok"
    words: tuple[str, ...] = ()
    verify: Callable | None = None  # (world, tmp, bad, result) -> None, extra assertions


def _no_pwned(w, t, bad, res):
    assert not (t / "PWNED").exists(), "a command executed code from its input"


def _nothing_in(path_fn):
    def verify(w, t, bad, res):
        p = path_fn(w, t)
        assert not p.exists() or not any(p.iterdir()), f"{p} was written"
    return verify


CHECK = lambda w, t, b: ["data", "check", b]  # noqa: E731
CONVERT = lambda w, t, b: ["data", "convert", b, t / "out", "--to", "coco"]  # noqa: E731
SYNTH = lambda w, t, b: ["synth", b, "--generator", "pitting", "--n", "2", "--workers", "1", "--out", t / "s"]  # noqa: E731
FIT = lambda w, t, b: ["detect", "fit", b, "--out", t / "m.dfm", "--random-init", "--image-size", "32x32"]  # noqa: E731
EVAL = lambda w, t, b: ["detect", "eval", w.model, b, "--json", t / "m.json"]  # noqa: E731
TRAIN = lambda w, t, b: ["train-detector", b, "--out", t / "run", "--epochs", "1", "--image-size", "32"]  # noqa: E731
SELECT = lambda w, t, b: ["filter", "select", b, "--real", w.good, "--out", t / "sel"]  # noqa: E731
QUALITY = lambda w, t, b: ["filter", "quality", w.good, b]  # noqa: E731
EXPERIMENT = lambda w, t, b: ["experiment", "exdd-augmentation", "--data", b, "--out", t / "exp"]  # noqa: E731
LORA = lambda w, t, b: ["lora", "train", b, "--base-model", t / "no-model", "--prompt", "x", "--out", t / "lora"]  # noqa: E731
SYNTH3D = lambda w, t, b: ["synth3d", b, "--describe", "a dent", "--n", "1", "--points", "2000", "--out", t / "o"]  # noqa: E731
PRED3D = lambda w, t, b: ["detect3d", "predict", w.model3d, b, "--out", t / "p3"]  # noqa: E731


def FIT3D(w, t, b):  # noqa: N802 - a good cloud and the bad one in a Real3D-AD training folder
    train = t / "r3" / "flange" / "train"
    train.mkdir(parents=True)
    shutil.copyfile(w.cloud, train / "good.ply")
    shutil.copyfile(b, train / b.name)
    return ["detect3d", "fit", t / "r3", "--out", t / "m3.dfm"]
PREDICT = lambda w, t, b: ["detect", "predict", w.model, b / "images" / "tg1.png", "--out", t / "pred"]  # noqa: E731
RECIPE = lambda w, t, b: ["recipe", "search", b, "--detector", "exdd", "--trials", "1", "--out", t / "rs"]  # noqa: E731

CASES = [
    # images
    Case("image-corrupt/check", bad_corrupt_image, CHECK, "check", ("/tg", "unreadable")),
    Case("image-corrupt/convert", bad_corrupt_image, CONVERT, "error", ("/tg", "corrupt")),
    Case("image-corrupt/synth", bad_corrupt_image, SYNTH, "error", ("/tg", "corrupt")),
    Case("image-corrupt/predict", bad_corrupt_image, PREDICT, "error", ("/tg", "corrupt")),
    Case("image-corrupt/fit", bad_corrupt_image, FIT, "error", ("/tg", "corrupt")),
    Case("image-corrupt/train-detector", bad_corrupt_image, TRAIN, "error", ("/tg", "corrupt")),
    Case("image-corrupt/filter-quality", bad_corrupt_defects, QUALITY, "error", ("/td",)),
    Case("image-corrupt/filter-select", bad_corrupt_defects, SELECT, "error", ("/td",)),
    Case("image-bomb/check", bad_bomb_image, CHECK, "check", ("/tg", "decompression bomb")),
    Case("image-bomb/convert", bad_bomb_image, CONVERT, "error", ("/tg", "decompression bomb")),
    Case("image-bomb/synth", bad_bomb_image, SYNTH, "error", ("/tg", "decompression bomb")),
    Case("image-bomb/predict", bad_bomb_image, PREDICT, "error", ("/tg", "decompression bomb")),
    Case("image-bomb/fit", bad_bomb_image, FIT, "error", ("/tg", "decompression bomb")),
    Case("image-bomb/train-detector", bad_bomb_image, TRAIN, "error", ("/tg", "decompression bomb")),
    Case("image-bomb/experiment", bad_bomb_image, EXPERIMENT, "error", ("/tg", "decompression bomb")),
    Case("image-huge/check", bad_huge_image, CHECK, "check", ("/tg", "over the limit")),
    Case("image-huge/synth", bad_huge_image, SYNTH, "error", ("/tg", "over the limit")),
    Case("image-huge/predict", bad_huge_image, PREDICT, "error", ("/tg", "over the limit")),
    Case("image-huge/eval", bad_huge_test, EVAL, "error", ("images/", "over the limit")),
    # masks
    Case("mask-size/check", bad_wrong_size_mask, CHECK, "check", ("d1.png", "10x10")),
    Case("mask-size/recipe-search", bad_wrong_size_mask, RECIPE, "error", ("d1.png", "10x10")),
    Case("mask-size/eval", bad_wrong_size_mask, EVAL, "error", ("d1.png", "10x10")),
    Case("mask-size/convert", bad_wrong_size_mask, CONVERT, "error", ("10x10",)),
    Case("mask-size/fit", bad_wrong_size_mask, FIT, "error", ("td1.png",)),
    Case("mask-empty/check", bad_empty_mask, CHECK, "check", ("d1.png", "empty mask")),
    Case("mask-empty/eval", bad_empty_mask, EVAL, "error", ("d1.png", "empty mask")),
    # manifests
    Case("manifest-outside/check", bad_outside_root, CHECK, "check", ("secret.png", "outside the dataset folder")),
    Case("manifest-outside/convert", bad_outside_root, CONVERT, "error", ("split.csv", "outside the dataset")),
    Case("manifest-outside/synth", bad_outside_root, SYNTH, "error", ("split.csv", "outside the dataset")),
    Case("manifest-outside/fit", bad_outside_root, FIT, "error", ("split.csv", "outside the dataset")),
    Case("manifest-outside/train-detector", bad_outside_root, TRAIN, "error", ("split.csv", "outside the dataset")),
    Case("manifest-column/check", bad_missing_column, CHECK, "error", ("split.csv", "missing required column")),
    Case("manifest-column/eval", bad_missing_column, EVAL, "error", ("split.csv", "missing required column")),
    Case("manifest-utf8/convert", bad_not_utf8_manifest, CONVERT, "error", ("split.csv", "UTF-8")),
    Case("manifest-utf8/lora", bad_not_utf8_manifest, LORA, "error", ("split.csv", "UTF-8")),
    Case("manifest-split/eval", bad_misspelt_split, EVAL, "error", ("split.csv", "'Test'")),
    Case("manifest-duplicate/check", bad_duplicate_row, CHECK, "check", ("d0.png", "listed twice")),
    Case("manifest-duplicate/eval", bad_duplicate_row, EVAL, "error", ("d0.png", "listed twice")),
    # labelme, COCO, YOLO
    Case("labelme-nan/check", bad_labelme_nan, CHECK, "check", ("a.json", "not finite")),
    Case("labelme-nan/convert", bad_labelme_nan, CONVERT, "error", ("a.json", "not finite")),
    Case("coco-string-id/check", bad_coco_string_id, CHECK, "check", ("instances_train.json", "is a string")),
    Case("coco-string-id/train-detector", bad_coco_string_id, TRAIN, "error", ("instances_train.json",)),
    Case("coco-negative-box/check", bad_coco_negative_box, CHECK, "check", ("instances_train.json", "negative")),
    Case("coco-negative-box/train-detector", bad_coco_negative_box, TRAIN, "error", ("instances_train.json",)),
    Case("yolo-range/check", bad_yolo_range, CHECK, "check", ("a.txt", "outside [0, 1]")),
    Case("yolo-range/train-detector", bad_yolo_range, TRAIN, "error", ("a.txt", "outside [0, 1]")),
    Case("yolo-class/check", bad_yolo_class, CHECK, "check", ("a.txt", "class 4")),
    Case("yolo-class/convert", bad_yolo_class, CONVERT, "error", ("a.txt", "class 4")),
    Case("yolo-yaml-utf8/check", bad_yolo_yaml_not_utf8, CHECK, "error", ("data.yaml", "UTF-8")),
    Case("yolo-yaml-utf8/train-detector", bad_yolo_yaml_not_utf8, TRAIN, "error", ("data.yaml", "UTF-8")),
    # configuration files
    Case("synth-config-python-tag/synth", bad_synth_config, lambda w, t, b: ["synth", "--config", b, "--out", t / "s"],
         "error", ("synth.yaml",), _no_pwned),
    Case("synth-config-utf8/synth", bad_synth_config_not_utf8,
         lambda w, t, b: ["synth", "--config", b, "--out", t / "s"], "error", ("synth.yaml", "UTF-8")),
    # point clouds
    Case("ply-bomb/synth3d", bad_ply_bomb, SYNTH3D, "error", ("bomb.ply", "header declares")),
    Case("ply-bomb/detect3d-predict", bad_ply_bomb, PRED3D, "error", ("bomb.ply", "header declares")),
    Case("ply-nan/detect3d-predict", bad_ply_nan, PRED3D, "error", ("nan.ply", "NaN")),
    Case("ply-garbage/synth3d", bad_ply_garbage, SYNTH3D, "error", ("junk.ply",)),
    Case("ply-nan/synth3d", bad_ply_nan, SYNTH3D, "error", ("nan.ply", "NaN")),
    Case("ply-bomb/detect3d-fit", bad_ply_bomb, FIT3D, "error", ("bomb.ply", "header declares")),
    Case("ply-garbage/detect3d-fit", bad_ply_garbage, FIT3D, "error", ("junk.ply",)),
    # instruction files
    Case("instructions-utf8/synth3d", bad_inst_not_utf8,
         lambda w, t, b: ["synth3d", "part:flange", "--instructions", b, "--n", "1", "--points", "2000",
                          "--out", t / "o"], "error", ("inst.yaml", "UTF-8")),
    Case("instructions-python-tag/synth3d", bad_inst_python_tag,
         lambda w, t, b: ["synth3d", "part:flange", "--instructions", b, "--n", "1", "--points", "2000",
                          "--out", t / "o"], "error", ("inst.yaml",), _no_pwned),
    # model files
    Case("model-corrupt/predict", bad_model_corrupt,
         lambda w, t, b: ["detect", "predict", b, w.good / "images" / "g0.png", "--out", t / "p"], "error", ("bad.dfm",)),
    Case("model-corrupt/eval", bad_model_corrupt,
         lambda w, t, b: ["detect", "eval", b, w.good], "error", ("bad.dfm",)),
    Case("model-pickle/predict", bad_model_pickled_code,
         lambda w, t, b: ["detect", "predict", b, w.good / "images" / "g0.png", "--out", t / "p"], "error",
         ("evil.dfm",), _no_pwned),
    Case("model-pickle/detect3d-predict", bad_model_pickled_code,
         lambda w, t, b: ["detect3d", "predict", b, w.cloud, "--out", t / "p"], "error", ("evil.dfm",), _no_pwned),
    Case("model-nan-bank/predict", bad_model_nan_bank,
         lambda w, t, b: ["detect", "predict", b, w.good / "images" / "g0.png", "--out", t / "p"], "error",
         ("nan.dfm", "non-finite")),
    Case("model-huge-input/eval", bad_model_huge_input,
         lambda w, t, b: ["detect", "eval", b, w.good], "error", ("huge.dfm", "over the limit")),
    Case("model-pickle/detect3d-eval", bad_model_pickled_code,
         lambda w, t, b: ["detect3d", "eval", b, w.cloud.parent], "error", ("evil.dfm",), _no_pwned),
    Case("model-folder/diffusion-check", a_file, lambda w, t, b: ["diffusion", "check", b], "error", ("plain.txt",)),
    Case("model-2d-as-3d/detect3d-predict", lambda w, t: w.model,
         lambda w, t, b: ["detect3d", "predict", b, w.cloud, "--out", t / "p"], "error", ("m.dfm", "not a")),
    Case("model-3d-as-2d/predict", lambda w, t: w.model3d,
         lambda w, t, b: ["detect", "predict", b, w.good / "images" / "g0.png", "--out", t / "p"], "error",
         ("m3.dfm", "not a")),
    Case("readonly/detect3d-fit", ro, lambda w, t, b: ["detect3d", "fit", w.base / "r3", "--out", b / "m3.dfm"],
         "error", ("readonly",)),
    Case("readonly/experiment", ro, lambda w, t, b: EXPERIMENT(w, t, w.good)[:-1] + [b / "exp"], "error",
         ("readonly",)),
    Case("readonly/detect3d-predict", ro, lambda w, t, b: ["detect3d", "predict", w.model3d, w.cloud, "--out", b / "p"],
         "error", ("readonly",)),
    Case("valid/detect3d-predict", lambda w, t: w.cloud, PRED3D, "ok", (),
         lambda w, t, b, r: (t / "p3" / "scores.csv").is_file() or pytest.fail("no scores.csv")),
    # output paths: a folder where a file is expected, a file where a folder is expected
    Case("out-json-is-folder/check", a_folder, lambda w, t, b: ["data", "check", w.good, "--json", b], "error",
         ("folder", "is a folder")),
    Case("out-json-is-folder/eval", a_folder, lambda w, t, b: ["detect", "eval", w.model, w.good, "--json", b],
         "error", ("folder",)),
    Case("out-model-is-folder/fit", a_folder, lambda w, t, b: ["detect", "fit", w.good, "--out", b, "--random-init",
                                                                "--image-size", "32x32"], "error", ("folder",)),
    Case("out-is-file/synth", a_file, lambda w, t, b: SYNTH(w, t, w.good)[:-1] + [b], "error", ("plain.txt",)),
    Case("out-is-file/convert", a_file, lambda w, t, b: ["data", "convert", w.good, b, "--to", "yolo"], "error",
         ("plain.txt",)),
    Case("out-is-file/parts", a_file, lambda w, t, b: ["parts", "--n", "1", "--points", "500", "--out", b], "error",
         ("plain.txt",)),
    Case("out-is-file/predict", a_file,
         lambda w, t, b: ["detect", "predict", w.model, w.good / "images" / "g0.png", "--out", b], "error",
         ("plain.txt",)),
    # read-only output folders
    Case("readonly/check-json", ro, lambda w, t, b: ["data", "check", w.good, "--json", b / "r.json"], "error",
         ("readonly",)),
    Case("readonly/convert", ro, lambda w, t, b: ["data", "convert", w.good, b / "out", "--to", "yolo"], "error",
         ("readonly",), _nothing_in(lambda w, t: w.readonly)),
    Case("readonly/synth", ro, lambda w, t, b: SYNTH(w, t, w.good)[:-1] + [b / "s"], "error", ("readonly",)),
    Case("readonly/synth3d", ro, lambda w, t, b: SYNTH3D(w, t, w.cloud)[:-1] + [b / "o"], "error", ("readonly",)),
    Case("readonly/parts", ro, lambda w, t, b: ["parts", "--n", "1", "--points", "500", "--out", b / "p"], "error",
         ("readonly",)),
    Case("readonly/fit", ro, lambda w, t, b: ["detect", "fit", w.good, "--out", b / "m.dfm", "--random-init",
                                              "--image-size", "32x32"], "error", ("readonly",)),
    Case("readonly/predict", ro,
         lambda w, t, b: ["detect", "predict", w.model, w.good / "images" / "g0.png", "--out", b / "p"], "error",
         ("readonly",)),
    Case("readonly/eval", ro, lambda w, t, b: ["detect", "eval", w.model, w.good, "--json", b / "m.json"], "error",
         ("readonly",)),
    Case("readonly/diffusion-tiny", ro, lambda w, t, b: ["diffusion", "tiny", b / "t"], "error", ("readonly",)),
    Case("readonly/filter-quality", ro, lambda w, t, b: ["filter", "quality", w.good, w.good, "--json", b / "q.json"],
         "error", ("readonly",)),
    Case("readonly/train-detector", ro, lambda w, t, b: TRAIN(w, t, w.good)[:3] + [b / "run", "--epochs", "1",
                                                                                   "--image-size", "32"],
         "error", ("readonly",)),
    # the studio: refusals only (a started server would not return)
    Case("studio-project-is-file/studio", a_file, lambda w, t, b: ["studio", b], "error", ("plain.txt", "not found")),
    Case("studio-bad-port/studio", lambda w, t: (pytest.importorskip("uvicorn"), a_folder(w, t))[1], lambda w, t, b: ["studio", b, "--port", "70000"], "error",
         ("--port 70000",)),
    # correct results on awkward-but-valid input
    Case("valid/eval", lambda w, t: w.good, EVAL, "ok", (),
         lambda w, t, b, r: json.loads((t / "m.json").read_text())["n_images"] == 4 or pytest.fail("n_images")),
    Case("valid/check", lambda w, t: w.good, lambda w, t, b: ["data", "check", b], "ok"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus(world, tmp_path, case):
    bad = case.make(world, tmp_path)
    if case.expect == "check":
        check_lists(bad, *case.words, tmp=tmp_path)
        return
    res = invoke(*case.argv(world, tmp_path, bad))
    if case.expect == "error":
        one_line_error(res, *case.words)
    else:
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output
    if case.verify is not None:
        case.verify(world, tmp_path, bad, res)


def test_corpus_covers_every_command():
    """Every top-level command (and sub-command) appears in the corpus or in another
    ``test_badinput_*`` file."""
    from defectforge.cli import app
    import typer

    cmd = typer.main.get_command(app)
    names = set()
    for name, sub in cmd.commands.items():
        if hasattr(sub, "commands"):
            names |= {f"{name} {s}" for s in sub.commands}
        else:
            names.add(name)
    here = Path(__file__).parent
    text = "".join(p.read_text() for p in here.glob("test_badinput_*.py"))
    words = {n: ", ".join(f'"{part}"' for part in n.split()) in text for n in names}
    missing = sorted(n for n, ok in words.items() if not ok)
    # commands with no user input to get wrong (a listing; the demo on the bundled sample, whose only
    # input is --out, an output folder like the ones tested here) are exercised by their own tests
    assert set(missing) <= {"synth-generators", "demo"}, missing
