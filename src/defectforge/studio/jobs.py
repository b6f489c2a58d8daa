"""Jobs: bulk ``synth`` / ``synth3d`` runs launched from the browser, queued, one at a time.

A job runs the command's own function (:func:`defectforge.synth2d.pipeline.synthesize`,
:func:`defectforge.synth3d.pipeline.run_synthesis`) in a worker thread, so outputs,
journals and resume are exactly the CLI's. Every path in a job config is a client path
resolved inside the project. The job list lives in ``PROJECT/.studio/jobs.json`` (atomic
writes): after a server restart, jobs that were queued or running are ``interrupted`` and
``resume`` re-queues them; the run folder's own journal skips finished samples, so a
killed job loses nothing already written. ``cancel`` stops a running job at the next
sample (progress callback) and leaves its folder resumable.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from defectforge._atomic import atomic_write_json
from defectforge.errors import ConfigError, DefectforgeError, InputError
from defectforge.studio import forms
from defectforge.studio.forms import FieldError
from defectforge.studio.paths import PathRefused

router = APIRouter(prefix="/api")
KINDS = ("synth", "synth3d", "cli")
STORE = ".studio/jobs.json"


class Cancelled(Exception):
    """Raised from a progress callback to stop a job between samples."""


def _paths(st, kind: str, config: dict[str, Any], out: str) -> tuple[dict[str, Any], Path]:
    """The config with client paths made absolute (inside the project) and the output folder."""
    cfg = json.loads(json.dumps(config))
    if kind == "cli":  # the command's own --out (and other paths) are checked there
        from defectforge.studio.cli_jobs import argv

        argv(st, cfg)
        return cfg, st.paths.root
    dst = st.paths.resolve(out, write=True)
    if dst == st.paths.root:
        raise FieldError("out", "give the job its own output folder inside the project")
    if kind == "synth":
        src = cfg.get("source")
        if not isinstance(src, dict) or "path" not in src:
            raise FieldError("config", "synth config needs source.path (a dataset in the project, or @sample)")
        src["path"] = str(st.paths.resolve(str(src["path"]), must_exist=True))
        roi = src.get("roi", "auto")
        if roi not in ("auto", "border", "none"):
            src["roi"] = str(st.paths.resolve(str(roi), must_exist=True))
        cfg.pop("out", None)
        for gen in cfg.get("generators") or []:  # a generator's folder/file parameters are project paths too
            if isinstance(gen, dict) and isinstance(gen.get("params"), dict):
                gen["params"] = forms.project_params(st.paths, str(gen.get("name")), gen["params"])
        from defectforge.synth2d.config import parse_config

        parse_config(cfg)  # schema errors now, not when the job starts
    else:
        inp = str(cfg.get("input", "part:all"))
        cfg["input"] = inp if inp.startswith("part:") else str(st.paths.resolve(inp, must_exist=True))
        inst = cfg.get("instructions")
        if isinstance(inst, str):
            from defectforge.synth3d.instructions import load_instructions

            cfg["instructions"] = load_instructions(st.paths.resolve(inst, must_exist=True)).model_dump(mode="json")
        from defectforge.synth3d.instructions import validate_instructions

        validate_instructions(cfg.get("instructions"), source="job instructions")
        from defectforge.synth3d.pipeline import check_count, resolve_inputs

        for key, default in (("n", 10), ("seed", 0), ("n_points", 20000)):
            cfg[key] = cfg.get(key, default)
            if isinstance(cfg[key], float) and cfg[key].is_integer():
                cfg[key] = int(cfg[key])  # 10.0 from a JSON client
            try:
                check_count(key, cfg[key])
            except ConfigError as exc:  # named after the form's field
                raise FieldError(f"config.{key}", str(exc)) from None
        if inp.startswith("part:"):
            resolve_inputs(inp)  # an unknown part now, not when the job runs
    return cfg, dst


class JobQueue:
    """The queue, the job records and the worker thread."""

    def __init__(self, studio):
        self.st = studio
        self.file = studio.paths.root / STORE
        self.jobs: dict[str, dict[str, Any]] = {}
        self.cancel: set[str] = set()
        self.lock = threading.Lock()
        self.q: queue.Queue[str] = queue.Queue()
        if self.file.is_file():
            try:
                for j in json.loads(self.file.read_text(encoding="utf-8")):
                    if j.get("status") in ("queued", "running"):
                        j["status"] = "interrupted"
                        j["message"] = "server stopped while the job was queued or running; resume to continue"
                    self.jobs[j["id"]] = j
            except (ValueError, KeyError, TypeError):
                raise InputError(self.file, "job list is not valid JSON; move it away to start a new list") from None
        threading.Thread(target=self._work, daemon=True, name="studio-jobs").start()

    def _save(self) -> None:
        with self.lock:
            data = sorted(self.jobs.values(), key=lambda j: j["created"])
        atomic_write_json(self.file, data)

    def submit(self, kind: str, config: dict[str, Any], out: str, workers: int) -> dict[str, Any]:
        if kind not in KINDS:
            raise FieldError("kind", f"unknown job kind {kind!r} (choose from {', '.join(KINDS)})")
        try:
            _paths(self.st, kind, config, out)
        except (FieldError, PathRefused):
            raise
        except DefectforgeError as exc:
            raise FieldError("config", str(exc)) from None
        if kind == "cli":
            out = str((config.get("args") or {}).get("out") or (config.get("args") or {}).get("json_out") or "")
        job = {"id": self.st.new_id(), "kind": kind, "config": config, "out": out, "workers": int(workers),
               "status": "queued", "done": 0, "total": None, "message": "", "created": time.time()}
        with self.lock:
            self.jobs[job["id"]] = job
        self._save()
        self.q.put(job["id"])
        return job

    def resume(self, jid: str) -> dict[str, Any]:
        job = self.get(jid)
        if job["status"] in ("queued", "running"):
            raise FieldError("status", f"job {jid} is already {job['status']}")
        job.update(status="queued", message="", done=0, total=None, stage="")
        self._save()
        self.q.put(jid)
        return job

    def stop(self, jid: str) -> dict[str, Any]:
        job = self.get(jid)
        if job["status"] == "queued":
            job.update(status="cancelled", message="cancelled before it started")
            self._save()
        elif job["status"] == "running":
            self.cancel.add(jid)
        return job

    def get(self, jid: str) -> dict[str, Any]:
        with self.lock:
            if jid not in self.jobs:
                raise InputError(None, f"no job {jid}")
            return self.jobs[jid]

    def _work(self) -> None:
        while True:
            jid = self.q.get()
            job = self.jobs.get(jid)
            if job is None or job["status"] != "queued":
                continue
            job.update(status="running", started=time.time(), message="")
            self._save()
            try:
                summary = self._run(job)
                job.update(status="done", message=summary)
            except Cancelled:
                job.update(status="cancelled", message="cancelled; files written so far are kept, resume to continue")
            except DefectforgeError as exc:
                job.update(status="failed", message=str(exc))
            except Exception as exc:  # a bug must not kill the queue
                job.update(status="failed", message=f"internal error: {exc.__class__.__name__}: {exc}")
            self.cancel.discard(jid)
            job["finished"] = time.time()
            self._save()

    def _run(self, job: dict[str, Any]) -> str:
        cfg, out = _paths(self.st, job["kind"], job["config"], job["out"])
        jid = job["id"]
        last = [0.0]

        def progress(stage: str, done: int, total: int | None) -> None:  # defectforge.progress protocol
            job.update(done=int(done), total=None if total is None else int(total), stage=stage)
            if jid in self.cancel:
                raise Cancelled()
            if time.time() - last[0] > 2:
                last[0] = time.time()
                self._save()

        if job["kind"] == "cli":
            from defectforge.studio.cli_jobs import run

            def child_progress(stage: str, done: int, total: int | None) -> None:  # no Cancelled from here:
                job.update(done=int(done), total=total, stage=stage)  # the child gets SIGINT instead

            return run(self.st, job, lambda: jid in self.cancel, child_progress)
        if job["kind"] == "synth":
            from defectforge.synth2d.config import parse_config
            from defectforge.synth2d.pipeline import synthesize

            run = synthesize(parse_config(cfg), out, workers=max(1, job["workers"]), progress=progress)
            return f"{len(run.samples)} samples ({run.written} new, {run.resumed} resumed, {run.failed} failed)"
        from defectforge.synth3d.instructions import validate_instructions
        from defectforge.synth3d.pipeline import run_synthesis

        s = run_synthesis(cfg["input"], validate_instructions(cfg["instructions"]), cfg["n"], cfg["seed"], out,
                          n_points=cfg["n_points"], progress=progress)
        return f"{s['samples']} clouds ({s['generated']} new, {s['skipped']} resumed)"


def jobs_of(request: Request) -> JobQueue:
    return request.app.state.jobs


class Submit(BaseModel):
    kind: str = "synth"
    config: dict[str, Any] | None = None
    yaml_text: str | None = Field(None, max_length=200_000)
    out: str = ""
    workers: int = Field(1, ge=1, le=8)


@router.get("/jobs/commands")
def commands() -> dict[str, Any]:
    """The CLI commands a ``cli`` job may run, with their parameters (from the CLI itself)."""
    from defectforge.studio.cli_jobs import COMMANDS, command_form

    return {"commands": {c: command_form(c) for c in COMMANDS}}


@router.get("/jobs")
def list_jobs(request: Request) -> dict[str, Any]:
    q = jobs_of(request)
    with q.lock:
        return {"jobs": sorted((dict(j) for j in q.jobs.values()), key=lambda j: j["created"], reverse=True)}


@router.post("/jobs")
def submit(request: Request, req: Submit) -> dict[str, Any]:
    config = req.config
    if config is None:
        try:
            config = yaml.safe_load(req.yaml_text or "")
        except yaml.YAMLError as exc:
            raise FieldError("config", f"not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise FieldError("config", "the job config must be a mapping")
    return jobs_of(request).submit(req.kind, config, req.out, req.workers)


@router.post("/jobs/{jid}/cancel")
def cancel(request: Request, jid: str) -> dict[str, Any]:
    return jobs_of(request).stop(jid)


@router.post("/jobs/{jid}/resume")
def resume(request: Request, jid: str) -> dict[str, Any]:
    return jobs_of(request).resume(jid)


@router.get("/jobs/{jid}/config.yaml")
def config_yaml(request: Request, jid: str, download: int = 1) -> Response:
    """The job's YAML config (every kind), headed by the command that runs it outside the
    studio; ``download=0`` shows it in the page instead of saving it."""
    q = jobs_of(request)
    job = q.get(jid)
    body = {**job["config"], **({"out": job["out"]} if job["kind"] in ("synth", "synth3d") else {})}
    if job["kind"] == "cli":
        from defectforge.studio.cli_jobs import command_line

        try:
            head = f"# runs: {command_line(q.st, job['config'])}"
        except DefectforgeError as exc:  # e.g. an input removed since: still show the config
            head = f"# (cannot build the command line now: {exc})"
    elif job["kind"] == "synth":
        head = f"# runs: defectforge synth --config {job['kind']}_{jid}.yaml  (paths relative to the project folder)"
    else:
        head = f"# studio synth3d job: input, instructions, n, seed, n_points and out as 'defectforge synth3d' takes them"
    text = head + "\n" + yaml.safe_dump(body, sort_keys=False)
    headers = {"Content-Disposition": f'attachment; filename="{job["kind"]}_{jid}.yaml"'} if download else {}
    return Response(text, media_type="application/x-yaml" if download else "text/plain; charset=utf-8",
                    headers=headers)
