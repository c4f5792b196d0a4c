"""Jobs on a worker node whose disk is not the head's: renders and crawls keep their data cluster-wide.

The head runs no jobs (``--num-cpus=0``), so every render and every crawl
child runs on a worker node; each worker sees an empty tmpfs where the head
keeps its state dir (see ``cluster.py``). What a job writes must still reach
the API on the head, and what the API stored must reach the job.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import av
import pytest

from pipelines.clips.db import ClipDB
from pipelines.clips.fake_helix import FakeHelix, fake_streamers

pytestmark = pytest.mark.slow

TIMEOUT = 240
FINAL = ("succeeded", "failed", "cancelled")


def deck(tag: str, last: str = "ありがとうございました。") -> bytes:
    """Three Markdown slides with Japanese notes; ``tag`` keeps caches cold, ``last`` is the third's note."""
    return (f"# はじめに {tag}\n- 短いテスト\nNote: こんにちは。これはテストです。\n\n---\n\n"
            f"# 本題 {tag}\n- 要点\nNote: 二枚目のスライドです。\n\n---\n\n"
            f"# おわり {tag}\n- まとめ\nNote: {last}\n").encode("utf-8")


def form(deck_bytes: bytes, **options) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("deck", deck_bytes, filename="talk.md", content_type="text/markdown")
    for key, value in options.items():
        data.add_field(key, str(value))
    return data


async def submit_render(s, cluster, data) -> dict:
    async with s.post(f"{cluster.url}/v1/renders", data=data, headers=cluster.headers) as r:
        body = await r.json()
        assert r.status == 202, body
        return body


