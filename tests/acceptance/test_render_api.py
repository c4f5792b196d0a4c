"""Renders through the real stack: multipart POST /v1/renders, live events over the job's WebSocket,
signed output URLs, the video checked with PyAV; cancel kills ffmpeg; a bad deck stores nothing;
the S3 path (SeaweedFS) through ``run_render`` inside a Ray task."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit
import uuid
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from actors.storage import LocalStore, S3Store
from tests.render.conftest import s3_server  # noqa: F401  (the SeaweedFS fixture)

pytestmark = pytest.mark.ray

TIMEOUT = 180


def deck(tag: str, pad: str = "") -> bytes:
    """Two short Markdown slides with Japanese speaker notes; ``tag`` keeps the render caches cold."""
    return (f"# はじめに {tag}\n- 短いテスト\nNote: こんにちは。これはテストです。{pad}\n\n---\n\n"
            f"# おわり\n- まとめ\nNote: ありがとうございました。{pad}\n").encode("utf-8")


def form(deck_bytes: bytes, name: str = "talk.md", **options) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("deck", deck_bytes, filename=name, content_type="application/octet-stream")
    for key, value in options.items():
        data.add_field(key, str(value))
    return data


async def submit(s, api, headers, data) -> tuple[int, dict]:
    async with s.post(f"{api}/v1/renders", data=data, headers=headers) as r:
        return r.status, await r.json()


async def get(s, url, headers=None):
    async with s.get(url, headers=headers) as r:
        return r.status, await r.json()


def _stat(pid: int) -> list[str] | None:
    """``[state, ppid, ...]`` of a live process, None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] in ("Z", "X") else fields


def _ffmpeg_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            fields = _stat(int(entry.name))
            if fields and comm.startswith("ffmpeg") and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def decode(path) -> dict:
    """Every packet decoded (errors raise); codecs, durations, frames where the picture changes, audio."""
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        info = {"codec": video.codec_context.name, "profile": video.codec_context.profile,
                "pix_fmt": video.codec_context.pix_fmt, "audio_codec": sound.codec_context.name,
                "rate": sound.codec_context.sample_rate, "duration": container.duration / 1e6,
                "video_duration": float(video.duration * video.time_base),
                "audio_duration": float(sound.duration * sound.time_base)}
        changes, previous, frames = [], None, 0
        for frame in container.decode(video=0):
            gray = frame.to_ndarray(format="gray").astype(np.int16)
            # A slide change redraws text: many pixels move a lot (coding noise moves few, a little).
            if previous is None or (np.abs(gray - previous) > 48).mean() > 0.002:
                changes.append((round(float(frame.time), 3), frame.key_frame))
            previous, frames = gray, frames + 1
        container.seek(0)
        audio = np.concatenate([f.to_ndarray().astype(np.float32).reshape(-1) for f in container.decode(audio=0)])
    return {**info, "changes": changes, "frames": frames, "audio": audio}


