"""The study's web server (FastAPI, served by uvicorn on 127.0.0.1 by default).

Routes (all under the server's root; nothing from a request is used as a path on disk: pictures are
looked up by trial number in the participant's plan, and the participant id is checked against
:data:`~jndkit.study.design.PARTICIPANT_RE` before it names a results file):

* ``GET /`` and ``GET /static/{name}``: the page (HTML, JS, CSS shipped in ``jndkit/study/static``);
* ``GET /api/plan/{participant}``: the participant's trials (number and block only: which side is
  altered and which method is shown stay on the server), the answered ones, the flicker frame time;
* ``GET /api/picture/{participant}/{trial}/{slot}``: a PNG. Flicker slots ``L0 L1 R0 R1`` are the
  two frames of the left and right panels; rating slots ``ref`` (the original) and ``test``;
* ``POST /api/answer``: one answer, appended to ``RESULTS/{participant}.csv`` and flushed before the
  reply (see :mod:`jndkit.study.results`). A trial already answered is refused (409).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from ..errors import ImageError, InputError, JndkitError
from .design import Study, Trial, check_participant, plan_trials
from .media import picture_png
from .results import append_answer, make_answer, read_answers, results_path

__all__ = ["AnswerIn", "StudyState", "create_app", "open_socket", "serve_study", "start_in_thread"]

_STATIC = {"study.js": "text/javascript", "study.css": "text/css"}
_FLICKER_SLOTS = ("L0", "L1", "R0", "R1")
_RATING_SLOTS = ("ref", "test")


class AnswerIn(BaseModel):
    """The body of ``POST /api/answer``."""

    participant: str
    trial: int
    side: str | None = None
    saw_change: str | None = None
    rating: int | None = None
    response_ms: int = 0


class StudyState:
    """Plans and answered trials per participant, and the CSV writer (thread-safe)."""

    def __init__(self, study: Study, results_dir: Path) -> None:
        self.study = study
        self.results_dir = results_dir
        self._lock = threading.Lock()
        self._plans: dict[str, list[Trial]] = {}
        self._answered: dict[str, set[int]] = {}

    def _load(self, pid: str) -> tuple[list[Trial], set[int]]:
        """Plan and answered set of ``pid`` (read from its CSV the first time); caller holds the lock."""
        if pid not in self._plans:
            plan = plan_trials(self.study, pid)
            path = results_path(self.results_dir, pid)
            done: set[int] = set()
            if path.exists():
                for a in read_answers([path]):
                    if a.design != self.study.fingerprint:
                        raise HTTPException(
                            409, f"participant {pid} answered another study design ({a.design}; this one is "
                            f"{self.study.fingerprint}): use a new participant id",
                        )
                    if a.trial >= len(plan) or plan[a.trial].trial_id != a.trial_id:
                        raise HTTPException(409, f"{path}: trial {a.trial} does not match this study's plan")
                    done.add(a.trial)
            self._plans[pid], self._answered[pid] = plan, done
        return self._plans[pid], self._answered[pid]

    def plan(self, pid: str) -> tuple[list[Trial], set[int]]:
        """Plan and a copy of the answered trial numbers of participant ``pid``."""
        with self._lock:
            plan, done = self._load(pid)
            return plan, set(done)

    def answer(self, body: AnswerIn) -> tuple[int, int]:
        """Save one answer; returns (answered, total). Raises HTTPException 404/409 or InputError."""
        with self._lock:
            plan, done = self._load(body.participant)
            if not 0 <= body.trial < len(plan):
                raise HTTPException(404, f"trial {body.trial}: no such trial (0-{len(plan) - 1})")
            if body.trial in done:
                raise HTTPException(409, f"trial {body.trial}: already answered")
            ans = make_answer(
                body.participant, self.study.fingerprint, plan[body.trial], side=body.side,
                saw_change=body.saw_change, rating=body.rating, response_ms=body.response_ms,
            )
            self.results_dir.mkdir(parents=True, exist_ok=True)
            append_answer(results_path(self.results_dir, body.participant), ans)
            done.add(body.trial)
            return len(done), len(plan)


def _role(trial: Trial, slot: str) -> str:
    """Which picture a slot of a trial shows: ``original``, ``noise`` or a method name."""
    altered = trial.method if trial.kind == "test" else ("noise" if trial.kind == "noise" else "original")
    if trial.block == "flicker":
        if slot not in _FLICKER_SLOTS:
            raise HTTPException(404, f"slot {slot}: a flicker trial has {', '.join(_FLICKER_SLOTS)}")
        side = "left" if slot[0] == "L" else "right"
        return altered if slot[1] == "1" and side == trial.altered else "original"
    if slot not in _RATING_SLOTS:
        raise HTTPException(404, f"slot {slot}: a rating trial has {', '.join(_RATING_SLOTS)}")
    return "original" if slot == "ref" else altered


def _static(name: str) -> str:
    return resources.files("jndkit.study").joinpath("static").joinpath(name).read_text(encoding="utf-8")


def create_app(study: Study, results_dir: Path) -> FastAPI:
    """The FastAPI app of a study; answers go to ``results_dir`` (created at the first answer)."""
    state = StudyState(study, results_dir)
    app = FastAPI(title="jndkit visibility study", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study = state

    def checked(pid: str) -> str:
        try:
            return check_participant(pid)
        except InputError as e:
            raise HTTPException(400, str(e)) from e

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return _static("index.html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"{name}: no such file")
        return Response(_static(name), media_type=_STATIC[name])

    @app.get("/api/plan/{participant}")
    def plan(participant: str) -> dict[str, Any]:
        plan, done = state.plan(checked(participant))
        return {
            "participant": participant,
            "design": study.fingerprint,
            "flicker_ms": study.flicker_ms,
            "trials": [{"index": t.index, "block": t.block} for t in plan],
            "answered": sorted(done),
        }

    @app.get("/api/picture/{participant}/{trial}/{slot}")
    def picture(participant: str, trial: int, slot: str) -> Response:
        plan, _ = state.plan(checked(participant))
        if not 0 <= trial < len(plan):
            raise HTTPException(404, f"trial {trial}: no such trial")
        t = plan[trial]
        try:
            data = picture_png(study, t.image, _role(t, slot))
        except ImageError as e:
            raise HTTPException(500, str(e)) from e
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/answer")
    def answer(body: AnswerIn) -> dict[str, Any]:
        checked(body.participant)
        try:
            answered, total = state.answer(body)
        except InputError as e:
            raise HTTPException(422, str(e)) from e
        except JndkitError as e:  # the CSV could not be written: the page must not go on
            raise HTTPException(500, str(e)) from e
        return {"saved": True, "answered": answered, "total": total}

    return app


def open_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port; read it from ``getsockname()``).

    Raises:
        InputError: the address cannot be bound (port in use, unknown host).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(f"{host}:{port}: cannot listen there ({e.strerror or e})") from e
    sock.listen(128)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_study(
    study: Study, results_dir: Path, *, host: str = "127.0.0.1", port: int = 8765,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the study until interrupted (Ctrl-C); ``on_ready(url)`` is called once the port is bound."""
    sock = open_socket(host, port)
    if on_ready is not None:
        on_ready(_url(sock))
    server = uvicorn.Server(uvicorn.Config(create_app(study, results_dir), log_level="warning"))
    server.run(sockets=[sock])


def start_in_thread(study: Study, results_dir: Path, host: str = "127.0.0.1") -> tuple[str, Callable[[], None]]:
    """Serve the study from a background thread on a free port; returns ``(url, stop)`` (tests, notebooks)."""
    sock = open_socket(host, 0)
    server = uvicorn.Server(uvicorn.Config(create_app(study, results_dir), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return _url(sock), stop
