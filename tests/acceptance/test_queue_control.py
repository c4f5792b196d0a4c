"""Queue control through the HTTP API on the shared cluster: pause, resume, purge, expiry, bulk actions by filter,
dedup, debounce and throttle (issue 16). Each test uses a queue of its own."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

pytestmark = pytest.mark.ray


async def call(session, method, url, headers, body=None):
    data = None if body is None else json.dumps(body)
    async with session.request(method, url, data=data, headers={**headers, "Content-Type": "application/json"}) as r:
        return r.status, await r.json()


async def enqueue(s, api, headers, specs):
    status, jobs = await call(s, "POST", f"{api}/v1/jobs", headers, specs)
    assert status in (200, 201), jobs
    return jobs


async def wait_status(s, api, headers, job_id, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        status, job = await call(s, "GET", f"{api}/v1/jobs/{job_id}", headers)
        assert status == 200, job
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['status']}: {job}"
        await asyncio.sleep(0.05)


async def restart_actor(queue, settings):
    """Kill the queue's actor (Ray restarts it) and wait until the new one answers."""
    import ray

    from actors.facade import queue_actor

    actor = queue_actor(queue, settings)
    before = await actor.ping.remote()
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            after = await queue_actor(queue, settings).ping.remote()
            if after["pid"] != before["pid"]:
                return
        except ray.exceptions.RayActorError:
            pass
        assert time.monotonic() < deadline, "the queue actor did not come back"
        await asyncio.sleep(0.2)


async def test_pause_holds_new_jobs_across_a_restart_while_a_held_lease_runs_to_its_end(api, headers, settings):
    q = "ctl-pause"
    async with aiohttp.ClientSession() as s:
        [running] = await enqueue(s, api, headers, [{"type": "sleep", "queue": q, "payload": {"seconds": 1.5}}])
        await wait_status(s, api, headers, running["id"], {"running"})
        status, state = await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers)
        assert status == 200 and state["paused"] is True
        [held] = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "payload": 1}])
        done = await wait_status(s, api, headers, running["id"], {"succeeded", "failed", "cancelled"})
        assert done["status"] == "succeeded"  # the lease held before the pause ran to its end
        await restart_actor(q, settings)
        status, stats = await call(s, "GET", f"{api}/v1/queues/{q}", headers)
        assert stats["paused"] is True and stats["counts"]["queued"] == 1
        status, job = await call(s, "GET", f"{api}/v1/jobs/{held['id']}", headers)
        assert job["status"] == "queued" and job["attempts"] == 0
        status, state = await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers)
        assert status == 200 and state["paused"] is False
        assert (await wait_status(s, api, headers, held["id"], {"succeeded"}))["result"] == 1


async def test_pause_of_one_type_and_bad_pause_input(api, headers):
    q = "ctl-types"
    async with aiohttp.ClientSession() as s:
        await call(s, "PUT", f"{api}/v1/queues/{q}", headers)
        status, state = await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers, {"types": ["stamp"]})
        assert state == {"queue": q, "paused": False, "paused_types": ["stamp"]}
        held, free = await enqueue(s, api, headers, [{"type": "stamp", "queue": q}, {"type": "echo", "queue": q}])
        await wait_status(s, api, headers, free["id"], {"succeeded"})
        status, job = await call(s, "GET", f"{api}/v1/jobs/{held['id']}", headers)
        assert job["status"] == "queued"
        status, error = await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers, {"types": "stamp"})
        assert status == 422 and error["field"] == "types"
        status, error = await call(s, "POST", f"{api}/v1/queues/no-such-queue/pause", headers)
        assert status == 404
        await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers, {"types": ["stamp"]})
        await wait_status(s, api, headers, held["id"], {"succeeded"})


