"""Study answers as CSV: one file per participant, one row per answer, written as the participant goes.

Each answer is appended and flushed to disk (``os.fsync``) before the page is told it was saved, so
closing the tab, a crash or a power cut loses at most the answer being sent. A participant who comes
back with the same id resumes after their last saved answer.

Columns (:data:`COLUMNS`):

=============  =====================================================================================
participant    the participant id
design         :attr:`Study.fingerprint <jndkit.study.design.Study.fingerprint>` of the study answered
trial          index of the trial in the participant's plan (0-based)
trial_id       ``block:kind:image:method:side`` (:attr:`Trial.trial_id <jndkit.study.design.Trial.trial_id>`)
block          ``flicker`` or ``rating``
kind           ``test``, ``noise`` or ``identical`` (the last two are catch trials)
image          image key (path relative to the originals folder, without suffix)
method         method (protected folder) name; empty for catch trials
altered        side that flickered with the altered image: ``left``, ``right``, ``none``
answer_side    flicker: the side chosen as altered (``left``/``right``); rating: empty
saw_change     flicker: ``yes``/``no`` ("did you see it change?"); rating: empty
correct        flicker: ``1`` if ``answer_side == altered``, ``0`` if not, empty when nothing was altered
rating         rating: 1-5 on the ITU-R BT.500 impairment scale; flicker: empty
response_ms    milliseconds from the trial's pictures being shown to the answer
time           UTC time the answer was saved (ISO 8601)
=============  =====================================================================================
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError, OutputError
from .design import BLOCKS, Trial, check_participant

__all__ = ["COLUMNS", "IMPAIRMENT_SCALE", "Answer", "append_answer", "make_answer", "read_answers", "results_path"]

IMPAIRMENT_SCALE: dict[int, str] = {
    5: "Imperceptible",
    4: "Perceptible, but not annoying",
    3: "Slightly annoying",
    2: "Annoying",
    1: "Very annoying",
}
"""The five-grade impairment scale of ITU-R BT.500 (double-stimulus impairment scale method)."""


@dataclass(frozen=True)
class Answer:
    """One saved answer (one CSV row); see the module docstring for the fields."""

    participant: str
    design: str
    trial: int
    trial_id: str
    block: str
    kind: str
    image: str
    method: str
    altered: str
    answer_side: str
    saw_change: str
    correct: str
    rating: str
    response_ms: int
    time: str

    @property
    def is_catch(self) -> bool:
        """A catch trial (noise or identical pair)."""
        return self.kind != "test"


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Answer))


def results_path(results_dir: Path, participant: str) -> Path:
    """``results_dir / f"{participant}.csv"`` (the participant id is checked first: it names a file)."""
    return results_dir / f"{check_participant(participant)}.csv"


def make_answer(
    participant: str,
    design: str,
    trial: Trial,
    *,
    side: str | None = None,
    saw_change: str | None = None,
    rating: int | None = None,
    response_ms: int = 0,
) -> Answer:
    """Check an answer against its trial and build the row.

    Flicker trials need ``side`` (``left``/``right``) and ``saw_change`` (``yes``/``no``); rating trials
    need ``rating`` (1-5). ``response_ms`` is clamped at 0.

    Raises:
        InputError: a field is missing, out of range, or given for the other block.
    """
    where = f"trial {trial.index} ({trial.block})"
    if trial.block == "flicker":
        if side not in ("left", "right"):
            raise InputError(f"{where}: side must be 'left' or 'right', got {side!r}")
        if saw_change not in ("yes", "no"):
            raise InputError(f"{where}: saw_change must be 'yes' or 'no', got {saw_change!r}")
        if rating is not None:
            raise InputError(f"{where}: a flicker trial takes no rating")
        correct = "" if trial.altered == "none" else str(int(side == trial.altered))
        fields_ = {"answer_side": side, "saw_change": saw_change, "correct": correct, "rating": ""}
    else:
        if rating is None or isinstance(rating, bool) or rating not in IMPAIRMENT_SCALE:
            raise InputError(f"{where}: rating must be an integer 1-5, got {rating!r}")
        if side is not None or saw_change is not None:
            raise InputError(f"{where}: a rating trial takes only a rating")
        fields_ = {"answer_side": "", "saw_change": "", "correct": "", "rating": str(rating)}
    return Answer(
        participant=participant,
        design=design,
        trial=trial.index,
        trial_id=trial.trial_id,
        block=trial.block,
        kind=trial.kind,
        image=trial.image,
        method=trial.method,
        altered=trial.altered,
        response_ms=max(0, int(response_ms)),
        time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **fields_,
    )


def append_answer(path: Path, answer: Answer) -> None:
    """Append one row to ``path`` (header first if the file is new) and force it to disk.

    Raises:
        OutputError: the file cannot be written.
    """
    try:
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(asdict(answer))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(path, f"cannot write the answer ({e.strerror or e})") from e


def _row(path: Path, line: int, row: dict[str, str]) -> Answer:
    try:
        values = {c: row[c] for c in COLUMNS}
        ans = Answer(**{**values, "trial": int(values["trial"]), "response_ms": int(values["response_ms"])})  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: line {line}: not a study answer ({e})") from e
    if ans.block not in BLOCKS:
        raise InputError(f"{path}: line {line}: unknown block {ans.block!r}")
    if ans.block == "rating" and (not ans.rating.isdigit() or int(ans.rating) not in IMPAIRMENT_SCALE):
        raise InputError(f"{path}: line {line}: rating {ans.rating!r} is not 1-5")
    return ans


def read_answers(paths: list[Path]) -> list[Answer]:
    """Read answers from study CSV files, in file order.

    A trial answered twice in one file (a page sent it twice) keeps its first answer.

    Raises:
        InputError: a file is missing, has another header, or a row does not parse (the message names
            the file and line).
    """
    answers: list[Answer] = []
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        seen: set[tuple[str, int]] = set()
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise InputError(f"{path}: not a jndkit study CSV (header {reader.fieldnames})")
            for row in reader:
                ans = _row(path, reader.line_num, row)
                if (ans.participant, ans.trial) not in seen:
                    seen.add((ans.participant, ans.trial))
                    answers.append(ans)
    return answers
