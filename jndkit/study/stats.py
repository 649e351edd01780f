"""Statistics of a visibility study: the tables seeds 001 and 002 print, from the answers' CSV files.

* **MOS ± 95 % CI** per method and per (image, method): mean of the 1-5 impairment ratings, and the
  half-width ``t_{0.975, n-1} * s / sqrt(n)`` (Student's t, sample standard deviation ``s``). Each
  rating counts as one observation (participants x images); ITU-R BT.500 uses 1.96 in place of t,
  which is too narrow for the few observers of a lab study.
* **Detection** per method: share of flicker trials where the altered side was chosen, against the
  chance rate 1/2 of a two-alternative forced choice, with a one-sided exact binomial test
  (:func:`scipy.stats.binomtest`, ``alternative="greater"``). A small p means people *can* see the
  change; an invisible protection has a rate near 0.5 and a large p. Beside it, the share of
  "yes, I saw it change" answers.
* **Catch trials**: a noise pair must be detected (right side and "saw it") and rated 3 or lower; an
  identical pair must be answered "no change" and rated 4 or 5. Failures are listed per participant;
  ``exclude_failed`` drops every answer of a participant with a failure (BT.500's observer screening
  in its simplest form).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from scipy import stats as sps

from .results import Answer

__all__ = [
    "CatchFailure", "Detection", "Mos", "StudyReport", "catch_failure", "detection", "format_report", "mos",
    "study_report",
]

CHANCE = 0.5
"""Chance rate of the two-alternative forced choice."""


@dataclass(frozen=True)
class Mos:
    """Mean opinion score of ``n`` ratings; ``ci95`` is the half-width of the 95 % interval (NaN if n < 2)."""

    n: int
    mean: float
    std: float
    ci95: float


@dataclass(frozen=True)
class Detection:
    """Flicker-block results: ``correct`` of ``n`` choices right (``rate``), one-sided binomial ``p_value``
    against chance, and ``saw`` answers "yes, I saw it change" (``saw_rate``)."""

    n: int
    correct: int
    rate: float
    p_value: float
    saw: int
    saw_rate: float


@dataclass(frozen=True)
class CatchFailure:
    """A catch trial answered wrongly: who, which trial, and why (one line)."""

    participant: str
    trial: int
    trial_id: str
    reason: str


@dataclass(frozen=True)
class StudyReport:
    """Everything ``jndkit study report`` prints.

    Attributes:
        methods: method names in order of first appearance.
        images: image keys, sorted.
        participants: participant ids, sorted (after exclusion).
        excluded: participants dropped for failed catch trials (with ``exclude_failed``).
        mos: method -> MOS of its ratings.
        detection: method -> flicker detection.
        per_image: ``(image, method)`` -> ``(MOS, Detection)``; missing when nothing was answered.
        catch_mos: ``noise``/``identical`` -> MOS of the catch ratings (a sanity check of the scale).
        failures: the failed catch trials (of every participant, excluded ones included).
        answers: number of answers used.
    """

    methods: list[str]
    images: list[str]
    participants: list[str]
    excluded: list[str]
    mos: dict[str, Mos]
    detection: dict[str, Detection]
    per_image: dict[tuple[str, str], tuple[Mos, Detection]]
    catch_mos: dict[str, Mos]
    failures: list[CatchFailure]
    answers: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (NaN becomes ``None``); ``per_image`` is a list of rows."""

        def clean(d: dict[str, object]) -> dict[str, object]:
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

        return {
            "methods": [
                {"method": m, "mos": clean(asdict(self.mos[m])), "detection": clean(asdict(self.detection[m]))}
                for m in self.methods
            ],
            "per_image": [
                {"image": i, "method": m, "mos": clean(asdict(a)), "detection": clean(asdict(d))}
                for (i, m), (a, d) in sorted(self.per_image.items())
            ],
            "catch_mos": {k: clean(asdict(v)) for k, v in self.catch_mos.items()},
            "catch_failures": [asdict(f) for f in self.failures],
            "participants": self.participants,
            "excluded": self.excluded,
            "answers": self.answers,
        }


def mos(ratings: Iterable[float]) -> Mos:
    """Mean, sample standard deviation and 95 % CI half-width (Student's t) of ratings.

    >>> m = mos([5, 4, 4, 3]); (m.n, m.mean, round(m.std, 4), round(m.ci95, 4))
    (4, 4.0, 0.8165, 1.2992)
    """
    xs = [float(r) for r in ratings]
    n = len(xs)
    if n == 0:
        return Mos(0, math.nan, math.nan, math.nan)
    mean = sum(xs) / n
    if n < 2:
        return Mos(n, mean, math.nan, math.nan)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Mos(n, mean, std, float(sps.t.ppf(0.975, n - 1)) * std / math.sqrt(n))


