"""Benchmark: how PatchCore and ExDD fit and predict scale with the number of training images
at the README's default settings (256 px shorter side, EfficientNet-Lite0, PatchCore 10 % /
ExDD 1 % coreset, exact greedy selection), and anomalib 2.7 PatchCore on the same images.

Usage (from the repository root)::

    .venv/bin/python bench/bench_scale.py                                  # all sizes, both models
    .venv/bin/python bench/bench_scale.py --sizes 50,100 --models exdd      # a subset
    .venv/bin/python bench/bench_scale.py --device cuda --data DIR         # on a GPU machine

Each (model, size) runs in its own subprocess: peak RSS is that process's ``ru_maxrss``.
Sizes up to 402 are the first N BSData train-good images; larger sizes add flipped and
cropped copies of them (written once to ``bench/_work/aug``), as a KSDD2-size stand-in.
ExDD's defect bank gets the 63 train defect images. Predict is timed on ``--predict-n``
test images; the metrics (on the whole test split) are computed for the 402-image fits
only. ``uptime`` is recorded before every run, results go to ``bench/results/scale/scale_*.json``
(committed: ``--from-results`` rebuilds the table from them in any checkout) and the table
to ``docs/bench/scale.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_exdd import _metrics, _samples  # noqa: E402  (same data reading and metrics as bench_exdd)
from _machine import uptime  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "bsdata"
WORK = REPO / "bench" / "_work"
#: one JSON file per run, committed (so the tables can be rebuilt in a later checkout)
RESULTS = REPO / "bench" / "results" / "scale"
DEFAULT_SIZES = "50,100,200,402,800,1600,3200"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_images(data: Path, n: int) -> list:
    """The first ``n`` train-good images; past 402, flipped / cropped copies (cached on disk)."""
    from defectforge.data.sample import Sample

    good = [s for s in _samples(data, "train") if not s.is_defect]
    if n <= len(good):
        return good[:n]
    from defectforge.data.image_io import read_image, write_image

    out = list(good)
    k = 0
    while len(out) < n:
        variant = 1 + k // len(good)  # 1.. : flip h, flip v, flip hv, then crops of those
        src = good[k % len(good)]
        path = WORK / "aug" / f"v{variant}" / f"{src.path.stem}.png"
        if not path.is_file():
            img = read_image(src.path)
            flip = variant % 4
            if flip in (1, 3):
                img = img[:, ::-1]
            if flip in (2, 3):
                img = img[::-1]
            if variant >= 4:  # crops: 90 % of the image at a variant-dependent offset
                h, w = img.shape[:2]
                ch, cw = int(h * 0.9), int(w * 0.9)
                oy, ox = (variant * 7) % (h - ch + 1), (variant * 13) % (w - cw + 1)
                img = img[oy:oy + ch, ox:ox + cw]
            write_image(path, img.copy())
        out.append(Sample(label="good", split="train", path=path))
        k += 1
    return out


# --------------------------------------------------------------------------- workers
def time_predict(model, items: list, reps: int = 3) -> tuple[float, list[float]]:
    """``(median, per-pass)`` ms per image of ``model.predict`` over ``items`` in chunks of 16,
    after a 2-image warm-up (first-call allocations); the median of ``reps`` passes, as this
    VM's speed drifts."""
    import numpy as np

    model.predict(items[:2])
    runs = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        for s in range(0, len(items), 16):
            model.predict(items[s:s + 16])
        runs.append(1000 * (time.perf_counter() - t0) / len(items))
    return float(np.median(runs)), runs


