"""Reports on run folders: a run's page, a page comparing runs, and the table of all runs."""

from pipeline.report.compare import build_comparison, comparison_path
from pipeline.report.page import THUMBNAIL, thumbnails
from pipeline.report.run_page import build_report, read_run
from pipeline.report.runs_table import RUN_COLUMNS, list_runs

__all__ = ["RUN_COLUMNS", "THUMBNAIL", "build_comparison", "build_report", "comparison_path", "list_runs",
           "read_run", "thumbnails"]
