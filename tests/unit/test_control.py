"""Queue control's rules, without Ray: pause, purge, expiry, dedup, debounce, throttle, bulk filters."""

import pytest

from actors.bulk import BulkFilter
from actors.exceptions import InvalidInput, InvalidTransition

from .conftest import T0, enqueue, reopen


def started(q, now, n=100, runner="r"):
    return [lease["job_id"] for lease in q.lease(runner, None, n, now)]


# -- pause / resume / purge ------------------------------------------------------------------
def test_a_paused_queue_accepts_jobs_starts_none_and_lets_running_leases_finish(q):
    running = enqueue(q)
    [lease] = q.lease("r", None, 1, T0)
    q.pause(None, T0)
    waiting = enqueue(q, now=T0 + 1)
    assert q.get(waiting["id"])["status"] == "queued"
    assert started(q, T0 + 2) == [] and q.ready_counts() == {}
    assert q.heartbeat([lease["token"]], T0 + 3) == {lease["token"]: "ok"}
    q.complete(lease["token"], None, T0 + 4, job_id=running["id"])
    assert q.get(running["id"])["status"] == "succeeded"
    q.resume(None, T0 + 5)
    assert started(q, T0 + 5) == [waiting["id"]]


def test_pausing_types_holds_only_those_types(q):
    echo, stamp = enqueue(q), enqueue(q, type="stamp")
    state = q.pause(["stamp"], T0)
    assert state == {"queue": "default", "paused": False, "paused_types": ["stamp"]}
    assert started(q, T0) == [echo["id"]]
    q.resume(["stamp"], T0)
    assert started(q, T0) == [stamp["id"]]


def test_resuming_some_types_of_a_paused_queue_is_refused(q):
    q.pause(None, T0)
    with pytest.raises(InvalidTransition):
        q.resume(["echo"], T0)
    with pytest.raises(InvalidInput):
        q.pause([], T0)


def test_a_pause_holds_across_a_restart(q, path):
    job = enqueue(q)
    q.pause(None, T0)
    q = reopen(q, path, now=T0 + 1)
    assert q.stats()["paused"] is True
    assert started(q, T0 + 2) == []
    q.resume(None, T0 + 3)
    q = reopen(q, path, now=T0 + 4)
    assert started(q, T0 + 5) == [job["id"]]


def test_purge_removes_only_jobs_waiting_for_a_start(q):
    running = enqueue(q)
    started(q, T0)
    queued, delayed = enqueue(q), enqueue(q, delay=60)
    other_type = enqueue(q, type="stamp")
    assert sorted(q.purgeable(["echo"])) == sorted([queued["id"], delayed["id"]])
    assert q.purge(q.purgeable(["echo"]), T0 + 1) == 2
    q.store.commit()
    assert q.store.get_job(queued["id"]) is None and q.store.get_job(delayed["id"]) is None
    assert q.get(running["id"])["status"] == "running" and q.get(other_type["id"])["status"] == "queued"
    assert q.stats()["counts"]["queued"] == 1 and q.stats()["counts"]["scheduled"] == 0


# -- expiry ------------------------------------------------------------------------------
def test_a_job_not_started_in_time_expires_with_its_own_event(q):
    job = enqueue(q, expires_in=5)
    q.pause(None, T0)
    q.promote_due(T0 + 4.9)
    assert q.get(job["id"])["status"] == "queued"
    q.promote_due(T0 + 5)
    q.store.commit()
    stored = q.get(job["id"])
    assert stored["status"] == "expired" and stored["finished_at"] == T0 + 5
    kinds = [e["data"]["status"] for e in q.store.events_after("job:" + job["id"], 0) if e["kind"] == "status"]
    assert kinds == ["queued", "expired"]
    assert q.stats()["counts"]["expired"] == 1


