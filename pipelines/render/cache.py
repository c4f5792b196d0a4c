"""Per-slide work cached by content hash, in object storage.

Keys are hashes of everything that changes the result, so a cache entry never
needs invalidating:

- audio: engine, voice, engine version, speed and the narration text;
- stills: the slide's picture source (file bytes / PDF page / Markdown), the
  output size and the burned-in caption, if any; the first slide's thumbnail
  by its still's key;
- video segments: the encoder recipe and ffmpeg build, the frame rate, and the
  slide's stills (their keys) with how many frames each is shown. A slide's
  segment is H.264 video only (see ``encode``); the narration is never cached
  as AAC, it is encoded once over the whole track at join time;
- loudness steps: the K-weighted energies of a slide's stretch of the narration
  track (see ``meter``), by the hash of those samples and where they start on
  the meter's 100 ms grid.

Re-rendering a deck where one slide's narration changed synthesizes only that
slide, encodes only that slide's segment (its length changed) and K-weights only
that slide's samples; every other slide's audio, segment and loudness steps come
from here, and the join copies them.
An audio entry is two objects, written WAV first: the JSON (sentence timings)
is the commit mark, so a half-written entry reads as a miss.
"""

from __future__ import annotations

import hashlib
import json

from pathlib import Path

from actors.exceptions import NotFound

from .audio import SlideAudio
from .meter import SlideSteps

PREFIX = "cache/render/v1"
#: Part of a thumbnail's key: change it when ``slides.thumbnail_jpeg`` changes.
THUMBNAIL_RECIPE = "thumbnail:jpeg:640:q85"


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


class RenderCache:
    """Get/put per-slide audio and stills by hash; ``store`` is any ``actors.storage`` store."""

    def __init__(self, store, prefix: str = PREFIX):
        self.store = store
        self.prefix = prefix

    @staticmethod
    def audio_key(engine_id: str, speed: float, text: str) -> str:
        return digest("audio", engine_id, f"{speed:.4f}", text)

    @staticmethod
    def still_key(content_hash: str, size: tuple[int, int], caption: str = "") -> str:
        return digest("still", content_hash, f"{size[0]}x{size[1]}", caption)

    def get_audio(self, key: str) -> SlideAudio | None:
        try:
            meta = json.loads(self.store.get_bytes(f"{self.prefix}/audio/{key}.json"))
            wav = self.store.get_bytes(f"{self.prefix}/audio/{key}.wav")
        except (NotFound, ValueError):
            return None
        try:
            return SlideAudio.from_cache(wav, meta)
        except (ValueError, KeyError, EOFError):
            return None

    def put_audio(self, key: str, clip: SlideAudio) -> None:
        self.store.put_bytes(f"{self.prefix}/audio/{key}.wav", clip.to_wav(), content_type="audio/wav")
        self.store.put_bytes(f"{self.prefix}/audio/{key}.json", json.dumps(clip.meta()).encode(),
                             content_type="application/json")

    def _get(self, key: str) -> bytes | None:
        try:
            return self.store.get_bytes(f"{self.prefix}/{key}")
        except NotFound:
            return None

    def get_still(self, key: str) -> bytes | None:
        return self._get(f"stills/{key}.png")

    def put_still(self, key: str, png: bytes) -> None:
        self.store.put_bytes(f"{self.prefix}/stills/{key}.png", png, content_type="image/png")

    def get_thumbnail(self, still_key: str) -> bytes | None:
        """The JPEG thumbnail (``slides.thumbnail_jpeg``: 640 px wide, quality 85) of a still."""
        return self._get(f"thumbnails/{digest(THUMBNAIL_RECIPE, still_key)}.jpg")

    def put_thumbnail(self, still_key: str, jpeg: bytes) -> None:
        self.store.put_bytes(f"{self.prefix}/thumbnails/{digest(THUMBNAIL_RECIPE, still_key)}.jpg", jpeg,
                             content_type="image/jpeg")

    @staticmethod
    def segment_key(recipe: str, fps: float, size: tuple[int, int], pieces: list[tuple[str, int]]) -> str:
        """``pieces``: ``(still key, frames)`` in order; ``recipe`` names the encoder settings and build."""
        return digest("segment", recipe, f"{fps:.6f}", f"{size[0]}x{size[1]}",
                      ";".join(f"{key}*{frames}" for key, frames in pieces))

    def get_segment(self, key: str, path: str | Path) -> bool:
        """Copy the cached segment to ``path``; False on a miss."""
        try:
            self.store.get_file(f"{self.prefix}/segments/{key}.mp4", path)
        except NotFound:
            return False
        return Path(path).stat().st_size > 0

    def put_segment(self, key: str, path: str | Path) -> None:
        self.store.put_file(f"{self.prefix}/segments/{key}.mp4", path, content_type="video/mp4")

    @staticmethod
    def steps_key(samples: bytes, rate: int, phase: int) -> str:
        """``samples``: the slide's stretch of the track (int16 bytes, pads included)."""
        return digest("loudness-steps-v1", rate, phase, hashlib.sha256(samples).hexdigest())

    def get_steps(self, key: str) -> SlideSteps | None:
        try:
            return SlideSteps.from_dict(json.loads(self.store.get_bytes(f"{self.prefix}/loudness/{key}.json")))
        except (NotFound, ValueError, KeyError, TypeError):
            return None

    def put_steps(self, key: str, record: SlideSteps) -> None:
        self.store.put_bytes(f"{self.prefix}/loudness/{key}.json", json.dumps(record.to_dict()).encode(),
                             content_type="application/json")
