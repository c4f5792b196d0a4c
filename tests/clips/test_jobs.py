"""The job types, run with a local context (no Ray, no queue)."""

from __future__ import annotations

import asyncio
import csv

import pytest

from actors.exceptions import InvalidInput
from actors.jobs import JobContext, LocalReporter, get_type
from pipelines.clips import jobs
from pipelines.clips.db import ClipDB
from pipelines.clips.exceptions import ClipsConfigError, HelixAuthError, StreamerSourceError
from pipelines.clips.fake_helix import DEFAULT_CLIENT_ID, DEFAULT_TOKEN


class CountingReporter(LocalReporter):
    def __init__(self):
        super().__init__()
        self.enqueue_calls = 0

    def enqueue(self, specs):
        self.enqueue_calls += 1
        return super().enqueue(specs)


def context(job_id="j_parent") -> JobContext:
    return JobContext(job_id=job_id, type="test", queue="default", attempt=1, max_attempts=1,
                      reporter=CountingReporter())


@pytest.fixture
def env(monkeypatch, tmp_path, fake):
    monkeypatch.setenv("DOJO_HELIX_URL", fake.helix_url)
    monkeypatch.setenv("DOJO_HELIX_CLIENT_ID", DEFAULT_CLIENT_ID)
    monkeypatch.setenv("DOJO_HELIX_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("DOJO_CLIPS_DB", str(tmp_path / "clips.sqlite3"))
    monkeypatch.setenv("DOJO_HELIX_RATE", "none")
    monkeypatch.setenv("DOJO_HELIX_LIMITER", "local")  # no queue here, even when the session started Ray
    return tmp_path


@pytest.fixture
def streamer_csv(env, streamers):
    path = env / "streamers.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["broadcaster_id", "login"])
        writer.writeheader()
        writer.writerows(streamers(12))
    return path


def test_types_are_registered_with_a_run_report():
    assert get_type("clips.crawl").on_children_done is jobs.summarize_children
    assert get_type("clips.streamer").perform is jobs.streamer


async def test_parent_enqueues_one_child_per_streamer_in_one_call(env, streamer_csv):
    ctx = context()
    payload = {"source": str(streamer_csv), "started_at": "2024-01-01T00:00:00Z",
               "ended_at": "2024-01-02T00:00:00Z", "first": 20}
    jobs.validate_crawl(payload)
    result = await asyncio.to_thread(jobs.crawl, ctx, payload)
    reporter = ctx._reporter
    assert reporter.enqueue_calls == 1 and len(reporter.children) == 12 == result["streamers"]
    spec = reporter.children[0]
    assert spec == {"type": "clips.streamer", "unique_key": "clips.streamer:j_parent:100001", "payload": {
        "broadcaster_id": "100001", "login": "streamer100001", "started_at": "2024-01-01T00:00:00Z",
        "ended_at": "2024-01-02T00:00:00Z", "window_hours": 24.0, "first": 20}}
    assert len({c["unique_key"] for c in reporter.children}) == 12
    assert len(ClipDB(env / "clips.sqlite3").streamers()) == 12  # the file was loaded into the table
    assert reporter.events[0]["stage"] == "enqueue"


async def test_children_crawl_and_the_report_adds_them_up(env, streamer_csv, fake):
    parent = context()
    await asyncio.to_thread(jobs.crawl, parent, {"source": str(streamer_csv),
                            "started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z"})
    outcomes = []
    for spec in parent._reporter.children[:4]:
        jobs.validate_streamer(spec["payload"])
        result = await asyncio.to_thread(jobs.streamer, context("j_child"), spec["payload"])
        outcomes.append({"status": "succeeded", "result": result})
    # a duplicate delivery of the first child changes nothing
    again = await asyncio.to_thread(jobs.streamer, context("j_child"), parent._reporter.children[0]["payload"])
    assert (again["new"], again["unchanged"]) == (0, 30)
    outcomes.append({"status": "failed", "error": {"message": "Helix kept failing"}})
    report = jobs.summarize_children(parent, {}, outcomes)
    assert report["new"] == 120 and report["requests"] == 4
    assert report["statuses"] == {"succeeded": 4, "failed": 1}
    assert report["errors"] == {"Helix kept failing": 1}
    assert ClipDB(env / "clips.sqlite3").count() == 120


async def test_the_child_also_runs_inside_a_running_loop(env, fake):
    # perform is synchronous; called from a coroutine it still works (it uses its own loop in a thread).
    payload = {"broadcaster_id": "100001", "started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z"}
    result = await asyncio.to_thread(jobs.streamer, context(), payload)
    assert result["new"] == 30


async def test_clear_errors(env, monkeypatch, streamer_csv):
    with pytest.raises(StreamerSourceError, match="unknown streamer source"):
        await asyncio.to_thread(jobs.crawl, context(), {"source": "streamers.txt"})
    with pytest.raises(StreamerSourceError, match="is empty"):
        await asyncio.to_thread(jobs.crawl, context(), {"source": "db"})
    with pytest.raises(InvalidInput, match="started_at must be an RFC3339"):
        jobs.validate_crawl({"started_at": "yesterday"})
    with pytest.raises(InvalidInput, match="unknown clips.crawl payload keys"):
        jobs.validate_crawl({"sauce": "db"})
    with pytest.raises(InvalidInput, match="first must be an integer within 1..100"):
        jobs.validate_streamer({"broadcaster_id": "1", "started_at": "2024-01-01T00:00:00Z",
                                "ended_at": "2024-01-02T00:00:00Z", "first": 500})
    with pytest.raises(InvalidInput, match="broadcaster_id must be a numeric"):
        jobs.validate_streamer({"broadcaster_id": 5})
    payload = {"broadcaster_id": "100001", "started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z"}
    monkeypatch.setenv("DOJO_HELIX_TOKEN", "wrong")
    with pytest.raises(HelixAuthError, match="DOJO_HELIX_TOKEN"):
        await asyncio.to_thread(jobs.streamer, context(), payload)
    monkeypatch.setenv("DOJO_HELIX_TOKEN", "")
    with pytest.raises(ClipsConfigError, match="DOJO_HELIX_TOKEN must be set"):
        await asyncio.to_thread(jobs.crawl, context(), {"source": str(streamer_csv)})
    monkeypatch.setenv("DOJO_HELIX_TOKEN", DEFAULT_TOKEN)
    monkeypatch.setenv("DOJO_HELIX_LIMITER", "nowhere:limiter")
    with pytest.raises(ClipsConfigError, match="DOJO_HELIX_LIMITER='nowhere:limiter' cannot be loaded"):
        await asyncio.to_thread(jobs.streamer, context(), payload)


def test_limiter_factory_from_settings(monkeypatch):
    from pipelines.clips.limits import LocalLimiter
    from pipelines.clips.settings import ClipsSettings

    local = ClipsSettings.from_env({"DOJO_HELIX_RATE": "20", "DOJO_HELIX_BURST": "20", "DOJO_HELIX_LIMITER": "local"})
    limiter = jobs.limiter_for(local)
    assert isinstance(limiter, LocalLimiter) and limiter.burst == 18 and jobs.limiter_for(local) is limiter
    custom = ClipsSettings.from_env({"DOJO_HELIX_LIMITER": "pipelines.clips.limits:local_limiter",
                                     "DOJO_HELIX_RATE": "10", "DOJO_HELIX_BURST": "4"})
    made = jobs._make_limiter(custom)  # the factory is called with the settings
    assert isinstance(made, LocalLimiter) and made.burst == 3  # 4 - ceil(10 * 0.1)
    with pytest.raises(ClipsConfigError, match="'local' or 'module:callable'"):
        jobs._make_limiter(ClipsSettings.from_env({"DOJO_HELIX_LIMITER": "sharedish"}))


@pytest.mark.parametrize("payload, message", [
    ({"source": "s.csv", "helix_url": "https://api.twitch.tv"}, "helix_url must be a loopback URL"),
    ({"source": "s.csv", "fake_helix": "http://127.0.0.1:8787"}, "fake_helix"),  # the old name is not a field
])
def test_a_crawl_names_a_local_helix_server_only_on_loopback(payload, message):
    with pytest.raises(InvalidInput, match=message):
        jobs.validate_crawl(payload)