def test_a_started_job_never_expires(q):
    job = enqueue(q, type="flaky", payload={}, expires_in=5)
    [lease] = q.lease("r", None, 1, T0 + 1)
    q.fail(lease["token"], "boom", T0 + 2)  # retrying: it has started
    q.promote_due(T0 + 100)
    assert q.get(job["id"])["status"] == "queued"
    [again] = q.lease("r", None, 1, T0 + 100)
    q.promote_due(T0 + 200)
    assert q.get(job["id"])["status"] == "running" and again["attempt"] == 2


def test_a_lease_never_starts_an_expired_job(q):
    job = enqueue(q, expires_in=5)
    assert started(q, T0 + 6) == []
    assert q.get(job["id"])["status"] == "expired"


def test_expiry_survives_a_restart_and_an_expired_job_can_be_retried(q, path):
    job = enqueue(q, expires_in=5, delay=2)
    q = reopen(q, path, now=T0 + 1)
    q.promote_due(T0 + 6)
    assert q.get(job["id"])["status"] == "expired"
    q.store.commit()
    q.retry(job["id"], T0 + 7)
    q.promote_due(T0 + 100)
    assert started(q, T0 + 100) == [job["id"]]


def test_expiry_input_is_checked(q):
    with pytest.raises(InvalidInput, match="expires_in"):
        enqueue(q, expires_in=0)
    with pytest.raises(InvalidInput, match="expires_in"):
        enqueue(q, expires_in=5, delay=10)


# -- dedup ---------------------------------------------------------------------------------
def test_dedup_returns_the_first_job_for_its_ttl_even_after_it_finished(q, path):
    first = enqueue(q, dedup={"key": "k", "ttl": 60})
    [lease] = q.lease("r", None, 1, T0)
    q.complete(lease["token"], None, T0 + 1)
    [(again, created)] = q.enqueue_many([{"type": "echo", "dedup": {"key": "k", "ttl": 60}}], T0 + 30)
    assert again["id"] == first["id"] and not created
    q = reopen(q, path, now=T0 + 31)
    [(again, created)] = q.enqueue_many([{"type": "echo", "dedup": {"key": "k", "ttl": 60}}], T0 + 59)
    assert again["id"] == first["id"] and not created
    q.promote_due(T0 + 60)
    fresh = enqueue(q, now=T0 + 60, dedup={"key": "k", "ttl": 60})
    assert fresh["id"] != first["id"]


# -- debounce ------------------------------------------------------------------------------
def test_debounce_runs_exactly_the_last_job_of_a_burst(q, path):
    burst = [enqueue(q, now=T0 + i, payload={"n": i}, debounce={"key": "user-1", "period": 5}) for i in range(10)]
    q = reopen(q, path, now=T0 + 10)  # the burst's last job waits out its quiet period across a restart
    assert started(q, T0 + 13.9) == []
    assert started(q, T0 + 14) == [burst[-1]["id"]]
    q.store.commit()
    for job in burst[:-1]:
        stored = q.get(job["id"])
        assert stored["status"] == "cancelled" and stored["error"]["type"] == "Debounced"
    after = enqueue(q, now=T0 + 20, debounce={"key": "user-1", "period": 5})  # a new burst
    assert started(q, T0 + 25) == [after["id"]]


def test_debounce_refuses_fields_it_cannot_honour(q):
    for extra in ({"delay": 1}, {"unique_key": "u"}, {"dedup": {"key": "k", "ttl": 1}}):
        with pytest.raises(InvalidInput) as caught:
            enqueue(q, debounce={"key": "k", "period": 1}, **extra)
        assert caught.value.context["field"] == "debounce"
    with pytest.raises(InvalidInput) as caught:
        enqueue(q, debounce={"key": "k"})
    assert caught.value.context["field"] == "debounce"
    with pytest.raises(InvalidInput) as caught:
        enqueue(q, throttle={"key": "k", "limit": 0, "period": 1})
    assert caught.value.context["field"] == "throttle.limit"
    with pytest.raises(InvalidInput) as caught:
        enqueue(q, unique_key="u", dedup={"key": "k", "ttl": 1})
    assert caught.value.context["field"] == "dedup"


