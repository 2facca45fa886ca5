"""The run report: ``reports/<run>/index.html`` (self-contained) and ``metrics.json``.

``write_report`` (:mod:`workbench.report.writer`) writes, atomically, into the run folder:

* ``metrics.json`` (:mod:`workbench.report.deterministic_json`): every number of
  the run (the two-stage results passed in, plus each earlier notebook's
  ``<stem>/metrics.json`` found in ``source_dir``, :mod:`workbench.report.stage_outputs`),
  the run config and the data fingerprint (the catalog manifest's table
  checksums and counts, :mod:`workbench.report.provenance`). Keys sorted, floats
  rounded to ``digits`` significant decimals, NaN written as null, so two runs
  with the same seed on the same CPU give byte-identical files.
* ``timings.json``: latencies and wall times, which vary run to run and so are
  kept out of ``metrics.json``.
* ``environment.json``: CPU model and ISA flags, the pinned kernel and thread
  settings, threads, device and package versions
  (:func:`workbench.reproducibility.environment`);
* ``per_query.parquet`` (when ``per_query`` is given): every query's metrics per
  task and stage, for paired tests between runs (``workbench compare``).
* ``index.html``: one file that works offline: plotly.js inlined once, every
  figure inlined (figures built here, :mod:`workbench.report.figures`, and the
  figures the earlier notebooks saved as HTML under ``<source_dir>/<stem>/*.html``,
  re-embedded without their own copy of plotly.js, :mod:`workbench.report.page_figures`),
  no external URLs, no web fonts (system font stack only). When the run
  validated its catalog (``<source_dir>/validation.json``, written by
  ``workbench run``), the page opens with that outcome, and says plainly when
  problems were overridden with ``--allow-problems``. Then the summary
  (:mod:`workbench.report.summary`): the chosen search system against the best
  single modality and BM25, rankers against popularity, whether re-ranking
  helps, the index's recall and speed, what the catalog lacked. Tables and
  blocks: :mod:`workbench.report.html_blocks`.
"""

from workbench.report.deterministic_json import to_jsonable, write_json
from workbench.report.figures import figures_from_results, modality_figure
from workbench.report.html_blocks import (
    interval_table,
    render_value,
    selection_html,
    validation_html,
)
from workbench.report.page_figures import (
    MAX_SCATTER_POINTS,
    PACK_ABOVE,
    figure_title,
    report_figure_specs,
    report_thumbnails,
    thin_scatter,
)
from workbench.report.provenance import data_fingerprint
from workbench.report.stage_outputs import (
    collect_stage_outputs,
    extract_plotly_figures,
)
from workbench.report.summary import ORACLE_MEANING, summary_html, summary_lines
from workbench.report.writer import SECTION_TITLES, write_report
from workbench.reproducibility import environment, split_timings

__all__ = [
    "MAX_SCATTER_POINTS",
    "ORACLE_MEANING",
    "PACK_ABOVE",
    "SECTION_TITLES",
    "collect_stage_outputs",
    "data_fingerprint",
    "environment",
    "extract_plotly_figures",
    "figure_title",
    "figures_from_results",
    "interval_table",
    "modality_figure",
    "render_value",
    "report_figure_specs",
    "report_thumbnails",
    "selection_html",
    "split_timings",
    "summary_html",
    "summary_lines",
    "thin_scatter",
    "to_jsonable",
    "validation_html",
    "write_json",
    "write_report",
]
