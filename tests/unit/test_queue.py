"""The queue's rules, without Ray: each promise of the design, in microseconds."""

import pytest

from actors.exceptions import InvalidInput, InvalidTransition, JobNotFound, PayloadTooLarge, StaleLease, UnknownJobType
from actors.ids import queue_of
from actors.queue import JobQueue, Limits
from actors.store import MemoryDisk

from .conftest import T0, enqueue, make_queue, reopen


@pytest.fixture
def limits():
    return Limits(max_payload_bytes=1000, lease_ttl=10)


def committed(q):
    q.store.commit()
    return q


def statuses(q, job_id):
    return [e["data"]["status"] for e in q.store.events_after("job:" + job_id, 0) if e["kind"] == "status"]


def test_enqueue_lease_complete_is_recorded_with_history_and_events(q):
    job = enqueue(q, payload={"x": 1})
    [lease] = q.lease("r1", None, 10, T0 + 1)
    assert lease["job_id"] == job["id"] and lease["attempt"] == 1 and lease["payload"] == {"x": 1}
    q.complete(lease["token"], {"ok": True}, T0 + 2)
    committed(q)
    stored = q.get(job["id"])
    assert stored["status"] == "succeeded" and stored["result"] == {"ok": True}
    assert [h["outcome"] for h in stored["history"]] == ["succeeded"]
    assert stored["history"][0]["duration"] == pytest.approx(1.0)
    assert statuses(q, job["id"]) == ["queued", "running", "succeeded"]
    seqs = [e["seq"] for e in q.store.events_after("job:" + job["id"], 0)]
    assert seqs == [1, 2, 3]


