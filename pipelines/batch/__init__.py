"""Batch renders: every deck of a manifest as one dojo job you can watch, stop and resume.

    ray job submit --working-dir . -- python -m pipelines.batch decks.csv
    python -m pipelines.batch decks.csv [--out s3://bucket/results.parquet] [--force] [--url URL]

The manifest is a Parquet or CSV table, one render per row: ``deck``
(required: a path, ``s3://``, ``https://`` or ``dojo:KEY``, several separated
by ``;``), ``script`` (optional narration), ``key`` (optional identity of the
row) and the options of ``pipelines.render.job.RenderOptions``.

- ``manifest``: reading and checking rows, where files come from, row keys;
- ``job``: the ``render.batch`` job type (parent of the renders), the results
  table and the ledger of succeeded rows;
- ``driver``: the command line: submit, follow, stop, print the results URL;
- ``cli``: ``dojo batch``, the same manifest through the HTTP API, one job per row (found through ``CLI``).
"""

CLI = "pipelines.batch.cli:add_commands"

from .job import BATCH, RESULT_COLUMNS
from .manifest import COLUMNS, OPTION_COLUMNS, ManifestError, Row, read_manifest, read_table

__all__ = ["BATCH", "COLUMNS", "OPTION_COLUMNS", "RESULT_COLUMNS", "ManifestError", "Row", "main", "read_manifest",
           "read_table"]


def main(argv: list[str] | None = None) -> int:
    from .driver import main as run

    return run(argv)
