"""A queue for the rules' tests: ``JobQueue`` on a fresh SQLite file, its clock set by hand from ``T0``.

A module that needs other limits overrides the ``limits`` fixture. The helpers are imported with
``from .conftest import T0, reopen, enqueue``.
"""

from __future__ import annotations

import random

import pytest

from actors.queue import JobQueue, Limits
from actors.store import Store

T0 = 1_700_000_000.0


@pytest.fixture
def path(tmp_path):
    return tmp_path / "q.sqlite3"


@pytest.fixture
def limits() -> Limits:
    return Limits(lease_ttl=10)


@pytest.fixture
def q(path, limits):
    return JobQueue("default", Store(path), limits, rng=random.Random(1))


def reopen(q, path, now=None):
    """The queue as a restarted actor loads it: what ``q`` staged is committed, the file opened anew."""
    q.store.commit()
    q.store.close()
    return JobQueue("default", Store(path), q.limits, rng=random.Random(1), now=now)


def enqueue(q, now=T0, **spec):
    """One job (type ``echo`` unless ``spec`` names another), enqueued at ``now``."""
    spec.setdefault("type", "echo")
    [(job, _)] = q.enqueue_many([spec], now)
    return job