def worker_defectforge(args) -> dict:
    import warnings

    import numpy as np

    from defectforge.detect.exdd import ExDD, PatchCore

    normal = train_images(args.data, args.n)
    defects = [s for s in _samples(args.data, "train") if s.is_defect]
    test = _samples(args.data, "test")
    kw = {"device": args.device}
    if args.coreset_chunk:
        kw["coreset_chunk"] = args.coreset_chunk  # opt-in approximate coreset (bank.chunked)
    if args.coreset_max is not None:
        kw["coreset_max"] = args.coreset_max  # 0: no cap (the ratio alone); default: the model's cap
    model = PatchCore(**kw) if args.model == "patchcore" else ExDD(**kw)
    up = uptime()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(normal, defects if args.model == "exdd" else None)
    fit_s = time.perf_counter() - t0
    rss_fit = _rss_mb()
    timed = test[:: max(1, len(test) // args.predict_n)][: args.predict_n]
    pred_ms, runs = time_predict(model, timed, args.predict_reps)
    label = args.model + _suffix(args)
    res = {"model": label, "n_images": args.n, "device": args.device, "fit_s": round(fit_s, 2),
           "predict_ms": round(pred_ms, 2), "predict_ms_runs": [round(v, 2) for v in runs],
           "peak_rss_fit_mb": round(rss_fit, 1), "uptime_before": up,
           "uptime_after": uptime(), "fit_info": model.fit_info_, "n_predict": len(timed)}
    if args.metrics:
        from defectforge.detect.evaluate import _resize

        scores, maps = [], []
        for s in range(0, len(test), 16):
            p = model.predict(test[s:s + 16])
            scores.extend(p.pred_score.tolist())
            maps.extend(_resize(a, model.input_size_) for a in p.anomaly_map)
        res["metrics"] = _metrics([s.is_defect for s in test], scores, [s.mask for s in test], maps,
                                  model.input_size_)
        res["bank_checksum"] = float(np.float64(model.bank_normal_.sum()))
    res["peak_rss_mb"] = round(_rss_mb(), 1)
    return res


def worker_anomalib(args) -> dict:
    from bench_exdd import worker_anomalib as run

    from defectforge.bank.features import input_size_for

    ns = argparse.Namespace(data=args.data, short=256, ratio=0.1, limit=args.n)
    up = uptime()
    res = run(ns)
    res.update({"model": "anomalib-patchcore", "n_images": args.n, "uptime_before": up, "uptime_after": uptime(),
                "input_size": list(input_size_for((460, 1130), 256))})
    return res


# --------------------------------------------------------------------------- driver
def _suffix(args) -> str:
    """The label's suffix for a non-default coreset (chunked, or another cap)."""
    out = f" chunk {args.coreset_chunk}" if args.coreset_chunk else ""
    if args.coreset_max is not None:
        out += " no cap" if args.coreset_max == 0 else f" cap {args.coreset_max}"
    return out


def _run(py: str, model: str, n: int, args) -> dict | None:
    tag = model if model == "anomalib" else model + _suffix(args).replace(" ", "-")
    out = args.results / f"scale_{tag}_{n}_{args.device}.json"
    cmd = [py, __file__, "--worker", model, "--n", str(n), "--data", str(args.data), "--device", args.device,
           "--predict-n", str(args.predict_n), "--predict-reps", str(args.predict_reps), "--result", str(out)]
    if args.coreset_chunk and model != "anomalib":
        cmd += ["--coreset-chunk", str(args.coreset_chunk)]
    if args.coreset_max is not None and model != "anomalib":
        cmd += ["--coreset-max", str(args.coreset_max)]
    if str(n) in str(args.metrics_at).split(","):
        cmd.append("--metrics")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=env, timeout=args.timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        res = {"model": model, "n_images": n, "device": args.device, "timeout_s": args.timeout,
               "uptime_after": uptime()}
        out.write_text(json.dumps(res, indent=2))
        return res
    if proc.returncode != 0 or not out.is_file():
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return None
    res = json.loads(out.read_text())
    res["wall_s"] = round(time.time() - t0, 1)
    out.write_text(json.dumps(res, indent=2))
    return res


def _slope(rows: list[dict]) -> float | None:
    pts = [(math.log(r["n_images"]), math.log(r["fit_s"])) for r in rows if r.get("fit_s")]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def _num(v, digits: int = 2):
    """``v`` rounded when it is a float (the raw files keep every digit)."""
    return round(v, digits) if isinstance(v, float) else v


def write_doc(results: list[dict], args, path: Path) -> None:
    title = "# Benchmark: detector fit / predict vs number of training images" + (args.title_suffix or "")
    if args.coreset_chunk:
        title += f", opt-in chunked coreset ({args.coreset_chunk} images a chunk)"
    if args.coreset_max is not None:
        title += ", no bank-size cap" if args.coreset_max == 0 else f", bank-size cap {args.coreset_max}"
    lines = [title, "",
             f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
             f"{os.cpu_count()} CPUs, device {args.device}",
             f"- Command: `{args.command}`",
             "- Settings: README defaults (`detect fit` without options): 256 px shorter side (256x632 input, "
             "32x79 = 2,528 rows of 152 values per image), EfficientNet-Lite0 (packaged weights), 128-d projection "
             "for the choice, " + (f"**opt-in approximate coreset: the exact greedy choice per chunk of about "
                                    f"{args.coreset_chunk} images** (`--coreset-chunk {args.coreset_chunk}`)"
                                    if args.coreset_chunk else "exact greedy k-center (lazy blocks, identical to the "
                                    "brute force)") + "; PatchCore 10 %, ExDD "
             "1 % of the normal rows " + (f"with the bank capped at {args.coreset_max} rows" if args.coreset_max else
                                         "with no cap" if args.coreset_max == 0 else
                                         "up to the default cap (`coreset_max`: PatchCore 163,840 rows, ExDD "
                                         "16,384, both reached at 648 images)") +
             " (+ 10 % of the rows inside the 63 train defect masks). 10 % of the images are "
             "held out as validation (threshold). Sizes past 402: flipped / cropped copies of the 402.",
             "- Peak RSS: `ru_maxrss` of the worker process (fit, or fit + predict + metrics where marked). "
             "Predict: mean over the timed test images (chunks of 16, after a 2-image warm-up); runs with "
             "`predict_ms_runs` in their result file time several passes and give the median (this VM's speed "
             "drifts by up to ~10 % between passes), earlier runs one pass.",
             "- Load: `uptime` recorded before and after every run (the machine is shared; 2 cores).", "",
             "| model | images | fit s | predict ms/img | peak RSS MB (fit) | bank rows | coreset s | features s | "
             "started (UTC) | load before -> after |", "|---|---|---|---|---|---|---|---|---|---|"]

    def started(r: dict) -> str:
        u = r.get("uptime_before", "")
        return u.split(" up ")[0].strip()[:5] if " up " in u else "?"

    def load(r: dict, key: str) -> str:
        u = r.get(key, "")
        return u.split("load average:")[-1].split(",")[0].strip() if "load average" in u else "?"

    for r in sorted(results, key=lambda r: (r["model"], r["n_images"])):
        fi = r.get("fit_info", {})
        if "timeout_s" in r:
            lines.append(f"| {r['model']} | {r['n_images']} | > {r['timeout_s']} (stopped) | | | | | | "
                         f"{started(r)} | -> {load(r, 'uptime_after')} |")
            continue
        bank = fi.get("bank_normal", r.get("bank", ""))
        mark = " †" if r.get("reconstructed") else ""
        rss = r.get('peak_rss_fit_mb', r.get('peak_rss_fit_predict_mb', ''))
        lines.append(f"| {r['model']}{mark} | {r['n_images']} | {_num(r.get('fit_s', ''))} | {r.get('predict_ms', 0):.1f} | "
                     f"{_num(rss, 1)} | {bank} | "
                     f"{fi.get('seconds_coreset', '')} | {fi.get('seconds_features', '')} | {started(r)} | "
                     f"{load(r, 'uptime_before')} -> {load(r, 'uptime_after')} |")
    lines += ["", "Log-log slope of fit time against images (least squares over the sizes run; and from the full "
              "BSData train set, 402 images, to the largest size):", ""]
    for m in sorted({r["model"] for r in results}):
        s = _slope([r for r in results if r["model"] == m and "fit_s" in r])
        big = [r for r in results if r["model"] == m and "fit_s" in r and r["n_images"] >= 402]
        end = _slope([min(big, key=lambda r: r["n_images"]), max(big, key=lambda r: r["n_images"])]) \
            if len(big) > 1 else None
        lines.append(f"- {m}: {'n/a' if s is None else f'{s:.2f}'}"
                     + ("" if end is None else f"; 402 -> {max(r['n_images'] for r in big)}: {end:.2f}"))
    pairs = [(a, p) for a in results if a["model"] == "anomalib-patchcore" and a.get("fit_s")
             for p in results if p["model"] == "patchcore" and p.get("fit_s") and p["n_images"] == a["n_images"]]
    if pairs:
        lines += ["", "Against anomalib 2.7 PatchCore on the same images (same backbone weights, layers, input size "
                  "and 10 % coreset; its fit: features of all N images + its greedy coreset):", ""]
        for a, p in sorted(pairs, key=lambda t: t[0]["n_images"]):
            lines.append(f"- {a['n_images']} images: fit {a['fit_s']:.1f} s vs defectforge {p['fit_s']:.1f} s, "
                         f"**{a['fit_s'] / p['fit_s']:.1f}x**; predict {a.get('predict_ms', 0):.0f} vs "
                         f"{p.get('predict_ms', 0):.0f} ms/image")
    mets = [r for r in results if r.get("metrics")]
    if mets:
        lines += ["", "Metrics of the evaluated fits (whole test split, 372 images, maps at the input size):", "",
                  "| model | images | I-AUROC | P-AUROC | AUPRO | I-AP | P-AP | F1-max |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(mets, key=lambda r: (r["model"], r["n_images"])):
            m = r["metrics"]
            lines.append(f"| {r['model']}{' †' if r.get('reconstructed') else ''} | {r['n_images']} | {m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | {m['aupro']:.3f} | "
                         f"{m['image_ap']:.3f} | {m['pixel_ap']:.3f} | {m['f1_max']:.3f} |")
    if any(r.get("reconstructed") for r in results):
        lines += ["", "† reconstructed from this page's earlier table (its raw file was lost with a session's "
                  "checkout): the table's columns only, no per-pass predict times or full fit_info."]
    try:
        where = args.results.resolve().relative_to(REPO)
    except ValueError:
        where = args.results
    lines += ["", f"Raw results: `{where}/scale_*.json` (one file per run).", ""]
    if args.notes and Path(args.notes).is_file():
        lines += ["## Notes", "", Path(args.notes).read_text().strip(), ""]
    from defectforge._atomic import atomic_write_text

    atomic_write_text(path, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sizes", default=DEFAULT_SIZES)
    ap.add_argument("--models", default="exdd,patchcore,anomalib")
    ap.add_argument("--anomalib-sizes", default="50,100", help="sizes anomalib runs at (it is quadratic)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--predict-n", type=int, default=48)
    ap.add_argument("--predict-reps", type=int, default=3, help="timed passes over the predict images (median)")
    ap.add_argument("--metrics-at", default="402", help="sizes (comma-separated) whose fits are evaluated; 0: none")
    ap.add_argument("--coreset-chunk", type=int, default=0,
                    help="opt-in approximate coreset: exact choice per chunk of N images (default 0: exact over all)")
    ap.add_argument("--coreset-max", type=int, default=None,
                    help="bank-size cap in rows (default: the model's own; 0: no cap, the ratio alone)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per run before it is stopped")
    ap.add_argument("--bench-python", default=str(REPO / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="folder of the raw result files (one per run; another folder keeps another machine's runs apart)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "scale.md")
    ap.add_argument("--title-suffix", default="", help="appended to the page's title (e.g. the machine, for a second page)")
    ap.add_argument("--notes", default=str(REPO / "bench" / "scale_notes.md"))
    ap.add_argument("--from-results", action="store_true", help="only re-write the markdown from bench/results/scale")
    ap.add_argument("--command-text", default=None, help="(with --from-results) the command that produced them")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--metrics", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.data / "split.csv").is_file():
        sys.exit(f"BSData not found at {args.data}")
    if args.worker:
        res = worker_anomalib(args) if args.worker == "anomalib" else worker_defectforge(
            argparse.Namespace(**{**vars(args), "model": args.worker}))
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(res, indent=2))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    args.command = args.command_text or "python bench/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    if args.from_results:
        results = [json.loads(f.read_text()) for f in sorted(args.results.glob(f"scale_*_{args.device}.json"))
                   if ("-chunk" in f.name) == bool(args.coreset_chunk)
                   and ("-cap" in f.name or "-no-cap" in f.name) == (args.coreset_max is not None)]
    else:
        for n in [int(v) for v in args.sizes.split(",")]:
            for model in args.models.split(","):
                if model == "anomalib" and str(n) not in args.anomalib_sizes.split(","):
                    continue
                py = args.bench_python if model == "anomalib" else sys.executable
                r = _run(py, model, n, args)
                if r is not None:
                    results.append(r)
                    print(json.dumps({k: v for k, v in r.items() if k != "fit_info"}), flush=True)
                    write_doc(results, args, args.out)
    write_doc(results, args, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
