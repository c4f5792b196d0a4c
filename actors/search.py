"""The search index, kept up off the write path: indexed in batches when the queue's loop has nothing to write.

The queue's commits do not touch the trigram index (``job_text`` in ``actors/store.py``): FTS5 writes a
segment per transaction, so indexing a job inside the group commit cost ~80 µs of the loop per job, about
as much as the rest of the commit. Instead the actor's tick calls ``SearchIndex.step`` when no write is
staged or committing: it indexes new rows and re-indexes rows whose error changed (``job_text_stale``),
``BATCH`` rows in one short transaction (~25 µs a row). Under a burst of writes it waits; the rows it has
not indexed yet stay searchable, since ``select_jobs`` checks them one by one, so searches are exact.

Not a thread with a connection of its own: SQLite takes one writer at a time, and a commit that met the
indexer's transaction would sleep in SQLite's busy handler on the actor's loop. On the loop the two never
meet, and writes come first: a step runs when nothing waits to be written, or at least every
``AT_LEAST_EVERY_S`` under a steady stream of writes.
"""

from __future__ import annotations

import logging
import sqlite3

from .store import index_pending

log = logging.getLogger(__name__)

#: Rows indexed per step (one transaction of a few milliseconds); a step runs at most once per tick.
BATCH = 200
#: Under a steady stream of writes a step still runs this often, so the rows searches must check one by
#: one stay few.
AT_LEAST_EVERY_S = 0.5


class SearchIndex:
    """Brings a store's search index up to date, a batch per ``step``."""

    def __init__(self, store, batch: int = BATCH):
        self.store = store
        self.batch = batch
        self.behind = True  # until a step finds nothing to do
        self.stepped_at = 0.0

    def due(self, idle: bool, now: float) -> bool:
        """Whether to step now: behind, and the loop is idle or the last step is ``AT_LEAST_EVERY_S`` ago."""
        return self.behind and (idle or now - self.stepped_at >= AT_LEAST_EVERY_S)

    def step(self, now: float = 0.0) -> int:
        """Index one batch, on the loop's thread (never inside a commit). Returns the rows written."""
        self.stepped_at = now
        try:
            written = index_pending(self.store.db, self.batch)
        except sqlite3.Error:  # e.g. busy: nothing was written; the next tick tries again
            log.exception("search indexing failed; retrying on the next tick")
            return 0
        self.behind = written >= self.batch
        return written

    def wake(self) -> None:
        """New rows were committed: there is work for the next idle tick."""
        self.behind = True