def test_ids_sort_by_creation_and_name_their_queue(q, tmp_path):
    ids = [enqueue(q, now=T0 + i * 0.0001)["id"] for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    other = make_queue(MemoryDisk(), name="video")
    vid = enqueue(other)["id"]
    assert queue_of(vid) == "video" and queue_of(ids[0]) == "default"
    with pytest.raises(InvalidInput):
        queue_of("../etc/passwd")


def test_stale_token_is_refused_after_lease_expires_and_job_retries(q):
    job = enqueue(q, type="flaky", payload={})
    [first] = q.lease("r1", None, 1, T0)
    lost, to_stop = q.expire(T0 + 11)
    assert [j["id"] for j in lost] == [job["id"]] and to_stop == [(first["token"], "r1")]
    assert q.get(job["id"])["status"] == "retrying"
    q.promote_due(T0 + 20)
    [second] = q.lease("r2", None, 1, T0 + 20)
    assert second["attempt"] == 2 and second["token"] > first["token"]
    with pytest.raises(StaleLease):
        q.complete(first["token"], "late", T0 + 21, job_id=job["id"])
    with pytest.raises(StaleLease):
        q.progress(first["token"], {"fraction": 0.5}, T0 + 21)
    assert q.heartbeat([first["token"], second["token"]], T0 + 21) == {first["token"]: "stale", second["token"]: "ok"}
    q.complete(second["token"], "ok", T0 + 22, job_id=job["id"])
    outcomes = [h["outcome"] for h in q.get(job["id"])["history"]]
    assert outcomes == ["lost", "succeeded"]


def test_heartbeat_keeps_the_lease(q):
    enqueue(q)
    [lease] = q.lease("r1", None, 1, T0)
    for t in range(5, 60, 5):
        assert q.heartbeat([lease["token"]], T0 + t) == {lease["token"]: "ok"}
        assert q.expire(T0 + t + 1) == ([], [])


def test_duplicate_completion_report_is_accepted_once(q):
    job = enqueue(q)
    [lease] = q.lease("r1", None, 1, T0)
    q.complete(lease["token"], 1, T0 + 1, job_id=job["id"])
    q.complete(lease["token"], 1, T0 + 2, job_id=job["id"])  # a retried report after an actor restart
    assert statuses(committed(q), job["id"]).count("succeeded") == 1


def test_unique_key_returns_the_unfinished_job(q):
    a = enqueue(q, unique_key="user-7")
    [(b, created)] = q.enqueue_many([{"type": "echo", "unique_key": "user-7"}], T0)
    assert b["id"] == a["id"] and not created
    [lease] = q.lease("r", None, 1, T0)
    q.complete(lease["token"], None, T0)
    c = enqueue(q, unique_key="user-7")
    assert c["id"] != a["id"]


def test_concurrency_key_limit_holds(q):
    jobs = [enqueue(q, concurrency_key="host-a", concurrency_limit=2) for _ in range(5)]
    other = enqueue(q)
    leases = q.lease("r", None, 10, T0)
    assert {lease["job_id"] for lease in leases} == {jobs[0]["id"], jobs[1]["id"], other["id"]}
    assert q.lease("r", None, 10, T0) == []
    q.complete(leases[0]["token"], None, T0)
    [nxt] = q.lease("r", None, 10, T0)
    assert nxt["job_id"] == jobs[2]["id"]


def test_delay_and_priority_order(q):
    late = enqueue(q, delay=30)
    low = enqueue(q, priority=-1)
    normal = enqueue(q)
    high = enqueue(q, priority=5)
    assert q.get(late["id"])["status"] == "scheduled"
    order = [lease["job_id"] for lease in q.lease("r", None, 10, T0 + 1)]
    assert order == [high["id"], normal["id"], low["id"]]
    [lease] = q.lease("r", None, 10, T0 + 30)
    assert lease["job_id"] == late["id"]


def test_exponential_backoff_with_cap(q):
    job = enqueue(q, type="flaky", payload={"succeed_on": 99}, max_attempts=6,
                  backoff={"strategy": "exponential", "delay": 2, "cap": 10, "jitter": 0})
    now, delays = T0, []
    for _ in range(5):
        [lease] = q.lease("r", None, 1, now)
        q.fail(lease["token"], "boom", now)
        record = q.get(job["id"])
        delays.append(record["run_at"] - now)
        now = record["run_at"]
        assert q.lease("r", None, 1, now - 0.01) == []
    assert delays == [2, 4, 8, 10, 10]
    [lease] = q.lease("r", None, 1, now)
    q.fail(lease["token"], "boom", now)
    assert q.get(job["id"])["status"] == "failed" and len(q.get(job["id"])["history"]) == 6


def test_permanent_failure_skips_retries(q):
    job = enqueue(q, type="flaky")
    [lease] = q.lease("r", None, 1, T0)
    q.fail(lease["token"], "no", T0, retry=False)
    assert q.get(job["id"])["status"] == "failed"


def test_timeout_stops_the_attempt(q):
    job = enqueue(q, type="sleep", payload={"seconds": 100}, timeout=5, max_attempts=2)
    [lease] = q.lease("r", None, 1, T0)
    q.heartbeat([lease["token"]], T0 + 4)
    lost, to_stop = q.expire(T0 + 5)
    assert to_stop == [(lease["token"], "r")]
    record = q.get(job["id"])
    assert record["status"] == "retrying" and record["history"][0]["outcome"] == "timed_out"
    assert "timed out after 5s" in record["error"]["message"]


def test_cancel_running_and_queued_and_retry_keeps_history(q):
    running = enqueue(q)
    queued = enqueue(q, delay=100)
    [lease] = q.lease("r", None, 1, T0)
    _, stop = q.cancel(running["id"], T0 + 1)
    assert stop == (lease["token"], "r")
    _, stop = q.cancel(queued["id"], T0 + 1)
    assert stop is None
    with pytest.raises(InvalidTransition):
        q.cancel(queued["id"], T0 + 2)
    with pytest.raises(StaleLease):
        q.complete(lease["token"], None, T0 + 2, job_id=running["id"])
    q.retry(running["id"], T0 + 3)
    [again] = q.lease("r", None, 5, T0 + 3)
    assert again["job_id"] == running["id"] and again["attempt"] == 2
    q.complete(again["token"], "ok", T0 + 4)
    record = q.get(running["id"])
    assert [h["outcome"] for h in record["history"]] == ["cancelled", "succeeded"]
    with pytest.raises(InvalidTransition):
        q.retry(running["id"], T0 + 5)


def test_delete_only_finished(q):
    job = enqueue(q)
    with pytest.raises(InvalidTransition):
        q.delete(job["id"])
    [lease] = q.lease("r", None, 1, T0)
    q.complete(lease["token"], None, T0)
    committed(q)
    q.delete(job["id"])
    committed(q)
    with pytest.raises(JobNotFound):
        q.get(job["id"])


@pytest.mark.parametrize("spec, error", [
    ({"type": "nope"}, UnknownJobType),
    ({"type": "echo", "payload": "x" * 2000}, PayloadTooLarge),
    ({"type": "echo", "delay": -1}, InvalidInput),
    ({"type": "echo", "priority": "high"}, InvalidInput),
    ({"type": "echo", "max_attempts": 0}, InvalidInput),
    ({"type": "echo", "bogus": 1}, InvalidInput),
    ({"type": "echo", "concurrency_limit": 2}, InvalidInput),
    ({"type": "sleep", "payload": {"seconds": -3}}, InvalidInput),
    ({"type": "echo", "backoff": {"strategy": "random"}}, InvalidInput),
    ("echo", InvalidInput),
])
def test_bad_input_changes_nothing(q, spec, error):
    good = {"type": "echo"}
    with pytest.raises(error) as info:
        q.enqueue_many([good, spec], T0)
    assert info.value.message
    committed(q)
    assert q.jobs == {} and q.store.count_by_status() == {} and q.take_events() == []


def test_unknown_type_lists_known_types(q):
    with pytest.raises(UnknownJobType, match="known types: .*echo"):
        enqueue(q, type="nope")


def test_restart_reloads_and_expired_running_attempts_retry(q, path):
    running = enqueue(q, type="flaky")
    delayed = enqueue(q, delay=50)
    waiting = enqueue(q, priority=1)
    [lease] = q.lease("r", ["flaky"], 1, T0)
    q = reopen(q, path)
    assert q.get(running["id"])["status"] == "running"
    lost, _ = q.expire(T0 + 11)
    assert [j["id"] for j in lost] == [running["id"]]
    with pytest.raises(StaleLease):
        q.complete(lease["token"], None, T0 + 12, job_id=running["id"])
    leases = q.lease("r2", None, 10, T0 + 60)
    ids = [x["job_id"] for x in leases]
    assert ids[0] == waiting["id"] and set(ids) == {running["id"], delayed["id"], waiting["id"]}
    assert min(x["token"] for x in leases) > lease["token"]  # a new epoch's tokens
    # sequences continue where they were
    seqs = [e["seq"] for e in committed(q).store.events_after("job:" + running["id"], 0)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_release_does_not_count_an_attempt(q):
    job = enqueue(q, max_attempts=1)
    [lease] = q.lease("r", None, 1, T0)
    q.release([lease["token"]], T0)
    [again] = q.lease("r", None, 1, T0)
    assert again["attempt"] == 1 and q.get(job["id"])["attempts"] == 1


def test_channels_number_messages(q):
    a = q.publish("room-1", {"hi": 1}, T0)
    b = q.publish("room-1", "two", T0)
    assert (a["seq"], b["seq"]) == (1, 2)
    with pytest.raises(InvalidInput):
        q.publish("bad name!", 1, T0)
    committed(q)
    assert [e["data"]["message"] for e in q.store.events_after("channel:room-1", 1)] == ["two"]


def test_flow_parent_waits_for_children_then_succeeds_with_a_report(q):
    parent = enqueue(q, type="echo")
    [lease] = q.lease("r", None, 1, T0)
    children = q.enqueue_many([{"type": "echo", "parent_id": parent["id"], "payload": i} for i in range(3)], T0)
    q.complete(lease["token"], {"started": 3}, T0 + 1)
    assert q.get(parent["id"])["status"] == "waiting"
    leases = q.lease("r", None, 10, T0 + 2)
    q.complete(leases[0]["token"], {"new": 5, "updated": 1}, T0 + 3)
    q.complete(leases[1]["token"], {"new": 2, "updated": 0}, T0 + 3)
    q.fail(leases[2]["token"], "HTTP 500", T0 + 3, retry=False)
    record = q.get(parent["id"])
    assert record["status"] == "succeeded"
    report = record["children"]
    assert report["counts"] == {"succeeded": 2, "failed": 1} and report["sums"] == {"new": 7, "updated": 1}
    assert report["errors"] == {"HTTP 500": 1}
    progress = [e["data"]["message"] for e in q.take_events() if e["kind"] == "progress"]
    assert progress == ["1/3 children done", "2/3 children done", "3/3 children done"]
    assert len(children) == 3


def test_flow_callback_runs_once_as_a_leased_attempt(q):
    parent = enqueue(q, type="with-callback")
    [lease] = q.lease("r", ["with-callback"], 1, T0)
    q.enqueue_many([{"type": "echo", "parent_id": parent["id"]}], T0)
    [child] = q.lease("r", ["echo"], 1, T0)
    q.complete(child["token"], None, T0)
    assert q.get(parent["id"])["status"] == "running"  # its own attempt is not done yet
    q.complete(lease["token"], None, T0 + 1)
    [callback] = q.lease("r", ["with-callback"], 1, T0 + 2)
    assert callback["phase"] == "callback" and callback["attempt"] == 2
    q.complete(callback["token"], 1, T0 + 3)
    assert q.get(parent["id"])["status"] == "succeeded" and q.lease("r", None, 5, T0 + 4) == []


def test_cancelling_a_parent_cancels_its_unfinished_children(q):
    parent = enqueue(q)
    [lease] = q.lease("r", None, 1, T0)
    q.enqueue_many([{"type": "echo", "parent_id": parent["id"]} for _ in range(3)], T0)
    [running_child] = q.lease("r", None, 1, T0)
    job, stops = q.cancel_tree(parent["id"], T0 + 1)
    assert job["status"] == "cancelled"
    assert {t for t, _ in stops} == {lease["token"], running_child["token"]}
    assert q.jobs == {}


def test_children_need_a_running_parent(q):
    with pytest.raises(InvalidInput, match="not running"):
        q.enqueue_many([{"type": "echo", "parent_id": "j_00000000000000000000"}], T0)


def test_schedule_fires_once_per_tick_across_a_restart(q, path):
    from datetime import datetime, timezone

    start = datetime(2026, 1, 1, 10, 0, 30, tzinfo=timezone.utc).timestamp()
    sched = q.add_schedule({"name": "hourly", "cron": "0 * * * *", "job": {"type": "echo", "payload": 1}}, start)
    assert sched["next_run"] == start + 3570
    assert q.fire_schedules(start + 100) == []
    [job] = q.fire_schedules(start + 3575)
    assert job["unique_key"].startswith("schedule:hourly:")
    q = reopen(q, path)  # the advanced next_run was committed with the job
    assert q.fire_schedules(start + 3580) == []
    assert q.schedules.get("hourly")["fired"] == 1 and q.schedules.get("hourly")["last_job_id"] == job["id"]


def test_missed_ticks_follow_the_policy(q):
    from datetime import datetime, timezone

    start = datetime(2026, 1, 1, 10, 0, 0, tzinfo=timezone.utc).timestamp()
    q.add_schedule({"name": "skip", "cron": "0 * * * *", "job": {"type": "echo"}}, start)
    q.add_schedule({"name": "once", "cron": "0 * * * *", "job": {"type": "echo"}, "missed": "run_once"}, start)
    down_until = start + 5 * 3600 + 1800  # down for five ticks, back at half past
    fired = q.fire_schedules(down_until)
    assert [j["unique_key"].split(":")[1] for j in fired] == ["once"]
    for name in ("skip", "once"):
        assert q.schedules.get(name)["next_run"] == start + 6 * 3600


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "cron": "61 * * * *", "job": {"type": "echo"}}, "not a valid cron"),
    ({"name": "x", "cron": "* * *", "job": {"type": "echo"}}, "expected 5"),
    ({"name": "x", "cron": "0 * * * *", "timezone": "Mars/Base", "job": {"type": "echo"}}, "unknown timezone"),
    ({"name": "x", "cron": "0 * * * *", "job": {"type": "nope"}}, "unknown job type"),
    ({"name": "bad name", "cron": "0 * * * *", "job": {"type": "echo"}}, "schedule name"),
    ({"name": "x", "cron": "0 * * * *", "job": {"type": "echo"}, "missed": "all"}, "missed must be"),
])
def test_bad_schedules_are_refused_and_change_nothing(q, data, message):
    with pytest.raises(InvalidInput, match=message):
        q.add_schedule(data, T0)
    assert q.schedules.all == {} and not q.store.dirty