async def test_purge_needs_its_confirmation_and_removes_only_waiting_jobs(api, headers):
    q = "ctl-purge"
    async with aiohttp.ClientSession() as s:
        [running] = await enqueue(s, api, headers, [{"type": "sleep", "queue": q, "payload": {"seconds": 1}}])
        await wait_status(s, api, headers, running["id"], {"running"})
        await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers)
        waiting = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "payload": i} for i in range(5)]
                                + [{"type": "echo", "queue": q, "delay": 3600}])
        for body in (None, {"confirm": "default"}, {"confirm": q, "types": []}):
            status, error = await call(s, "POST", f"{api}/v1/queues/{q}/purge", headers, body)
            assert status == 422 and error["field"] in ("confirm", "types"), error
        status, stats = await call(s, "GET", f"{api}/v1/queues/{q}", headers)
        assert stats["counts"]["queued"] == 5 and stats["counts"]["scheduled"] == 1  # refused: nothing changed
        status, answer = await call(s, "POST", f"{api}/v1/queues/{q}/purge", headers, {"confirm": q})
        assert status == 200 and answer["purged"] == 6
        for job in waiting:
            status, _ = await call(s, "GET", f"{api}/v1/jobs/{job['id']}", headers)
            assert status == 404
        done = await wait_status(s, api, headers, running["id"], {"succeeded", "failed", "cancelled"})
        assert done["status"] == "succeeded"
        await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers)


async def test_a_job_not_started_in_time_expires_and_a_started_one_never_does(api, headers):
    q = "ctl-expiry"
    async with aiohttp.ClientSession() as s:
        [started] = await enqueue(s, api, headers, [{"type": "sleep", "queue": q, "payload": {"seconds": 6},
                                                     "expires_in": 5}])
        await wait_status(s, api, headers, started["id"], {"running"})
        await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers)
        [late] = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "expires_in": 0.5}])
        expired = await wait_status(s, api, headers, late["id"], {"expired", "succeeded"})
        assert expired["status"] == "expired" and expired["attempts"] == 0
        assert expired["finished_at"] >= expired["expires_at"]
        status, body = await call(s, "GET", f"{api}/v1/jobs/{late['id']}/events", headers)
        assert [e["data"]["status"] for e in body["events"] if e["kind"] == "status"] == ["queued", "expired"]
        done = await wait_status(s, api, headers, started["id"], {"succeeded", "failed", "expired"})
        assert done["status"] == "succeeded"
        status, error = await call(s, "POST", f"{api}/v1/jobs", headers, {"type": "echo", "queue": q,
                                                                          "expires_in": -1})
        assert status == 422 and error["field"] == "expires_in"
        await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers)


async def test_bulk_actions_change_exactly_the_filtered_set_page_by_page(api, headers):
    q = "ctl-bulk"
    async with aiohttp.ClientSession() as s:
        await call(s, "PUT", f"{api}/v1/queues/{q}", headers)
        await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers)
        older = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "payload": i} for i in range(10)])
        newer = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "payload": i} for i in range(15)])
        assert older[-1]["created_at"] < newer[0]["created_at"]
        echoes = older + newer
        stamps = await enqueue(s, api, headers, [{"type": "stamp", "queue": q} for _ in range(5)])
        status, error = await call(s, "POST", f"{api}/v1/jobs/cancel", headers, {"queue": q, "status": "succeeded"})
        assert status == 422 and error["field"] == "status"
        status, error = await call(s, "POST", f"{api}/v1/jobs/cancel", headers, {"queue": q, "limit": 5000})
        assert status == 422 and error["field"] == "limit"
        changed, pages, cursor = 0, 0, None
        while True:
            status, page = await call(s, "POST", f"{api}/v1/jobs/cancel", headers,
                                      {"queue": q, "type": "echo", "status": ["queued"], "limit": 10, "cursor": cursor})
            assert status == 200, page
            changed, pages, cursor = changed + page["changed"], pages + 1, page["next_cursor"]
            if cursor is None:
                break
        assert changed == 25 and pages == 3
        assert await ids(s, api, headers, q, "cancelled") == {j["id"] for j in echoes}
        assert await ids(s, api, headers, q, "queued") == {j["id"] for j in stamps}
        # Retry the jobs created before the newer batch: exactly those come back.
        status, page = await call(s, "POST", f"{api}/v1/jobs/retry", headers,
                                  {"queue": q, "created_before": newer[0]["created_at"]})
        assert status == 200 and page["changed"] == 10, page
        assert await ids(s, api, headers, q, "queued") == {j["id"] for j in older + stamps}
        status, page = await call(s, "POST", f"{api}/v1/jobs/delete", headers, {"queue": q, "status": "cancelled"})
        assert status == 200 and page["changed"] == 15
        assert await ids(s, api, headers, q, "cancelled") == set()
        for job in newer:
            status, _ = await call(s, "GET", f"{api}/v1/jobs/{job['id']}", headers)
            assert status == 404
        await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers)


