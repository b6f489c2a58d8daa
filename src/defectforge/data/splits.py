"""Validation splits carved from TRAIN that respect the dataset's groups.

A *group* is a sample's ``meta["group"]`` (the manifest's ``group`` column: in BSData one wear
sequence, 7-13 near-duplicate photos of one spot). Photos of one group are near-copies, so a
validation split that puts some of them in training and the rest in validation rewards
remembering the spot instead of finding the defect, and ranks training sets by that. When a
dataset's test defects come from groups that training never saw (BSData's README: defective
groups were split between train and test *by group*), such a validation split can rank two
training sets opposite to the test split.

``mode`` (``val_split`` in the CLIs and settings):

- ``"auto"`` (default): within each stratum (defect images, good images) hold out **whole
  groups** when every sample of the stratum has a group and there are at least 2 of them;
  otherwise by image. Like scikit-learn's ``GroupShuffleSplit``, applied per stratum: a spot's
  good photos may train while its defect photos validate, as in BSData's own split.
- ``"group"``: by group, and an error naming the sample when a group is missing or a stratum
  that is split has fewer than 2 groups.
- ``"image"``: by image (the behaviour before groups were read; the same draws, bit for bit).

By group, the held-out groups are a prefix of a seeded permutation of the groups: the prefix
whose image count is nearest ``n_val`` (at least one group held out, at least one kept).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from defectforge.errors import ConfigError

VAL_SPLITS = ("auto", "group", "image")


def sample_group(sample: Any, key: str = "group") -> str | None:
    """The sample's group (``meta[key]`` as a string), or None when it has none."""
    g = (getattr(sample, "meta", None) or {}).get(key)
    return None if g in (None, "") else str(g)


def check_val_split(mode: str) -> None:
    if mode not in VAL_SPLITS:
        raise ConfigError(f"val_split must be one of {', '.join(VAL_SPLITS)}, got {mode!r}")


def split_by(items: Sequence[Any], mode: str, what: str = "samples") -> str:
    """``"group"`` or ``"image"``: how ``items`` (one stratum) are split under ``mode``."""
    check_val_split(mode)
    if mode == "image" or len(items) < 2:
        return "image"
    groups = [sample_group(s) for s in items]
    missing = [s for s, g in zip(items, groups) if g is None]
    n_groups = len({g for g in groups if g is not None})
    if mode == "auto":
        return "group" if not missing and n_groups >= 2 else "image"
    if missing:
        name = getattr(missing[0], "name", "?")
        raise ConfigError(f"val_split 'group': {what} sample {name!r} has no group (meta['group']); "
                          "use val_split 'auto' or 'image'")
    if n_groups < 2:
        raise ConfigError(f"val_split 'group': the {what} samples form {n_groups} group, need at least 2 to hold "
                          "one out; use val_split 'auto' or 'image'")
    return "group"


def holdout(items: Sequence[Any], n_val: int, rng: np.random.Generator, by: str) -> tuple[list[int], list[int]]:
    """Sorted ``(validation, train)`` indices of ``items``: ``n_val`` drawn by image (one
    ``rng.permutation(len(items))``), or whole groups whose count is nearest ``n_val``."""
    n = len(items)
    if by == "image":
        perm = rng.permutation(n)
        return sorted(int(i) for i in perm[:n_val]), sorted(int(i) for i in perm[n_val:])
    groups = [sample_group(s) for s in items]
    names = sorted(set(groups))
    order = [names[i] for i in rng.permutation(len(names))]
    sizes = np.cumsum([groups.count(g) for g in order])
    if n_val <= 0:
        k = 0
    else:
        k = 1 + int(np.argmin(np.abs(sizes[:-1] - n_val)))  # 1 .. G-1 groups, nearest count, fewest on ties
    held = set(order[:k])
    val = [i for i, g in enumerate(groups) if g in held]
    return val, [i for i, g in enumerate(groups) if g not in held]