async def test_render_through_the_api(api, headers, tmp_path):
    async with aiohttp.ClientSession() as s:
        status, job = await submit(s, api, headers, form(deck(uuid.uuid4().hex[:8]), resolution="640x360"))
        assert status == 202, job
        assert job["type"] == "render" and job["id"].startswith("j_")

        events = []

        async def watch():
            async with s.ws_connect(f"{api}/v1/jobs/{job['id']}/events?after=0", headers=headers) as ws:
                async for msg in ws:
                    event = json.loads(msg.data)
                    events.append(event)
                    if event["kind"] == "status" and event["data"]["status"] in ("succeeded", "failed", "cancelled"):
                        return event["data"]["status"]

        final = await asyncio.wait_for(watch(), TIMEOUT)
        _, done = await get(s, f"{api}/v1/jobs/{job['id']}", headers)
        assert final == "succeeded", done.get("error")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        progress = [e["data"] for e in events if e["kind"] == "progress"]
        messages = [p.get("message") for p in progress]
        for expected in ("synthesizing voice 1/2", "synthesizing voice 2/2", "encoding", "uploading"):
            assert expected in messages, messages
        stages = [p.get("stage") for p in progress]
        assert stages.index("voice") < stages.index("encoding") < stages.index("uploading")
        fractions = [p["fraction"] for p in progress if p.get("fraction") is not None]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0

        status, outputs = await get(s, f"{api}/v1/jobs/{job['id']}/outputs", headers)
        assert status == 200 and outputs["status"] == "succeeded"
        urls = outputs["urls"]
        assert {"video", "manifest", "thumbnail", "subtitles_vtt", "subtitles_srt"} <= set(urls)

        # Absolute links at the address the request came to, expiring after DOJO_URL_TTL (1 day), not a year.
        assert all(url.startswith(api + "/v1/objects/") for url in urls.values()), urls
        expiry = int(parse_qs(urlsplit(urls["video"]).query)["exp"][0])
        assert expiry - 86400 - 5 <= time.time() <= expiry - 86400 + 60
        for wrong in ("0", "59", "604801", "soon"):
            status, body = await get(s, f"{api}/v1/jobs/{job['id']}/outputs?expires={wrong}", headers)
            assert 400 <= status < 500 and "expires" in json.dumps(body), (wrong, status, body)
        status, short = await get(s, f"{api}/v1/jobs/{job['id']}/outputs?expires=600", headers)
        assert status == 200 and int(parse_qs(urlsplit(short["urls"]["video"]).query)["exp"][0]) <= time.time() + 601

        async with s.get(urls["manifest"]) as r:  # the signature is the credential: no token
            assert r.status == 200
            manifest = json.loads(await r.read())
        async with s.get(urls["video"]) as r:
            assert r.status == 200
            (tmp_path / "video.mp4").write_bytes(await r.read())
        async with s.get(urls["video"].replace("sig=", "sig=0")) as r:
            assert r.status == 401

    info = decode(tmp_path / "video.mp4")
    assert (info["codec"], info["profile"], info["pix_fmt"], info["audio_codec"]) == ("h264", "High", "yuv420p", "aac")
    total = sum(slide["duration_s"] for slide in manifest["slides"])
    assert len(manifest["slides"]) == 2 and abs(total - done["result"]["duration_s"]) < 0.002
    for measured in (info["duration"], info["video_duration"], info["audio_duration"]):
        assert abs(measured - total) <= 0.05, (measured, total)
    frame = 1 / manifest["fps"]
    assert info["frames"] == round(total * manifest["fps"])
    assert len(info["changes"]) == 2, info["changes"]
    for (at, keyframe), slide in zip(info["changes"], manifest["slides"]):
        assert abs(at - slide["start_s"]) <= frame + 1e-3 and keyframe, (at, slide)
    for slide in manifest["slides"]:  # speech where the manifest says, silence in the leading pad
        a = int((slide["start_s"] + manifest["options"]["pad_before"]) * info["rate"])
        speech = info["audio"][a: a + int(slide["speech_s"] * info["rate"])]
        lead = info["audio"][int(slide["start_s"] * info["rate"]) + 240: a - 240]
        assert np.sqrt(np.mean(speech ** 2)) > 0.01 and np.abs(lead).max() < 0.01


async def test_cancel_of_a_running_render_kills_its_ffmpeg(api, headers, settings):
    # 4K at 30 fps with long pads: seconds of encoding, time enough to cancel it mid-way.
    data = form(deck(uuid.uuid4().hex[:8]), resolution="3840x2160", fps=30, pad_after=8)
    async with aiohttp.ClientSession() as s:
        status, job = await submit(s, api, headers, data)
        assert status == 202, job
        pid = None
        deadline = time.monotonic() + TIMEOUT
        while pid is None:
            _, backlog = await get(s, f"{api}/v1/jobs/{job['id']}/events", headers)
            for event in backlog["events"]:
                if event["kind"] == "progress" and event["data"].get("ffmpeg_pid"):
                    pid = int(event["data"]["ffmpeg_pid"])
            assert time.monotonic() < deadline, backlog
            await asyncio.sleep(0.05)
        fields = _stat(pid)
        assert fields is not None, "ffmpeg finished before the test could cancel it; make the render longer"
        worker = int(fields[1])
        async with s.post(f"{api}/v1/jobs/{job['id']}/cancel", headers=headers) as r:
            assert r.status == 200 and (await r.json())["status"] == "cancelled"
        for _ in range(200):
            if _stat(pid) is None and not _ffmpeg_children(worker):
                break
            await asyncio.sleep(0.05)
        assert _stat(pid) is None, "cancel left the render's ffmpeg running"
        assert _ffmpeg_children(worker) == [], "an ffmpeg child of the job's worker survived the cancel"
        await asyncio.sleep(1.0)
        _, final = await get(s, f"{api}/v1/jobs/{job['id']}", headers)
        assert final["status"] == "cancelled"
    assert LocalStore(settings.objects_dir).list(f"renders/{job['id']}/") == []


