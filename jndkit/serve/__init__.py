"""``jndkit serve``: protect photos from a browser, on this machine (issue 16).

:func:`create_app` builds the FastAPI app (:mod:`.app`); :mod:`.jobs` holds the per-photo jobs,
the background worker(s) and :func:`~.jobs.protect_one`, the page's one call into the library.
FastAPI and uvicorn are imported only when this package is.
"""

from __future__ import annotations

from .app import DEFAULT_MAX_UPLOAD_MB, ServeSettings, create_app
from .jobs import STRENGTHS, TASKS, Job, Session, download_name, protect_one, sanitise_name

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB", "STRENGTHS", "TASKS", "Job", "ServeSettings", "Session", "create_app", "download_name",
    "protect_one", "sanitise_name",
]
