"""One run-folder helper for every resumable job (synth, synth3d, experiments, detector and
LoRA training) and for the front ends that drive them (Ray engine, studio job queue).

A run folder is an output folder plus a small state folder inside it (``.run`` unless the
job names another) holding::

    run.json        job name, config fingerprint, config, the outputs the job declares
    journal.jsonl   one JSON line per finished unit of work (fsync'ed; a torn last line is dropped)
    lock            held (``flock``) while a process runs the job; names its pid

Rules, the same for every job:

- **Inputs are never touched**: a folder that is, contains or lies inside one of the
  job's inputs is refused before anything is written.
- **Fingerprint**: the same config resumes; a different one is refused unless
  ``overwrite``. A non-empty folder that holds no run of this job is refused unless
  ``overwrite``. ``overwrite`` clears only what the job declares as its outputs (and the
  state folder), never anything else in the folder.
- **One run at a time**: a second process (or a second open in the same process) is
  refused with a one-line error naming the pid. A lock left by a killed process is free
  again (the kernel drops ``flock`` locks with the process) and is taken over.
- **No partial files**: artefacts are written atomically (:mod:`defectforge._atomic`);
  hidden staging files/folders left by a killed run (``.NAME.*.tmp`` / ``.old``) are
  removed when the folder is opened again.

Workers (other processes, Ray tasks) need no lock to write: :func:`write_artifact` is a
plain atomic write, and the one process holding the :class:`RunFolder` appends the journal.

Typical use::

    with RunFolder.open(out, job="synth", config=cfg_dict, inputs=[src], outputs=["images"],
                        overwrite=overwrite) as rf:
        done = rf.journal.done_ids("index")
        for i in todo:
            rf.write_artifact(f"images/{i}.png", png_bytes)
            rf.journal.append({"index": i, "status": "ok"})
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from defectforge._atomic import atomic_open, atomic_write_bytes, atomic_write_text
from defectforge.errors import ConfigError, InputError

STATE = ".run"
RUN_FILE, JOURNAL_FILE, LOCK_FILE = "run.json", "journal.jsonl", "lock"
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)(\.png)?$")


# -- small pieces usable on their own ----------------------------------------------------------
def fingerprint(config: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def check_no_overlap(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs``."""
    from defectforge.data._files import _overlaps

    out = Path(out)
    for src in inputs:
        if src is None or str(src) == "":
            continue
        if _overlaps(Path(src), out):
            raise InputError(out, f"output folder overlaps the input {src}: a run never writes into or clears "
                                  "its own inputs; choose a separate --out folder")


def check_scoring_out(out: str | Path, inputs: Iterable[str | Path], own: Callable[[str], bool], job: str) -> None:
    """Refuse the output folder of a scoring job (``detect predict``, ``detect3d predict``)
    where its files would replace what is not its own: a folder that is, holds or lies inside
    one of ``inputs`` (an input and an output of the same name would be one file), or a
    non-empty folder with a top-level entry that ``own(name)`` does not claim as an earlier
    run's (hidden staging leftovers aside). One line, before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    check_no_overlap(out, inputs)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and not own(p.name))
        if foreign:
            more = ", ..." if len(foreign) > 3 else ""
            raise InputError(out, f"folder holds what an earlier '{job}' run did not write ({', '.join(foreign[:3])}"
                                  f"{more}): its outputs could replace them; choose an empty or new --out")


def write_artifact(path: str | Path, data: bytes | str | Callable[[Any], None], mode: str = "wb") -> Path:
    """Write one file atomically: ``bytes``, ``str`` (UTF-8), or ``func(fh)`` writing into a
    temporary file that replaces ``path`` only once complete. No lock needed (workers)."""
    if isinstance(data, bytes):
        return atomic_write_bytes(path, data)
    if isinstance(data, str):
        return atomic_write_text(path, data)
    kw = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    with atomic_open(path, mode, **kw) as fh:
        data(fh)
    return Path(path)


def remove_leftovers(root: str | Path) -> int:
    """Remove hidden staging files/folders (``.NAME.*.tmp``, ``.NAME.*.old``) that a killed
    atomic write or staged export left under ``root``; returns how many were removed."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames):
            if _LEFTOVER.match(name):
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                dirnames.remove(name)
                n += 1
        for name in filenames:
            if _LEFTOVER.match(name):
                (Path(dirpath) / name).unlink(missing_ok=True)
                n += 1
    return n