async def ids(s, api, headers, queue, status) -> set[str]:
    code, listed = await call(s, "GET", f"{api}/v1/jobs?queue={queue}&status={status}&limit=500", headers)
    assert code == 200, listed
    return {j["id"] for j in listed["jobs"]}


async def test_dedup_debounce_and_throttle_through_the_api(api, headers):
    q = "ctl-admission"
    async with aiohttp.ClientSession() as s:
        status, first = await call(s, "POST", f"{api}/v1/jobs", headers,
                                   {"type": "echo", "queue": q, "dedup": {"key": "d", "ttl": 600}})
        await wait_status(s, api, headers, first["id"], {"succeeded"})
        status, again = await call(s, "POST", f"{api}/v1/jobs", headers,
                                   {"type": "echo", "queue": q, "dedup": {"key": "d", "ttl": 600}})
        assert status == 200 and again["id"] == first["id"] and again["created"] is False
        status, error = await call(s, "POST", f"{api}/v1/jobs", headers, {"type": "echo", "queue": q, "delay": 1,
                                                                          "debounce": {"key": "b", "period": 1}})
        assert status == 422 and error["field"] == "debounce"
        burst = [await enqueue(s, api, headers, {"type": "echo", "queue": q, "payload": i,
                                                 "debounce": {"key": "b", "period": 3}}) for i in range(5)]
        last = await wait_status(s, api, headers, burst[-1]["id"], {"succeeded"})
        assert last["result"] == 4
        for job in burst[:-1]:
            status, stored = await call(s, "GET", f"{api}/v1/jobs/{job['id']}", headers)
            assert stored["status"] == "cancelled" and stored["error"]["type"] == "Debounced", stored
        rule = {"key": "t", "limit": 2, "period": 1}
        throttled = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "throttle": rule} for _ in range(6)])
        starts = sorted([(await wait_status(s, api, headers, j["id"], {"succeeded"}))["history"][0]["started_at"]
                         for j in throttled])
        for t in starts:
            assert sum(1 for u in starts if t <= u < t + 1) <= 2, starts


