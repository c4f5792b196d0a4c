"""The queue rules' components on their own (no queue around them): the event log and its subscriptions,
schedules, and a flow's run report. Each runs on the store's in-memory twin."""

from __future__ import annotations

import asyncio

import pytest

from actors import flows
from actors.events import EventLog, Subscriptions
from actors.exceptions import InvalidInput, NotFound
from actors.schedules import Schedules
from actors.store import MemoryDisk, MemoryStore

from .conftest import T0

HOUR0 = 1_700_002_800.0  # an exact hour (UTC)


def test_the_event_log_numbers_each_stream_and_the_whole_queue_across_a_restart():
    disk = MemoryDisk()
    log = EventLog(MemoryStore(disk))
    log.begin("job:a")
    first = [log.emit(stream, "k", {}, T0) for stream in ("job:a", "job:b", "job:a")]
    assert [(e["gseq"], e["seq"]) for e in first] == [(1, 1), (2, 1), (3, 2)]
    assert log.take() == first and log.take() == []
    log.store.commit()
    again = EventLog(MemoryStore(disk))  # a restart: numbers go on from the store
    assert (again.emit("job:a", "k", {}, T0)["gseq"], again.emit("job:a", "k", {}, T0)["seq"]) == (4, 4)


def test_subscribers_get_every_committed_event_in_order_from_memory_or_the_store():
    async def scenario():
        stored = [{"gseq": g, "at": T0} for g in range(1, 6)]  # older than what memory keeps

        async def read(after, limit):
            return [e for e in stored if e["gseq"] > after][:limit]

        subs = Subscriptions(last_gseq=5, recent=3)
        follower = subs.follow(0, read)
        assert [e["gseq"] for e in await anext(follower)] == [1, 2, 3, 4, 5]
        waiting = asyncio.ensure_future(anext(follower))
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing new: it waits
        subs.publish([{"gseq": 6, "at": T0}, {"gseq": 7, "at": T0}])
        assert [e["gseq"] for e in await waiting] == [6, 7]
        late = subs.follow(6, read)  # within the recent events: served from memory
        assert [e["gseq"] for e in await anext(late)] == [7] and subs.last_gseq == 7

    asyncio.run(scenario())


def test_schedules_fire_once_per_tick_honour_overlap_and_keep_their_errors():
    disk = MemoryDisk()
    schedules = Schedules(MemoryStore(disk), "default")
    made, unfinished = [], set()

    def enqueue(spec, now):
        if spec["type"] == "broken":
            raise InvalidInput("unknown job type 'broken'")
        made.append({"id": f"j{len(made)}", **spec})
        unfinished.add(made[-1]["id"])
        return made[-1]

    def refuse(job):
        raise InvalidInput("unknown job type 'x'")

    with pytest.raises(InvalidInput):
        schedules.put({"name": "h", "cron": "0 * * * *", "job": {"type": "x"}}, HOUR0, check_job=refuse)
    assert schedules.all == {} and not schedules.store.dirty  # a refused schedule changes nothing
    schedules.put({"name": "h", "cron": "0 * * * *", "job": {"type": "echo"}, "overlap": "skip"}, HOUR0 - 1,
                  check_job=lambda job: None)
    assert [j["unique_key"] for j in schedules.fire_due(HOUR0, enqueue, unfinished.__contains__)] == [
        f"schedule:h:{int(HOUR0)}"]
    assert schedules.fire_due(HOUR0 + 1, enqueue, unfinished.__contains__) == []  # the tick fired once
    assert schedules.fire_due(HOUR0 + 3600, enqueue, unfinished.__contains__) == []  # overlap skip: j0 runs on
    unfinished.clear()
    assert len(schedules.fire_due(HOUR0 + 7200, enqueue, unfinished.__contains__)) == 1
    schedules.put({"name": "b", "cron": "0 * * * *", "job": {"type": "broken"}}, HOUR0, check_job=lambda job: None)
    assert schedules.run_now("b", HOUR0, enqueue) is None and schedules.get("b")["last_error"]
    schedules.store.commit()
    again = Schedules(MemoryStore(disk), "default")
    assert again.get("h")["fired"] == 2 and again.get("h")["next_run"] == HOUR0 + 3 * 3600
    again.remove("h")
    with pytest.raises(NotFound):
        again.get("h")


def test_a_flow_report_counts_statuses_groups_errors_and_sums_results():
    children = [{"status": "succeeded", "result": {"clips": 3, "ok": True}},
                {"status": "succeeded", "result": {"clips": 4}},
                {"status": "failed", "error": {"message": "429 from Helix"}},
                {"status": "failed", "error": {"message": "429 from Helix"}},
                {"status": "running", "unique_key": "k"},
                {"status": "cancelled", "unique_key": "c"}]
    report = flows.recount(children)
    assert report == {"total": 6, "final": 5, "counts": {"succeeded": 2, "failed": 2, "cancelled": 1},
                      "errors": {"429 from Helix": 2}, "sums": {"clips": 7}}
    assert flows.progress_of(report)["fraction"] == 5 / 6
    assert list(flows.finished_by_key(children)) == ["c"]
    many = flows.new_report()
    for n in range(flows.MAX_ERRORS + 10):
        flows.count_child(many, {"error": {"message": f"e{n}"}}, "failed")
    assert len(many["errors"]) == flows.MAX_ERRORS and many["counts"]["failed"] == flows.MAX_ERRORS + 10
