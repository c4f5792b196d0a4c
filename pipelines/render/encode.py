"""Encode stills + narration into a browser-playable MP4 with ffmpeg (from imageio-ffmpeg).

The fast recipe, and why each part is there:

- One ffmpeg call over an ffconcat list of the stills, each with its duration:
  every PNG is decoded once, not once per output frame as with ``-loop 1``.
- ``format=yuv420p`` *before* ``fps=2``: the colour conversion runs once per
  still, the fps filter only duplicates frames. The ``fps`` filter is exact;
  ``-r`` on the output shows the next slide one frame early.
- 2 fps, ``-tune stillimage`` and a keyframe forced at each slide start: x264
  has few frames to code, and seeking lands on slide changes.
- Slide lengths are whole frames (see ``timeline``), so changes fall on frames.
- The narration is concatenated first and encoded once (AAC mono, fast coder):
  per-slide AAC segments joined with ``-c copy`` drift ~30 ms per slide
  because of the encoder's priming samples.
- H.264 High, yuv420p, ``+faststart`` so browsers start playing at once.

``naive_command`` is the straightforward way (each still looped at 30 fps),
kept for the benchmark's comparison.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ffmpeg

from .exceptions import EncodeError
from .process import ProcessFailed, run

log = logging.getLogger(__name__)

AUDIO_RATE = 24000
AUDIO_BITRATE = "64k"


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Still:
    """A picture held for ``duration`` seconds; ``keyframe`` marks a slide start."""

    path: str
    duration: float
    keyframe: bool = True


def _quote(path: str) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def write_ffconcat(path: Path, stills: list[Still]) -> None:
    lines = ["ffconcat version 1.0"]
    for still in stills:
        lines += [f"file {_quote(still.path)}", f"duration {still.duration:.6f}"]
    # The concat demuxer ignores the last entry's duration unless the file is listed once more.
    lines.append(f"file {_quote(stills[-1].path)}")
    path.write_text("\n".join(lines) + "\n")


def keyframe_times(stills: list[Still]) -> list[float]:
    times, at = [], 0.0
    for still in stills:
        if still.keyframe:
            times.append(at)
        at += still.duration
    return times


def fast_command(stills: list[Still], audio: str, output: str, workdir: Path, *, fps: float = 2.0,
                 preset: str = "veryfast", audio_rate: int = AUDIO_RATE) -> list[str]:
    """Arguments for the fast recipe (one call, ffconcat, few frames, audio encoded once)."""
    listing = workdir / "stills.ffconcat"
    write_ffconcat(listing, stills)
    total = sum(still.duration for still in stills)
    video = (ffmpeg.input(str(listing), f="concat", safe=0).video
             .filter("format", "yuv420p").filter("fps", fps=fps))
    sound = ffmpeg.input(audio).audio
    stream = ffmpeg.output(
        video, sound, output,
        vcodec="libx264", preset=preset, tune="stillimage", pix_fmt="yuv420p",
        acodec="aac", ac=1, ar=audio_rate, aac_coder="fast", movflags="+faststart", t=f"{total:.6f}",
        **{"profile:v": "high", "b:a": AUDIO_BITRATE, "force_key_frames": ",".join(f"{t:.6f}" for t in
                                                                                    keyframe_times(stills)),
           "g": int(fps * 60)},
    )
    return _finish(stream)


def naive_command(stills: list[Still], audio: str, output: str, *, fps: int = 30) -> list[str]:
    """The straightforward pass: every still looped at ``fps``, libx264's default preset."""
    inputs = [ffmpeg.input(still.path, loop=1, framerate=fps, t=f"{still.duration:.6f}").video for still in stills]
    video = ffmpeg.concat(*inputs, v=1, a=0).filter("format", "yuv420p")
    stream = ffmpeg.output(video, ffmpeg.input(audio).audio, output, vcodec="libx264", pix_fmt="yuv420p",
                           acodec="aac", r=fps, movflags="+faststart")
    return _finish(stream)


def _finish(stream) -> list[str]:
    args = stream.global_args("-hide_banner", "-nostats", "-loglevel", "error", "-progress", "pipe:1") \
        .overwrite_output().compile(cmd=ffmpeg_exe())
    return list(args)


def encode(args: list[str], total_s: float, *, cancelled: threading.Event | None = None,
           on_progress: Callable[[float], None] | None = None, timeout: float | None = None) -> None:
    """Run an ffmpeg command; report the fraction done from its ``-progress`` output."""
    def on_line(line: str) -> None:
        if on_progress and line.startswith("out_time_us=") and total_s > 0:
            try:
                on_progress(min(1.0, max(0.0, int(line.split("=", 1)[1]) / 1e6 / total_s)))
            except ValueError:
                pass

    try:
        run(args, cancelled=cancelled, on_line=on_line, timeout=timeout)
    except ProcessFailed as exc:
        raise EncodeError(f"ffmpeg failed with status {exc.returncode}: {exc.tail.strip()[-1500:]}") from None
