"""The dashboard end to end: a real headless Chromium against the Serve app on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from .conftest import get_job, log_in, shot, submit

pytestmark = [pytest.mark.ray, pytest.mark.slow]


async def wait_job(http, job_id, statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        job = await get_job(http, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job['status']}"
        await asyncio.sleep(0.1)


async def test_unauthenticated_visit_sees_only_the_login(anonymous, api):
    for path in ("/dashboard", "/dashboard/jobs?status=failed", "/dashboard/cluster"):
        response = await anonymous.goto(path)
        assert await anonymous.locator("form#login").count() == 1
        assert await anonymous.locator("header.top, #main, script").count() == 0
        assert "dojo_session" not in str(await anonymous.context.cookies())
    assert response.status == 401
    await shot(anonymous, "login")
    for path in ("/dashboard/static/app.js", "/dashboard/static/style.css", "/dashboard/api/jobs",
                 "/dashboard/api/queues", "/dashboard/api/cluster"):
        answer = await anonymous.request.get(path)
        assert answer.status == 401, path
    refused = await anonymous.request.post("/dashboard/api/bulk", data={"action": "cancel", "ids": []})
    assert refused.status == 401


async def test_a_wrong_token_is_refused(anonymous):
    await log_in(anonymous, token="not-the-token")
    assert await anonymous.locator("form#login .error").count() == 1
    assert await anonymous.locator("header.top").count() == 0
    assert not [c for c in await anonymous.context.cookies() if c["name"] == "dojo_session"]


async def test_the_session_cookie_is_httponly_and_strict(page):
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "dojo_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert await page.evaluate("document.cookie") == ""


async def test_a_post_without_the_csrf_token_is_refused(page, http):
    job = await submit(http, {"type": "sleep", "payload": {"seconds": 60}})
    without = await page.evaluate("""async (id) => {
        const r = await fetch('/dashboard/api/jobs/' + id + '/cancel', {method: 'POST'});
        return [r.status, await r.json()];
    }""", job["id"])
    assert without[0] == 403 and "CSRF" in without[1]["message"]
    forged = await page.evaluate("""async (id) => (await fetch('/dashboard/api/jobs/' + id + '/cancel',
        {method: 'POST', headers: {'X-CSRF-Token': 'forged'}})).status""", job["id"])
    assert forged == 403
    assert (await get_job(http, job["id"]))["status"] in ("queued", "running")
    with_token = await page.evaluate("""async (id) => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        return (await fetch('/dashboard/api/jobs/' + id + '/cancel', {method: 'POST', headers: {'X-CSRF-Token': csrf}})).status;
    }""", job["id"])
    assert with_token == 200
    assert (await get_job(http, job["id"]))["status"] == "cancelled"
    # A login posted from another site is refused too.
    cross = await page.request.post("/dashboard/login", form={"token": "test-api-token"},
                                    headers={"Origin": "http://evil.example"})
    assert cross.status == 403


async def test_progress_bar_moves_live_to_done(page, http):
    job = await submit(http, {"type": "countdown", "payload": {"steps": 8, "interval": 0.3}})
    await page.goto(f"/dashboard/jobs/{job['id']}")
    await page.evaluate("window.__sameDocument = true")
    bar = "#progress [role=progressbar]"
    await page.wait_for_function(f"""() => {{ const b = document.querySelector('{bar}');
        return b && +b.getAttribute('aria-valuenow') > 0 && +b.getAttribute('aria-valuenow') < 100; }}""",
                                 timeout=30_000)
    first = int(await page.get_attribute(bar, "aria-valuenow"))
    await page.wait_for_function(f"() => +document.querySelector('{bar}').getAttribute('aria-valuenow') > {first}",
                                 timeout=30_000)
    await shot(page, "job-running")
    await page.wait_for_selector("#status [data-status=succeeded]", timeout=30_000)
    await page.wait_for_function(f"() => document.querySelector('{bar}').getAttribute('aria-valuenow') === '100'")
    assert await page.evaluate("window.__sameDocument") is True  # no reload happened
    assert await page.locator("#timeline li[data-kind=progress]").count() >= 2
    await page.wait_for_selector("#result:has-text('steps')")
    await shot(page, "job-done")


async def test_filter_the_table(page, http):
    tag = uuid.uuid4().hex[:10]
    echoes = [await submit(http, {"type": "echo", "payload": {"tag": tag, "n": i}}) for i in range(3)]
    other = await submit(http, {"type": "flaky", "payload": {"permanent": True, "tag": tag}})
    for job in (*echoes, other):
        await wait_job(http, job["id"], ("succeeded", "failed"))
    await page.goto("/dashboard/jobs")
    await page.wait_for_selector("#jobs tbody tr[data-id]")
    await page.fill("#filters input[name=q]", tag)
    await page.fill("#filters input[name=type]", "echo")
    await page.click("#filters button[type=submit]")
    await page.wait_for_url(f"**/dashboard/jobs?*q={tag}*")
    assert "type=echo" in page.url
    await page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr[data-id]').length === 3")
    ids = await page.eval_on_selector_all("#jobs tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert sorted(ids) == sorted(j["id"] for j in echoes)
    await shot(page, "jobs-filtered")
    # The filter is a link: opening it fresh gives the same rows; a status filter narrows it further.
    await page.goto(f"/dashboard/jobs?q={tag}&status=failed")
    await page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr[data-id]').length === 1")
    assert await page.get_attribute("#jobs tbody tr[data-id]", "data-id") == other["id"]
    assert await page.input_value("#filters input[name=q]") == tag
    await page.goto(f"/dashboard/jobs?q={tag}&order=oldest")
    await page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr[data-id]').length === 4")
    ids = await page.eval_on_selector_all("#jobs tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert ids == [j["id"] for j in (*echoes, other)]


async def test_retry_a_failed_job_from_the_page(page, http):
    job = await submit(http, {"type": "flaky", "payload": {"succeed_on": 3}, "max_attempts": 2})
    await wait_job(http, job["id"], ("failed",))
    await page.goto(f"/dashboard/jobs/{job['id']}")
    await page.wait_for_selector("#status [data-status=failed]")
    await page.wait_for_selector("#attempts details summary:has-text('attempt 2 fails on purpose')")
    await shot(page, "job-failed")
    await page.click("#retry")
    await page.wait_for_selector("#status [data-status=succeeded]", timeout=30_000)
    done = await get_job(http, job["id"])
    assert done["status"] == "succeeded" and done["result"] == {"attempt": 3}


async def test_bulk_cancel(page, http):
    tag = uuid.uuid4().hex[:10]
    jobs = [await submit(http, {"type": "sleep", "payload": {"seconds": 60, "tag": tag}}) for _ in range(3)]
    await page.goto(f"/dashboard/jobs?type=sleep&q={tag}")
    await page.wait_for_function("() => document.querySelectorAll('#jobs tbody tr[data-id]').length === 3")
    for box in await page.query_selector_all("#jobs tbody input.pick"):
        await box.check()
    await page.click("[data-bulk=cancel]")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#jobs tbody tr[data-id]')].every(r => r.dataset.status === 'cancelled')",
        timeout=30_000)
    for job in jobs:
        assert (await get_job(http, job["id"]))["status"] == "cancelled"


async def test_new_jobs_appear_live(page, http):
    tag = uuid.uuid4().hex[:10]
    await page.goto(f"/dashboard/jobs?q={tag}")
    await page.wait_for_selector("#jobs tbody td.muted")
    await page.evaluate("window.__sameDocument = true")
    job = await submit(http, {"type": "echo", "payload": {"tag": tag}})
    await page.wait_for_selector(f"#jobs tbody tr[data-id='{job['id']}']", timeout=30_000)
    assert await page.evaluate("window.__sameDocument") is True


async def test_overview_cluster_and_schedules_pages(page, http):
    await submit(http, {"type": "echo", "payload": {"overview": True}})
    await page.goto("/dashboard")
    await page.wait_for_selector(".card[data-queue=default] svg.chart")
    assert "p95 run time" in await page.inner_text(".card[data-queue=default]")
    await shot(page, "overview")
    await page.click("header nav a[data-page=cluster]")
    await page.wait_for_selector("#nodes tbody tr[data-node]")
    assert "head" in await page.inner_text("#nodes")
    await shot(page, "cluster")
    await page.goto("/dashboard/schedules")
    await page.wait_for_selector("#main h1:has-text('Schedules') ~ div > *")
    await shot(page, "schedules")


async def test_log_out(page):
    await page.click(".logout button")
    await page.wait_for_selector("form#login")
    response = await page.goto("/dashboard/jobs")
    assert response.status == 401


async def test_a_render_plays_with_its_poster_captions_and_chapters(page, http):
    import aiohttp

    from pipelines.render.sample import SAMPLE

    form = aiohttp.FormData()
    form.add_field("deck", SAMPLE.encode(), filename="sample.md")
    form.add_field("resolution", "640x360")
    async with http.post("/v1/renders", data=form) as response:
        job = await response.json()
        assert response.status == 202, job
    done = await wait_job(http, job["id"], ("succeeded", "failed", "cancelled"), timeout=240)
    assert done["status"] == "succeeded", done
    await page.goto(f"/dashboard/jobs/{job['id']}")
    video = page.locator("video#player")
    await video.wait_for()
    await page.evaluate("window.firstPlayer = document.querySelector('video#player')")
    assert "thumbnail.jpg" in await video.get_attribute("poster")
    captions = page.locator("video#player track[kind=captions]")
    assert await captions.get_attribute("srclang") == "ja"
    assert "subtitles.vtt" in await captions.get_attribute("src")
    await page.wait_for_function("() => document.querySelectorAll('#chapters li button').length === 3")
    chapters = page.locator("#chapters li button")
    assert "しくみ" in await chapters.nth(1).inner_text()
    # The job's replayed history fills the timeline but does not rebuild the page: the player stays the one
    # first shown (a rebuilt one starts again at 0 under the viewer, and a click could go to a detached one).
    await page.wait_for_timeout(1000)  # well past the refresh a replayed status event would schedule
    assert await page.evaluate("document.querySelector('video#player') === window.firstPlayer")
    await chapters.nth(1).click()
    at = await page.evaluate("document.querySelector('video#player').currentTime")
    assert at == pytest.approx(done["result"]["duration_s"] / 3, abs=2.0)
    await shot(page, "render-player")


async def test_a_job_page_shows_its_callback_deliveries_and_what_a_sleeping_job_waits_for(page, http):
    from tests.unit.test_callbacks import Receiver

    async with Receiver() as receiver:
        job = await submit(http, {"type": "echo", "payload": {"x": 1}, "callback": {"url": receiver.url}})
        await wait_job(http, job["id"], {"succeeded"})
        await page.goto(f"/dashboard/jobs/{job['id']}")
        await page.wait_for_selector("#deliveries [data-status=delivered]", timeout=30_000)
    assert "HTTP 200" in await page.inner_text("#deliveries")
    asleep = await submit(http, {"type": "durable_nap", "payload": {"seconds": 3600}})
    await wait_job(http, asleep["id"], {"sleeping"})
    await page.goto(f"/dashboard/jobs/{asleep['id']}")
    await page.wait_for_selector("#status [data-status=sleeping]", timeout=30_000)
    assert "until" in await page.inner_text("#wake")
    async with http.post(f"/v1/jobs/{asleep['id']}/cancel") as r:
        assert r.status == 200
