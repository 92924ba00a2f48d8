"""palmsim.report: pure metrics and timelines of a run's records, and the one file writer.

``metrics`` and ``timeline`` are pure; ``export`` is the only module that writes files;
``plots`` (matplotlib) is not imported here, so import it lazily where a plot is wanted.
"""

from palmsim.report.export import chrome_trace, run_id, write_run
from palmsim.report.metrics import (
    channel_bytes,
    compute_busy_s,
    format_summary_table,
    link_busy_intervals,
    pipeline_bubble_fraction,
    summarize,
    tile_utilization,
)
from palmsim.report.timeline import utilization_timeline

__all__ = [
    "channel_bytes",
    "chrome_trace",
    "compute_busy_s",
    "format_summary_table",
    "link_busy_intervals",
    "pipeline_bubble_fraction",
    "run_id",
    "summarize",
    "tile_utilization",
    "utilization_timeline",
    "write_run",
]