def test_pause_and_run_now(q):
    q.add_schedule({"name": "m", "cron": "* * * * *", "job": {"type": "echo"}}, T0)
    q.schedules.pause("m", True, T0)
    assert q.fire_schedules(T0 + 3600) == []
    job = q.run_schedule_now("m", T0 + 3600)
    assert job["status"] == "queued"
    q.schedules.pause("m", False, T0 + 3600)
    assert len(q.fire_schedules(T0 + 3700)) == 1


def test_token_bucket_grants_at_most_rate_and_burst_and_survives_restart(q, path):
    granted = 0
    now = T0
    q.buckets.define("helix", 20, 20, T0)
    while now < T0 + 10:
        granted += q.buckets.take("helix", 5, now)["granted"]
        now += 0.01
    assert 20 + 20 * 9.99 - 1 <= granted <= 20 + 20 * 10  # burst, then the rate
    q = reopen(q, path)
    assert q.buckets.take("helix", 5, now)["granted"] <= 1  # a restart does not refill it
    q.buckets.pause("helix", now + 30, now)
    answer = q.buckets.take("helix", 1, now + 10)
    assert answer == {"granted": 0, "retry_after": 20.0}
    with pytest.raises(InvalidInput):
        q.buckets.define("x", 0, 1, T0)


