"""serve.coalesce: concurrent single items share one call; a refused item fails only its caller."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.exceptions import InvalidInput
from actors.queue import JobQueue
from actors.store import Store
from serve.coalesce import Coalescer

from .jobtypes import TYPES


class Recorder:
    """A ``send`` that records each call and answers item -> {"item": item}; refuses items named "bad"."""

    def __init__(self, pause: float = 0.0):
        self.calls: list[list] = []
        self.pause = pause

    async def __call__(self, key, items):
        self.calls.append(list(items))
        await asyncio.sleep(self.pause)
        for index, item in enumerate(items):
            if item == "bad":
                raise InvalidInput("job is bad", index=index) if len(items) > 1 else InvalidInput("job is bad")
        return [{"key": key, "item": item} for item in items]


def refused(exc):
    return exc.context.get("index", -1) if isinstance(exc, InvalidInput) else None


async def test_concurrent_callers_share_one_call_and_each_gets_its_own_result():
    send = Recorder()
    coalescer = Coalescer(send, refused)
    results = await asyncio.gather(*(coalescer.submit("q", i) for i in range(50)))
    assert results == [{"key": "q", "item": i} for i in range(50)]
    assert send.calls == [list(range(50))]


async def test_a_lone_caller_is_sent_at_once_and_keys_never_mix():
    send = Recorder()
    coalescer = Coalescer(send, refused, linger=10.0)  # a linger would show as a 10 s wait
    assert await asyncio.wait_for(coalescer.submit("a", 1), 1) == {"key": "a", "item": 1}
    results = await asyncio.wait_for(asyncio.gather(coalescer.submit("a", 2), coalescer.submit("b", 3)), 1)
    assert results == [{"key": "a", "item": 2}, {"key": "b", "item": 3}]
    assert sorted(send.calls) == [[1], [2], [3]]


async def test_a_refused_item_fails_only_its_own_caller():
    send = Recorder()
    coalescer = Coalescer(send, refused)
    items = [0, 1, "bad", 3, 4]
    results = await asyncio.gather(*(coalescer.submit("q", i) for i in items), return_exceptions=True)
    assert [r["item"] for r in results if isinstance(r, dict)] == [0, 1, 3, 4]
    [error] = [r for r in results if isinstance(r, Exception)]
    assert isinstance(error, InvalidInput) and error.message == "job is bad" and "index" not in error.context
    assert send.calls[0] == items and sorted(map(str, send.calls[1:])) == ["['bad']", "[0, 1, 3, 4]"]


async def test_an_error_of_the_whole_call_reaches_every_caller_of_that_call():
    async def down(key, items):
        raise ConnectionError("actor gone")

    coalescer = Coalescer(down, refused)
    results = await asyncio.gather(*(coalescer.submit("q", i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_busy_keys_batch_up_to_max_batch_with_bounded_calls_in_flight():
    send = Recorder(pause=0.01)
    coalescer = Coalescer(send, refused, max_batch=10, max_inflight=2)
    results = await asyncio.gather(*(coalescer.submit("q", i) for i in range(95)))
    assert [r["item"] for r in results] == list(range(95))
    assert all(len(call) <= 10 for call in send.calls) and sum(map(len, send.calls)) == 95
    assert len(send.calls) == 10


async def test_a_caller_that_leaves_does_not_cancel_the_others():
    send = Recorder(pause=0.05)
    coalescer = Coalescer(send, refused)
    leaver = asyncio.ensure_future(coalescer.submit("q", "x"))
    stayer = asyncio.ensure_future(coalescer.submit("q", "y"))
    await asyncio.sleep(0.01)
    leaver.cancel()
    assert await stayer == {"key": "q", "item": "y"}
    assert send.calls == [["x", "y"]]


async def test_with_the_real_queue_rules_a_bad_spec_fails_alone_and_the_rest_commit(tmp_path):
    queue = JobQueue("default", Store(tmp_path / "q.sqlite3"), types=TYPES)

    async def enqueue(key, specs):
        pairs = queue.enqueue_many(specs, 1.0)
        return [job for job, _ in pairs]

    def refused_by_queue(exc):
        return exc.context.get("index", -1) if isinstance(exc, InvalidInput) else None

    coalescer = Coalescer(enqueue, refused_by_queue)
    specs = [{"type": "noop"}, {"type": "noop", "priority": "high"}, {"type": "noop", "payload": {"n": 2}}]
    results = await asyncio.gather(*(coalescer.submit("default", s) for s in specs), return_exceptions=True)
    assert isinstance(results[1], InvalidInput) and "priority" in results[1].message
    assert not results[1].message.startswith("job 1")  # the error a lone request gets
    assert [r["payload"] for r in (results[0], results[2])] == [None, {"n": 2}]
    assert len({r["id"] for r in (results[0], results[2])}) == 2 and len(queue.jobs) == 2


@pytest.mark.parametrize("bad", [dict(linger=-1), dict(max_batch=0), dict(max_inflight=0)])
def test_settings_are_checked(bad):
    with pytest.raises(ValueError, match="expected"):
        Coalescer(Recorder(), **bad)


def test_threads_share_sends_and_a_refused_item_fails_alone():
    import threading

    from serve.coalesce import ThreadCoalescer

    calls: list[list] = []
    gate = threading.Event()

    def send(key, items):
        calls.append(list(items))
        gate.wait(5)  # the first send holds until every thread has submitted
        for index, item in enumerate(items):
            if item == "bad":
                raise InvalidInput("job is bad", index=index) if len(items) > 1 else InvalidInput("job is bad")
        return [{"item": item} for item in items]

    coalescer = ThreadCoalescer(send, refused)
    results: dict = {}

    def worker(item):
        try:
            results[item] = coalescer.submit("q", item)
        except InvalidInput as exc:
            results[item] = exc

    threads = [threading.Thread(target=worker, args=(item,)) for item in [0, 1, "bad", 3, 4, 5]]
    threads[0].start()
    while not calls:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while len(coalescer._pending.get("q", ())) < 5:  # the first one's send took it out already
        time.sleep(0.001)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert {k: v["item"] for k, v in results.items() if isinstance(v, dict)} == {0: 0, 1: 1, 3: 3, 4: 4, 5: 5}
    assert isinstance(results["bad"], InvalidInput) and results["bad"].message == "job is bad"
    assert calls[0] == [0] and calls[1] == [1, "bad", 3, 4, 5]  # the five that waited went together
    assert coalescer.submit("q", 9) == {"item": 9}  # a lone caller sends at once
