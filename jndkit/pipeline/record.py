"""The one record type of a protection run: :class:`Record` holds what every task reports for a
photo (status, the engine's verdict, the from-scratch verdict on the written file, quality numbers,
the protection matrix); a task subclasses it to add its own fields (classify: top-5 lists; face:
one entry per face; detect: boxes). One line of ``report.json`` is :meth:`Record.to_json`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

__all__ = ["Record", "finite", "summarise"]

R = TypeVar("R", bound="Record")


def finite(v: Any) -> Any:
    """``v`` with every non-finite float (inf, NaN) replaced by ``None``, through dicts and lists."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


@dataclass
class Record:
    """One photo of a run.

    Attributes:
        status: ``protected`` (the written file, re-read and judged from scratch, passes the task's
            check, after every upload transform: only then does it take its output name),
            ``failed`` (it does not: nothing is written, ``output`` is ``None``), ``done`` (a
            measuring task such as ``machine-jnd apply``: written and measured), ``no-face`` /
            ``no-text`` / ``no-detection`` (nothing to protect: nothing written), ``error``
            (unreadable file, existing output, ...), ``skipped`` (resume, the output exists).
        output: the output file (``None`` for a photo that failed or had nothing to protect).
        success: the task's verdict on the written file, as written.
        success_engine: the engine's own verdict on the 8-bit image.
        robust_success: the verdict after the upload suite / robust re-encoding (``None``: none asked).
        psnr, ssim, l2, linf, changed_values, ciede2000_mean, ciede2000_max: written file against the
            8-bit original (PSNR ``None`` for an unchanged photo).
        above_jnd: share of pixels whose luma change exceeds the Chou-Li JND (SPECS.md §6).
        strength: the budget used, as a multiple of the human JND map (protective modes).
        protection, matrix: the one-line verdict and the model x upload matrix (:mod:`jndkit.verify`).
    """

    input: str
    output: str | None = None
    status: str = "error"
    error: str | None = None
    task: str = "classify"
    width: int | None = None
    height: int | None = None
    success: bool = False
    success_engine: bool = False
    robust_success: bool | None = None
    margin: float | None = None
    iterations: int | None = None
    tries: int | None = None
    seconds: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    l2: float | None = None
    linf: float | None = None
    changed_values: int | None = None
    ciede2000_mean: float | None = None
    ciede2000_max: float | None = None
    above_jnd: float | None = None
    strength: float | None = None
    protection: str | None = None
    matrix: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A strict-JSON dict (non-finite numbers become ``None``)."""
        out: dict[str, Any] = finite(asdict(self))
        return out

    @classmethod
    def from_json(cls: type[R], d: Mapping[str, Any]) -> R:
        """The record of one ``report.json`` entry (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        rec = cls(input=str(d["input"]))
        for k, v in d.items():
            if k in names and k != "input":
                setattr(rec, k, v)
        return rec

    def caption(self, which: str) -> list[str]:
        """Lines the report page shows under the ``original`` or ``protected`` picture (task-specific)."""
        return []

    def draw(self, image: Any, which: str) -> Any:
        """The ``original`` or ``protected`` picture ``[3,H,W]`` as the report page shows it (a task may
        draw on it, e.g. the detector's boxes); the default shows it as it is."""
        return image

    @property
    def done(self) -> bool:
        """Attempted (protected, failed, or nothing to protect) rather than skipped or in error."""
        return self.status in ("protected", "failed", "done") or self.status.startswith("no-")


def _mean(vals: Sequence[float | int | None]) -> float | None:
    xs = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
    return round(sum(xs) / len(xs), 4) if xs else None


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """Counts over the photos and means over the protected ones (any task).

    ``success_rate`` is protected photos over photos attempted, a photo with nothing to protect
    (``no-face``) counting as not protected; each ``no-*`` status gets its own count (``no_face``).
    """
    done = [r for r in records if r.done]
    ok = [r for r in records if r.status == "protected"]
    out: dict[str, Any] = {
        "images": len(records),
        "protected": len(ok),
        "failed": sum(r.status == "failed" for r in records),
        "errors": sum(r.status == "error" for r in records),
        "skipped": sum(r.status == "skipped" for r in records),
    }
    for status in sorted({r.status for r in records if r.status.startswith("no-")}):
        out[status.replace("-", "_")] = sum(r.status == status for r in records)
    out.update({
        "success_rate": round(len(ok) / len(done), 4) if done else None,
        "mean_psnr": _mean([r.psnr for r in ok]),
        "mean_ssim": _mean([r.ssim for r in ok]),
        "mean_above_jnd": _mean([r.above_jnd for r in ok]),
        "mean_iterations": _mean([r.iterations for r in ok]),
        "mean_seconds": _mean([r.seconds for r in done]),
    })
    return out
