"""TTS engines: the packaged ones for real, VOICEVOX against a small local server that speaks its API."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from aiohttp import web

from actors.exceptions import InvalidInput
from actors.jobs import Resources, local_context
from pipelines.render.audio import split_sentences, synthesize_narration, wav_bytes
from pipelines.render.job import RenderOptions, run_render
from pipelines.render.tts import Voice, check_voice, get_engine, resources_for


def test_sentence_splitting():
    assert split_sentences("こんにちは。今日は晴れ！いいですね？\nHello there. Bye!") == [
        "こんにちは。", "今日は晴れ！", "いいですね？", "Hello there.", "Bye!"]
    assert split_sentences("  。 \n") == []


def test_openjtalk_speaks_japanese_with_sentence_timings():
    engine = get_engine(Voice("openjtalk"))
    clip = synthesize_narration(engine, "こんにちは。今日は良い天気です。", speed=1.0)
    assert clip.sample_rate == 48000 and clip.samples.dtype == np.int16
    (first, s0, e0), (second, s1, e1) = clip.sentences
    assert (first, second) == ("こんにちは。", "今日は良い天気です。")
    assert 0 == s0 < e0 < s1 < e1 == pytest.approx(clip.duration_s, abs=1e-3)
    faster = synthesize_narration(engine, "今日は良い天気です。", speed=1.5)
    assert faster.duration_s < e1 - s1


def test_piper_speaks_english():
    engine = get_engine(Voice("piper"))
    samples = engine.synthesize("This slide shows the plan.")
    assert engine.sample_rate == 22050
    assert 0.5 < len(samples) / engine.sample_rate < 5 and np.abs(samples).max() > 0.05


@pytest.mark.slow
def test_kokoro_speaks_japanese():
    engine = get_engine(Voice("kokoro", "jf_alpha"))
    samples = engine.synthesize("こんにちは。")
    assert engine.sample_rate == 24000 and engine.device in ("cpu", "cuda")
    assert 0.3 < len(samples) / 24000 < 5 and np.abs(samples).max() > 0.05


def test_engines_declare_their_resources():
    assert resources_for(Voice("openjtalk")) == Resources(num_cpus=1)
    assert resources_for(Voice("kokoro")).num_gpus == 1
    # Without a GPU anywhere in the cluster the GPU engine runs on a CPU rather than waiting forever.
    assert resources_for(Voice("kokoro"), {"CPU": 2.0}) == Resources(num_cpus=1)
    assert resources_for(Voice("kokoro"), {"CPU": 16.0, "GPU": 1.0}).num_gpus == 1
    assert resources_for(Voice("voicevox")).num_cpus < 1


def test_voice_choices_are_checked_without_loading_models(monkeypatch):
    monkeypatch.delenv("DOJO_VOICEVOX_URL", raising=False)
    check_voice(Voice("kokoro", "jm_kumo"))
    for bad in (Voice("kokoro", "nobody"), Voice("tacotron"), Voice("voicevox")):
        with pytest.raises(InvalidInput):
            check_voice(bad)


class VoicevoxServer:
    """Speaks the VOICEVOX engine's HTTP API; audio is a tone as long as the text (0.1 s a character)."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.loop = asyncio.new_event_loop()
        self.app = web.Application()
        self.app.add_routes([web.get("/speakers", self.speakers), web.post("/audio_query", self.audio_query),
                             web.post("/synthesis", self.synthesis)])

    async def speakers(self, request):
        return web.json_response([{"name": "テスト", "speaker_uuid": "u", "styles": [{"name": "ノーマル", "id": 1},
                                                                                 {"name": "あまあま", "id": 3}]}])

    async def audio_query(self, request):
        self.requests.append(("audio_query", dict(request.query)))
        if request.query.get("speaker") not in ("1", "3"):
            return web.json_response({"detail": "no such speaker"}, status=422)
        return web.json_response({"accent_phrases": [], "speedScale": 1.0, "pitchScale": 0.0,
                                  "outputSamplingRate": 24000, "outputStereo": False,
                                  "kana": request.query["text"]})

    async def synthesis(self, request):
        query = await request.json()
        self.requests.append(("synthesis", {**dict(request.query), "speedScale": query["speedScale"]}))
        seconds = 0.1 * len(query["kana"]) / query["speedScale"]
        t = np.arange(int(seconds * 24000)) / 24000
        tone = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
        return web.Response(body=wav_bytes(tone, 24000), content_type="audio/wav")

    def __enter__(self):
        ready = threading.Event()

        async def start():
            self.runner = web.AppRunner(self.app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def voicevox(monkeypatch):
    with VoicevoxServer() as server:
        monkeypatch.setenv("DOJO_VOICEVOX_URL", server.url)
        yield server


def test_voicevox_engine_speaks_over_http(voicevox):
    engine = get_engine(Voice("voicevox", "3"))
    assert engine.style_ids() == {"1", "3"}
    samples = engine.synthesize("あいうえお", speed=2.0)
    assert engine.sample_rate == 24000
    assert len(samples) == int(0.1 * 5 / 2.0 * 24000)
    assert ("synthesis", {"speaker": "3", "speedScale": 2.0}) in voicevox.requests


def test_render_with_voicevox(voicevox, store):
    store.put_bytes("inputs/v/deck.md", "# 一\nNote: あいうえお。\n---\n# 二\nNote: かきくけこさしす。".encode())
    options = {"engine": "voicevox", "voice": "1", "width": 640, "height": 360, "pad_before": 0, "pad_after": 0}
    result = run_render(local_context("render", job_id="j_vv"), {"deck": ["inputs/v/deck.md"], "options": options},
                        store)
    manifest = json.loads(store.get_bytes(result["manifest"]))
    assert manifest["engine"] == "voicevox"
    assert [s["speech_s"] for s in manifest["slides"]] == [0.6, 0.9]  # characters x 0.1 s, "。" included
    assert [s["duration_s"] for s in manifest["slides"]] == [1.0, 1.0]  # whole frames at 2 fps


def test_voicevox_needs_a_configured_url(monkeypatch):
    monkeypatch.delenv("DOJO_VOICEVOX_URL", raising=False)
    with pytest.raises(InvalidInput, match="DOJO_VOICEVOX_URL"):
        RenderOptions.from_dict({"engine": "voicevox"})