def detection(answers: Iterable[Answer]) -> Detection:
    """Detection rate of flicker answers with a known altered side, and the binomial test against 1/2."""
    rows = [a for a in answers if a.block == "flicker" and a.correct in ("0", "1")]
    n = len(rows)
    k = sum(a.correct == "1" for a in rows)
    saw = sum(a.saw_change == "yes" for a in rows)
    if n == 0:
        return Detection(0, 0, math.nan, math.nan, 0, math.nan)
    p = float(sps.binomtest(k, n, CHANCE, alternative="greater").pvalue)
    return Detection(n, k, k / n, p, saw, saw / n)


def catch_failure(a: Answer) -> str | None:
    """Why a catch answer is wrong (one line), or ``None`` if it is right or not a catch trial."""
    if a.kind == "noise" and a.block == "flicker":
        if a.correct != "1":
            return f"strong noise on the {a.altered} side, chose {a.answer_side}"
        if a.saw_change != "yes":
            return "strong noise answered 'did not see a change'"
    if a.kind == "noise" and a.block == "rating" and int(a.rating) >= 4:
        return f"strong noise rated {a.rating} (expected 3 or lower)"
    if a.kind == "identical" and a.block == "flicker" and a.saw_change == "yes":
        return "identical pair answered 'saw a change'"
    if a.kind == "identical" and a.block == "rating" and int(a.rating) <= 3:
        return f"identical pair rated {a.rating} (expected 4 or 5)"
    return None


def study_report(answers: list[Answer], *, exclude_failed: bool = False) -> StudyReport:
    """Aggregate answers (from :func:`jndkit.study.results.read_answers`) into a :class:`StudyReport`."""
    failures = [
        CatchFailure(a.participant, a.trial, a.trial_id, why) for a in answers if (why := catch_failure(a)) is not None
    ]
    excluded = sorted({f.participant for f in failures}) if exclude_failed else []
    used = [a for a in answers if a.participant not in excluded]
    tests = [a for a in used if not a.is_catch]
    methods = list(dict.fromkeys(a.method for a in tests))
    by_method: dict[str, list[Answer]] = defaultdict(list)
    by_image: dict[tuple[str, str], list[Answer]] = defaultdict(list)
    for a in tests:
        by_method[a.method].append(a)
        by_image[(a.image, a.method)].append(a)

    def ratings(rows: list[Answer]) -> list[int]:
        return [int(a.rating) for a in rows if a.block == "rating"]

    return StudyReport(
        methods=methods,
        images=sorted({a.image for a in tests}),
        participants=sorted({a.participant for a in used}),
        excluded=excluded,
        mos={m: mos(ratings(by_method[m])) for m in methods},
        detection={m: detection(by_method[m]) for m in methods},
        per_image={k: (mos(ratings(v)), detection(v)) for k, v in by_image.items()},
        catch_mos={k: mos(ratings([a for a in used if a.kind == k])) for k in ("noise", "identical")},
        failures=failures,
        answers=len(used),
    )


def _num(x: float, fmt: str = ".2f") -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def _mos_cell(m: Mos) -> str:
    if m.n == 0:
        return "-"
    return f"{m.mean:.2f} ± {_num(m.ci95)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(rep: StudyReport) -> str:
    """The report as plain-text tables: per method, per image (MOS ± CI and detection), catch trials."""
    out: list[str] = [
        f"{len(rep.participants)} participant(s), {rep.answers} answers"
        + (f"; excluded for failed catch trials: {', '.join(rep.excluded)}" if rep.excluded else ""),
        "",
        "Per method (MOS on the 5-grade impairment scale, 5 = imperceptible; detection in the flicker 2AFC,"
        " chance 0.50, one-sided binomial p)",
    ]
    rows = []
    for m in rep.methods:
        a, d = rep.mos[m], rep.detection[m]
        rows.append([m, str(a.n), _mos_cell(a), _num(a.std), f"{d.correct}/{d.n}", _num(d.rate), _num(d.p_value, ".3g"),
                     _num(d.saw_rate)])
    out.append(_table(["method", "ratings", "MOS ± 95% CI", "std", "detected", "rate", "p", "saw change"], rows))
    out += ["", "Per image: MOS ± 95% CI (detected/trials)"]
    rows = []
    for i in rep.images:
        row = [i]
        for m in rep.methods:
            cell = rep.per_image.get((i, m))
            row.append("-" if cell is None else f"{_mos_cell(cell[0])} ({cell[1].correct}/{cell[1].n})")
        rows.append(row)
    avg = ["Average"] + [f"{_num(rep.mos[m].mean)} ({rep.detection[m].correct}/{rep.detection[m].n})"
                         for m in rep.methods]
    out.append(_table(["image", *rep.methods], [*rows, avg]))
    out += ["", "Catch trials: MOS of noise pairs " + _mos_cell(rep.catch_mos["noise"])
            + ", of identical pairs " + _mos_cell(rep.catch_mos["identical"])]
    if rep.failures:
        out.append(f"{len(rep.failures)} catch trial(s) FAILED:")
        out += [f"  {f.participant} trial {f.trial} ({f.trial_id}): {f.reason}" for f in rep.failures]
    else:
        out.append("no catch trial failed")
    return "\n".join(out)