def load_state(path: str | Path, what: str = "checkpoint") -> Any:
    """Read a torch-saved state (checkpoint, model file) **without running code**.

    ``torch.load(weights_only=True)`` only rebuilds tensors and plain data (numbers,
    strings, lists, dicts); a file that holds any other Python object (a pickle that
    would import or call something) is refused with an :class:`InputError` naming the
    file, and nothing in it is executed. Truncated or corrupt files are refused the same way.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{what} file not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        detail = f" (it names {found.group(1)})" if found else ""
        raise InputError(p, f"refused to load this {what}: it holds Python objects other than tensors and plain "
                            f"data, which could run code{detail}") from None
    except Exception as exc:
        raise InputError(p, f"cannot read the {what} ({exc.__class__.__name__}: truncated or corrupt?)") from None


# -- journal -----------------------------------------------------------------------------------
class Journal:
    """Append-only JSON-lines file: one record per finished unit of work.

    ``append`` writes one line and fsyncs it, so a record on disk means the work is
    done. ``records`` replays the file; a torn or unparsable line (a crash while
    writing) ends the replay and is cut off the file, so the unit is simply redone.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        raw = self.path.read_bytes()
        good: list[dict[str, Any]] = []
        keep = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if not isinstance(rec, dict):
                break
            good.append(rec)
            keep += len(line)
        if keep != len(raw):
            self.close()
            atomic_write_bytes(self.path, raw[:keep])
        return good

    def done_ids(self, key: str = "id", valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[Any, dict[str, Any]]:
        """The last record per ``record[key]`` (records failing ``valid`` are left out)."""
        out: dict[Any, dict[str, Any]] = {}
        for rec in self.records():
            if key in rec and (valid is None or valid(rec)):
                out[rec[key]] = rec
        return out

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(_line(record))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def rewrite(self, records: Sequence[dict[str, Any]]) -> None:
        """Replace the journal by ``records`` (atomic), e.g. in a canonical order at the end."""
        self.close()
        atomic_write_text(self.path, "".join(_line(r) for r in records))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _line(record: dict[str, Any]) -> str:
    from defectforge._atomic import _json_default

    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=_json_default) + "\n"