# -- throttle ------------------------------------------------------------------------------
def test_throttle_never_starts_more_than_its_limit_in_any_period(q, path):
    rule = {"key": "api", "limit": 3, "period": 10}
    jobs = [enqueue(q, throttle=rule) for _ in range(20)]
    starts: list[float] = []
    now = T0
    while len(starts) < 20:
        for job_id in started(q, now):
            starts.append(now)
            q.complete(q.jobs[job_id]["lease"]["token"], None, now)
        if now == T0 + 12:
            q = reopen(q, path, now=now)  # the window's starts are durable
        q.promote_due(now)
        now += 0.5
    for t in starts:
        assert sum(1 for s in starts if t <= s < t + 10) <= 3
    assert len(jobs) == 20


# -- bulk filters --------------------------------------------------------------------------
def test_bulk_filters_take_only_statuses_their_action_applies_to():
    f = BulkFilter.parse("retry", {"queue": "default", "type": "echo"})
    assert f.statuses == ("cancelled", "expired", "failed") and f.limit == 500
    with pytest.raises(InvalidInput) as caught:
        BulkFilter.parse("cancel", {"status": ["succeeded"]})
    assert caught.value.context["field"] == "status"
    with pytest.raises(InvalidInput) as caught:
        BulkFilter.parse("delete", {"limit": 0})
    assert caught.value.context["field"] == "limit"
    with pytest.raises(InvalidInput) as caught:
        BulkFilter.parse("delete", {"stauts": "failed"})
    assert caught.value.context["field"] == "stauts"
    f = BulkFilter.parse("cancel", {"status": "queued", "created_after": T0, "created_before": T0 + 10})
    assert f.matches({"status": "queued", "type": "x", "created_at": T0})
    assert not f.matches({"status": "queued", "type": "x", "created_at": T0 + 10})
    assert not f.matches({"status": "running", "type": "x", "created_at": T0})


# -- fair shares ---------------------------------------------------------------------------
def test_every_small_tenant_starts_before_the_big_tenants_100th_job(q):
    big = q.enqueue_many([{"type": "echo", "group": {"key": "big"}} for _ in range(1000)], T0)
    for _ in range(9):
        q.enqueue_many([{"type": "echo", "group": {"key": "big"}} for _ in range(1000)], T0)
    small = {f"t{i}": [job["id"] for job, _ in q.enqueue_many(
        [{"type": "echo", "group": {"key": f"t{i}"}} for _ in range(10)], T0 + 1)] for i in range(9)}
    big_ids = {job["id"] for job, _ in big}
    order: list[str] = []
    while len(order) < 200:
        order += started(q, T0 + 2, n=7)
    tenant_of = {job_id: tenant for tenant, ids in small.items() for job_id in ids}
    hundredth_big = [i for i, job_id in enumerate(order) if job_id not in tenant_of][99]
    for tenant in small:
        first = next(i for i, job_id in enumerate(order) if tenant_of.get(job_id) == tenant)
        assert first < hundredth_big, tenant
    assert order[0] in big_ids  # the oldest job still starts first


def test_a_group_limit_caps_its_running_jobs_and_frees_a_slot_when_one_ends(q, path):
    capped = [enqueue(q, group={"key": "a", "limit": 2})["id"] for _ in range(5)]
    free = [enqueue(q, group={"key": "b"})["id"] for _ in range(3)]
    first = started(q, T0, n=100)
    assert sorted(first) == sorted(capped[:2] + free)
    q = reopen(q, path, now=T0 + 1)  # running counts are rebuilt from the running jobs
    assert started(q, T0 + 1) == []
    token = q.jobs[capped[0]]["lease"]["token"]
    q.complete(token, None, T0 + 2)
    assert started(q, T0 + 2) == [capped[2]]


