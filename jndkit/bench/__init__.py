"""Benchmarks on a deterministic evaluation set, with success judged on the saved image.

The package, by job:

* :mod:`.datasets` the evaluation set (:func:`evaluation_set`: model-labelled crops of the
  package-shipped photos, or a folder) and image fingerprints;
* :mod:`.config` method selection, :class:`BenchConfig` (what to measure) and
  :class:`BenchResult` (what was measured);
* :mod:`.runner` :func:`run_method` (one method over the set, PNG written and re-judged at
  batch 1), its per-image cache :func:`run_cached`, :func:`transfer_matrix` and the whole
  :func:`run_benchmark`;
* :mod:`.records` :class:`BenchRow` and the CSV files, the machine record;
* :mod:`.tables` the papers' tables as Markdown (:func:`summary_table`, :func:`quality_table`,
  :func:`distance_table`, :func:`threshold_table`, :func:`transfer_table`,
  :func:`ranking_table`, :func:`report_markdown`);
* :mod:`.plots` seed 000 Figure 4 (:func:`confidence_curve` through the engine's
  per-iteration hook, :func:`plot_confidence`).
"""

from .config import (
    FAMILY_ORDER,
    THRESHOLD_GOALS,
    BenchConfig,
    BenchResult,
    ProgressFn,
    is_iterative,
    parse_method_images,
    resolve_methods,
)
from .datasets import evaluation_set, image_hash
from .plots import confidence_curve, confidence_figure, plot_confidence
from .records import ROW_METRICS, BenchRow, cache_name, machine_info, read_csv, write_csv, write_transfer_csv
from .runner import judge_saved, run_benchmark, run_cached, run_method, saved_success, transfer_matrix, warm_up
from .tables import (
    distance_table,
    quality_table,
    ranking_table,
    report_markdown,
    summary_table,
    threshold_table,
    transfer_table,
)

__all__ = [
    "FAMILY_ORDER",
    "ROW_METRICS",
    "THRESHOLD_GOALS",
    "BenchConfig",
    "BenchResult",
    "BenchRow",
    "ProgressFn",
    "cache_name",
    "confidence_curve",
    "confidence_figure",
    "distance_table",
    "evaluation_set",
    "image_hash",
    "is_iterative",
    "judge_saved",
    "machine_info",
    "parse_method_images",
    "plot_confidence",
    "quality_table",
    "ranking_table",
    "read_csv",
    "report_markdown",
    "resolve_methods",
    "run_benchmark",
    "run_cached",
    "run_method",
    "saved_success",
    "summary_table",
    "threshold_table",
    "transfer_matrix",
    "transfer_table",
    "warm_up",
    "write_csv",
    "write_transfer_csv",
]
