"""The work behind ``jndkit serve``: one job per uploaded photo, run in the background.

:func:`protect_one` is the **only** place where the page calls the protection library (decode,
protect, re-check, previews); everything else here is bookkeeping: a per-server temporary folder,
generated job ids, a thread pool (one worker by default) so the page never blocks, and the status
the page polls.

Nothing from the request is used as a path: each upload is written to ``ROOT/<id>/photo`` where
``<id>`` is a random hex string; the name the browser sent is kept, sanitised
(:func:`sanitise_name`), only to show and to name downloads (:func:`download_name`, the name
``jndkit protect`` gives: same stem, ``.png``).
"""

from __future__ import annotations

import queue
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "STRENGTHS", "TASKS", "Job", "Session", "download_name", "protect_one", "sanitise_name",
]

TASKS = ("photo", "faces")
"""What the page protects: ``photo`` (image classifiers, ``jndkit protect``) or ``faces``
(face recognition, ``jndkit protect --task face``)."""
STRENGTHS = ("auto", "invisible", "subtle", "strong")
"""The budgets of ``--strength`` the page offers (``photo`` only)."""
DONE = ("protected", "failed", "no-face", "error")
"""Final states of a job; ``queued`` and ``running`` come before."""
DIFF_MAX_SIDE = 2048
"""The amplified difference is shown at full size up to this side, max-pooled above it."""
STOP_WAIT_S = 15.0
"""How long stopping the server waits for the photo in hand to reach its next iteration."""
ProgressFn = Callable[[int, int, dict[str, Any]], None]


class Cancelled(Exception):  # noqa: N818 -- what happened, not an error of the photo
    """Raised in the engine's progress callback when the server stops, to end the attack in hand."""

_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>:\"|?*]")


def sanitise_name(raw: str | None, fallback: str = "photo") -> str:
    """A display / download name from what the browser sent (a file name, or a folder-relative path
    such as ``trip/a.jpg`` for a dropped folder).

    Backslashes count as separators; empty, ``.`` and ``..`` parts are dropped, control and
    reserved characters become ``_``, a leading dot becomes ``_`` (no hidden files in a zip), each
    part keeps at most 120 characters and at most 8 folder levels are kept. Never used as a path
    on the server: only shown and written into download headers and zip entries.

    >>> sanitise_name("../../etc/passwd")
    'etc/passwd'
    >>> sanitise_name("C:\\\\Users\\\\me\\\\.a.jpg")
    'C_/Users/me/_a.jpg'
    """
    parts = []
    for part in (raw or "").replace("\\", "/").split("/"):
        part = _UNSAFE.sub("_", part).strip()
        if part in ("", ".", ".."):
            continue
        if part.startswith("."):
            part = "_" + part[1:]
        parts.append(part[:120])
    parts = parts[-9:]
    return "/".join(parts) or fallback


def download_name(name: str) -> str:
    """The name ``jndkit protect`` gives the protected copy (PNG, the CLI's default format): same
    stem and folder, suffix ``.png`` (``trip/a.jpg`` -> ``trip/a.png``)."""
    p = PurePosixPath(name)
    return str(p.with_name(p.stem + ".png")) if p.stem else "photo.png"