def test_group_input_is_checked(q):
    for group, field in (({"limit": 1}, "group"), ({"key": ""}, "group.key"), ({"key": "a", "limit": 0}, "group.limit")):
        with pytest.raises(InvalidInput) as caught:
            enqueue(q, group=group)
        assert caught.value.context["field"] == field


# -- schedules: overlap and catch-up ---------------------------------------------------------
HOUR0 = 1_767_261_600.0  # 2026-01-01 10:00:00 UTC, on an hourly tick


def test_schedule_overlap_skip_buffer_one_and_allow(q):
    for policy in ("skip", "buffer_one", "allow"):
        q.add_schedule({"name": policy, "cron": "0 * * * *", "job": {"type": "echo"}, "overlap": policy}, HOUR0)
    first = {j["unique_key"].split(":")[1]: j for j in q.fire_schedules(HOUR0 + 3600)}
    assert set(first) == {"skip", "buffer_one", "allow"}
    # The first jobs are still unfinished at the next two ticks.
    second = [j["unique_key"].split(":")[1] for j in q.fire_schedules(HOUR0 + 7200)]
    third = [j["unique_key"].split(":")[1] for j in q.fire_schedules(HOUR0 + 10800)]
    assert second == ["allow"] and third == ["allow"]
    assert q.schedules.get("buffer_one")["buffered"] == HOUR0 + 10800  # the latest tick waits, one at most
    for job in first.values():
        q.cancel(job["id"], HOUR0 + 10801)
    [buffered] = q.fire_schedules(HOUR0 + 10802)
    assert buffered["unique_key"] == f"schedule:buffer_one:{int(HOUR0 + 10800)}"
    assert q.schedules.get("buffer_one")["buffered"] is None and q.fire_schedules(HOUR0 + 10803) == []


def test_missed_ticks_within_the_catchup_window_are_fired_oldest_first(q):
    q.add_schedule({"name": "c", "cron": "0 * * * *", "job": {"type": "echo"}, "catchup_window": 3 * 3600 + 60},
                   HOUR0)
    fired = q.fire_schedules(HOUR0 + 5 * 3600 + 30)  # down for five ticks
    ticks = [int(j["unique_key"].split(":")[2]) for j in fired]
    assert ticks == [int(HOUR0 + h * 3600) for h in (2, 3, 4, 5)]
    assert q.schedules.get("c")["next_run"] == HOUR0 + 6 * 3600
    with pytest.raises(InvalidInput) as caught:
        q.add_schedule({"name": "d", "cron": "0 * * * *", "job": {"type": "echo"}, "overlap": "queue"}, HOUR0)
    assert caught.value.context["field"] == "overlap"


def test_a_paused_queue_asks_the_autoscaler_for_no_node(q):
    from actors.scaling import DemandReporter

    class Recorder(DemandReporter):  # the Ray edge (gauges, the demand aggregator) replaced by a record
        def _export(self, scan, now):
            self.scan = scan

        def _send(self, demand):
            self.sent = demand

    enqueue(q)
    q.pause(None, T0)
    paused = Recorder("default", q.types)
    paused.tick(q, T0)
    assert paused.sent == {}
    q.resume(None, T0)
    resumed = Recorder("default", q.types)
    resumed.tick(q, T0)
    assert resumed.sent and sum(resumed.sent.values()) == 1


def test_a_bulk_filter_by_group_matches_only_that_groups_jobs():
    f = BulkFilter.parse("cancel", {"group": ["tenant-1"]})
    assert f.matches({"status": "queued", "type": "x", "created_at": T0, "group": {"key": "tenant-1", "limit": None}})
    assert not f.matches({"status": "queued", "type": "x", "created_at": T0, "group": {"key": "tenant-2"}})
    assert not f.matches({"status": "queued", "type": "x", "created_at": T0, "group": None})
    with pytest.raises(InvalidInput) as caught:
        BulkFilter.parse("cancel", {"group": [""]})
    assert caught.value.context["field"] == "group"
