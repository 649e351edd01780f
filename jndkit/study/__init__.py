"""Subjective visibility study (seeds 001 and 002): is a protection really invisible to people?

``jndkit study ORIGINALS PROTECTED...`` serves a local page (:mod:`.server`) that runs a flicker
two-alternative forced choice and an ITU-R BT.500 impairment rating in a balanced random order with
catch trials (:mod:`.design`); answers are appended to one CSV per participant as they are given
(:mod:`.results`); ``jndkit study report`` prints MOS ± 95 % CI and detection against chance
(:mod:`.stats`). See docs/study.md.
"""

from __future__ import annotations

from .design import BLOCKS, CATCH_KINDS, Study, StudyImage, Trial, check_participant, match_folders, plan_trials
from .results import COLUMNS, IMPAIRMENT_SCALE, Answer, append_answer, make_answer, read_answers, results_path
from .stats import CatchFailure, Detection, Mos, StudyReport, catch_failure, detection, format_report, mos, study_report

__all__ = [
    "BLOCKS", "CATCH_KINDS", "COLUMNS", "IMPAIRMENT_SCALE", "Answer", "CatchFailure", "Detection", "Mos", "Study",
    "StudyImage", "StudyReport", "Trial", "append_answer", "catch_failure", "check_participant", "detection",
    "format_report", "make_answer", "match_folders", "mos", "plan_trials", "read_answers", "results_path",
    "study_report",
]