async def test_fair_shares_every_small_tenant_starts_before_the_big_tenants_100th_job(api, headers):
    q = "ctl-fair"
    async with aiohttp.ClientSession() as s:
        await call(s, "PUT", f"{api}/v1/queues/{q}", headers)
        await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers)
        for _ in range(10):
            await enqueue(s, api, headers, [{"type": "echo", "queue": q, "group": {"key": "big"}}] * 1000)
        small = {}
        for i in range(9):
            jobs = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "group": {"key": f"t{i}"}}] * 10)
            small.update({j["id"]: f"t{i}" for j in jobs})
        status, stats = await call(s, "GET", f"{api}/v1/queues/{q}", headers)
        assert stats["counts"]["queued"] == 10_090
        status, page = await call(s, "GET", f"{api}/v1/queues/{q}/events?after=0&limit=1000", headers)
        after = max(e["gseq"] for e in page["events"]) if page["events"] else 0
        while page["events"]:
            status, page = await call(s, "GET", f"{api}/v1/queues/{q}/events?after={after}&limit=1000", headers)
            after = max([after] + [e["gseq"] for e in page["events"]])
        await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers)
        for job_id in small:
            await wait_status(s, api, headers, job_id, {"succeeded"}, timeout=120)
        await call(s, "POST", f"{api}/v1/queues/{q}/pause", headers)
        order = []
        while True:
            status, page = await call(s, "GET", f"{api}/v1/queues/{q}/events?after={after}&limit=1000", headers)
            if not page["events"]:
                break
            after = page["events"][-1]["gseq"]
            order += [e["data"]["job_id"] for e in page["events"]
                      if e["kind"] == "status" and e["data"].get("status") == "running"]
        big_starts = [i for i, job_id in enumerate(order) if job_id not in small]
        firsts = {}
        for i, job_id in enumerate(order):
            firsts.setdefault(small.get(job_id), i)
        assert len(big_starts) >= 100 or len(firsts) == 10, (len(big_starts), firsts)
        hundredth = big_starts[99] if len(big_starts) >= 100 else len(order)
        for tenant in (f"t{i}" for i in range(9)):
            assert firsts[tenant] < hundredth, (tenant, firsts[tenant], hundredth)
        # A bulk cancel by group changes that group's jobs only.
        x = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "group": {"key": "x"}}] * 3)
        y = await enqueue(s, api, headers, [{"type": "echo", "queue": q, "group": {"key": "y"}}] * 2)
        cancelled, cursor = 0, None
        while True:
            status, page = await call(s, "POST", f"{api}/v1/jobs/cancel", headers,
                                      {"queue": q, "group": "x", "status": "queued", "cursor": cursor})
            assert status == 200, page
            cancelled, cursor = cancelled + page["changed"], page["next_cursor"]
            if cursor is None:
                break
        assert cancelled == 3
        for job in x:
            assert (await wait_status(s, api, headers, job["id"], {"cancelled"}))["status"] == "cancelled"
        for job in y:
            status, stored = await call(s, "GET", f"{api}/v1/jobs/{job['id']}", headers)
            assert stored["status"] == "queued"
        status, answer = await call(s, "POST", f"{api}/v1/queues/{q}/purge", headers, {"confirm": q})
        assert status == 200
        await call(s, "POST", f"{api}/v1/queues/{q}/resume", headers)


async def test_schedule_overlap_and_catchup_window_through_the_api(api, headers):
    q = "ctl-sched"
    body = {"name": "every-hour", "cron": "0 * * * *", "job": {"type": "echo"}}
    async with aiohttp.ClientSession() as s:
        for extra, field in (({"overlap": "queue"}, "overlap"), ({"catchup_window": -1}, "catchup_window")):
            status, error = await call(s, "POST", f"{api}/v1/schedules?queue={q}", headers, {**body, **extra})
            assert status == 422 and error["field"] == field, error
        status, schedule = await call(s, "POST", f"{api}/v1/schedules?queue={q}", headers,
                                      {**body, "overlap": "buffer_one", "catchup_window": 300})
        assert status == 201 and schedule["overlap"] == "buffer_one" and schedule["catchup_window"] == 300
        await call(s, "DELETE", f"{api}/v1/schedules/every-hour?queue={q}", headers)


def test_cli_pauses_purges_and_cancels_by_filter(api, settings, monkeypatch, capsys):
    from serve.cli import main
    from serve.client import Client

    monkeypatch.setenv("DOJO_URL", api)
    monkeypatch.setenv("DOJO_API_TOKEN", settings.api_token)
    q = "ctl-cli"
    client = Client(batch=False)
    client._call("PUT", f"/v1/queues/{q}")
    main(["queue", "pause", "--queue", q])
    assert client.stats(q)["paused"] is True
    client.submit_many([{"type": "echo", "queue": q} for _ in range(3)] + [{"type": "stamp", "queue": q}] * 2)
    capsys.readouterr()
    main(["cancel", "--queue", q, "--status", "queued", "--type", "echo"])
    assert "3 jobs changed" in capsys.readouterr().out
    counts = client.stats(q)["counts"]
    assert counts["cancelled"] == 3 and counts["queued"] == 2
    with pytest.raises(SystemExit):
        main(["queue", "purge", "--queue", q])
    assert client.stats(q)["counts"]["queued"] == 2
    main(["queue", "purge", "--queue", q, "--yes"])
    assert "purged 2" in capsys.readouterr().out
    main(["queue", "resume", "--queue", q])
    assert client.stats(q)["paused"] is False