# -- lock --------------------------------------------------------------------------------------
class _Lock:
    """An exclusive ``flock`` on ``path`` holding the owner's pid; removed on release."""

    def __init__(self, path: Path, what: Path):
        self.path, self.what, self.fd = path, what, -1

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise InputError(self.what, f"is in use by another run ({self._owner()}); wait for it to finish "
                                            "or choose another output folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file that its owner removed while we were opening it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)
        raise InputError(self.what, "could not take the run lock (the lock file keeps changing)")

    def _owner(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"pid {pid}" if pid else "another process"

    def release(self) -> None:
        if self.fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


# -- the run folder ----------------------------------------------------------------------------
class RunFolder:
    """An opened (locked, checked) run folder; see the module doc. Use :meth:`open`."""

    def __init__(self, path: Path, job: str, config: Any, fp: str, state: str, outputs: tuple[str, ...],
                 resumed: bool, lock: _Lock):
        self.path, self.job, self.config, self.fingerprint = path, job, config, fp
        self.state_dir = path / state
        self.outputs = outputs
        self.resumed = resumed  # the folder already held this run (same fingerprint)
        self.journal = Journal(self.state_dir / JOURNAL_FILE)
        self._lock = lock

    @classmethod
    def open(cls, path: str | Path, *, job: str, config: Any, inputs: Iterable[str | Path | None] = (),
             outputs: Sequence[str] = (), overwrite: bool = False, state: str = STATE,
             check: Callable[[], Any] | None = None, overwrite_flag: str | None = "--overwrite",
             adopt: bool = False) -> "RunFolder":
        """Check, lock and prepare ``path`` for the run ``job`` with ``config``.

        ``outputs``: top-level names (glob patterns allowed) the job writes; with
        ``overwrite`` only they and the state folder are cleared. ``check`` runs after the
        folder checks and before anything is removed or written (validate the inputs there,
        so a bad input never costs the previous run). ``overwrite_flag``: how the command
        spells overwrite in its hints (None: it has no such option). ``adopt``: the caller
        has checked that the folder, which has no state yet, holds this very run (a run
        folder written before this helper existed); it is resumed. Raises :class:`InputError` (overlap,
        not a folder, foreign non-empty folder, in use) or :class:`ConfigError` (other config).
        """
        path = Path(path)
        inputs = list(inputs)
        check_no_overlap(path, inputs)
        if path.exists() and not path.is_dir():
            raise InputError(path, "output path exists and is not a folder")
        fp = fingerprint(config)
        sdir = path / state
        created = [p for p in (path, *path.parents) if not p.exists()]
        made_state = not sdir.exists()
        path.mkdir(parents=True, exist_ok=True)
        lock = _Lock(sdir / LOCK_FILE, path)

        def undo() -> None:  # a refused or failed start leaves no trace
            if made_state and not (sdir / RUN_FILE).exists():
                shutil.rmtree(sdir, ignore_errors=True)
            for p in created:
                with contextlib.suppress(OSError):
                    p.rmdir()

        try:
            lock.acquire()  # first, so that the folder cannot change under the checks below
        except BaseException:
            undo()
            raise
        try:
            old, clear = _decide(path, job, fp, state, overwrite, adopt, overwrite_flag)
            if check is not None:
                check()
            if clear:
                _clear(path, outputs, state)
            remove_leftovers(path)
            resumed = old is not None and not clear and old.get("job") == job
            _write_run_file(sdir / RUN_FILE, {"job": job, "fingerprint": fp, "config": config,
                                              "outputs": list(outputs)})
        except BaseException:
            lock.release()
            undo()
            raise
        return cls(path, job, config, fp, state, tuple(outputs), resumed, lock)

    def done_ids(self, key: str = "id", valid: Callable[[dict[str, Any]], bool] | None = None) -> dict[Any, dict[str, Any]]:
        return self.journal.done_ids(key, valid)

    def write_artifact(self, name: str | Path, data: bytes | str | Callable[[Any], None], mode: str = "wb") -> Path:
        """Write ``name`` (relative to the folder) atomically."""
        return write_artifact(self.path / name, data, mode)

    def close(self) -> None:
        self.journal.close()
        self._lock.release()

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _decide(path: Path, job: str, fp: str, state: str, overwrite: bool, adopt: bool,
            overwrite_flag: str | None) -> tuple[dict[str, Any] | None, bool]:
    """(the run the folder holds, whether to clear the job's outputs) or a refusal."""
    hint = f"pass {overwrite_flag} or choose another --out" if overwrite_flag else "choose another --out"
    old = _read_run(path / state / RUN_FILE)
    if old is not None and old.get("job") == job:
        if old.get("fingerprint") == fp:
            return old, False
        if not overwrite:
            raise ConfigError(f"{path}: holds a different run of {job} (different config: fingerprint "
                              f"{old.get('fingerprint')} vs {fp}); {hint}")
        return old, True
    if old is None and adopt:
        return {"job": job, "fingerprint": fp}, False
    if any(_visible(path, state)):
        if not overwrite:
            what = f"a {old.get('job')} run" if old else "no run of this command"
            raise InputError(path, f"output folder is not empty and holds {what}; {hint}")
        return old, True
    return old, False


def _write_run_file(path: Path, obj: Any) -> None:
    """run.json with sorted keys and no timestamps, so equal runs give equal bytes."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def _read_run(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"job": None, "fingerprint": None}
    return obj if isinstance(obj, dict) else {"job": None, "fingerprint": None}


def _visible(path: Path, state: str) -> list[str]:
    """Entries other than the state folder."""
    return [p.name for p in path.iterdir() if p.name != state]


def _clear(path: Path, outputs: Sequence[str], state: str) -> None:
    """Remove the declared outputs and the state (but not the lock this process holds)."""
    for p in sorted(path.iterdir()):
        if p.name == state and p.is_dir():
            for q in p.iterdir():
                if q.name != LOCK_FILE:
                    _remove(q)
        elif any(fnmatch.fnmatchcase(p.name, pat) for pat in outputs):
            _remove(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
