"""Protect photos on a Ray cluster with Ray Data (``pip install 'jndkit[ray]'``).

A platform protecting millions of photos runs the *same per-photo library call* as ``jndkit protect``
(:func:`jndkit.pipeline.protect_one`: write under a hidden name -> re-read -> judge from scratch ->
name only if protected) inside Ray Data's ``map_batches``, with a callable class that builds the task
(and so loads its victims) **once per worker**. Nothing here schedules work itself: Ray does.

Two entry points:

- :func:`protect_paths_ray`: folders and files in, an output folder out, exactly like
  :func:`jndkit.pipeline.run_paths` (same output plan, same ``report.json`` written by the driver
  through the same writer, same resume rule), with the photos spread over ``workers`` Ray actors.
  ``jndkit protect --engine ray --workers N`` calls it.
- :func:`protect_dataset`: a lazy ``ray.data.Dataset`` in, a lazy dataset of records out, for a
  platform's own pipeline. Rows are either ``{"src": str, "dst": str}`` (paths on a file system every
  worker sees; the outputs are written there) or ``{"bytes": bytes, "path": str}`` (as
  ``ray.data.read_binary_files(..., include_paths=True)`` gives; the protected file comes back as
  bytes in the ``protected`` column, nothing is written on the workers' disks beyond a temporary
  folder).

Determinism: the task's seed fixes every random choice, and each worker runs torch with
``num_cpus`` threads; the same seed and the same thread count give the same bytes as the
single-process run (checked by ``tests/test_distributed.py``). Ray is imported lazily: jndkit itself
never needs it.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .errors import InputError
from .images import output_path
from .pipeline import (
    Record,
    Task,
    check_report_path,
    plan_outputs,
    prepare_run,
    protect_one,
    run_paths,
)

__all__ = ["RAY_EXTRA", "ProtectBatch", "import_ray", "protect_dataset", "protect_paths_ray", "record_of",
           "task_factory"]

RAY_EXTRA = "pip install 'jndkit[ray]'  (ray[data]==2.60.0)"
"""What to install for this module (the ``ray`` extra of ``pyproject.toml``)."""

TaskFactory = Callable[[], Task]
"""Builds the task in a worker (loads its victims); must pickle (a class, a ``functools.partial``)."""


@dataclass(frozen=True)
class _Shipped:
    """A factory that returns a task built on the driver and shipped to the worker (pickled once, with
    its models), for a task that has no small recipe."""

    task: Task

    def __call__(self) -> Task:
        return self.task


def task_factory(task: Task) -> TaskFactory:
    """A picklable factory for ``task``, for the workers: a classify :class:`~jndkit.protect.Protector`
    is rebuilt from its config in each worker (the victims load there, from the worker's own disk);
    any other task is pickled with its models and sent once per worker."""
    import functools

    from .protect import Protector

    if type(task) is Protector:
        return functools.partial(Protector, task.config)
    return _Shipped(task)


def import_ray() -> ModuleType:
    """``ray`` with ``ray.data`` loaded.

    Raises:
        InputError: Ray Data is not installed, saying what to install.
    """
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as e:
        raise InputError(f"the ray engine needs Ray Data, which is not installed ({e}); {RAY_EXTRA}") from None
    return ray


def _protect(task: Task, src: Path, dst: Path) -> Record:
    """The one per-photo library call, the same as ``jndkit protect`` makes (kept in one place)."""
    return protect_one(task, src, dst)


def _set_threads(num_cpus: float) -> None:
    """One torch thread per CPU given to the worker (at least one): the thread count changes float
    reductions, so the same count as the single-process run gives the same bytes."""
    import torch

    torch.set_num_threads(max(1, math.floor(num_cpus)))


class ProtectBatch:
    """The ``map_batches`` callable class: builds the task once per worker, then protects each row.

    A batch (numpy format) has either ``src`` and ``dst`` (paths: outputs written in place) or
    ``bytes`` and ``path`` (image bytes: outputs returned as bytes). It returns, per row, ``input``
    (str), ``output`` (str, ``""`` when nothing was written; for bytes, the output file name),
    ``status`` (str), ``record`` (the pickled :class:`~jndkit.pipeline.Record`, the same object
    :func:`~jndkit.pipeline.protect_one` returns) and, for bytes, ``protected`` (the file's bytes,
    ``b""`` when not protected).
    """

    def __init__(self, make_task: TaskFactory, num_cpus: float = 1.0) -> None:
        _set_threads(num_cpus)
        self.task = make_task()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "src" in batch and "dst" in batch:
            records = [_protect(self.task, Path(str(s)), Path(str(d))) for s, d in zip(batch["src"], batch["dst"],
                                                                                     strict=True)]
            return _columns(records)
        if "bytes" in batch:
            names = batch["path"] if "path" in batch else batch.get("name")
            if names is None:
                raise InputError("a dataset of image bytes needs a 'path' (or 'name') column beside 'bytes'")
            pairs = [self._protect_bytes(bytes(b), str(n)) for b, n in zip(batch["bytes"], names, strict=True)]
            cols = _columns([r for r, _ in pairs])
            cols["protected"] = np.array([p for _, p in pairs], dtype=object)
            return cols
        raise InputError(f"dataset columns must be src+dst or bytes+path, got {sorted(batch)}")

    def _protect_bytes(self, data: bytes, name: str) -> tuple[Record, bytes]:
        """Protect one photo given as bytes, through a private temporary folder (only the base name of
        ``name`` is used on disk). The record's ``input`` is ``name``, its ``output`` the file name."""
        work = Path(tempfile.mkdtemp(prefix="jndkit-ray-"))
        try:
            src = work / "in" / (Path(name).name or "photo")
            src.parent.mkdir()
            src.write_bytes(data)
            dst = output_path(src, work / "out", self.task.fmt)
            dst.parent.mkdir()
            rec = _protect(self.task, src, dst)
            out = dst.read_bytes() if rec.status == "protected" and dst.exists() else b""
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rec.input = name
        rec.output = dst.name if out else None
        if rec.error:
            rec.error = rec.error.replace(str(src), name).replace(str(dst), dst.name)
        return rec, out


def _columns(records: Sequence[Record]) -> dict[str, np.ndarray]:
    return {
        "input": np.array([r.input for r in records], dtype=object),
        "output": np.array([r.output or "" for r in records], dtype=object),
        "status": np.array([r.status for r in records], dtype=object),
        "record": np.array([pickle.dumps(r) for r in records], dtype=object),
    }


def record_of(row: dict[str, Any]) -> Record:
    """The :class:`~jndkit.pipeline.Record` of one output row of :func:`protect_dataset`."""
    rec: Record = pickle.loads(row["record"])
    return rec


def protect_dataset(
    ds: Any,
    make_task: TaskFactory,
    *,
    workers: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    batch_size: int = 1,
) -> Any:
    """Map a Ray dataset of photos through the task; lazy, like every Ray Data transform.

    Args:
        ds: ``ray.data.Dataset`` with rows ``{"src", "dst"}`` (paths every worker can read and write)
            or ``{"bytes", "path"}`` (image bytes and their original name).
        make_task: builds the task in each worker, once (:class:`ProtectBatch`).
        workers: actors in the pool (``ActorPoolStrategy(size=workers)``).
        num_cpus, num_gpus: resources per actor (a GPU actor also needs the task on ``cuda``).
        batch_size: photos per ``map_batches`` call (photos are still attacked one at a time: each
            has its own size and its own first success).

    Returns:
        A ``ray.data.Dataset`` with columns ``input``, ``output``, ``status``, ``record`` (pickled
        record; :func:`record_of`), and ``protected`` (bytes) for a dataset of bytes.
    """
    ray = import_ray()
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if num_cpus <= 0 or num_gpus < 0:
        raise InputError(f"num_cpus must be > 0 and num_gpus >= 0, got {num_cpus} and {num_gpus}")
    return ds.map_batches(
        ProtectBatch,
        fn_constructor_args=(make_task, num_cpus),
        batch_size=batch_size,
        batch_format="numpy",
        # at most two photos queued per actor: a photo takes seconds to minutes, so Ray's round trip is
        # negligible and a short queue keeps slow photos from piling up behind one worker
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )


@dataclass
class _RayOwner:
    """Starts Ray when it is not running yet (local, or ``address`` / ``RAY_ADDRESS``) and stops it
    again at the end only if it started it."""

    ray: ModuleType
    address: str | None
    num_cpus: int | None
    started: bool = False

    def __enter__(self) -> _RayOwner:
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            address = self.address or os.environ.get("RAY_ADDRESS")
            if address:
                kwargs["address"] = address
            elif self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            self.ray.init(**kwargs)
            self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.ray.shutdown()


def protect_paths_ray(
    make_task: TaskFactory,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    workers: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    address: str | None = None,
    task: Task | None = None,
    on_start: Callable[[Path, int, int], None] | None = None,
) -> Iterator[Record]:
    """:func:`jndkit.pipeline.run_paths` with the photos protected on Ray workers.

    The driver plans the outputs (the input tree mirrored, collisions refused), checks the output
    folder and ``report.json`` before any work, skips photos whose output exists when ``resume``,
    and writes ``report.json`` after every photo through the pipeline's writer, in the plan's order,
    so the folder and the report are those of the single-process run (records equal except
    ``seconds``). The workers need the inputs and the output folder on a shared file system.

    Args:
        make_task: builds the task, in each worker and (unless ``task`` is given) in the driver, which
            needs it for the report only (name, settings, record type, summary).
        workers: Ray actors protecting photos; ``num_cpus`` / ``num_gpus`` each.
        address: a running cluster (else ``RAY_ADDRESS``, else a local Ray with ``workers * num_cpus``
            CPUs). A Ray already initialised by the caller is used as it is and left running.
        on_start: ``on_start(src, i, n)`` when the driver reaches photo ``i`` (the record may already
            be done on a worker).

    Yields:
        One record per photo, in the plan's order (``skipped`` for resumed ones).

    Raises:
        InputError: Ray Data missing, no image, two inputs with the same output name, bad resources.
        OutputError: the output folder cannot be written, or holds a ``report.json`` jndkit did not write.
    """
    ray = import_ray()
    task = task if task is not None else make_task()
    out, _ = prepare_run(paths, out_dir)  # said before Ray starts (10-25 s): no image, a folder not writable,
    plan_outputs(paths, out, task.fmt)  # two inputs with one output name, a report.json jndkit did not write
    check_report_path(out / "report.json")

    def on_ray(_task: Task, todo: list[tuple[Path, Path]], _progress: Any) -> Iterator[Record]:
        if todo:  # the records in todo's order (preserve_order); run_paths reads this to its end
            yield from _stream(ray, todo, make_task, workers, num_cpus, num_gpus)

    cpus = max(1, math.ceil(workers * num_cpus))
    with _RayOwner(ray, address, cpus):
        yield from run_paths(task, paths, out, resume=resume, on_start=on_start, stream=on_ray)


def _stream(ray: ModuleType, todo: Iterable[tuple[Path, Path]], make_task: TaskFactory, workers: int,
            num_cpus: float, num_gpus: float) -> Iterator[Record]:
    """The records of ``todo`` from the workers as they finish, in ``todo``'s order."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the caller shows progress (the CLI's bar), as run_paths' callers do
    rows = [{"src": str(s), "dst": str(d)} for s, d in todo]
    # one block per photo, so every worker gets photos from the start
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    mapped = protect_dataset(ds, make_task, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus, batch_size=1)
    for row in mapped.iter_rows():
        yield record_of(row)
