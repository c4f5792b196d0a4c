"""A queue's durable state, and all of its SQL.

- ``sqlite.py``: ``Store``, the actor's one writer: stages changes, commits them in one transaction.
- ``queries.py``: the reads beyond a key lookup (lists, search, events, logs, window statistics), on any
  connection (the writer's, or the read-only ones of ``actors/reads.py``).
- ``schema.py``: the tables and the search index.
- ``memory.py``: ``MemoryStore``, the same staging and reads in memory, for the queue rules' unit tests.
"""

from .memory import MemoryDisk, MemoryStore
from .queries import (gseq_since, index_pending, percentile, recently_finished, select_event_texts, select_events,
                      select_jobs, select_logs, series, window_stats)
from .schema import FINAL
from .sqlite import Store

__all__ = ["FINAL", "MemoryDisk", "MemoryStore", "Store", "gseq_since", "index_pending", "percentile",
           "recently_finished", "select_event_texts", "select_events", "select_jobs", "select_logs", "series",
           "window_stats"]
