"""Realism of a searched recipe: the C2ST of its synthetic defects against real ones.

**Reference set: the validation defects** of the search's first split (TRAIN only; the test
split is never read). The recipe is synthesised exactly as in its trial (from the fit goods
and the *guide* defects), so the real crops it is compared with are defects the generators
never saw: a generator that copies its guide defects (``transplant``, ``fitted`` outlines)
gets no credit for the copy, and the number can be used to choose a recipe (``max_c2st``)
without touching test data.

**Count.** The C2ST measures the recipe's distribution, not its count: the set is
``max(the trial's count, the number of reference defects, MIN_SYNTH)`` samples, so a recipe
with few synthetic defects still gets a usable interval.

The result is :func:`defectforge.filter.c2st.set_realism` (AUC, bootstrap interval,
real-vs-real floor of the reference set, KID/PRDC) plus ``reference``, ``n_reference``,
``n_synthetic`` and ``trial``. When the C2ST cannot run (too few crops) ``c2st_reason`` says
why and there is no ``c2st_auc``.
"""

from __future__ import annotations

from typing import Any

MIN_SYNTH = 32


def recipe_realism(recipe: dict[str, Any], sp: Any, source: str, n_trial: int, seed: int) -> dict[str, Any]:
    """C2ST realism of ``recipe`` (synthesised from ``sp``'s guide part) against
    ``sp.val_defects``."""
    from defectforge.filter.c2st import set_realism, source_groups
    from defectforge.recipe.search import synthesize_recipe

    n = max(int(n_trial), len(sp.val_defects), MIN_SYNTH)
    synth = synthesize_recipe(recipe, sp, source, n, seed)
    out = set_realism(sp.val_defects, synth, seed=seed, host_groups=source_groups(sp.fit_good))
    out.update({"reference": "validation defects (TRAIN; never seen by the generators)",
                "n_reference": len(sp.val_defects), "n_synthetic": len(synth)})
    return out


def passes(realism: dict[str, Any] | None, max_c2st: float | None) -> bool:
    """A trial is a candidate when no realism limit is set, or its C2ST ran and its AUC is
    at most ``max_c2st`` (a C2ST that could not run cannot show realism: not a candidate)."""
    if max_c2st is None:
        return True
    return realism is not None and realism.get("c2st_auc") is not None and realism["c2st_auc"] <= max_c2st


def best_trial(study: Any, max_c2st: float | None) -> tuple[Any, int]:
    """``(the best complete trial that passes the realism limit or None, how many complete
    trials the limit excluded)``."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    ok = [t for t in done if passes(t.user_attrs.get("realism"), max_c2st)]
    return (max(ok, key=lambda t: t.value) if ok else None), len(done) - len(ok)


def trial_realism(study: Any, trial: Any) -> dict[str, Any] | None:
    """The realism measured for ``trial``: during the trial (``--max-c2st``) or after the
    search (kept in the study's attributes, so a resumed search does not measure it again)."""
    return trial.user_attrs.get("realism") or study.user_attrs.get(f"realism_trial{trial.number}")


def describe(realism: dict[str, Any] | None) -> str:
    """One line: ``C2ST AUC 0.812 [0.700, 0.900] (real-vs-real floor 0.480); host-only C2ST
    0.610 (...); 40 synthetic samples vs 31 ...``."""
    if not realism:
        return "not measured"
    if realism.get("c2st_auc") is None:
        return f"C2ST did not run: {realism.get('c2st_reason', 'no crops')}"
    ci = realism.get("c2st_ci")
    txt = f"C2ST AUC {realism['c2st_auc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    if realism.get("c2st_floor_auc") is not None:
        txt += f" (real-vs-real floor {realism['c2st_floor_auc']:.3f})"
    if realism.get("c2st_host_auc") is not None:
        txt += f"; host-only C2ST {realism['c2st_host_auc']:.3f} (the host surfaces alone)"
    return txt + (f"; {realism.get('n_synthetic')} synthetic samples vs {realism.get('n_reference')} "
                  f"{realism.get('reference', 'real defects')}; 0.5 = indistinguishable")
