"""One static HTML page per ``explain-dataset`` job (``lrpc report JOB``): settings, summary, the sortable table
of images with their heatmaps, and the concept atlas when the job recorded concepts. See docs/report.md."""
from .page import write_report

__all__ = ["write_report"]
