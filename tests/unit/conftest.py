"""A queue for the rules' tests: ``JobQueue`` with the test job types (``jobtypes.TYPES``), its clock set by
hand from ``T0``, on each store: the SQLite ``Store`` on a fresh file and its in-memory twin.

``path`` is where the queue's state lives (a file, or a ``MemoryDisk``); ``open_store(path)`` opens it again
as a restarted actor would. A module that needs other limits overrides the ``limits`` fixture. The helpers
are imported with ``from .conftest import T0, reopen, enqueue``.
"""

from __future__ import annotations

import random

import pytest

from actors.queue import JobQueue, Limits
from actors.store import MemoryDisk, MemoryStore, Store

from .jobtypes import TYPES

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "memory"])
def path(request, tmp_path):
    return tmp_path / "q.sqlite3" if request.param == "sqlite" else MemoryDisk()


def open_store(path):
    """The store at ``path``: SQLite for a file, the twin for a ``MemoryDisk``."""
    return MemoryStore(path) if isinstance(path, MemoryDisk) else Store(path)


def make_queue(path, limits: Limits = Limits(lease_ttl=10), now: float | None = None,
               name: str = "default") -> JobQueue:
    return JobQueue(name, open_store(path), limits, rng=random.Random(1), now=now, types=TYPES)


@pytest.fixture
def limits() -> Limits:
    return Limits(lease_ttl=10)


@pytest.fixture
def q(path, limits):
    return make_queue(path, limits)


def reopen(q, path, now=None):
    """The queue as a restarted actor loads it: what ``q`` staged is committed, the store opened anew."""
    q.store.commit()
    q.store.close()
    return make_queue(path, q.limits, now=now)


def enqueue(q, now=T0, **spec):
    """One job (type ``echo`` unless ``spec`` names another), enqueued at ``now``."""
    spec.setdefault("type", "echo")
    [(job, _)] = q.enqueue_many([spec], now)
    return job
