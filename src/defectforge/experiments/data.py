"""Data plumbing for experiments: splits, synthetic pools, input checks."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from defectforge.data.sample import Sample
from defectforge.errors import InputError
from defectforge.filter.run import check_synthetic

__all__ = ["check_synthetic", "make_synthetic", "subsample"]


def make_synthetic(goods: Sequence[Sample], real_defects: Sequence[Sample], n: int, seed: int,
                   generator: str = "pitting", classes: Sequence[str] | None = None,
                   params: dict[str, Any] | None = None) -> list[Sample]:
    """``n`` synthetic defects on ``goods`` (split evenly over ``classes``), their size and
    placement statistics fitted on ``real_defects`` (the only real defects the generator
    sees). ``params``: the generator's parameters. Deterministic in ``seed``."""
    from defectforge.synth2d import generate_samples

    if n <= 0:
        return []
    if not goods:
        raise InputError(None, "no good training images to synthesise defects on")
    classes = list(classes or sorted({s.label for s in real_defects}))
    out: list[Sample] = []
    per = [n // len(classes) + (1 if k < n % len(classes) else 0) for k in range(len(classes))]
    for k, (c, m) in enumerate(zip(classes, per)):
        if m == 0:
            continue
        reals = [s for s in real_defects if s.label == c] or list(real_defects)
        got = generate_samples(list(goods), generator, m, seed=seed * 1000 + k, real_defects=reals, defect_type=c,
                               **(params or {}))
        tries = 0
        while len(got) < m and tries < 3:  # a few samples may fail QC: top up
            tries += 1
            got += generate_samples(list(goods), generator, m - len(got), seed=seed * 1000 + 97 * tries + k,
                                    real_defects=reals, defect_type=c, **(params or {}))
        for j, s in enumerate(got[:m]):
            s.meta["name"] = f"syn_{c}_s{seed}_{j:04d}"
        out += got[:m]
    return out


def subsample(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` samples drawn without replacement (all when ``n >= len``), original order kept."""
    if n >= len(samples):
        return list(samples)
    rng = np.random.default_rng(seed)
    return [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]
