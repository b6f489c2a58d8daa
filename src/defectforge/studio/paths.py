"""Every path the browser sends is resolved inside the project folder.

A client path is a string relative to ``PROJECT_DIR`` (``"datasets/bsdata"``) or, read-only,
relative to the bundled sample (``"@sample"`` / ``"@sample/images/x.jpg"``). Absolute
paths, ``..`` parts and symlinks that lead outside the allowed root are refused with a
:class:`PathRefused` naming the path, before anything is read or written.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from defectforge.errors import InputError

SAMPLE = "@sample"


class PathRefused(InputError):
    """A client path that would leave the project folder (or write into the bundled sample)."""


class ProjectPaths:
    """Resolves client paths against ``root`` (the project) and the bundled sample."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(root, "project folder not found")
        from defectforge.datasets import sample_path

        self.sample = sample_path().resolve()

    def resolve(self, rel: str, *, write: bool = False, must_exist: bool = False) -> Path:
        """The absolute path of client path ``rel`` (refused if it escapes its root)."""
        if not isinstance(rel, str) or not rel.strip():
            raise PathRefused(None, "empty path")
        text = rel.strip().replace("\\", "/")
        base = self.root
        if text == SAMPLE or text.startswith(SAMPLE + "/"):
            if write:
                raise PathRefused(text, "the bundled sample is read-only; write into the project folder")
            base, text = self.sample, text[len(SAMPLE):].lstrip("/") or "."
        pure = PurePosixPath(text)
        if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
            raise PathRefused(rel, "absolute paths are refused; give a path inside the project folder")
        if ".." in pure.parts:
            raise PathRefused(rel, "'..' is refused; give a path inside the project folder")
        full = (base / pure).resolve()
        if full != base and base not in full.parents:
            raise PathRefused(rel, "resolves outside the project folder (symlink escape refused)")
        if must_exist and not full.exists():
            raise InputError(rel, "not found in the project folder")
        return full

    def relative(self, path: str | Path) -> str:
        """The client path of an absolute ``path`` inside the project or the sample."""
        p = Path(path).resolve()
        if p == self.sample or self.sample in p.parents:
            rel = p.relative_to(self.sample).as_posix()
            return SAMPLE if rel == "." else f"{SAMPLE}/{rel}"
        return p.relative_to(self.root).as_posix()
