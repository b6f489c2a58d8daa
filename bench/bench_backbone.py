"""The feature backbone at the README defaults, with and without folded batch norms
(``defectforge.bank.fold``), with and without the fast convolutions (``defectforge.bank.fast_conv``:
TensorFlow-"SAME" padding and the folded activations inside the convolutions) and, with
``--malloc``, raised glibc allocator thresholds (``MALLOC_MMAP_THRESHOLD_`` 32 MB,
``MALLOC_TRIM_THRESHOLD_`` 128 MB in the environment: a candidate that was measured and not adopted,
``docs/bench/scale.md``), on the same images.

Each setting runs in its own process (the allocator is set once per process),
twice, in alternating order; every process times EfficientNet-Lite0 on the same BSData test
images at 256x632 (one image per pass, as ``ExDD`` on the CPU), after a warm-up pass over them,
and saves the features of the first 4 images so that the largest difference to the plain
setting can be reported (relative to the features' largest magnitude). With ``--model`` (a
``detect fit`` model file at the defaults) every process also times ``predict`` of that model on
the same images (whole path: decode, resize, backbone, nearest-neighbour search, maps), after a
warm-up call, since the allocator's effect depends on everything else the process allocates.
Prints a markdown table.

    python bench/bench_backbone.py [--data ../shared/datasets/bsdata] [--n 32] [--reps 2] [--model M.pt] [--malloc]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "bsdata"
#: name -> (fold the batch norms, fast convolutions, raised allocator thresholds)
SETTINGS = {"plain": (False, False, False), "fold": (True, False, False), "fold+fast_conv": (True, True, False)}
MALLOC_SETTINGS = {"malloc": (False, False, True), "fold+malloc": (True, False, True)}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


def worker(data: Path, n: int, fold: bool, fast: bool, out: Path, model: Path | None) -> None:
    import numpy as np
    import torch

    from defectforge.bank.backbone import build_extractor
    from defectforge.bank.features import input_size_for, to_rgb, to_tensor
    from defectforge.data.formats import load_dataset

    ds = load_dataset(data)
    test = [s for s in ds if s.split == "test"][:n]
    rgbs = [to_rgb(s) for s in test]
    size = input_size_for(rgbs[0].shape[:2], 256)
    ex, _ = build_extractor("efficientnet_lite0", fold_bn=fold, fast_conv=fast)
    ex = ex.to(memory_format=torch.channels_last)  # as ExDD does
    xs = [to_tensor([r], size, ex.mean, ex.std).contiguous(memory_format=torch.channels_last) for r in rgbs]
    with torch.inference_mode():
        for x in xs:  # warm-up
            ex(x)
        t0 = time.perf_counter()
        for x in xs:
            ex(x)
        ms = 1000 * (time.perf_counter() - t0) / len(xs)
        feats = [[f.numpy().copy() for f in ex(x)] for x in xs[:4]]
    np.savez(out.with_suffix(".npz"), *[f for fs in feats for f in fs])
    res = {"ms": ms, "size": list(size), "threads": torch.get_num_threads()}
    if model is not None:
        import defectforge.bank.backbone as bb
        from defectforge.detect.exdd import ExDD

        if not (fold and fast):  # the model's own extractor is built by build_extractor: the same setting
            orig = bb.build_extractor
            bb.build_extractor = lambda *a, **k: orig(*a, **{**k, "fold_bn": fold, "fast_conv": fast})
        det = ExDD.load(model)
        det.progress = False
        det.predict(test[:2])
        t0 = time.perf_counter()
        det.predict(test)
        res["predict_ms"] = 1000 * (time.perf_counter() - t0) / len(test)
    out.write_text(json.dumps(res))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None, help="also time predict of this model file")
    ap.add_argument("--malloc", action="store_true", help="also the raised allocator thresholds (not adopted)")
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.data, args.n, args.worker[0] == "1", args.worker[1] == "1", Path(args.worker[2]), args.model)
        return
    import numpy as np

    settings = {**SETTINGS, **(MALLOC_SETTINGS if args.malloc else {})}

    load = [os.getloadavg()[0]]
    times: dict[str, list[float]] = {k: [] for k in settings}
    pred: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = list(settings) if rep % 2 == 0 else list(reversed(settings))
            for name in order:
                fold, fast, malloc = settings[name]
                env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
                if malloc:
                    env.update(MALLOC_ENV)
                out = Path(tmp) / f"{name}_{rep}.json"
                cmd = [sys.executable, __file__, "--data", str(args.data), "--n", str(args.n),
                       "--worker", "1" if fold else "0", "1" if fast else "0", str(out)]
                subprocess.run(cmd + (["--model", str(args.model)] if args.model else []), env=env, check=True)
                res = json.loads(out.read_text())
                times[name].append(res["ms"])
                if "predict_ms" in res:
                    pred[name].append(res["predict_ms"])
                load.append(os.getloadavg()[0])
        ref = np.load(Path(tmp) / "plain_0.npz")
        diffs = {}
        for name in settings:
            got = np.load(Path(tmp) / f"{name}_0.npz")
            diffs[name] = max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref.files)
        size = json.loads((Path(tmp) / "plain_0.json").read_text())["size"]
    base = min(times["plain"])
    print(f"EfficientNet-Lite0 stages blocks.2 + blocks.4, {size[0]}x{size[1]}, channels-last, one image per pass, "
          f"{args.n} BSData test images, best of {args.reps} alternating processes; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {min(load):.2f}-{max(load):.2f}\n")
    extra = f" | ExDD predict ms per image ({args.model.name}; each process) | best" if args.model else ""
    print(f"| setting | backbone ms per image (each process) | best | vs plain | max feature difference (relative){extra} |")
    print("|---|---|---|---|---|" + ("---|---|" if args.model else ""))
    for name in settings:
        t = times[name]
        row = f"| {name} | {' / '.join(f'{v:.1f}' for v in t)} | {min(t):.1f} | {base / min(t):.2f}x | {diffs[name]:.1e}"
        if args.model:
            row += f" | {' / '.join(f'{v:.1f}' for v in pred[name])} | {min(pred[name]):.1f}"
        print(row + " |")


if __name__ == "__main__":
    main()