BAD = [
    ("text renamed .png", lambda: form(b"just some text, not an image", name="slide.png"), "slide"),
    ("more script entries than slides",
     lambda: _with_script(form(deck("x")), json.dumps(["一", "二", "三"], ensure_ascii=False).encode()), "script"),
    ("bad option", lambda: form(deck("x"), resolution="huge"), "resolution"),
    ("path tricks in the name", lambda: form(deck("x"), name="../../etc/talk.md"), "name"),
]


def _with_script(data: aiohttp.FormData, script: bytes) -> aiohttp.FormData:
    data.add_field("script", script, filename="script.json", content_type="application/json")
    return data


@pytest.mark.parametrize("label,make,word", BAD, ids=[b[0] for b in BAD])
async def test_a_bad_deck_is_a_4xx_and_stores_nothing(api, headers, settings, label, make, word):
    store = LocalStore(settings.objects_dir)
    before = set(store.list("inputs/"))
    async with aiohttp.ClientSession() as s:
        _, listed = await get(s, f"{api}/v1/jobs?type=render&limit=200", headers)
        status, body = await submit(s, api, headers, make())
        _, after_list = await get(s, f"{api}/v1/jobs?type=render&limit=200", headers)
    assert 400 <= status < 500, body
    assert word in body["message"].lower(), body
    assert set(store.list("inputs/")) == before
    assert {j["id"] for j in after_list["jobs"]} == {j["id"] for j in listed["jobs"]}


def _render_on_s3(s3: dict, bucket: str, deck_bytes: bytes) -> dict:
    """Runs as a Ray task: inputs and outputs in S3, TTS fanned out as nested Ray tasks."""
    from actors.jobs import local_context
    from pipelines.render.job import run_render

    store = S3Store(bucket, endpoint_url=s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"])
    store.put_bytes("inputs/s3/talk.md", deck_bytes)
    payload = {"deck": ["inputs/s3/talk.md"], "options": {"resolution": "640x360"}}
    first = run_render(local_context("render", job_id="j_s3a"), payload, store)
    second = run_render(local_context("render", job_id="j_s3b"), payload, store)
    return {"first": first, "second": second, "keys": store.list("")}


def test_render_to_s3_inside_a_ray_task(ray_cluster, s3_server, tmp_path):  # noqa: F811
    bucket = f"render-{uuid.uuid4().hex[:8]}"
    store = S3Store(bucket, endpoint_url=s3_server["endpoint"], access_key=s3_server["access_key"],
                    secret_key=s3_server["secret_key"])
    store.client.create_bucket(Bucket=bucket)
    task = ray_cluster.remote(num_cpus=1)(_render_on_s3)
    out = ray_cluster.get(task.remote(s3_server, bucket, deck(uuid.uuid4().hex[:8])), timeout=TIMEOUT)
    first, second = out["first"], out["second"]
    assert (second["cached_audio"], second["cached_segments"]) == (2, 2)
    assert any(key.startswith("cache/render/v1/segments/") for key in out["keys"])
    assert not any(".tmp" in key for key in out["keys"])
    with urllib.request.urlopen(store.signed_url(first["video"], 120), timeout=30) as r:  # presigned S3 URL
        (tmp_path / "v.mp4").write_bytes(r.read())
    manifest = json.loads(store.get_bytes(first["manifest"]))
    info = decode(tmp_path / "v.mp4")
    assert (info["codec"], info["profile"], info["pix_fmt"], info["audio_codec"]) == ("h264", "High", "yuv420p", "aac")
    assert abs(info["duration"] - sum(slide["duration_s"] for slide in manifest["slides"])) <= 0.05
    assert [round(at * manifest["fps"]) for at, _ in info["changes"]] == \
        [round(slide["start_s"] * manifest["fps"]) for slide in manifest["slides"]]
