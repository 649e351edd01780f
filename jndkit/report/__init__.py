"""Reports of a protection run, for every task: ``report.json`` (:func:`jndkit.pipeline.report_dict`,
written after every photo by :func:`jndkit.pipeline.run_paths`) and the page
``OUT.report/report.html`` (:func:`write_html_report`), plus JND-map images (:func:`save_jnd_map`)."""

from ..pipeline import report_dict
from .page import AMPLIFY, THUMB, _diff_image, _matrix_html, _thumb, report_dir, save_jnd_map, write_html_report

__all__ = ["AMPLIFY", "THUMB", "_diff_image", "_matrix_html", "_thumb", "report_dict", "report_dir", "save_jnd_map",
           "write_html_report"]
