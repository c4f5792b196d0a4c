"""The search index, kept up off the write path: a thread that indexes what the queue committed.

The queue's commits do not touch the trigram index (``job_text`` in ``actors/store.py``): indexing a job
inline cost ~80 µs of the actor's loop per job, about as much as the rest of its commit. Instead this
thread, on a write connection of its own and at a lower CPU priority, indexes new rows and re-indexes
rows whose error changed (``job_text_stale``) in short batches after each commit. Searches stay exact in
between: ``select_jobs`` checks the few rows the index does not hold yet one by one.

A batch is one short transaction (``index_pending``, up to ``BATCH`` rows, a few milliseconds); SQLite
takes one writer at a time, so a commit that comes meanwhile waits that long at most.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .store import index_pending

log = logging.getLogger(__name__)

BATCH = 200
#: A pause between batches while a backlog is indexed, so the queue's commits find the database free.
BREATHE_S = 0.002
NICE = 10


class Indexer:
    """Indexes a queue database's new and changed jobs in a background thread; ``wake()`` after a commit."""

    def __init__(self, path: str | Path, nice: int = NICE):
        self.path = Path(path)
        self.nice = nice
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dojo-index", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:
                pass
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        try:
            while not self._stop.is_set():
                self._wake.wait(1.0)
                self._wake.clear()
                try:
                    while not self._stop.is_set() and index_pending(db, BATCH) >= BATCH:
                        time.sleep(BREATHE_S)
                except sqlite3.Error:  # busy or interrupted: the next wake tries again, nothing is lost
                    log.exception("search indexing of %s failed; retrying", self.path.name)
                    time.sleep(0.5)
        finally:
            db.close()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
