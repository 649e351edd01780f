"""The ``jndkit serve`` web app (FastAPI): a page to protect photos from a browser, on this machine.

Routes (JSON unless said otherwise):

- ``GET /``: the page (``static/index.html``, ``app.js``, ``app.css``).
- ``GET /api/config``: the upload limit, tasks, strengths and image suffixes the page offers.
- ``POST /api/photos``: one photo per request, multipart fields ``file`` (the bytes), ``name``
  (the display name, e.g. a folder-relative path), ``task`` and ``strength``; 202 and the job.
  An upload over the limit gets **413** with a one-line message naming the file and the limit.
- ``GET /api/jobs`` and ``GET /api/jobs/{id}``: per-photo status, which the page polls (``status``,
  ``step``/``limit`` of the attack, ``error``, ``record``: report.json's record, ``links``).
- ``GET /api/jobs/{id}/original.png``, ``protected.png``, ``difference.png``: images to show;
  ``GET /api/jobs/{id}/download``: the protected file under the name ``jndkit protect`` gives;
  ``GET /api/download.zip``: every protected photo (``?ids=a,b`` for some), same names.

Only a protected file that passed the re-check on the saved file exists, so only that can be
downloaded. Uploads live in a per-server temporary folder (:class:`~jndkit.serve.jobs.Session`),
deleted when the app shuts down; request values are never used as paths (jobs are looked up by id).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask

from .jobs import STRENGTHS, TASKS, Job, Session

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "ServeSettings", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_UPLOAD_MB = 50.0
"""Largest photo a page may upload, in MB (10^6 bytes); ``jndkit serve --max-upload-mb``."""
_FORM_SLACK = 64 * 1024
"""Bytes of a multipart request beyond the file itself (boundaries, the other fields)."""
_ID = re.compile(r"[0-9a-f]{16}")
_NO_STORE = {"Cache-Control": "no-store"}
_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")


@dataclass
class ServeSettings:
    """How the app runs.

    Attributes:
        max_upload_mb: largest upload in MB (10^6 bytes); larger ones get 413.
        workers: photos protected at once (background threads).
        allowed_hosts: ``Host`` headers accepted (``None``: any). ``jndkit serve`` on a loopback
            address accepts only loopback names, so a web site cannot reach the app through a
            rebound DNS name.
        overrides: per task, keyword arguments for ``ProtectConfig`` (``photo``) or ``FaceProtector``
            (``faces``): a test hook (a small model, no upload suite) and a way to serve other settings.
        tmp_parent: where the session's temporary folder is made (default: the system's).
    """

    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    workers: int = 1
    allowed_hosts: Sequence[str] | None = None
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tmp_parent: str | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


def _mb(n: float) -> str:
    """Bytes as people read them: ``12.3 MB``, ``900 kB``."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The app, with its own :class:`~jndkit.serve.jobs.Session` (``app.state.session``), which is
    closed (workers stopped, temporary folder deleted) when the app shuts down."""
    s = settings or ServeSettings()
    if s.max_upload_mb <= 0:
        from ..errors import InputError

        raise InputError(f"max_upload_mb must be > 0, got {s.max_upload_mb}")
    session = Session(workers=s.workers, overrides=s.overrides, tmp_parent=s.tmp_parent)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            session.close()

    app = FastAPI(title="jndkit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.session = session
    app.state.settings = s
    if s.allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(s.allowed_hosts))

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_NO_STORE)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        from ..images import IMAGE_SUFFIXES

        return {"max_upload_bytes": s.max_upload_bytes, "tasks": list(TASKS), "strengths": list(STRENGTHS),
                "image_suffixes": list(IMAGE_SUFFIXES), "workers": s.workers}

    @app.post("/api/photos", status_code=202)
    async def upload(request: Request) -> JSONResponse:
        limit = s.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + _FORM_SLACK:
            # refused before the body is read; the page sends the name as a query value for this message
            name = request.query_params.get("name") or "the upload"
            raise HTTPException(413, f"{_display(name)}: {_mb(int(declared))} is over this server's upload limit "
                                     f"of {_mb(limit)} (jndkit serve --max-upload-mb)")
        form = await request.form(max_files=1, max_fields=8)
        try:
            file = form.get("file")
            if file is None or isinstance(file, str):
                raise HTTPException(400, "no file in the upload (multipart field 'file')")
            name = str(form.get("name") or file.filename or "photo")
            task = str(form.get("task") or "photo")
            strength = str(form.get("strength") or "auto")
            if task not in TASKS:
                raise HTTPException(400, f"task must be {' or '.join(TASKS)}, got {task!r}")
            if strength not in STRENGTHS:
                raise HTTPException(400, f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
            data = await file.read(limit + 1)
            if len(data) > limit:
                raise HTTPException(413, f"{_display(name)}: over this server's upload limit of {_mb(limit)} "
                                         "(jndkit serve --max-upload-mb)")
            if not data:
                raise HTTPException(400, f"{_display(name)}: empty file")
        finally:
            await form.close()
        job = session.add(name, data, task, strength)
        return JSONResponse(job.to_json(), status_code=202)

    @app.get("/api/jobs")
    def jobs() -> JSONResponse:
        items = [j.to_json() for j in session.list()]
        return JSONResponse({"jobs": items, "pending": sum(j["status"] in ("queued", "running") for j in items)},
                            headers=_NO_STORE)

    def _job(jid: str) -> Job:
        job = session.get(jid) if _ID.fullmatch(jid) else None
        if job is None:
            raise HTTPException(404, f"no photo with id {jid[:40]!r} on this server")
        return job

    @app.get("/api/jobs/{jid}")
    def job(jid: str) -> JSONResponse:
        return JSONResponse(_job(jid).to_json(), headers=_NO_STORE)

    @app.get("/api/jobs/{jid}/{kind}.png")
    def image(jid: str, kind: str) -> FileResponse:
        j = _job(jid)
        path = j.file(kind) if kind in ("original", "protected", "difference") else None
        if path is None:
            raise HTTPException(404, f"{j.name}: no {kind} image ({j.status})")
        return FileResponse(path, media_type="image/png", headers=_NO_STORE)

    @app.get("/api/jobs/{jid}/download")
    def download(jid: str) -> FileResponse:
        j = _job(jid)
        path = j.file("protected")
        if path is None:
            raise HTTPException(409, f"{j.name}: not protected ({j.status}); nothing to download")
        return FileResponse(path, media_type="image/png", filename=PurePosixPath(j.download_name).name,
                            headers=_NO_STORE)

    @app.get("/api/download.zip")
    def download_zip(ids: str | None = None) -> FileResponse:
        wanted = None if ids is None else {i for i in ids.split(",") if i}
        chosen = [j for j in session.list() if (wanted is None or j.id in wanted) and j.file("protected")]
        if not chosen:
            raise HTTPException(404, "no protected photo to download yet")
        zpath = session.root / f"download-{len(chosen)}-{id(chosen):x}.zip"
        taken: set[str] = set()
        with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs do not compress further
            for j in chosen:
                path = j.file("protected")
                if path is not None:
                    zf.write(path, _unique(j.download_name, taken))
        return FileResponse(zpath, media_type="application/zip", filename="jndkit-protected.zip",
                            headers=_NO_STORE, background=BackgroundTask(zpath.unlink, missing_ok=True))

    return app


def _display(name: str) -> str:
    from .jobs import sanitise_name

    return sanitise_name(name)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``stem (2).png`` ... when the zip already holds it (two uploads with the same
    name; ``jndkit protect`` refuses such a pair, the page keeps both)."""
    out, k = name, 2
    p = PurePosixPath(name)
    while out in taken:
        out = str(p.with_name(f"{p.stem} ({k}){p.suffix}"))
        k += 1
    taken.add(out)
    return out