def test_a_jobs_own_resources_get_their_own_lane(q):
    from actors.ids import split_lane

    plain = enqueue(q)
    gpu = enqueue(q, resources={"num_cpus": 1, "num_gpus": 1})
    lanes = q.ready_counts()
    assert len(lanes) == 2 and {split_lane(lane)[0] for lane in lanes} == {"echo"}
    [gpu_lane] = [lane for lane in lanes if split_lane(lane)[1]["num_gpus"] == 1]
    [lease] = q.lease("gpu-runner", [gpu_lane], 5, T0)
    assert lease["job_id"] == gpu["id"]
    [other] = q.lease("pull", ["echo"], 5, T0)  # a type name covers all its lanes
    assert other["job_id"] == plain["id"]


def test_status_counts_follow_every_transition_and_match_the_store(q, path):
    jobs = [enqueue(q, type="flaky", payload={"succeed_on": 2}, max_attempts=3) for _ in range(4)]
    enqueue(q, delay=60)
    leases = q.lease("r", None, 4, T0)
    q.complete(leases[0]["token"], None, T0)
    q.fail(leases[1]["token"], "x", T0)
    q.cancel(jobs[2]["id"], T0)
    committed(q)
    q.delete(jobs[0]["id"])
    committed(q)
    expected = {k: v for k, v in q.store.count_by_status().items() if v}
    assert {k: v for k, v in q.counts.items() if v} == expected
    reopened = reopen(q, path)
    assert {k: v for k, v in reopened.counts.items() if v} == expected
