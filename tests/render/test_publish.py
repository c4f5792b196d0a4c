"""Renders ready to publish: loudness on target, safe peaks, a chapter per slide, captions inside the MP4.

Every figure is read back from the file by tools other than the render's own
code path: ffmpeg's EBU R128 meter for loudness and true peak, PyAV for
streams, tags and chapters.
"""

from __future__ import annotations

import json

import av
import pytest

from actors.exceptions import InvalidInput
from actors.jobs import local_context
from actors.storage import LocalStore
from pipelines.render.encode import ffmpeg_exe
from pipelines.render.job import RenderOptions, run_render
from pipelines.render.loudness import DEFAULT_TARGET_LUFS, TRUE_PEAK_LIMIT_DBTP, measure

TEXT = {
    "ja": ["はじめに。今日は新しい仕組みを紹介します。", "次に、しくみを説明します。音声はスライドごとに作ります。",
           "まとめです。ありがとうございました。"],
    "en": ["Welcome. Today we look at a new job system.", "Next, how it works. Speech is made per slide.",
           "That is all. Thank you for watching."],
}
TITLES = ["Opening words", "How it works", "Closing"]
OPTIONS = {"width": 640, "height": 360}


def markdown_deck(narration: list[str], titles=TITLES) -> bytes:
    slides = [f"# {title}\n- a point\nNote: {text}" for title, text in zip(titles, narration)]
    return "\n\n---\n\n".join(slides).encode()


def render(store, deck: bytes, options: dict, job_id: str) -> tuple[dict, dict, str]:
    store.put_bytes(f"inputs/{job_id}/deck.md", deck)
    result = run_render(local_context("render", job_id=job_id),
                        {"deck": [f"inputs/{job_id}/deck.md"], "options": {**OPTIONS, **options}}, store)
    path = str(store.path(result["video"]))
    return result, json.loads(store.get_bytes(result["manifest"])), path


def streams(path: str) -> dict:
    with av.open(path) as container:
        audio = container.streams.audio[0]
        subtitles = list(container.streams.subtitles)
        return {"audio_rate": audio.codec_context.sample_rate, "audio_language": audio.metadata.get("language"),
                "subtitles": [(s.codec_context.name, s.metadata.get("language")) for s in subtitles],
                "chapters": [(round(c["start"] * c["time_base"], 3), c["metadata"].get("title"))
                             for c in container.chapters()]}


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    return LocalStore(tmp_path_factory.mktemp("publish") / "objects", secret="s")


@pytest.mark.slow
@pytest.mark.parametrize("engine,language", [("openjtalk", "ja"), ("piper", "en"), ("kokoro", "ja")])
def test_every_engine_is_published_at_the_loudness_target_with_chapters_and_captions(objects, engine, language):
    result, manifest, path = render(objects, markdown_deck(TEXT[language]), {"engine": engine}, f"j_pub_{engine}")

    measured = measure(path, ffmpeg_exe())
    assert abs(measured.integrated_lufs - DEFAULT_TARGET_LUFS) <= 1.0, measured
    assert measured.true_peak_dbtp <= TRUE_PEAK_LIMIT_DBTP, measured

    found = streams(path)
    code = {"ja": "jpn", "en": "eng"}[language]
    assert found["audio_rate"] == 48000 == manifest["sample_rate"] == manifest["audio"]["sample_rate"]
    assert found["audio_language"] == code
    assert found["subtitles"] == [("mov_text", code)]
    assert [title for _, title in found["chapters"]] == TITLES
    starts = [slide["start_s"] for slide in manifest["slides"]]
    assert [at for at, _ in found["chapters"]] == pytest.approx(starts, abs=0.002)

    # The manifest states what the meter finds in the file.
    loudness = manifest["audio"]["loudness"]
    assert loudness["target_lufs"] == DEFAULT_TARGET_LUFS
    assert abs(loudness["integrated_lufs"] - measured.integrated_lufs) <= 0.3
    assert manifest["chapters"][0]["title"] == TITLES[0]
    chapters_vtt = objects.get_bytes(result["chapters_vtt"]).decode()
    assert chapters_vtt.startswith("WEBVTT") and all(title in chapters_vtt for title in TITLES)


@pytest.mark.slow
def test_a_half_cached_deck_is_as_loud_as_a_fresh_render(tmp_path):
    cached = LocalStore(tmp_path / "warm", secret="s")
    fresh = LocalStore(tmp_path / "cold", secret="s")
    first = TEXT["ja"]
    changed = [first[0], "ここは書き直したスライドです。声の大きさは変わりません。", first[2]]
    render(cached, markdown_deck(first), {}, "j_warm1")
    result, _, warm_path = render(cached, markdown_deck(changed), {}, "j_warm2")
    assert result["cached_audio"] == 2
    _, _, cold_path = render(fresh, markdown_deck(changed), {}, "j_cold")
    warm, cold = measure(warm_path, ffmpeg_exe()), measure(cold_path, ffmpeg_exe())
    assert abs(warm.integrated_lufs - cold.integrated_lufs) <= 0.5, (warm, cold)


def test_a_broadcast_target_and_off(objects):
    _, manifest, path = render(objects, markdown_deck(TEXT["ja"][:1], TITLES[:1]), {"loudness": -23}, "j_r128")
    assert abs(measure(path, ffmpeg_exe()).integrated_lufs + 23) <= 1.0
    _, manifest, _ = render(objects, markdown_deck(TEXT["ja"][:1], TITLES[:1]), {"loudness": "off"}, "j_off")
    assert manifest["audio"]["loudness"]["target_lufs"] is None
    assert manifest["audio"]["loudness"]["gain_db"] is None


@pytest.mark.parametrize("value", ["loud", -60, 0, "nan", ""])
def test_a_bad_loudness_target_is_refused_with_the_range(value):
    with pytest.raises(InvalidInput, match="loudness must"):
        RenderOptions.from_dict({"loudness": value})


def test_slide_titles_come_from_headings_then_first_lines():
    from pipelines.render.deck import load_deck

    deck = load_deck([("d.md", b"# Title one\nNote: a\n\n---\n\nplain first line\n- x\nNote: b\n\n---\n\n"
                               b"Note: c")])
    assert [slide.title() for slide in deck.slides] == ["Title one", "plain first line", "Slide 3"]
