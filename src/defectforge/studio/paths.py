"""Every path the browser sends is resolved inside the project folder.

A client path is a string relative to ``PROJECT_DIR`` (``"datasets/bsdata"``) or, read-only,
relative to the bundled sample (``"@sample"`` / ``"@sample/images/x.jpg"``) or to a data
folder mounted at start (``defectforge studio PROJECT --data bsdata=../shared/datasets/bsdata``
gives ``"@bsdata/..."``; mounts are read-only, like the sample). Absolute paths, ``..`` parts
and symlinks that lead outside the allowed root are refused with a :class:`PathRefused`
naming the path, before anything is read or written: a dataset that lives elsewhere is
mounted explicitly, never reached through a symlink.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from defectforge.errors import InputError

SAMPLE = "@sample"


class PathRefused(InputError):
    """A client path that would leave the project folder (or write into the bundled sample)."""


MAX_PATH = 1024
"""The longest client path accepted (names of at most 255 bytes, as most file systems allow)."""


class ProjectPaths:
    """Resolves client paths against ``root`` (the project) and the bundled sample."""

    def __init__(self, root: str | Path, mounts: dict[str, str | Path] | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(root, "project folder not found")
        from defectforge.datasets import sample_path

        self.sample = sample_path().resolve()
        self.mounts: dict[str, Path] = {SAMPLE: self.sample}
        for name, folder in (mounts or {}).items():
            if not name.replace("_", "").replace("-", "").isalnum():
                raise InputError(None, f"data mount name {name!r}: use letters, digits, '-' and '_'")
            full = Path(folder).resolve()
            if not full.is_dir():
                raise InputError(folder, "data folder to mount not found")
            self.mounts["@" + name] = full

    def resolve(self, rel: str, *, write: bool = False, must_exist: bool = False) -> Path:
        """The absolute path of client path ``rel`` (refused if it escapes its root)."""
        if not isinstance(rel, str) or not rel.strip():
            raise PathRefused(None, "empty path")
        if "\x00" in rel:
            raise PathRefused(rel.replace("\x00", "\\0"), "a path may not hold a NUL byte")
        if len(rel) > MAX_PATH or any(len(part.encode("utf-8")) > 255 for part in rel.replace("\\", "/").split("/")):
            raise PathRefused(rel[:80] + "...", f"path too long (at most {MAX_PATH} characters, 255 bytes a name)")
        text = rel.strip().replace("\\", "/")
        base = self.root
        head = text.split("/", 1)[0]
        if head.startswith("@"):
            if head not in self.mounts:
                raise PathRefused(text, f"unknown data mount {head!r} (mounted: {', '.join(self.mounts)})")
            if write:
                what = "the bundled sample is" if head == SAMPLE else f"the mounted folder {head} is"
                raise PathRefused(text, f"{what} read-only; write into the project folder")
            base, text = self.mounts[head], text[len(head):].lstrip("/") or "."
        pure = PurePosixPath(text)
        if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
            raise PathRefused(rel, "absolute paths are refused; give a path inside the project folder")
        if ".." in pure.parts:
            raise PathRefused(rel, "'..' is refused; give a path inside the project folder")
        full = (base / pure).resolve()
        if full != base and base not in full.parents:
            raise PathRefused(rel, "resolves outside the project folder (symlink escape refused; mount a dataset that lives "
                                   "elsewhere with: defectforge studio PROJECT --data NAME=FOLDER)")
        if must_exist and not full.exists():
            raise InputError(rel, "not found in the project folder")
        return full

    def relative(self, path: str | Path) -> str:
        """The client path of an absolute ``path`` inside the project or the sample."""
        p = Path(path).resolve()
        if p == self.root or self.root in p.parents:
            return p.relative_to(self.root).as_posix()
        for name, base in self.mounts.items():
            if p == base or base in p.parents:
                rel = p.relative_to(base).as_posix()
                return name if rel == "." else f"{name}/{rel}"
        raise ValueError(f"{p} lies outside the project and its data mounts")
