"""History and housekeeping without Ray: export rows, retention, windowed stats, session signing."""

from __future__ import annotations

import random

import pyarrow.parquet as pq
import pytest

from actors.exceptions import ConfigError, Forbidden
from actors.metrics import QueueMetrics
from actors.store import percentile, series, window_stats
from actors.queue import JobQueue, Limits
from actors.retention import retention_days, sweep
from actors.store import Store
from tests.unit.jobtypes import TYPES
from serve.dashboard import session as sessions
from serve.dashboard.export import attempt_rows, parse_time, write_parquet

T0 = 1_700_000_000.0
DAY = 86400


@pytest.fixture
def q(tmp_path):
    return JobQueue("default", Store(tmp_path / "q.sqlite3"), Limits(lease_ttl=10), rng=random.Random(1),
                    types=TYPES)


def run_job(q, now, spec, outcomes):
    """Enqueue at ``now`` and end one attempt per outcome, a second apart."""
    [(job, _)] = q.enqueue_many([spec], now)
    for i, outcome in enumerate(outcomes):
        t = now + i * 2
        q.promote_due(t + 1)
        [lease] = q.lease("r1", [spec["type"]], 1, t + 1, node="node-a", pid=42)
        if outcome == "ok":
            q.complete(lease["token"], {"n": 1}, t + 1.5, job_id=job["id"])
        else:
            q.fail(lease["token"], {"type": "RuntimeError", "message": outcome, "traceback": "tb"}, t + 1.5,
                   job_id=job["id"])
    q.store.commit()
    return q.get(job["id"])


def test_export_writes_one_row_per_attempt(q, tmp_path):
    flaky = run_job(q, T0, {"type": "flaky", "payload": {"x": 1}, "max_attempts": 3,
                            "backoff": {"strategy": "fixed", "delay": 0, "jitter": 0}}, ["boom", "ok"])
    waiting, _ = q.enqueue_many([{"type": "echo", "payload": None}], T0 + 10)[0]
    rows = attempt_rows([flaky, waiting])
    assert [(r["job_id"], r["attempt"], r["outcome"]) for r in rows] == [
        (flaky["id"], 1, "failed"), (flaky["id"], 2, "succeeded"), (waiting["id"], 0, None)]
    assert rows[0]["error_message"] == "boom" and rows[0]["node"] == "node-a" and rows[0]["duration_s"] == 0.5
    path = tmp_path / "out.parquet"
    assert write_parquet(rows, path) == 3
    table = pq.read_table(path).to_pylist()
    assert [r["outcome"] for r in table] == ["failed", "succeeded", None]
    assert table[0]["started_at"].timestamp() == T0 + 1 and table[0]["payload"] == '{"x": 1}'


def test_export_time_forms():
    assert parse_time("1700000000") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_time("2d", now=T0) == T0 - 2 * DAY
    with pytest.raises(ValueError, match="7d"):
        parse_time("last tuesday")


def test_retention_forgets_only_old_finished_jobs(q):
    old = run_job(q, T0, {"type": "echo"}, ["ok"])
    recent = run_job(q, T0 + 20 * DAY, {"type": "echo"}, ["ok"])
    [(stuck, _)] = q.enqueue_many([{"type": "sleep", "payload": {"seconds": 1}}], T0)  # old but unfinished
    q.store.commit()
    assert sweep(q, T0 + 31 * DAY, days=0) == 0
    assert sweep(q, T0 + 31 * DAY, days=30) == 1
    q.store.commit()
    ids = {j["id"] for j in q.store.list_jobs(limit=10)}
    assert old["id"] not in ids and {recent["id"], stuck["id"]} <= ids
    assert q.store.events_after("job:" + old["id"], 0) == []
    assert sweep(q, T0 + 31 * DAY, days=30) == 0


def test_retention_setting():
    assert retention_days({}) == 0
    assert retention_days({"DOJO_RETENTION_DAYS": "7.5"}) == 7.5
    with pytest.raises(ConfigError, match="number of days"):
        retention_days({"DOJO_RETENTION_DAYS": "a week"})


def test_window_stats_and_series(q):
    for i in range(4):
        run_job(q, T0 + i * 60, {"type": "echo"}, ["ok"])
    run_job(q, T0 + 300, {"type": "flaky", "payload": {"permanent": True}, "max_attempts": 1}, ["nope"])
    now = T0 + 600
    stats = window_stats(q.store.db, now - 3600, now)
    assert (stats["enqueued"], stats["succeeded"], stats["failed"]) == (5, 4, 1)
    assert stats["failure_rate"] == 0.2 and stats["run_p50"] == 0.5
    chart = series(q.store.db, now - 600, now, 60)
    assert len(chart["succeeded"]) == 10 and sum(chart["succeeded"]) == 4 and chart["failed"][5] == 1
    assert sum(chart["enqueued"]) == 5
    assert percentile([], 50) is None and percentile([1, 2, 3, 4], 95) == 4


def test_metrics_follow_the_events(q):
    metrics = QueueMetrics("default")
    [(job, _)] = q.enqueue_many([{"type": "echo"}], T0)
    [lease] = q.lease("r1", ["echo"], 1, T0 + 2)
    q.complete(lease["token"], None, T0 + 5, job_id=job["id"])
    metrics.observe(q.take_events())  # needs no Ray cluster; must not raise
    assert metrics._started_at == {} and metrics._queued_at == {}


def test_session_cookie_and_csrf():
    cookie, session = sessions.new_session("secret", now=T0)
    assert sessions.read_session("secret", cookie, now=T0 + 1) == session
    assert sessions.read_session("other", cookie, now=T0 + 1) is None
    assert sessions.read_session("secret", cookie, now=T0 + sessions.SESSION_TTL + 1) is None
    assert sessions.read_session("secret", cookie.replace(".", "x.", 1), now=T0) is None
    token = sessions.csrf_token("secret", session)
    sessions.check_csrf("secret", session, "POST", token)
    sessions.check_csrf("secret", session, "GET", None)
    with pytest.raises(Forbidden, match="CSRF"):
        sessions.check_csrf("secret", session, "POST", None)
    with pytest.raises(Forbidden):
        sessions.check_csrf("secret", session, "DELETE", sessions.csrf_token("secret", sessions.new_session("secret")[1]))
    sessions.check_csrf("secret", sessions.Session("bearer"), "POST", None)
    assert sessions.same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not sessions.same_origin("http://evil.example", "127.0.0.1:8000")
