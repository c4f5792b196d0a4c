"""The dashboard's queue controls in a real browser: pause/resume and purge on the queue card, the expired
status, the group column, and "all matching" bulk actions through the filter API (issue 16)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from .conftest import submit

pytestmark = pytest.mark.ray


async def stats(http, queue: str) -> dict:
    async with http.get(f"/v1/queues/{queue}") as r:
        return await r.json()


async def until(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the dashboard's action did not reach the queue"
        await asyncio.sleep(0.1)


async def test_pause_resume_and_purge_from_the_queue_card(page, http):
    q = "ctl-dash"
    async with http.put(f"/v1/queues/{q}") as r:
        assert r.status == 200
    async with http.post(f"/v1/queues/{q}/pause") as r:
        assert r.status == 200
    for i in range(3):
        await submit(http, {"type": "echo", "queue": q, "payload": i, "group": {"key": "tenant-1"}})
    await submit(http, {"type": "echo", "queue": q, "expires_in": 0.2})
    await page.goto("/dashboard")
    card = page.locator(f'section.card[data-queue="{q}"]')
    await card.locator("button.queue-pause", has_text="Resume").wait_for()
    await card.locator(".pill", has_text="expired").wait_for()  # the expired job shows in the depth row
    await card.locator("button.queue-pause").click()
    await until(lambda: _paused(http, q, False))
    await card.locator("button.queue-pause", has_text="Pause").click()
    await until(lambda: _paused(http, q, True))
    await submit(http, {"type": "echo", "queue": q})
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("not-the-name")))
    await card.locator("button.queue-purge").click()
    await page.locator("#toast.bad", has_text="confirm").wait_for()
    assert (await stats(http, q))["counts"]["queued"] >= 1  # refused: nothing changed
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept(q)))
    await card.locator("button.queue-purge").click()
    await until(lambda: _queued(http, q, 0))


async def test_jobs_page_shows_groups_and_cancels_all_matching(page, http):
    q = "ctl-dash-bulk"
    async with http.put(f"/v1/queues/{q}") as r:
        assert r.status == 200
    async with http.post(f"/v1/queues/{q}/pause") as r:
        assert r.status == 200
    async with http.post("/v1/jobs", data=json.dumps([{"type": "echo", "queue": q, "group": {"key": "tenant-9"}}] * 5
                                                     + [{"type": "stamp", "queue": q}] * 2),
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201
    await page.goto(f"/dashboard/jobs?queue={q}&type=echo&status=queued")
    await page.locator("#jobs td.group", has_text="tenant-9").first.wait_for()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.locator('button[data-bulk-filter="cancel"]').click()
    await until(lambda: _count(http, q, "cancelled", 5))
    counts = (await stats(http, q))["counts"]
    assert counts["queued"] == 2 and counts["cancelled"] == 5  # exactly the filtered set
    async with http.post(f"/v1/queues/{q}/resume") as r:
        assert r.status == 200


async def _paused(http, q, value) -> bool:
    return (await stats(http, q))["paused"] is value


async def _queued(http, q, n) -> bool:
    return (await stats(http, q))["counts"]["queued"] == n


async def _count(http, q, status, n) -> bool:
    return (await stats(http, q))["counts"][status] == n