def protect_one(task: str, strength: str, src: Path, out_dir: Path, progress: ProgressFn | None = None, *,
                engines: dict[tuple[str, str], Any] | None = None, overrides: Mapping[str, Any] | None = None,
                display: str | None = None, lock: threading.Lock | None = None) -> dict[str, Any]:
    """Protect one uploaded photo: the page's one call into the library.

    Decodes ``src`` with :func:`jndkit.images.load_image` (a bad file gets the CLI's one-line reason),
    writes ``out_dir/original.png`` (the decoded photo, as the browser can show it), protects it
    with the CLI's tasks through the one pipeline step :func:`jndkit.pipeline.protect_one`:
    ``Protector(ProtectConfig(strength=...))`` (``photo``) or the face panel of ``jndkit protect
    --task face`` (:class:`~jndkit.face.panel_task.FacePanelTask`, ``faces``) into
    ``out_dir/protected.png``, which exists only when the protection held on the re-read file, and then writes
    ``out_dir/difference.png`` (``0.5 + 40 * (protected - original)``, as report.html shows it).

    Args:
        task: ``photo`` or ``faces`` (:data:`TASKS`).
        strength: ``auto``, ``invisible``, ``subtle`` or ``strong``.
        src: the uploaded file (a generated name); out_dir: an empty folder of the job.
        progress: the engine's ``progress(step, limit, info)``.
        engines: a cache of protectors by ``(task, strength)`` (they load their models once).
        overrides: keyword arguments for :class:`~jndkit.protect.ProtectConfig` (``photo``) or
            :class:`~jndkit.face.panel_task.FacePanelTask` (``faces``), e.g. a faster model in tests.
        display: the name shown for ``src`` in messages (the upload's sanitised name).
        lock: held while a protector is built (workers share ``engines``).

    Returns:
        ``status`` (``protected``, ``failed``, ``no-face`` or ``error``), ``error`` (one line, or
        ``None``), ``record`` (the record of report.json, paths left out), ``protected`` /
        ``original`` / ``difference``: the files written (``None`` when absent).
    """
    from ..errors import JndkitError
    from ..images import load_image, save_image
    from ..pipeline import protect_one as pipeline_protect_one
    from ..report import _diff_image

    name = display or src.name
    result: dict[str, Any] = {"status": "error", "error": None, "record": None,
                              "protected": None, "original": None, "difference": None}
    try:
        img = load_image(src)
        original = save_image(img.rgb, out_dir / "original.png", alpha=img.alpha)
        result["original"] = str(original)
        engines = {} if engines is None else engines
        key = (task, strength)
        with lock or threading.Lock():
            engine = engines.get(key)
            if engine is None:
                engine = engines[key] = _engine(task, strength, overrides or {})
        rec = pipeline_protect_one(engine, src, out_dir / "protected.png", progress)
        data = rec.to_json()
        for k in ("input", "output"):
            data.pop(k, None)
        result["status"], result["record"] = rec.status, data
        result["error"] = rec.error.replace(str(src), name) if rec.error else None
        if rec.status == "protected" and rec.output and Path(rec.output).is_file():
            adv = load_image(rec.output)
            h, w = adv.rgb.shape[-2:]
            diff = _diff_image(img.rgb, adv.rgb, size=min(max(h, w), DIFF_MAX_SIDE))
            result["difference"] = str(save_image(diff, out_dir / "difference.png"))
            result["protected"] = str(rec.output)
        elif rec.status == "protected":  # never offer a file that is not there
            result["status"], result["error"] = "error", f"{name}: the protected file is missing"
    except JndkitError as e:
        result["error"] = str(e).replace(str(src), name)
    return result


def _engine(task: str, strength: str, overrides: Mapping[str, Any]) -> Any:
    """A protector for ``task`` (its models loaded once and kept in :func:`protect_one`'s cache)."""
    if task == "photo":
        from ..protect import ProtectConfig, Protector

        return Protector(ProtectConfig(**{"strength": None if strength == "auto" else strength, **overrides}))
    from ..attacks.transfer import strength_ladder
    from ..face.panel import PANEL_STRENGTHS
    from ..face.panel_task import FacePanelTask

    strengths = PANEL_STRENGTHS if strength == "auto" else tuple(strength_ladder(strength, ()))
    return FacePanelTask(**{"strengths": strengths, **overrides})


