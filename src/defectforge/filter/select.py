"""Selection policies over per-sample score rows.

A policy is applied in this order:

1. **rules** ``COLUMN OP VALUE`` (``OP`` one of ``< <= > >=``); ``VALUE`` is a number or
   ``pNN``, the NN-th percentile of that column **within the batch** (scales depend on the
   backbone, so relative thresholds travel better). A NaN score (e.g. ``change_out`` without
   a source image) does not fail a rule.
2. the survivors are ranked by ``rank_by`` (best first: ascending for distances and
   ``change_out``, descending otherwise), then taken greedily, skipping a sample when its
   defect type's **quota** is full or when it is closer than ``min_diversity`` to an
   already kept sample (embedding distance), until ``top_k`` are kept.

Every rejected sample gets a reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from defectforge.errors import ConfigError

#: columns where lower is better
LOWER_IS_BETTER = {"realism_distance", "dreamsim_distance", "change_out"}
_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(p?)([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Rule:
    """``column op value`` (``percentile=True``: value is a within-batch percentile)."""

    column: str
    op: str
    value: float
    percentile: bool = False

    def __str__(self) -> str:
        return f"{self.column}{self.op}{'p' if self.percentile else ''}{self.value:g}"


def parse_rule(text: str) -> Rule:
    """Parse ``"realism_distance<=p80"`` or ``"fidelity>=5"``."""
    m = _RULE.match(text)
    if not m:
        raise ConfigError(f"cannot parse rule {text!r}: write COLUMN OP VALUE, e.g. 'fidelity>=5' or "
                          "'realism_distance<=p80' (pNN = percentile within the batch)")
    col, op, pct, val = m.groups()
    try:
        v = float(val)
    except ValueError:
        raise ConfigError(f"rule {text!r}: {val!r} is not a number") from None
    if pct and not 0.0 <= v <= 100.0:
        raise ConfigError(f"rule {text!r}: a percentile must be in [0, 100]")
    return Rule(col, op, v, bool(pct))


@dataclass
class SelectionPolicy:
    """What to keep; see the module docstring."""

    rules: list[Rule] = field(default_factory=list)
    rank_by: str = "realism_distance"
    top_k: int | None = None
    quotas: dict[str, int] | None = None
    min_diversity: float | None = None

    def __post_init__(self) -> None:
        self.rules = [parse_rule(r) if isinstance(r, str) else r for r in self.rules]
        if self.top_k is not None and self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {self.top_k}")
        if self.quotas and any(v < 0 for v in self.quotas.values()):
            raise ConfigError(f"quotas must be >= 0, got {self.quotas}")
        if self.min_diversity is not None and not 0 <= self.min_diversity < math.inf:  # NaN would keep everything
            raise ConfigError(f"min_diversity must be a finite distance >= 0, got {self.min_diversity}")


def _column(rows: Sequence[dict[str, Any]], col: str) -> np.ndarray:
    if rows and col not in rows[0]:
        have = sorted(k for k in rows[0] if not k.startswith("_") and isinstance(rows[0][k], (int, float)))
        raise ConfigError(f"unknown score column {col!r}; available: {', '.join(have)}")
    return np.array([float(r[col]) for r in rows], dtype=np.float64)


def select(rows: Sequence[dict[str, Any]], policy: SelectionPolicy) -> tuple[list[bool], list[str]]:
    """``(keep flags, reasons)`` for score ``rows`` (reason ``"kept"`` for kept samples).

    Rows may carry ``_embedding`` (used for ``min_diversity``)."""
    n = len(rows)
    keep = np.ones(n, bool)
    reasons = ["kept"] * n
    for rule in policy.rules:
        vals = _column(rows, rule.column)
        thr = rule.value
        if rule.percentile:
            finite = vals[np.isfinite(vals)]
            thr = float(np.percentile(finite, rule.value)) if finite.size else np.nan
        ok = {"<": vals < thr, "<=": vals <= thr, ">": vals > thr, ">=": vals >= thr}[rule.op] | np.isnan(vals)
        for i in np.flatnonzero(keep & ~ok):
            reasons[i] = f"rule {rule} (value {vals[i]:.4g}, threshold {thr:.4g})"
        keep &= ok
    if n == 0:
        return [], []
    score = _column(rows, policy.rank_by)
    key = score if policy.rank_by in LOWER_IS_BETTER else -score
    key = np.where(np.isnan(key), np.inf, key)
    order = [int(i) for i in np.argsort(key, kind="stable") if keep[i]]
    counts: dict[str, int] = {}
    kept: list[int] = []
    need_emb = policy.min_diversity is not None
    if need_emb and rows and "_embedding" not in rows[0]:
        raise ConfigError("min_diversity needs embeddings in the score rows")
    for i in order:
        lab = str(rows[i].get("label", ""))
        if policy.top_k is not None and len(kept) >= policy.top_k:
            keep[i], reasons[i] = False, f"beyond top-{policy.top_k} by {policy.rank_by}"
            continue
        if policy.quotas is not None and counts.get(lab, 0) >= policy.quotas.get(lab, 0):
            keep[i], reasons[i] = False, f"quota for {lab!r} full ({policy.quotas.get(lab, 0)})"
            continue
        if need_emb and kept:
            e = np.asarray(rows[i]["_embedding"])
            d = min(float(np.linalg.norm(e - np.asarray(rows[j]["_embedding"]))) for j in kept)
            if d < policy.min_diversity:  # type: ignore[operator]
                keep[i], reasons[i] = False, f"too similar to a kept sample (distance {d:.4g} < {policy.min_diversity:g})"
                continue
        kept.append(i)
        counts[lab] = counts.get(lab, 0) + 1
    return [bool(k) for k in keep], reasons
