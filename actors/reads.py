"""History reads off the queue actor's event loop: read-only SQLite connections in a small thread pool.

The queue actor's loop does writes, leases and live fan-out; everything that reads history (event replay
with ``after=``, job lists and search, log pages, window statistics, exports) runs here instead. SQLite in
WAL mode gives each read a snapshot of the last commit, so a reader never blocks the writer nor sees half
a transaction; the caller commits what it staged before it asks, so a read sees every change it made.

Why threads in the actor's process and not a reader actor: a read answers from the same process that
already holds the data's pages in the OS cache, costs no extra Ray hop, and ``sqlite3`` releases the GIL
while SQLite works. The threads run at a lower CPU priority (``nice``) than the loop's thread, so under
contention submissions and leases are served first; a page is bounded (``limit``), so one slow reader holds
a thread for one page, not for its whole history.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

#: Reader threads per queue actor (SQLite reads run in parallel; more than the cores would only queue).
#: ``DOJO_READ_THREADS=0`` reads on the caller's thread, i.e. on the actor's loop: the old way, kept
#: for ``bench/reads.py`` to compare against.
THREADS = 2
#: How much lower than the loop's thread the readers run (Linux ``nice`` of the thread; 0 disables).
NICE = 10


class Reader:
    """Runs read functions ``fn(db, *args)`` on read-only connections to one database, off the loop."""

    def __init__(self, path: str | Path, threads: int | None = None, nice: int = NICE):
        self.path = Path(path)
        self.nice = nice
        if threads is None:
            threads = int(os.environ.get("DOJO_READ_THREADS") or THREADS)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dojo-read",
                                        initializer=self._start_thread) if threads > 0 else None

    def _start_thread(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:  # on Linux a thread has its own nice value
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:  # not permitted here: readers then share the loop's priority
                pass

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA query_only=1")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def _call(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        return fn(self._db(), *args, **kwargs)

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        """``fn(connection, *args, **kwargs)`` on a reader thread; its result (or exception) comes back."""
        if self._pool is None:
            return self._call(fn, args, kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._call, fn, args, kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
