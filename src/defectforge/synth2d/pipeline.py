"""The synthesis run: sources -> generators -> label derivation -> files -> exports.

:func:`synthesize` reads top to bottom in numbered steps. The pieces live beside it:
making one sample in :mod:`.engine`, the sample record in :mod:`.record`, the outputs in
:mod:`.export`, the output folder rules in :mod:`defectforge.runfolder`.

- **Determinism**: sample ``i`` is made from its own seed, so the bytes of every output
  file depend only on the config and the seed, never on the number of workers or on
  resume points.
- **Parallelism**: an engine (:mod:`defectforge.engine`: local worker processes that die
  with the parent even on SIGKILL, or Ray actors) runs :class:`SampleTask`: the worker
  makes a sample and writes its PNGs atomically; the parent appends one line per finished
  sample to the journal (``.synth/journal.jsonl``) in the order they finish.
- **Resume**: a rerun of the same config skips the journaled samples whose files are
  intact. A different config, or a non-empty folder holding no synth run, is refused
  unless ``overwrite`` (which clears only the run's own outputs); an output folder that
  overlaps the source dataset is always refused; a second run into the same folder is
  refused while the first holds its lock.

Sources are never taken from the ``test`` split unless asked for explicitly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from defectforge.data.sample import Dataset, Sample
from defectforge.errors import ConfigError, InputError
from defectforge.runfolder import RunFolder, remove_leftovers, write_artifact
from defectforge.synth2d.config import SynthConfig
from defectforge.synth2d.engine import Engine, generate_samples, prepare, real_defects_from, seed_for
from defectforge.synth2d.export import export, write_outputs
from defectforge.synth2d.record import SynthRecord

__all__ = ["SynthRun", "synthesize", "generate_samples", "real_defects_from", "seed_for", "prepare", "read_records",
           "add_record", "run_config", "export"]

STATE = ".synth"
OUR_OUTPUTS = ("images", "masks", "manifest.csv", "dataset_card.md", "dataset_card.json", "export",
               "report.html", "assets")


@dataclass
class SynthRun:
    """What a run did. ``samples`` are the accepted samples (files on disk, or arrays for
    in-memory runs); ``rejected`` counts rejected attempts by reason."""

    config: SynthConfig | None
    out: Path | None
    samples: list[Sample] = field(default_factory=list)
    written: int = 0
    resumed: int = 0
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    exports: dict[str, str] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return int(sum(self.rejected.values()))


def synthesize(config: SynthConfig, out: str | Path | None = None, workers: int = 2, overwrite: bool = False,
               progress: Callable[[str, int, int | None], None] | None = None, dataset: Dataset | None = None,
               gallery: int = 12, engine: Any = None) -> SynthRun:
    """Run (or resume) a synthesis into ``out``; see the module doc for the rules.
    ``engine`` (:mod:`defectforge.engine`) runs the samples; default: ``workers`` local
    processes. Every engine writes the same bytes. ``progress("synth", done, total)``
    follows :mod:`defectforge.progress`."""
    t0 = time.perf_counter()
    # 1. the config: output folder and an absolute source path (so the fingerprint is stable)
    cfg, out = _resolve(config, out)
    total = int(cfg.n) if cfg.n is not None else int(sum(cfg.counts.values()))  # type: ignore[union-attr]
    # 2. the run folder: checked and locked; the sources are loaded before anything is cleared
    loaded: dict[str, Any] = {}

    def load_sources() -> None:
        loaded["engine"], loaded["facts"] = prepare(cfg, dataset)

    legacy = out / STATE / "config.json"  # state of a folder written before run folders
    adopt = legacy.is_file() and not (out / STATE / "run.json").is_file() and _legacy_fp(legacy) == cfg.fingerprint()
    with RunFolder.open(out, job="synth", config=cfg.model_dump(mode="json", exclude={"out"}), state=STATE,
                        inputs=_inputs(cfg), outputs=OUR_OUTPUTS, overwrite=overwrite, check=load_sources,
                        adopt=adopt) as rf:
        legacy.unlink(missing_ok=True)
        maker: Engine = loaded["engine"]
        # 3. what earlier runs finished (journaled, files intact)
        done = read_records(rf)
        todo = [i for i in range(total) if i not in done]
        run = SynthRun(cfg, out, resumed=len(done))
        if progress:
            progress("synth", len(done), total)
        # 4. workers make the missing samples and write each (atomically); journal each one done
        from defectforge.engine.local import LocalEngine

        runner = engine if engine is not None else LocalEngine(workers)
        for _, rec in runner.map(SampleTask(maker, out), todo):
            if rec.status == "error":
                raise InputError(None, rec.error)
            add_record(rf, rec)  # its files were written by the worker: only the journal line here
            done[rec.index] = rec
            run.written += rec.ok
            if progress:
                progress("synth", len(done), total)
        remove_leftovers(out)  # what a worker killed mid-write left (no writer is active now)
        # 5. manifest, exports, card and report, rebuilt from the journal
        write_outputs(run, rf, cfg, [done[i] for i in sorted(done)], total, loaded["facts"], gallery)
    run.elapsed_s = time.perf_counter() - t0
    return run


def _resolve(cfg: SynthConfig, out: str | Path | None) -> tuple[SynthConfig, Path]:
    if out is None:
        if not cfg.out:
            raise ConfigError("no output folder: pass out=... (CLI --out) or set 'out' in the config")
        out = cfg.out
    if Path(cfg.source.path).exists():
        src = cfg.source.model_copy(update={"path": str(Path(cfg.source.path).resolve())})
        cfg = cfg.model_copy(update={"source": src})
    if cfg.source.split == "test":
        import warnings

        warnings.warn("synth sources come from the test split: do not evaluate on these images", stacklevel=3)
    return cfg, Path(out)


def _legacy_fp(path: Path) -> str | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _inputs(cfg: SynthConfig) -> list[str]:
    """The files and folders the run reads (never written into or cleared)."""
    ins = [cfg.source.path]
    if cfg.source.roi not in ("auto", "border", "none"):
        ins.append(cfg.source.roi)
    return ins


class SampleTask:
    """Make sample ``i`` and write its two PNGs atomically into ``out``; returns its record
    (without the PNG bytes). Runs in a worker of any engine: only the record travels."""

    def __init__(self, maker: Engine, out: Path):
        self.maker = maker
        self.out = Path(out)

    def setup(self) -> None:
        pass

    def __call__(self, index: int) -> SynthRecord:
        rec = self.maker.make(index)
        if rec.status != "error":
            write_files(self.out, rec)
        return rec


def read_records(rf: RunFolder | Path) -> dict[int, SynthRecord]:
    """The journaled samples of a synthetic set (an open run folder or a folder path) whose
    files are intact, by index."""
    from defectforge.runfolder import Journal

    if isinstance(rf, RunFolder):
        root, journal = rf.path, rf.journal
    else:
        root, journal = Path(rf), Journal(Path(rf) / STATE / "journal.jsonl")
    recs = (SynthRecord.from_journal(d) for d in journal.done_ids("index").values())
    return {r.index: r for r in recs if r.files_intact(root)}


def write_files(root: Path, rec: SynthRecord) -> None:
    """Write an accepted sample's image and mask (atomic) under ``root``; fills in its file
    fields and drops the encoded bytes. Safe in a worker (no lock, no journal)."""
    if rec.ok and rec.png is not None:
        assert rec.mask_png is not None
        rec.file, rec.mask = f"images/{rec.stem}.png", f"masks/{rec.stem}.png"
        write_artifact(Path(root) / rec.file, rec.png)
        write_artifact(Path(root) / rec.mask, rec.mask_png)
        rec.file_size, rec.mask_size = len(rec.png), len(rec.mask_png)
        rec.png = rec.mask_png = None


def add_record(rf: RunFolder, rec: SynthRecord) -> None:
    """Write a made sample into the set: image and mask (atomic) if accepted and not written
    yet (:func:`write_files`, e.g. by a worker), then its journal line (fsync'ed)."""
    write_files(rf.path, rec)
    assert not rec.ok or rec.file is not None
    rf.journal.append(rec.to_journal())


def run_config(out: str | Path) -> dict[str, Any]:
    """The config a synthetic set's run recorded (``{}`` if none)."""
    import json

    for name in ("run.json", "config.json"):  # config.json: sets written before run folders
        p = Path(out) / STATE / name
        if p.is_file():
            try:
                cfg = json.loads(p.read_text(encoding="utf-8")).get("config", {})
            except (OSError, ValueError, AttributeError):
                return {}
            return cfg if isinstance(cfg, dict) else {}
    return {}
