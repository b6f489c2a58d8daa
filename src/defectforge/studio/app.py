"""The studio web app: a FastAPI application over the toolkit's functions.

Routes live in small modules (:mod:`.data_api`, :mod:`.author2d`, :mod:`.author3d`,
:mod:`.jobs`); the front end is plain HTML/JS/CSS served from ``static/``. Handlers are
plain ``def`` functions, so FastAPI runs them in its thread pool and no request blocks the
event loop. A :class:`~defectforge.errors.DefectforgeError` becomes HTTP 400 with
``{"error": message, "field": name-or-null}``; a refused path becomes 403.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from defectforge.errors import DefectforgeError
from defectforge.studio.paths import PathRefused
from defectforge.studio.state import Studio

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 16 * 1024 * 1024  # uploads (drawn masks, instruction files) are small


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes (HTTP 413), by the declared
    ``content-length`` and by counting what actually arrives (chunked uploads too): the body
    is read (at most ``limit`` bytes are kept) before the app sees it. ``per_path``: other
    limits for some paths (uploads)."""

    def __init__(self, app, limit: int, per_path: dict[str, int] | None = None):
        self.app, self.default, self.per_path = app, limit, dict(per_path or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.per_path.get(scope.get("path", ""), self.default)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, limit)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                return await self._refuse(scope, send, limit)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send, limit: int) -> None:
        body = JSONResponse({"error": f"request body over the {limit // 2**20} MiB limit", "field": None},
                            status_code=413)
        await body(scope, None, send)


def create_app(project: str | Path, token: str | None = None, llm=None,
               mounts: dict[str, str | Path] | None = None) -> FastAPI:
    """The app for ``project``; with ``token``, every request must carry it
    (``X-Studio-Token`` header, ``?token=`` query or the ``studio_token`` cookie); ``llm``:
    a :class:`defectforge.llm.ChatClient` for the describe box (rule parser otherwise);
    ``mounts``: read-only data folders (``{"bsdata": path}`` -> client paths ``@bsdata/...``)."""
    from defectforge.studio import author2d, author3d, data_api, jobs, results, review, upload

    app = FastAPI(title="defectforge studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = Studio(project, token, llm, mounts)
    app.state.jobs = jobs.JobQueue(app.state.studio)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None:
            given = (request.headers.get("x-studio-token") or request.query_params.get("token")
                     or request.cookies.get("studio_token") or "")
            if not secrets.compare_digest(given, token):
                return JSONResponse({"error": "missing or wrong studio token", "field": None}, status_code=401)
        response = await call_next(request)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie("studio_token", token, httponly=True, samesite="strict")
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY, per_path={"/api/upload": upload.UPLOAD_MAX})

    @app.exception_handler(PathRefused)
    async def refused(request: Request, exc: PathRefused):
        return JSONResponse({"error": str(exc), "field": "path"}, status_code=403)

    @app.exception_handler(DefectforgeError)
    async def user_error(request: Request, exc: DefectforgeError):
        return JSONResponse({"error": str(exc), "field": getattr(exc, "field", None)}, status_code=400)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):  # the page reads {error, field}
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        field = ".".join(loc) or None
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        return JSONResponse({"error": f"{field}: {msg}{more}" if field else f"{msg}{more}", "field": field},
                            status_code=422)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):  # shown in the page instead of a bare 500
        return JSONResponse({"error": f"internal error: {exc.__class__.__name__}: {exc}", "field": None},
                            status_code=500)

    for mod in (data_api, author2d, author3d, jobs, review, results, upload):
        app.include_router(mod.router)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
