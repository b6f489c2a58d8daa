"""What the dataset readers do with a broken label or a path that leaves the dataset.

Every reader takes a :class:`ReadProblems`. By default (``collect=False``) the first problem
raises :class:`~defectforge.errors.InputError` naming the file (``error: <file>: <problem>``
on the command line). ``data check`` passes ``collect=True``: the reader records the
problem, skips the broken row/annotation/shape and goes on, so the check lists every
problem (exit code 1) instead of stopping at the first.

Paths that leave the dataset folder (``../../etc/passwd`` in a manifest, a labelme
``imagePath`` or COCO ``file_name`` pointing elsewhere, an absolute path) are refused unless
``allow_outside_root`` (``--allow-outside-root``): a dataset handed over by someone else must
not make an export copy arbitrary files of this machine. Symlinks are followed: a link
inside the dataset whose target lies outside it (``images/a.jpg -> /etc/...``) is refused the
same way, also for the formats found by listing folders (MVTec, YOLO images and label files);
links whose targets stay inside the dataset keep working. A dataset whose files are links into
a cache elsewhere (git-annex, DVC) needs ``--allow-outside-root``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from defectforge.errors import InputError

OUTSIDE_HINT = "pass --allow-outside-root (allow_outside_root=True) to accept it"


@dataclass
class ReadProblems:
    """Raise on the first problem (default) or collect them all (``collect=True``)."""

    collect: bool = False
    allow_outside_root: bool = False
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, file: str | Path, problem: str, kind: str = "bad label") -> None:
        """Report ``problem`` in ``file``: raise, or record it when collecting."""
        if not self.collect:
            raise InputError(file, problem)
        self.items.append({"file": str(file), "problem": problem, "kind": kind, "severity": "error"})

    def outside(self, path: Path, roots: Iterable[Path | None], file: str | Path, what: str) -> bool:
        """True (after reporting it) when ``path`` lies outside every root and that is not allowed.

        ``what`` describes the reference, e.g. ``"line 4: file ../x.png"``."""
        if self.allow_outside_root or is_inside(path, roots):
            return False
        root = next((r for r in roots if r is not None), None)
        if is_inside(path, roots, links=False):  # inside by its name: a symlink leads out
            what = f"{what} (a link to {os.path.realpath(path)})"
        self.add(file, f"{what} is outside the dataset folder {root} ({OUTSIDE_HINT})", "outside root")
        return True


def strict(problems: ReadProblems | None) -> ReadProblems:
    """``problems`` or a fresh raising one."""
    return problems if problems is not None else ReadProblems()


def is_inside(path: Path, roots: Iterable[Path | None], links: bool = True) -> bool:
    """Whether ``path`` (made absolute, ``..`` folded; symlinks of the path and the roots
    followed unless ``links=False``) is under a root."""
    norm = os.path.realpath if links else (lambda q: os.path.normpath(os.path.abspath(q)))
    p = norm(path)
    for r in roots:
        if r is None:
            continue
        base = norm(r)
        if p == base or p.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def finite_number(v: Any) -> float | None:
    """``float(v)`` when ``v`` is a real finite number (not a bool or a string), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def point_problem(points: Any, hw: tuple[int, int]) -> str | None:
    """Why a list of ``[x, y]`` vertices cannot be drawn on an ``H x W`` image, or None.

    NaN/inf vertices, non-numbers and vertices more than one image size beyond the edges
    (a typo such as ``1e12``, which would otherwise fill most of the mask) are refused."""
    if not isinstance(points, (list, tuple)):
        return "points must be a list of [x, y] pairs"
    h, w = hw
    for k, pt in enumerate(points):
        if not isinstance(pt, (list, tuple)) or len(pt) != 2:
            return f"point {k} is not an [x, y] pair"
        if isinstance(pt[0], bool) or isinstance(pt[1], bool) or not all(isinstance(v, (int, float)) for v in pt):
            return f"point {k} {list(pt)!r} is not a number pair"
        x, y = float(pt[0]), float(pt[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            return f"point {k} is not finite ({pt[0]}, {pt[1]})"
        if not (-w <= x <= 2 * w and -h <= y <= 2 * h):
            return f"point {k} ({x:g}, {y:g}) is far outside the {w}x{h} image"
    return None
