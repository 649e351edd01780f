"""One protection pipeline for every task (classify, face, detection, text).

- :mod:`~jndkit.pipeline.files`: output planning (mirrored tree, collisions refused up front),
  folder checks, the strict-JSON report writer, naming a verified file without replacing one;
- :mod:`~jndkit.pipeline.record`: :class:`Record`, the one record type (tasks subclass it);
- :mod:`~jndkit.pipeline.task`: the :class:`Task` protocol and :class:`Attempt`;
- :mod:`~jndkit.pipeline.run`: :func:`protect_one` (write -> re-read -> measure -> judge -> name)
  and :func:`run_paths` (the one loop over photos, resume, report.json).
"""

from .files import (
    OUTPUT_FORMATS,
    _link_into_place,
    check_output_settings,
    check_report_path,
    plan_outputs,
    prepare_run,
    write_and_reread,
    write_json_atomic,
)
from .record import Record, finite, summarise
from .run import measure, protect_one, read_records, report_dict, run_paths
from .task import Attempt, ProgressFn, Task

__all__ = [
    "OUTPUT_FORMATS",
    "Attempt",
    "ProgressFn",
    "Record",
    "Task",
    "_link_into_place",
    "check_output_settings",
    "check_report_path",
    "finite",
    "measure",
    "plan_outputs",
    "prepare_run",
    "protect_one",
    "read_records",
    "report_dict",
    "run_paths",
    "summarise",
    "write_and_reread",
    "write_json_atomic",
]