async def until_final(s, cluster, job_id, timeout=TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        async with s.get(f"{cluster.url}/v1/jobs/{job_id}", headers=cluster.headers) as r:
            if r.status == 200:
                job = await r.json()
                if job["status"] in FINAL and job.get("phase") != "children":
                    return job
        assert time.monotonic() < deadline, f"job {job_id} not final after {timeout}s: {job}"
        await asyncio.sleep(0.3)


async def download(s, cluster, url: str, path: Path) -> None:
    async with s.get(url if url.startswith("http") else cluster.url + url) as r:  # signed: no token
        assert r.status == 200, await r.text()
        path.write_bytes(await r.read())


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        return {"video": video.codec_context.name, "audio": sound.codec_context.name,
                "sample_rate": sound.codec_context.sample_rate, "channels": sound.codec_context.channels,
                "duration": container.duration / 1e6}


def ran_on(job: dict) -> set[str]:
    return {attempt.get("node") for attempt in job["history"]}


async def test_render_runs_on_the_worker_node_and_its_video_downloads(cluster, tmp_path):
    nodes = cluster.node_ids()
    tag = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as s:
        job = await submit_render(s, cluster, form(deck(tag), resolution="640x360"))
        done = await until_final(s, cluster, job["id"])
        assert done["status"] == "succeeded", done.get("error")
        assert ran_on(done) == {nodes["worker1"]}

        async with s.get(f"{cluster.url}/v1/jobs/{job['id']}/outputs", headers=cluster.headers) as r:
            outputs = await r.json()
        assert {"video", "manifest", "thumbnail", "subtitles_vtt"} <= set(outputs["urls"]), outputs
        await download(s, cluster, outputs["urls"]["video"], tmp_path / "video.mp4")
        await download(s, cluster, outputs["urls"]["manifest"], tmp_path / "manifest.json")

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    info = probe(tmp_path / "video.mp4")
    assert (info["video"], info["audio"]) == ("h264", "aac")
    assert abs(info["duration"] - manifest["duration_s"]) <= 0.05, (info, manifest["duration_s"])
    # The manifest states what the file holds.
    assert manifest["sample_rate"] == info["sample_rate"], (manifest["sample_rate"], info)
    audio = manifest["audio"]
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", info["sample_rate"], info["channels"])

    # Re-render with the last slide's narration changed: the other two come from the cache, on the worker.
    async with aiohttp.ClientSession() as s:
        again = await submit_render(s, cluster, form(deck(tag, last="最後のスライドを変えました。"),
                                                      resolution="640x360"))
        redone = await until_final(s, cluster, again["id"])
    assert redone["status"] == "succeeded", redone.get("error")
    assert ran_on(redone) == {nodes["worker1"]}
    assert redone["result"]["cached_audio"] == 2 and redone["result"]["cached_segments"] == 2, redone["result"]


async def test_crawl_children_on_the_worker_fill_the_one_clip_database(cluster, tmp_path):
    streamers, clips = 12, 15
    server = FakeHelix(clips_per_broadcaster=clips)
    await server.start()
    try:
        # The streamers go into the cluster's clip database (on the head); the crawl reads them from there.
        db_path = Path(cluster.env["DOJO_STATE_DIR"]) / "clips.sqlite3"
        ClipDB(db_path).add_streamers(fake_streamers(streamers))
        payload = {"source": "db", "started_at": "2024-01-01T00:00:00Z", "ended_at": "2024-01-02T00:00:00Z",
                   "helix_url": server.url}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{cluster.url}/v1/jobs", json={"type": "clips.crawl", "payload": payload},
                              headers=cluster.headers) as r:
                assert r.status == 201, await r.text()
                parent = await r.json()
            done = await until_final(s, cluster, parent["id"])
            assert done["status"] == "succeeded", done
            assert done["result"]["statuses"] == {"succeeded": streamers}, done["result"]
            async with s.get(f"{cluster.url}/v1/jobs?type=clips.streamer&limit=500", headers=cluster.headers) as r:
                children = (await r.json())["jobs"]
        worker = cluster.node_ids()["worker1"]
        assert children and all(ran_on(child) == {worker} for child in children)
    finally:
        await server.stop()

    out = tmp_path / "clips.parquet"
    export = subprocess.run([str(Path(sys.executable).parent / "dojo"), "clips", "export", str(out)],
                            env=cluster.env, capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, (export.stdout, export.stderr)
    import pyarrow.parquet as pq

    ids = pq.read_table(out).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == streamers * clips


@pytest.mark.timeout(600)
async def test_a_killed_worker_node_mid_render_is_retried_on_another(cluster, tmp_path):
    """Last in the module: it replaces worker1 by worker2."""
    async with aiohttp.ClientSession() as s:
        # Seconds of encoding at 30 fps with long pads: time enough to kill the node mid-render.
        job = await submit_render(s, cluster, form(deck(uuid.uuid4().hex[:8]), resolution="1280x720", fps=30,
                                                   pad_after=6))
        deadline = time.monotonic() + TIMEOUT
        while True:
            async with s.get(f"{cluster.url}/v1/jobs/{job['id']}/events", headers=cluster.headers) as r:
                stages = [e["data"].get("stage") for e in (await r.json())["events"] if e["kind"] == "progress"]
            if "encoding" in stages:
                break
            assert time.monotonic() < deadline, stages
            await asyncio.sleep(0.1)
        first = cluster.node_ids()["worker1"]
        cluster.kill_worker("worker1")  # the node and its disk are gone; the job must start over elsewhere
        await asyncio.to_thread(cluster.add_worker, "worker2")
        done = await until_final(s, cluster, job["id"])
        assert done["status"] == "succeeded", done
        second = cluster.node_ids()["worker2"]
        nodes = [attempt.get("node") for attempt in done["history"]]
        assert nodes[0] == first and nodes[-1] == second, done["history"]
        async with s.get(f"{cluster.url}/v1/jobs/{job['id']}/outputs", headers=cluster.headers) as r:
            outputs = await r.json()
        await download(s, cluster, outputs["urls"]["video"], tmp_path / "video.mp4")
    info = probe(tmp_path / "video.mp4")
    assert abs(info["duration"] - done["result"]["duration_s"]) <= 0.05
    objects = Path(cluster.env["DOJO_STATE_DIR"]) / "objects"
    stored = sorted(f"renders/{job['id']}/{p.name}" for p in (objects / "renders" / job["id"]).iterdir())
    outputs = sorted(key for key in done["result"].values() if isinstance(key, str) and key.startswith("renders/"))
    assert stored == outputs and "renders/%s/video.mp4" % job["id"] in stored
    assert [p.name for p in (objects / ".tmp").glob("*")] == []  # nothing half-written left behind
