"""The render job end to end: real TTS (pyopenjtalk-plus), real ffmpeg, checked with PyAV."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from actors.jobs import JobCancelled, JobContext, LocalReporter, local_context
from pipelines.render import process
from pipelines.render.encode import ffmpeg_exe
from pipelines.render.job import RenderOptions, run_render, validate_payload
from pipelines.render.subtitles import parse_vtt

from .conftest import COLORS, png, script
from .media import inspect, lag_s, reference_track, rms

NARRATION = ["はじめに。今日の話です。", "次のスライドです。", "まとめです。ありがとうございました。"]


def put_deck(store, narration=NARRATION, prefix="inputs/t"):
    keys = []
    for index, _ in enumerate(narration):
        key = f"{prefix}/slide-{index}.png"
        store.put_bytes(key, png(COLORS[index], size=(960, 540)))
        keys.append(key)
    store.put_bytes(f"{prefix}/script.json", script(narration))
    return {"deck": keys, "script": f"{prefix}/script.json"}


OPTIONS = {"width": 640, "height": 360, "pad_before": 0.3, "pad_after": 0.5}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from actors.storage import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("render") / "objects", secret="s")
    ctx = local_context("render", job_id="j_render")
    result = run_render(ctx, {**put_deck(store), "options": OPTIONS}, store)
    video = tmp_path_factory.mktemp("video") / "video.mp4"
    store.get_file(result["video"], video)
    return {"store": store, "ctx": ctx, "result": result, "info": inspect(video),
            "manifest": json.loads(store.get_bytes(result["manifest"]))}


def test_video_format(rendered):
    info = rendered["info"]
    assert (info["video_codec"], info["profile"], info["pix_fmt"]) == ("h264", "High", "yuv420p")
    assert (info["audio_codec"], info["channels"]) == ("aac", 1)


def test_duration_is_the_sum_of_slide_durations(rendered):
    info, manifest = rendered["info"], rendered["manifest"]
    total = sum(slide["duration_s"] for slide in manifest["slides"])
    assert abs(rendered["result"]["duration_s"] - total) < 0.002
    for measured in (info["duration"], info["video_duration"], info["audio_duration"]):
        assert abs(measured - total) <= 0.05, (measured, total)


def test_every_slide_change_is_within_one_frame_of_its_cue(rendered):
    info, manifest = rendered["info"], rendered["manifest"]
    frame = 1 / manifest["fps"]
    changes = info["changes"]
    assert len(changes) == len(manifest["slides"])
    for (at, _, keyframe), slide in zip(changes, manifest["slides"]):
        assert abs(at - slide["start_s"]) <= frame + 1e-3, (at, slide)
        assert keyframe, f"slide {slide['slide']} does not start on a keyframe"


def test_audio_is_present_for_every_slide(rendered):
    info, manifest = rendered["info"], rendered["manifest"]
    audio, rate = info["audio"], info["sample_rate"]
    silence = rms(audio[: int(0.2 * rate)])
    for slide in manifest["slides"]:
        assert slide["speech_s"] > 0.3
        start = slide["start_s"] + OPTIONS["pad_before"]
        speech = audio[int(start * rate): int((start + slide["speech_s"]) * rate)]
        assert rms(speech) > max(0.01, 10 * silence), f"slide {slide['slide']} is silent"


def assert_in_sync(info, manifest, reference, tolerance_s=0.003):
    """Frames change on each slide's start (within a frame, on a keyframe); each slide's sound lags ~0."""
    frame = 1 / manifest["fps"]
    total = sum(slide["duration_s"] for slide in manifest["slides"])
    for measured in (info["duration"], info["video_duration"], info["audio_duration"]):
        assert abs(measured - total) <= 0.05, (measured, total)
    assert len(info["frame_times"]) == round(total * manifest["fps"])
    changes = info["changes"]
    assert len(changes) == len(manifest["slides"])
    for (at, _, keyframe), slide in zip(changes, manifest["slides"]):
        assert abs(at - slide["start_s"]) <= frame + 1e-3, (at, slide)
        assert keyframe, f"slide {slide['slide']} does not start on a keyframe"
    for slide in manifest["slides"]:
        lag = lag_s(info["audio"], reference, info["sample_rate"], slide["start_s"], slide["end_s"])
        assert abs(lag) <= tolerance_s, f"slide {slide['slide']}: sound {lag * 1000:+.1f} ms off the picture"


def test_sound_and_picture_share_one_clock(rendered):
    info, manifest = rendered["info"], rendered["manifest"]
    assert_in_sync(info, manifest, reference_track(rendered["store"], NARRATION, OPTIONS, info["sample_rate"]))


def test_rerender_encodes_only_the_changed_slide_and_stays_in_sync(store, tmp_path):
    """Cached segments of slides 1 and 3 are joined by copy with a fresh slide 2; sync stays exact."""
    narration = ["最初のスライド。", "二枚目です。", "三枚目です。", "最後です。"]
    options = {**OPTIONS, "width": 320, "height": 180}
    first = run_render(local_context("render", job_id="j_seg1"), {**put_deck(store, narration), "options": options},
                       store)
    assert (first["cached_audio"], first["cached_segments"]) == (0, 0)
    changed = [narration[0], "二枚目を書き換えて、少し長くしました。", narration[2], narration[3]]
    second = run_render(local_context("render", job_id="j_seg2"),
                        {**put_deck(store, changed, prefix="inputs/v"), "options": options}, store)
    assert (second["cached_audio"], second["cached_segments"]) == (3, 3)
    manifest = json.loads(store.get_bytes(second["manifest"]))
    assert [slide["segment_cached"] for slide in manifest["slides"]] == [True, False, True, True]
    store.get_file(second["video"], tmp_path / "v.mp4")
    info = inspect(tmp_path / "v.mp4")
    assert (info["video_codec"], info["profile"], info["pix_fmt"], info["audio_codec"]) == \
        ("h264", "High", "yuv420p", "aac")
    assert_in_sync(info, manifest, reference_track(store, changed, options, info["sample_rate"]))
    # The same deck again: nothing is synthesized or encoded, only joined.
    third = run_render(local_context("render", job_id="j_seg3"),
                       {**put_deck(store, changed, prefix="inputs/w"), "options": options}, store)
    assert (third["cached_audio"], third["cached_segments"]) == (4, 4)
    assert third["timings"]["segments_s"] == 0


@pytest.mark.parametrize("fps", [3, 30])
def test_frame_rates_that_do_not_divide_a_second_cut_slides_on_their_frames(store, tmp_path, fps):
    """Slide starts like 1/3 s print rounded; the segment cuts must still fall on each slide's first frame."""
    narration = ["一枚目。", "二枚目です。", "三枚目。"]
    options = {**OPTIONS, "width": 320, "height": 180, "fps": fps, "pad_before": 0.2, "pad_after": 0.2}
    result = run_render(local_context("render", job_id=f"j_fps{fps}"),
                        {**put_deck(store, narration, prefix=f"inputs/f{fps}"), "options": options}, store)
    store.get_file(result["video"], tmp_path / "v.mp4")
    manifest = json.loads(store.get_bytes(result["manifest"]))
    info = inspect(tmp_path / "v.mp4")
    assert_in_sync(info, manifest, reference_track(store, narration, options, info["sample_rate"]))


