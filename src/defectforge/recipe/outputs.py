"""What a recipe search leaves behind: ``best_recipe.yaml``, ``commands.sh``,
``search.json``, ``trials.csv`` and ``report.html`` (trial history, parameter importances,
best vs baseline on validation). All written atomically; rebuilt from the study on every run."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

from defectforge._atomic import atomic_write_text
from defectforge.recipe.realism import best_trial, describe, trial_realism


def _trial_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.trials:
        done = t.state.name == "COMPLETE"  # (optuna gives a pruned trial its last intermediate value)
        r = {"trial": t.number, "state": t.state.name.lower(), "score": t.value if done else None,
             "n_synthetic": t.user_attrs.get("n_synthetic"), "seconds": t.user_attrs.get("seconds"),
             "last_intermediate": list(t.intermediate_values.values())[-1] if t.intermediate_values else None}
        rec = t.user_attrs.get("recipe") or {}
        r["generators"] = " + ".join(f"{g['name']}:{g['weight']:.2f}" for g in rec.get("generators", []))
        real = trial_realism(study, t) or {}
        if real:
            r["c2st_auc"] = real.get("c2st_auc")
        if "rejected" in t.user_attrs:
            r["rejected"] = t.user_attrs["rejected"]
        for k, v in (t.user_attrs.get("metrics") or {}).items():
            if k != "score":
                r[f"val_{k}"] = v
        r.update({f"p:{k}": v for k, v in t.params.items()})
        rows.append(r)
    return rows


def _importances(study: Any) -> dict[str, float]:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 3:
        return {}
    import warnings

    try:
        with warnings.catch_warnings():  # few trials per category: the evaluator warns, the report says so
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every value equal, or a one-point space
        return {}


def write_outputs(out: Path, study: Any, st: Any, sp: Any, source: str, ds: Any, elapsed: float) -> dict[str, Any]:
    import yaml

    base = study.user_attrs["baseline"]
    max_c2st = getattr(st, "max_c2st", None)
    best, excluded = best_trial(study, max_c2st)
    realism = trial_realism(study, best) if best is not None else None
    gain = (best.value - base["score"]) if best is not None else float("nan")
    recommend = best is not None and gain >= st.min_gain
    n_train_def = sum(1 for s in ds if s.split == "train" and s.label == sp.defect_type)
    metric = "mean of image AUROC and AUPRO" if st.detector == "exdd" else "mAP@0.5"
    summary: dict[str, Any] = {
        "detector": st.detector, "validation_metric": metric, "baseline": base,
        "best_trial": best.number if best else None, "best": best.user_attrs.get("metrics") if best else None,
        "gain_over_baseline": gain, "min_gain": st.min_gain, "recommend_synthetic": recommend,
        "trials": {s: sum(t.state.name.lower() == s for t in study.trials) for s in ("complete", "pruned", "fail")},
        "splits": sp.counts(), "split_by": sp.describe(), "settings": st.key(),
        "search_time_reductions": st.reductions(),
        "seconds_this_run": round(elapsed, 1), "data": source,
        "realism": realism, "realism_line": describe(realism), "max_c2st": max_c2st,
        "excluded_by_realism": excluded,
    }
    if recommend:
        summary["verdict"] = (f"trial {best.number} beats the real-only baseline on validation by {gain:+.4f} "
                              f"({metric}): use its recipe")
    elif best is None and max_c2st is not None and (excluded or summary["trials"]["pruned"]):
        summary["verdict"] = (f"no finished recipe passes the realism limit (C2ST AUC <= {max_c2st} vs the "
                              "validation defects): the real-only baseline stands; no synthetic data recommended")
    elif best is None:
        summary["verdict"] = "no trial finished: the real-only baseline stands; no synthetic data recommended"
    else:
        summary["verdict"] = (f"no recipe beats the real-only baseline on validation by >= {st.min_gain} "
                              f"(best trial {best.number}: {gain:+.4f}); recommended: NO synthetic data")
    files = {}
    if best is not None:
        rec = best.user_attrs["recipe"]
        n_apply = max(1, int(round(rec["ratio"] * n_train_def)))
        from defectforge.recipe.space import synth_config

        prov = {"detector": st.detector, "recommended": recommend, "trial": best.number, "ratio": round(rec["ratio"], 4),
                "validation": {"metric": metric, "best": round(best.value, 5), "baseline": round(base["score"], 5)},
                "note": f"n = ratio x the {n_train_def} real train defects of type {sp.defect_type!r}",
                "realism": describe(realism),
                "search_time_reductions": st.reductions()}
        cfg = synth_config(rec, source, n_apply, st.seed, sp.defect_type, prov)
        atomic_write_text(out / "best_recipe.yaml", yaml.safe_dump(cfg, sort_keys=False))
        files["recipe"] = str(out / "best_recipe.yaml")
    cmds = _commands(out, st, source, recommend and best is not None)
    atomic_write_text(out / "commands.sh", cmds)
    summary["commands"] = cmds
    rows = _trial_rows(study)
    _write_csv(out / "trials.csv", rows)
    summary["importances"] = _importances(study)
    atomic_write_text(out / "search.json", json.dumps(summary, indent=2, default=str))
    _report(out, summary, rows, study)
    return summary


def _commands(out: Path, st: Any, source: str, use: bool) -> str:
    q = shlex.quote
    data, rec, syn = q(source), q(str(out / "best_recipe.yaml")), q(str(out / "synth_recipe"))
    lines = ["#!/bin/sh", f"# recipe search verdict for {st.detector}: "
             + ("use the recipe" if use else "real data only (no recipe beat the baseline on validation)")]
    red = st.reductions()
    if red:
        lines.append(f"# searched at reduced settings {red}; the detector below runs at its own defaults")
    if use:
        lines.append(f"defectforge synth --config {rec} --out {syn}")
    extra = f" --synthetic {syn}" if use else ""
    if st.detector == "exdd":
        lines.append(f"defectforge detect fit {data} --model exdd --out {q(str(out / 'model.pt'))}{extra}")
    else:
        ema = st.detector_params.get("ema")
        extra += f" --ema {ema}" if ema is not None else ""
        lines.append(f"defectforge train-detector {data} --arch {q(st.detector)} --out {q(str(out / 'detector'))}{extra}")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or ["trial"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _report(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]], study: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from defectforge.report import Report

    rep = Report(f"Recipe search: {summary['detector']}", out, subtitle=f"data: {summary['data']}")
    rep.section("verdict", "Verdict (validation only; the test split is never read)").text(summary["verdict"])
    real = rep.section("realism", "Realism of the best recipe (C2ST against the validation defects)")
    real.text(summary["realism_line"] + (f". Realism limit: C2ST AUC <= {summary['max_c2st']} "
                                         f"({summary['excluded_by_realism']} complete trial(s) excluded)."
                                         if summary["max_c2st"] is not None else ""))
    if summary["realism"]:
        real.kv({k: str(v) for k, v in summary["realism"].items()})
    base, best = summary["baseline"], summary["best"] or {}
    keys = [k for k in base if k != "seconds"]
    rep.section("best", "Best recipe vs real-only baseline, on validation").table(
        [{"candidate": "real only (baseline)", **{k: base.get(k) for k in keys}},
         {"candidate": f"best recipe (trial {summary['best_trial']})", **{k: best.get(k) for k in keys}}])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    xs = [r["trial"] for r in rows if r["score"] is not None]
    ax.plot(xs, [r["score"] for r in rows if r["score"] is not None], "o-", color="#4a7ab5", label="trial (complete)")
    pr = [r for r in rows if r["state"] == "pruned" and r["last_intermediate"] is not None]
    if pr:
        ax.plot([r["trial"] for r in pr], [r["last_intermediate"] for r in pr], "x", color="#b54a4a",
                label="pruned (its last intermediate value)")
    ax.axhline(base["score"], color="k", ls="--", lw=1, label="real only")
    ax.set_xlabel("trial")
    ax.set_ylabel(summary["validation_metric"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    rep.section("history", "Trial history").figure(fig, caption="validation score per trial", name="history")
    plt.close(fig)
    imp = summary["importances"]
    sec = rep.section("importance", "Parameter importances (Optuna's default evaluator over completed trials; "
                                    "indicative only with few trials)")
    if imp:
        fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(imp) + 1.2))
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#4a7ab5")
        fig.tight_layout()
        sec.figure(fig, caption="importance", name="importance")
        plt.close(fig)
    else:
        sec.text("not enough completed trials (3 needed) or no variation in the scores")
    rep.section("settings", "Settings").kv({k: str(v) for k, v in summary["settings"].items()}).kv(
        {f"split {k}": v for k, v in summary["splits"].items()}).kv(
        {f"validation {k}s": v for k, v in summary.get("split_by", {}).items()})
    red = summary["search_time_reductions"]
    rep.section("reduced", "Search-time reductions (differ from the detector's defaults)").kv(
        {k: str(v) for k, v in red.items()} if red else {"none": "-"})
    rep.section("commands", "Commands to apply").html(f"<pre>{_esc(summary['commands'])}</pre>")
    rep.section("trials", "Trials").table([{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                            for k, v in r.items()} for r in rows])
    rep.save()


def _esc(s: str) -> str:
    import html

    return html.escape(s)
