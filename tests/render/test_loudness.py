"""The narration's loudness, measured slide by slide: BS.1770 figures, the same as one pass, cached per slide.

ffmpeg's EBU R128 meter is the reference the numbers are checked against.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from actors.jobs import local_context
from actors.storage import LocalStore
from pipelines.render import loudness, meter, timeline
from pipelines.render.audio import synthesize_narration, to_int16, wav_bytes
from pipelines.render.cache import RenderCache
from pipelines.render.encode import ffmpeg_exe
from pipelines.render.job import run_render
from pipelines.render.tts import Voice, get_engine


def tone(seconds: float, dbfs: float, rate: int = 48000, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return to_int16(10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t))


def whole(samples: np.ndarray, rate: int) -> float:
    """Integrated loudness of a track measured as one slide."""
    return meter.integrated(meter.track_steps([(0, meter.slide_steps(samples, rate, 0))], len(samples), rate), rate)


def by_slides(samples: np.ndarray, rate: int, starts: list[int]) -> float:
    step = meter.step_samples(rate)
    records = [(a, meter.slide_steps(samples[a:b], rate, a % step)) for a, b in zip(starts, [*starts[1:], len(samples)])]
    return meter.integrated(meter.track_steps(records, len(samples), rate), rate)


def test_a_full_scale_1khz_tone_reads_as_the_standard_says():
    # BS.1770: a 0 dBFS 1 kHz sine in one channel measures -3.01 LKFS; 20 dB down, -23.01.
    assert whole(tone(5, -20), 48000) == pytest.approx(-23.01, abs=0.02)
    # At Piper's 22050 Hz the filter, designed there, bends a little near 1 kHz (as libebur128's does).
    assert whole(tone(5, -20, rate=22050), 22050) == pytest.approx(-23.01, abs=0.05)


def test_gates_drop_silence_and_quiet_passages():
    loud, quiet = tone(10, -20), tone(10, -45)
    # 97 blocks of tone, and three that hold 3/4, 1/2 and 1/4 of it; the silent ones are gated out.
    expected = -23.01 + 10 * math.log10((97 + 0.75 + 0.5 + 0.25) / 100)
    assert whole(np.concatenate([loud, np.zeros(48000 * 20, np.int16)]), 48000) == pytest.approx(expected, abs=0.01)
    # The quiet passage is more than 10 LU under the rest: the relative gate leaves it out.
    assert whole(np.concatenate([loud, quiet]), 48000) == pytest.approx(expected, abs=0.01)
    assert whole(np.zeros(48000 * 3, np.int16), 48000) == -math.inf
    assert whole(tone(0.3, -20), 48000) == -math.inf  # shorter than one 400 ms block


@pytest.fixture(scope="module")
def narration():
    """Three slides of real Japanese speech laid out as the render lays them out."""
    engine = get_engine(Voice("openjtalk"))
    clips = [synthesize_narration(engine, text) for text in
             ("はじめに。今日は新しい仕組みを紹介します。", "次に、しくみを説明します。", "まとめです。ありがとうございました。")]
    tl, track = timeline.build(clips, fps=3.0, pad_before=0.3, pad_after=0.5)
    return tl, track


def test_slide_by_slide_equals_one_pass_over_the_track_wherever_slides_start(narration):
    tl, track = narration
    rate = tl.sample_rate
    starts = [round(span.start * rate) for span in tl.spans]
    assert any(start % meter.step_samples(rate) for start in starts)  # at 3 fps slides start between grid lines
    one_pass = whole(track, rate)
    assert by_slides(track, rate, starts) == pytest.approx(one_pass, abs=1e-6)
    # Cut inside speech the K filter's memory of the previous piece is lost, and only that.
    assert by_slides(track, rate, [0, 123457, 200001]) == pytest.approx(one_pass, abs=0.02)


@pytest.mark.parametrize("rate", [48000, 22050])
def test_the_meter_agrees_with_ffmpegs_ebu_r128_meter(narration, tmp_path, rate):
    from pipelines.render.audio import resample

    _, track = narration
    samples = resample(track, 48000, rate)
    path = tmp_path / "speech.wav"
    path.write_bytes(wav_bytes(samples, rate))
    reference = loudness.measure(str(path), ffmpeg_exe())  # printed to 0.1 LU
    assert whole(samples, rate) == pytest.approx(reference.integrated_lufs, abs=0.15)


def test_speech_reuses_the_steps_of_unchanged_slides(narration, tmp_path):
    tl, track = narration
    rate = tl.sample_rate
    starts = [round(span.start * rate) for span in tl.spans]
    cache = RenderCache(LocalStore(tmp_path / "objects", secret="s"))
    first = loudness.speech(track, rate, starts, cache)
    assert len(cache.store.list("cache/render/v1/loudness/")) == 3
    assert first.integrated_lufs == pytest.approx(whole(track, rate), abs=1e-6)
    assert first.sample_peak_dbfs == pytest.approx(20 * math.log10(np.abs(track.astype(float)).max() / 32768))
    # The middle slide gets louder: one new record, and the loudness of the new track.
    changed = track.copy()
    middle = slice(starts[1], starts[2])
    changed[middle] = to_int16(changed[middle] / 32768.0 * 1.5)
    second = loudness.speech(changed, rate, starts, cache)
    assert len(cache.store.list("cache/render/v1/loudness/")) == 4
    assert second.integrated_lufs == pytest.approx(whole(changed, rate), abs=1e-6)
    assert second.integrated_lufs > first.integrated_lufs


def test_a_rerender_measures_only_the_changed_slide_and_lands_on_target(tmp_path):
    store = LocalStore(tmp_path / "objects", secret="s")
    slides = ["# One\nNote: はじめに。今日の話です。", "# Two\nNote: 次のスライドです。", "# Three\nNote: まとめです。"]

    def render(job_id: str, deck: list[str]) -> dict:
        store.put_bytes(f"inputs/{job_id}/deck.md", "\n\n---\n\n".join(deck).encode())
        result = run_render(local_context("render", job_id=job_id),
                            {"deck": [f"inputs/{job_id}/deck.md"], "options": {"width": 640, "height": 360}}, store)
        return json.loads(store.get_bytes(result["manifest"]))

    render("j_l1", slides)
    assert len(store.list("cache/render/v1/loudness/")) == 3
    manifest = render("j_l2", [slides[0], "# Two\nNote: 書き直したスライドです。声は同じ大きさです。", slides[2]])
    assert len(store.list("cache/render/v1/loudness/")) == 4
    published = loudness.measure(str(store.path(manifest["outputs"]["video"])), ffmpeg_exe())
    assert abs(published.integrated_lufs - loudness.DEFAULT_TARGET_LUFS) <= 1.0
    assert published.true_peak_dbtp <= loudness.TRUE_PEAK_LIMIT_DBTP
    assert manifest["audio"]["loudness"]["speech"]["integrated_lufs"] is not None


def test_a_rate_without_whole_100ms_steps_is_measured_by_ffmpeg(narration, tmp_path):
    from pipelines.render.audio import resample

    _, track = narration
    samples = resample(track, 48000, 11025)  # 1102.5 samples per step: no grid of whole samples
    path = tmp_path / "speech.wav"
    path.write_bytes(wav_bytes(samples, 11025))
    cache = RenderCache(LocalStore(tmp_path / "objects", secret="s"))
    found = loudness.speech(samples, 11025, [0], cache, str(path))
    assert found.integrated_lufs == loudness.measure(str(path), ffmpeg_exe()).integrated_lufs
    assert cache.store.list("cache/render/v1/loudness/") == []
