"""Promise 6, closed by default for real: who may create queues, bounded input, no secrets in jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from actors.jobs import job
from actors.runner import actor_name
from actors.settings import NAMESPACE

pytestmark = pytest.mark.ray
THIS_MODULE = "tests.acceptance.test_security"
#: What no job's process may hold: they mint any token, cookie or object URL.
JOB_SECRETS = ("DOJO_API_TOKEN", "DOJO_WORKER_TOKEN", "DOJO_SECRET")


@job("security_env_probe", max_attempts=1, num_cpus=0.25)
def env_probe(ctx, payload) -> dict:
    """What a job and its child process hold in their environments, and an object URL the job signed."""
    from actors.settings import Settings
    from actors.objects import store_from_settings

    child = subprocess.Popen(["sleep", "30"])
    try:
        # Popen returns once the child's exec has begun: the kernel fills /proc/<pid>/environ a moment
        # later (an empty read under load), so read until it is there.
        deadline = time.monotonic() + 10
        while True:
            with open(f"/proc/{child.pid}/environ", "rb") as fh:
                child_env = fh.read()
            if child_env or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    settings = Settings.from_env()
    store = store_from_settings(settings)
    key = f"security/{ctx.job_id}/probe.txt"
    store.put_bytes(key, b"made by a job")
    child_names = {entry.split(b"=", 1)[0].decode() for entry in child_env.split(b"\0") if entry}
    return {"own": sorted(os.environ), "child": sorted(child_names), "api_token": settings.api_token,
            "url": store.signed_url(key, 600)}


@job("security_writer", max_attempts=1, num_cpus=0.25)
def writer(ctx, payload) -> dict:
    """Writes one object in its own folder and names it in its result."""
    from actors.settings import Settings
    from actors.objects import store_from_settings

    key = f"security/{ctx.job_id}/out.txt"
    store_from_settings(Settings.from_env()).put_bytes(key, b"mine")
    return {"file": key}


def _fresh_queue() -> str:
    return "ghost-" + uuid.uuid4().hex[:12]


def _actor_exists(ray, queue: str) -> bool:
    try:
        ray.get_actor(actor_name(queue), namespace=NAMESPACE)
    except ValueError:
        return False
    return True


# -- queues are created only by the API token's enqueues ------------------------------------------
async def test_reads_of_an_unknown_queue_answer_404_and_create_nothing(api, headers, settings, ray_cluster):
    queue = _fresh_queue()
    job_id = f"j_{'0' * 20}.{queue}"
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/tokens", json={"scope": "channel", "name": "news"}, headers=headers) as r:
            channel = {"Authorization": f"Bearer {(await r.json())['token']}"}
        calls = [
            ("GET", f"/v1/jobs?queue={queue}", headers, None),
            ("GET", f"/v1/queues/{queue}", headers, None),
            ("GET", f"/v1/queues/{queue}/events", headers, None),
            ("GET", f"/v1/channels/news/messages?queue={queue}", headers, None),
            ("POST", f"/v1/channels/news/messages?queue={queue}", headers, {"a": 1}),
            ("GET", f"/v1/schedules?queue={queue}", headers, None),
            ("GET", f"/v1/schedules/nightly?queue={queue}", headers, None),
            ("GET", f"/v1/ratelimits/helix?queue={queue}", headers, None),
            ("PUT", f"/v1/ratelimits/helix?queue={queue}", headers, {"rate": 1}),
            ("POST", f"/v1/queues/{queue}/lease", worker, {"worker": "w"}),
            ("GET", f"/v1/jobs/{job_id}", headers, None),
            ("GET", f"/v1/jobs/{job_id}/events", headers, None),
            ("GET", f"/v1/jobs/{job_id}/logs", headers, None),
            ("GET", f"/v1/jobs/{job_id}/outputs", headers, None),
            ("POST", f"/v1/jobs/{job_id}/cancel", headers, None),
            ("POST", f"/v1/leases/{job_id}:1/heartbeat", worker, None),
            ("GET", f"/dashboard/api/jobs?queue={queue}", headers, None),
            ("GET", f"/dashboard/api/queues?only={queue}", headers, None),
        ]
        for method, path, auth, body in calls:
            async with s.request(method, api + path, headers=auth, json=body) as r:
                answer = await r.json()
                assert r.status == 404, (method, path, r.status, answer)
                assert queue in answer["message"], answer
        for path in (f"/v1/queues/{queue}/events", f"/v1/channels/news?queue={queue}", f"/v1/jobs/{job_id}/events"):
            async with s.ws_connect(api + path, headers=headers) as ws:
                assert json.loads((await ws.receive(timeout=10)).data)["error"] in ("UnknownQueue", "NotFound")
                await ws.receive(timeout=10)
                assert ws.close_code == 4404, path
        async with s.post(f"{api}/v1/jobs", json={"type": "echo", "queue": queue}, headers=worker) as r:
            assert r.status == 403
        # A channel token is bound to its own queue: any other, known or not, is refused alike.
        async with s.get(f"{api}/v1/channels/news/messages?queue={queue}", headers=channel) as r:
            assert r.status == 403
    assert not _actor_exists(ray_cluster, queue)
    assert not (Path(settings.state_dir) / "queues" / f"{queue}.sqlite3").exists()


async def test_the_api_token_creates_a_queue_by_enqueueing_or_explicitly(api, headers, ray_cluster):
    by_enqueue, explicit = _fresh_queue(), _fresh_queue()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/jobs", json={"type": "echo", "queue": by_enqueue}, headers=headers) as r:
            assert r.status == 201, await r.json()
        async with s.put(f"{api}/v1/queues/{explicit}", headers=headers) as r:
            assert r.status == 200, await r.json()
            assert (await r.json())["counts"]["queued"] == 0
        for queue in (by_enqueue, explicit):
            async with s.get(f"{api}/v1/queues/{queue}", headers=headers) as r:
                assert r.status == 200
            assert _actor_exists(ray_cluster, queue)


async def test_max_queues_refuses_one_more_and_existing_queues_survive_their_actor(settings, ray_cluster):
    from actors.exceptions import NotFound
    from actors.exceptions import TooManyQueues
    from actors.facade import DEFAULT_QUEUE, Queues, live_queues, queue_files

    existing = queue_files(settings) | live_queues() | {DEFAULT_QUEUE}
    capped = dataclasses.replace(settings, max_queues=len(existing) + 1)
    allowed, refused = _fresh_queue(), _fresh_queue()
    queues = Queues(capped)
    await queues.create(allowed)
    with pytest.raises(TooManyQueues) as caught:
        await queues.create(refused)
    assert caught.value.status == 409 and "DOJO_MAX_QUEUES" in caught.value.message
    assert not _actor_exists(ray_cluster, refused)
    with pytest.raises(NotFound):
        await queues.stats(refused)

    # The queue's database says it exists: after its actor is gone (a restarted cluster) it is found again.
    await queues.enqueue([{"type": "echo", "queue": allowed}])
    ray_cluster.kill(ray_cluster.get_actor(actor_name(allowed), namespace=NAMESPACE), no_restart=True)
    for _ in range(100):
        if not _actor_exists(ray_cluster, allowed):
            break
        await asyncio.sleep(0.1)
    again = Queues(capped)
    assert sum((await again.stats(allowed))["counts"].values()) == 1
    assert _actor_exists(ray_cluster, allowed)
    assert os.path.exists(Path(settings.state_dir) / "queues" / f"{allowed}.sqlite3")


# -- bounded input ------------------------------------------------------------------------------
async def _a_job(s, api, headers) -> str:
    async with s.post(f"{api}/v1/jobs", json={"type": "echo", "payload": 1}, headers=headers) as r:
        return (await r.json())["id"]


async def test_limit_must_be_positive_everywhere(api, headers):
    async with aiohttp.ClientSession() as s:
        job_id = await _a_job(s, api, headers)
        for path in (f"/v1/jobs/{job_id}/events", "/v1/queues/default/events", "/v1/jobs", f"/v1/jobs/{job_id}/logs",
                     "/dashboard/api/jobs"):
            for bad in (-1, 0):
                async with s.get(f"{api}{path}?limit={bad}", headers=headers) as r:
                    answer = await r.json()
                    assert r.status == 422, (path, bad, r.status, answer)
                    assert "limit" in answer["message"], answer


async def test_deeply_nested_json_is_a_400_not_a_500(api, headers):
    deep = {"type": "echo", "payload": {}}
    node = deep["payload"]
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    as_json = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        for body in (b"[" * 100_000 + b"]" * 100_000, json.dumps(deep).encode()):
            async with s.post(f"{api}/v1/jobs", data=body, headers=as_json) as r:
                answer = await r.json()
                assert r.status == 400, (r.status, answer)
                assert "deeper than" in answer["message"], answer


async def test_a_chunked_body_is_limited_while_it_streams(api, headers):
    from serve.app import MAX_BODY_BYTES

    sent = 0

    async def chunks():
        nonlocal sent
        yield b"["
        block = b" " * 65536
        while sent < 4 * MAX_BODY_BYTES:
            sent += len(block)
            yield block

    as_json = {**headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api}/v1/jobs", data=chunks(), headers=as_json) as r:
            answer = await r.json()
            assert r.status == 413, (r.status, answer)
            assert "over the limit" in answer["message"]
            assert "chunked" in r.request_info.headers.get("Transfer-Encoding", "")


async def test_non_ascii_credentials_are_refused_not_a_500(api, headers, settings):
    odd = "\u00e9t\u00e9"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{api}/v1/jobs", headers={"Authorization": f"Bearer {odd}".encode().decode("latin-1")}) as r:
            assert r.status == 401, await r.text()
        async with s.get(f"{api}/v1/jobs", params={"token": odd}) as r:
            assert r.status == 401, await r.text()
        async with s.get(f"{api}/v1/jobs", params={"token": f"dojo.job.eA.9999999999.{odd}"}) as r:
            assert r.status == 401, await r.text()
        async with s.get(f"{api}/v1/objects/renders/x.mp4", params={"exp": "9999999999", "sig": odd}) as r:
            assert r.status == 401, await r.text()
        async with s.get(f"{api}/dashboard/api/jobs", headers={"Cookie": f"dojo_session=9999999999.{odd}.{odd}"
                                                               .encode().decode("latin-1")}) as r:
            assert r.status == 401, await r.text()
        async with s.post(f"{api}/dashboard/login", data={"token": settings.api_token}, allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.cookies["dojo_session"].value
        async with s.post(f"{api}/dashboard/api/jobs", json={"type": "echo"},
                          headers={"Cookie": f"dojo_session={cookie}",
                                   "X-CSRF-Token": odd.encode().decode("latin-1")}) as r:
            assert r.status == 403, await r.text()


# -- no secrets in job processes ----------------------------------------------------------------
async def test_jobs_and_their_children_hold_no_tokens_or_secret_yet_sign_their_output_urls(api, settings):
    from actors.facade import Queues

    probe_settings = dataclasses.replace(settings, job_modules=(*settings.job_modules, THIS_MODULE))
    queues = Queues(probe_settings)
    [created] = await queues.enqueue([{"type": "security_env_probe", "queue": _fresh_queue()}])
    deadline = time.monotonic() + 120
    while (done := await queues.get(created["id"]))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, done
        await asyncio.sleep(0.1)
    assert done["status"] == "succeeded", done["error"]
    report = done["result"]
    for where in ("own", "child"):
        assert "DOJO_STATE_DIR" in report[where]  # the job's settings did arrive
        assert not set(JOB_SECRETS) & set(report[where]), (where, report[where])
    assert report["api_token"] == ""  # and Settings.from_env() in a job did not fetch them from tokens.json
    async with aiohttp.ClientSession() as s:
        async with s.get(api + report["url"]) as r:
            assert r.status == 200 and await r.read() == b"made by a job"


# -- objects and files ----------------------------------------------------------------------------
async def test_objects_are_served_nosniff_and_sandboxed(api, headers, settings):
    from actors.objects import store_from_settings

    store = store_from_settings(settings)
    key = f"security/{uuid.uuid4().hex}/page.html"
    store.put_bytes(key, b"<script>alert(document.cookie)</script>")
    async with aiohttp.ClientSession() as s:
        async with s.get(api + store.signed_url(key, 600)) as r:
            assert r.status == 200
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            policy = r.headers["Content-Security-Policy"]
            assert "sandbox" in policy and "default-src 'none'" in policy


async def test_the_state_dir_and_queue_databases_are_private(settings, tmp_path):
    import stat

    from actors.facade import Queues
    from actors.settings import Settings
    from actors.storage import LocalStore

    fresh = Settings(state_dir=str(tmp_path / "home" / "dojo")).with_tokens()
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(fresh.state_dir).stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.tokens_path.stat().st_mode) == 0o600
    LocalStore(tmp_path / "objects", secret="s").put_bytes("a/b", b"x")
    assert stat.S_IMODE((tmp_path / "objects").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "objects" / "a" / "b").stat().st_mode) == 0o600

    queue = _fresh_queue()
    await Queues(settings).enqueue([{"type": "echo", "queue": queue}])
    database = Path(settings.state_dir) / "queues" / f"{queue}.sqlite3"
    assert stat.S_IMODE(database.parent.stat().st_mode) & 0o077 == 0
    for path in database.parent.glob(f"{queue}.sqlite3*"):  # with its -wal and -shm
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- least privilege: channel tokens, the worker token, read tokens ---------------------------------
async def _call(s, method, url, auth, body=None):
    async with s.request(method, url, headers=auth, json=body) as r:
        return r.status, await r.json()


async def test_a_channel_token_reads_one_channel_of_one_queue(api, headers):
    queue = _fresh_queue()
    async with aiohttp.ClientSession() as s:
        assert (await _call(s, "PUT", f"{api}/v1/queues/{queue}", headers))[0] == 200
        for q in (queue, "default"):
            assert (await _call(s, "POST", f"{api}/v1/channels/news/messages?queue={q}", headers, {"q": q}))[0] == 201
        status, minted = await _call(s, "POST", f"{api}/v1/tokens", headers,
                                     {"scope": "channel", "name": "news", "queue": queue})
        assert status == 201 and minted["queue"] == queue
        reader = {"Authorization": f"Bearer {minted['token']}"}
        status, backlog = await _call(s, "GET", f"{api}/v1/channels/news/messages?queue={queue}", reader)
        assert status == 200 and [e["data"]["message"] for e in backlog["events"]] == [{"q": queue}]
        for path in ("/v1/channels/news/messages?queue=default", f"/v1/channels/sports/messages?queue={queue}"):
            status, answer = await _call(s, "GET", api + path, reader)
            assert status == 403, (path, answer)
        async with s.ws_connect(f"{api}/v1/channels/news?queue=default", headers=reader) as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["error"] == "Forbidden"


async def test_a_token_in_the_url_opens_only_streams(api, headers, settings):
    async with aiohttp.ClientSession() as s:
        job_id = await _a_job(s, api, headers)
        token = settings.api_token
        async with s.get(f"{api}/v1/jobs?token={token}") as r:
            assert r.status == 401
        async with s.get(f"{api}/v1/jobs/{job_id}/events?token={token}") as r:
            assert r.status == 401
        async with s.get(f"{api}/v1/jobs/{job_id}/events?token={token}",
                         headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        async with s.ws_connect(f"{api}/v1/jobs/{job_id}/events?token={token}") as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["seq"] == 1


async def _running(s, api, headers, job_id) -> dict:
    """The 'running' event of a job's current attempt, as the API token sees it (with its fencing token)."""
    for _ in range(600):
        status, answer = await _call(s, "GET", f"{api}/v1/jobs/{job_id}/events", headers)
        running = [e for e in answer["events"] if e["data"].get("status") == "running"]
        if running:
            return running[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never ran")


async def test_pull_workers_lease_only_external_types(api, settings):
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        status, answer = await _call(s, "POST", f"{api}/v1/queues/default/lease", worker,
                                     {"worker": "w", "types": ["sleep", "outside"]})
        assert status == 403 and "external" in answer["message"] and "sleep" in answer["message"], answer


async def test_the_worker_token_cannot_report_on_a_ray_attempt(api, headers, settings):
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        status, job = await _call(s, "POST", f"{api}/v1/jobs", headers, {"type": "sleep", "payload": {"seconds": 3}})
        running = await _running(s, api, headers, job["id"])
        lease_id = f"{job['id']}:{running['data']['token']}"
        for action in ("heartbeat", "complete"):
            status, answer = await _call(s, "POST", f"{api}/v1/leases/{lease_id}/{action}", worker,
                                         {"result": {"forged": True}})
            assert status == 403 and "Ray runner" in answer["message"], (action, answer)
        for _ in range(100):
            status, got = await _call(s, "GET", f"{api}/v1/jobs/{job['id']}", headers)
            if got["status"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        assert got["result"]["slept"] == 3


async def _two_pull_leases(s, api, headers, worker) -> list[dict]:
    queue = _fresh_queue()
    await _call(s, "POST", f"{api}/v1/jobs", headers, [{"type": "outside", "queue": queue}] * 2)
    status, leased = await _call(s, "POST", f"{api}/v1/queues/{queue}/lease", worker,
                                 {"worker": "w", "types": ["outside"], "n": 2})
    assert status == 200 and len(leased["leases"]) == 2, leased
    return leased["leases"]


async def test_a_heartbeat_must_name_the_job_of_its_lease(api, headers, settings):
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        first, second = await _two_pull_leases(s, api, headers, worker)
        status, answer = await _call(s, "POST", f"{api}/v1/leases/{first['job_id']}:{second['token']}/heartbeat",
                                     worker)
        assert status == 409 and answer["error"] == "StaleLease", answer
        status, answer = await _call(s, "POST", f"{api}/v1/leases/{second['lease_id']}/heartbeat", worker)
        assert status == 200 and answer == {"status": "ok"}


async def test_a_result_may_name_only_the_jobs_own_objects(api, headers, settings):
    worker = {"Authorization": f"Bearer {settings.worker_token}"}
    async with aiohttp.ClientSession() as s:
        first, second = await _two_pull_leases(s, api, headers, worker)
        stolen = f"renders/{second['job_id']}/video.mp4"  # another job's object, which would be signed for this one
        status, answer = await _call(s, "POST", f"{api}/v1/leases/{first['lease_id']}/complete", worker,
                                     {"result": {"video": stolen}})
        assert status == 403 and stolen in answer["message"], answer
        own = f"renders/{first['job_id']}/video.mp4"
        status, done = await _call(s, "POST", f"{api}/v1/leases/{first['lease_id']}/complete", worker,
                                   {"result": {"video": own}})
        assert status == 200 and done["status"] == "succeeded" and done["result"] == {"video": own}


async def test_fencing_tokens_are_not_shown_to_a_read_token(api, headers):
    async with aiohttp.ClientSession() as s:
        status, job = await _call(s, "POST", f"{api}/v1/jobs", headers, {"type": "sleep", "payload": {"seconds": 0.2}})
        running = await _running(s, api, headers, job["id"])
        assert "token" in running["data"]  # the API token sees it
        reader = {"Authorization": f"Bearer {job['read_token']}"}
        for _ in range(100):
            status, got = await _call(s, "GET", f"{api}/v1/jobs/{job['id']}", reader)
            if got["status"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        assert got["history"] and all("token" not in h for h in got["history"]), got["history"]
        status, answer = await _call(s, "GET", f"{api}/v1/jobs/{job['id']}/events", reader)
        assert status == 200 and all("token" not in e["data"] for e in answer["events"]), answer
        async with s.ws_connect(f"{api}/v1/jobs/{job['id']}/events", headers=reader) as ws:
            seen = [json.loads((await ws.receive(timeout=10)).data) for _ in answer["events"]]
        assert [e["seq"] for e in seen] == [e["seq"] for e in answer["events"]]
        assert all("token" not in e["data"] for e in seen), seen


# -- a job's objects go with it -------------------------------------------------------------------
async def test_deleting_a_job_deletes_its_objects_and_its_urls_stop_working(api, headers, settings):
    from actors.facade import Queues
    from actors.objects import store_from_settings

    queues = Queues(dataclasses.replace(settings, job_modules=(*settings.job_modules, THIS_MODULE)))
    [created] = await queues.enqueue([{"type": "security_writer", "queue": _fresh_queue()}])
    deadline = time.monotonic() + 120
    while (done := await queues.get(created["id"]))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, done
        await asyncio.sleep(0.1)
    assert done["status"] == "succeeded", done["error"]
    key = done["result"]["file"]
    store = store_from_settings(settings)
    async with aiohttp.ClientSession() as s:
        status, outputs = await _call(s, "GET", f"{api}/v1/jobs/{created['id']}/outputs", headers)
        url = outputs["urls"]["file"]
        url = api + url if url.startswith("/") else url
        async with s.get(url) as r:
            assert r.status == 200 and await r.read() == b"mine"
        assert (await _call(s, "DELETE", f"{api}/v1/jobs/{created['id']}", headers))[0] == 200
        assert not store.exists(key)
        async with s.get(url) as r:
            assert r.status == 404


async def test_a_token_in_the_url_is_not_logged(api, headers, ray_cluster):
    from pathlib import Path as _Path

    async with aiohttp.ClientSession() as s:
        job = await _call(s, "POST", f"{api}/v1/jobs", headers, {"type": "echo", "payload": 1})
        token = job[1]["read_token"]
        async with s.ws_connect(f"{api}/v1/jobs/{job[1]['id']}/events?token={token}") as ws:
            assert json.loads((await ws.receive(timeout=10)).data)["seq"] == 1
        async with s.get(f"{api}/v1/jobs/{job[1]['id']}/events?token={token}") as r:
            assert r.status == 401  # ignored outside a stream, and not logged either
    await asyncio.sleep(1)  # the access log is written as the request ends
    logs = _Path(ray_cluster._private.worker._global_node.get_session_dir_path()) / "logs"
    written = [p for p in logs.rglob("*") if p.is_file() and p.stat().st_size]
    assert any("serve" in str(p) for p in written)
    assert not [p for p in written if token.encode() in p.read_bytes()]
