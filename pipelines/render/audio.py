"""Narration audio: sentences in, one clip per slide out, with each sentence's timing.

A slide's narration is split into sentences and each is synthesized on its
own, so subtitle cues are timed from the real audio (no forced alignment
needed): the clip is ``sentence, pause, sentence, ...`` and every sentence's
start and end inside the clip are known to the sample.

WAV helpers live here too: imageio-ffmpeg ships no ffprobe, so durations come
from the WAV header.
"""

from __future__ import annotations

import io
import re
import wave
from dataclasses import dataclass

import numpy as np

from .tts import Engine

#: Silence between two sentences of a slide.
SENTENCE_GAP_S = 0.3

_SENTENCE_END = re.compile(r"(?<=[。！？!?])|(?<=[.;])(?=\s)|\n+")


def split_sentences(text: str) -> list[str]:
    """Split narration into sentences (Japanese and English punctuation, and line breaks)."""
    parts = (part.strip() for part in _SENTENCE_END.split(text or ""))
    return [part for part in parts if part and re.search(r"\w", part)]


@dataclass(frozen=True)
class SlideAudio:
    """One slide's speech: int16 samples plus ``(text, start_s, end_s)`` per sentence, clip-relative."""

    samples: np.ndarray
    sample_rate: int
    sentences: tuple[tuple[str, float, float], ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def to_wav(self) -> bytes:
        return wav_bytes(self.samples, self.sample_rate)

    def meta(self) -> dict:
        return {"sample_rate": self.sample_rate, "samples": int(len(self.samples)),
                "sentences": [list(s) for s in self.sentences]}

    @classmethod
    def from_cache(cls, wav: bytes, meta: dict) -> "SlideAudio":
        samples, rate = read_wav(wav)
        return cls(samples, rate, tuple((str(t), float(a), float(b)) for t, a, b in meta["sentences"]))


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def synthesize_narration(engine: Engine, text: str, speed: float = 1.0,
                         gap_s: float = SENTENCE_GAP_S) -> SlideAudio:
    """Speak ``text`` sentence by sentence with ``engine``; a slide without text gets an empty clip."""
    pieces: list[np.ndarray] = []
    sentences = []
    position = 0
    rate = engine.sample_rate
    for sentence in split_sentences(text):
        speech = engine.synthesize(sentence, speed=speed)
        rate = engine.sample_rate  # some engines learn their rate on the first call
        if pieces:
            gap = np.zeros(int(round(gap_s * rate)), np.float32)
            pieces.append(gap)
            position += len(gap)
        pieces.append(speech)
        sentences.append((sentence, position / rate, (position + len(speech)) / rate))
        position += len(speech)
    samples = to_int16(np.concatenate(pieces)) if pieces else np.zeros(0, np.int16)
    return SlideAudio(samples, rate or 24000, tuple(sentences))


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the rate of a 16-bit PCM WAV."""
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM WAV, got {wav.getsampwidth() * 8}-bit")
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate


def wav_duration(path) -> float:
    """Duration of a WAV file from its header (frames / rate)."""
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Linear-interpolation resampling; used only when cached clips disagree on the rate."""
    if source_rate == target_rate or len(samples) == 0:
        return samples
    count = int(round(len(samples) * target_rate / source_rate))
    positions = np.arange(count) * (source_rate / target_rate)
    return np.interp(positions, np.arange(len(samples)), samples.astype(np.float64)).astype(np.int16)
