"""When each slide shows and each sentence is heard.

A slide lasts ``pad_before + speech + pad_after``, rounded *up* to whole
video frames: a slide change that falls between frames is shown one frame
early or late, and the audio drifts from the picture. The audio for the slide
is padded with silence to exactly that length, so picture and sound share one
clock and slide *n* starts at the same instant in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .audio import SlideAudio, resample


@dataclass(frozen=True)
class Cue:
    """One subtitle: a sentence and when it is spoken (seconds from the video's start)."""

    start: float
    end: float
    text: str
    slide: int  # 1-based slide number


@dataclass(frozen=True)
class SlideSpan:
    number: int
    start: float
    end: float
    frames: int
    speech_s: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    fps: float
    sample_rate: int
    spans: tuple[SlideSpan, ...]
    cues: tuple[Cue, ...]

    @property
    def duration(self) -> float:
        return self.spans[-1].end if self.spans else 0.0


def slide_frames(content_s: float, fps: float, min_s: float) -> int:
    """Whole frames that hold ``content_s`` (at least ``min_s`` and one frame)."""
    # The epsilon keeps 3.0 s at 2 fps at 6 frames instead of 7 after float noise.
    return max(1, math.ceil(max(content_s, min_s) * fps - 1e-6))


def build(clips: list[SlideAudio], *, fps: float = 2.0, pad_before: float = 0.3, pad_after: float = 0.5,
          silent_s: float = 2.0) -> tuple[Timeline, np.ndarray]:
    """The timeline and the whole narration track (int16, mono) for ``clips`` in slide order."""
    rates = [clip.sample_rate for clip in clips if len(clip.samples)]
    rate = max(set(rates), key=rates.count) if rates else 24000
    spans, cues, tracks = [], [], []
    start_sample = 0
    for number, clip in enumerate(clips, 1):
        samples = resample(clip.samples, clip.sample_rate, rate)
        speech_s = len(samples) / rate
        content = pad_before + speech_s + pad_after if len(samples) else silent_s
        frames = slide_frames(content, fps, silent_s if not len(samples) else 0.0)
        # A whole number of frames is a whole number of samples when rate * frames / fps is integral;
        # round so tiny float errors never accumulate across slides.
        total = int(round(frames * rate / fps))
        lead = int(round(pad_before * rate)) if len(samples) else 0
        track = np.zeros(total, np.int16)
        track[lead:lead + len(samples)] = samples[: max(0, total - lead)]
        tracks.append(track)
        start = start_sample / rate
        end = (start_sample + total) / rate
        spans.append(SlideSpan(number, start, end, frames, speech_s))
        for text, s0, s1 in clip.sentences:  # seconds, so resampling does not move them
            cue_start = start + lead / rate + s0
            cue_end = min(end, start + lead / rate + s1)
            cues.append(Cue(round(cue_start, 3), round(cue_end, 3), text, number))
        start_sample += total
    track = np.concatenate(tracks) if tracks else np.zeros(0, np.int16)
    return Timeline(fps, rate, tuple(spans), tuple(cues)), track


def manifest(timeline: Timeline, *, engine: str, voice: str, clips: list[SlideAudio], options: dict,
             keys: dict, cached: list[bool]) -> dict:
    """The JSON manifest stored next to the video."""
    return {
        "version": 1,
        "duration_s": round(timeline.duration, 3),
        "fps": timeline.fps,
        "sample_rate": timeline.sample_rate,
        "engine": engine,
        "voice": voice,
        "options": options,
        "outputs": keys,
        "slides": [
            {
                "slide": span.number,
                "start_s": round(span.start, 3),
                "end_s": round(span.end, 3),
                "duration_s": round(span.duration, 3),
                "speech_s": round(span.speech_s, 3),
                "sentences": len(clip.sentences),
                "audio_cached": hit,
            }
            for span, clip, hit in zip(timeline.spans, clips, cached)
        ],
        "cues": [{"start_s": c.start, "end_s": c.end, "slide": c.slide, "text": c.text} for c in timeline.cues],
    }