def test_subtitle_cues_lie_inside_their_slide(rendered):
    store, result, manifest = rendered["store"], rendered["result"], rendered["manifest"]
    vtt = store.get_bytes(result["subtitles_vtt"]).decode()
    srt = store.get_bytes(result["subtitles_srt"]).decode()
    cues = parse_vtt(vtt)
    assert [text for _, _, text in cues] == ["はじめに。", "今日の話です。", "次のスライドです。", "まとめです。",
                                             "ありがとうございました。"]
    for (start, end, _), cue in zip(cues, manifest["cues"]):
        slide = manifest["slides"][cue["slide"] - 1]
        assert slide["start_s"] <= start < end <= slide["end_s"]
        assert abs(start - cue["start_s"]) < 0.002
    assert srt.startswith("1\n00:00:00,300 --> ")
    assert srt.count(" --> ") == 5


def test_progress_thumbnail_and_manifest(rendered):
    events = rendered["ctx"]._reporter.events
    messages = [event["message"] for event in events]
    for expected in ("synthesizing voice 1/3", "synthesizing voice 3/3", "encoding", "uploading"):
        assert expected in messages
    fractions = [event["fraction"] for event in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    thumbnail = rendered["store"].get_bytes(rendered["result"]["thumbnail"])
    assert thumbnail[:3] == b"\xff\xd8\xff"
    manifest = rendered["manifest"]
    assert manifest["engine"] == "openjtalk" and len(manifest["slides"]) == 3
    assert set(rendered["result"]) >= {"video", "subtitles_vtt", "subtitles_srt", "thumbnail", "manifest",
                                       "duration_s"}


def test_rerender_with_one_changed_narration_redoes_only_that_slide(store):
    payload = {**put_deck(store), "options": OPTIONS}
    first = run_render(local_context("render", job_id="j_a"), payload, store)
    assert first["cached_audio"] == 0
    changed = [NARRATION[0], "変更したスライドです。", NARRATION[2]]
    payload = {**put_deck(store, changed, prefix="inputs/u"), "options": OPTIONS}
    second = run_render(local_context("render", job_id="j_b"), payload, store)
    assert second["cached_audio"] == 2
    manifest = json.loads(store.get_bytes(second["manifest"]))
    assert [slide["audio_cached"] for slide in manifest["slides"]] == [True, False, True]
    assert "変更したスライドです。" in store.get_bytes(second["subtitles_vtt"]).decode()


def test_burn_in_draws_captions_on_markdown_slides(store, tmp_path):
    store.put_bytes("inputs/m/deck.md", "# 題名\nNote: 一文目です。二文目です。\n---\n# 次\nNote: 終わり。".encode())
    result = run_render(local_context("render", job_id="j_burn"),
                        {"deck": ["inputs/m/deck.md"], "options": {**OPTIONS, "burn_in": True}}, store)
    store.get_file(result["video"], tmp_path / "v.mp4")
    info = inspect(tmp_path / "v.mp4")
    manifest = json.loads(store.get_bytes(result["manifest"]))
    assert abs(info["duration"] - manifest["duration_s"]) <= 0.05
    assert len(info["frame_times"]) == round(manifest["duration_s"] * manifest["fps"])


def test_options_are_validated():
    assert RenderOptions.from_dict({"resolution": "1280x720", "burn_in": "true"}).size == (1280, 720)
    for bad in ({"speed": 9}, {"resolution": "big"}, {"width": 641}, {"engine": "espeak"},
                {"voice": "nobody"}, {"colour": "red"}, {"subtitles": "maybe"}):
        with pytest.raises(Exception) as caught:
            RenderOptions.from_dict(bad)
        assert caught.value.__class__.__name__ == "InvalidInput", bad
    with pytest.raises(Exception, match="object key"):
        validate_payload({"deck": ["../etc/passwd"]})


class _CancelAt(LocalReporter):
    """Sets the job's cancel flag when the job reports the given stage."""

    def __init__(self, stage, event):
        super().__init__()
        self.stage, self.event = stage, event

    def progress(self, event):
        super().progress(event)
        if event.get("stage") == self.stage:
            self.event.set()


@pytest.mark.parametrize("stage", ["voice", "encoding"])
def test_cancel_stops_the_job_and_stores_no_output(store, stage):
    cancelled = threading.Event()
    ctx = JobContext(job_id="j_cancel", type="render", queue="default", attempt=1, max_attempts=1,
                     reporter=_CancelAt(stage, cancelled), cancelled=cancelled)
    with pytest.raises(JobCancelled):
        run_render(ctx, {**put_deck(store), "options": OPTIONS}, store)
    assert store.list("renders/") == []


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


LONG_FFMPEG = [ffmpeg_exe(), "-nostdin", "-re", "-f", "lavfi", "-i", "anullsrc", "-t", "600", "-f", "null", "-"]


def test_cancel_kills_ffmpeg():
    cancelled = threading.Event()
    pids = []
    threading.Timer(0.5, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        process.run(LONG_FFMPEG, cancelled=cancelled, on_start=pids.append)
    assert time.monotonic() - started < 5
    assert _gone(pids[0])


def test_ffmpeg_dies_with_its_worker():
    code = ("import sys; from pipelines.render import process; "
            f"process.run({LONG_FFMPEG!r}, on_start=lambda pid: print(pid, flush=True))")
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    pid = int(worker.stdout.readline())
    assert not _gone(pid)
    worker.send_signal(signal.SIGKILL)  # as Ray does when it force-cancels a task
    worker.wait()
    worker.stdout.close()
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "ffmpeg outlived its worker"