@dataclass
class Job:
    """One uploaded photo.

    Attributes:
        id: 16 random hex digits (the only handle the page has; also its folder's name).
        name: the sanitised name the browser sent (shown, and the stem of downloads).
        task, strength: what was asked (:data:`TASKS`, :data:`STRENGTHS`).
        folder: ``ROOT/<id>``: ``photo`` (the upload), ``out/`` (previews and the protected file).
        size: bytes uploaded.
        status: ``queued``, ``running``, then one of :data:`DONE`.
        step, limit: the engine's iterations of the budget in hand (``limit`` 0: not started).
    """

    id: str
    name: str
    task: str
    strength: str
    folder: Path
    size: int
    status: str = "queued"
    step: int = 0
    limit: int = 0
    error: str | None = None
    record: dict[str, Any] | None = None
    files: dict[str, str | None] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    seconds: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set once the job reached one of :data:`DONE` (or the session closed)."""

    @property
    def src(self) -> Path:
        return self.folder / "photo"

    @property
    def download_name(self) -> str:
        return download_name(self.name)

    def file(self, kind: str) -> Path | None:
        """``original``, ``protected`` or ``difference``: the file when the job wrote it."""
        p = self.files.get(kind)
        return Path(p) if p and Path(p).is_file() else None

    def to_json(self) -> dict[str, Any]:
        """What the page sees (no server path)."""
        base = f"/api/jobs/{self.id}"
        links = {k: f"{base}/{k}.png" for k in ("original", "protected", "difference") if self.file(k)}
        if "protected" in links:
            links["download"] = f"{base}/download"
        return {"id": self.id, "name": self.name, "download_name": self.download_name, "task": self.task,
                "strength": self.strength, "size": self.size, "status": self.status, "step": self.step,
                "limit": self.limit, "error": self.error, "seconds": self.seconds, "record": self.record,
                "links": links}


class Session:
    """The server's jobs, their temporary folder and the background worker(s).

    Args:
        workers: photos protected at once (threads; 1 by default: the models use every core).
        overrides: see :func:`protect_one` (``{"photo": {...}, "faces": {...}}``).
        tmp_parent: where the session folder is made (default: the system's temporary folder).
    """

    def __init__(self, workers: int = 1, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 tmp_parent: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="jndkit-serve-", dir=tmp_parent))
        self.jobs: dict[str, Job] = {}
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self._engines: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        # daemon threads, not a ThreadPoolExecutor: stopping the server must not wait for the photo
        # in hand (an attack can take minutes); its folder is deleted and its result dropped
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._workers = [threading.Thread(target=self._work, name=f"jndkit-serve-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._workers:
            t.start()
        self.closed = False

    def add(self, name: str, data: bytes, task: str, strength: str) -> Job:
        """Store an upload under a generated id and queue it."""
        jid = secrets.token_hex(8)
        folder = self.root / jid
        (folder / "out").mkdir(parents=True)
        job = Job(id=jid, name=sanitise_name(name), task=task, strength=strength, folder=folder, size=len(data))
        job.src.write_bytes(data)
        with self._lock:
            self.jobs[jid] = job
        self._queue.put(job)
        return job

    def get(self, jid: str) -> Job | None:
        with self._lock:
            return self.jobs.get(jid)

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self.jobs.values(), key=lambda j: j.created)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job is done (tests, scripts); False if ``timeout`` seconds passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        for job in self.list():
            left = None if end is None else max(0.0, end - time.monotonic())
            if not job.done.wait(left):
                return False
        return True

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self.closed:
                return
            try:
                self._run(job)
            finally:
                job.done.set()

    def _run(self, job: Job) -> None:
        job.status = "running"
        t0 = time.perf_counter()

        def progress(step: int, limit: int, info: dict[str, Any]) -> None:
            if self.closed:  # the server is stopping: leave the attack at this iteration
                raise Cancelled(f"{job.name}: the server stopped")
            job.step, job.limit = int(step), int(limit)

        try:
            res = protect_one(job.task, job.strength, job.src, job.folder / "out", progress, engines=self._engines,
                              overrides=self.overrides.get(job.task), display=job.name, lock=self._build_lock)
        except Cancelled as e:
            res = {"status": "error", "error": str(e), "record": None}
        except Exception as e:  # noqa: BLE001 -- a worker must report, never die silently (the page polls it)
            res = {"status": "error", "error": f"{job.name}: {type(e).__name__}: {e}", "record": None}
        job.record, job.error = res.get("record"), res.get("error")
        job.files = {k: res.get(k) for k in ("original", "protected", "difference")}
        job.seconds = round(time.perf_counter() - t0, 2)
        job.status = res["status"]

    def close(self) -> None:
        """Stop the worker(s) (queued photos are dropped; the photo in hand is abandoned) and delete
        the session folder with every upload and result. Safe to call twice."""
        self.closed = True
        for _ in self._workers:
            self._queue.put(None)
        # the photo in hand stops at its next iteration (Cancelled); joining keeps torch from being torn
        # down under a running worker at exit (a C++ abort), without waiting long for a slow step
        deadline = time.monotonic() + STOP_WAIT_S
        for t in self._workers:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        for job in self.list():
            job.done.set()
        shutil.rmtree(self.root, ignore_errors=True)
