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

Incremental renders (what the job runs) split the video along slide lines:

- ``segments_command``: the stills of every slide not in the cache → one
  video-only MP4 segment per slide, in a single ffmpeg pass (the segment
  muxer cuts at the keyframe forced at each slide start): whole frames, an IDR
  frame first, no B-frames, settings fixed by ``SEGMENT_RECIPE`` so every
  segment has the same H.264 parameter sets and any mix of cached and fresh
  segments joins into one valid stream. Segments are cached by content hash (see ``cache``), so a re-render encodes
  only the slides that changed.
- ``join_command``: the segments joined with the concat demuxer and ``-c:v
  copy`` (no re-encode; each entry carries its exact duration), muxed with the
  *whole* narration encoded once as AAC (``narration_command``, which the job
  runs beside the segment pass, so the join only copies). Joining per-slide A/V segments
  instead drifts ~30 ms per slide (AAC priming); one continuous audio track
  over video-only segments keeps sync exact.

``fast_command`` (one pass over all stills) stays for the benchmark's comparison;
``naive_command`` is the straightforward way (each still looped at 30 fps),
kept for the benchmark's comparison.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import ffmpeg

from .exceptions import EncodeError
from .process import ProcessFailed, ffmpeg_exe, run

log = logging.getLogger(__name__)

#: What major video platforms recommend for uploads (AAC-LC, 48 kHz); the speech is resampled once.
AUDIO_RATE = 48000
AUDIO_BITRATE = "64k"
#: ISO 639-1 (the engines' ``language``) → ISO 639-2/T, which MP4 stream tags use.
MP4_LANGUAGE = {"ja": "jpn", "en": "eng"}


@lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    """Which ffmpeg build encodes (part of segment cache keys): imageio-ffmpeg's version and binary size."""
    import os

    import imageio_ffmpeg

    return f"imageio-ffmpeg-{imageio_ffmpeg.__version__}-{os.path.getsize(ffmpeg_exe())}"


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


def force_times(times: list[float], fps: float) -> str:
    """Times for ``-force_key_frames`` / ``-segment_times``: each half a frame early.

    Both act on the first frame at or after the time given. Printed to 6 decimals, a slide start
    such as 8/3 s reads "2.666667", later than the frame (2.6666…), and the keyframe (or the cut)
    would land one frame late; half a frame early it lands on the slide's first frame, and no
    other frame lies within half a frame of it.
    """
    return ",".join(f"{max(0.0, t - 0.5 / fps):.6f}" for t in times)


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
        **{"profile:v": "high", "b:a": AUDIO_BITRATE, "force_key_frames": force_times(keyframe_times(stills), fps),
           "g": int(fps * 60)},
    )
    return _finish(stream)


#: Everything that makes a segment's bytes; part of its cache key. Change it when the recipe changes.
#: x264 settings for stills: no lookahead or macroblock tree (nothing moves, and every slide starts with a
#: forced IDR frame anyway) and the cheapest motion search. The repeated frames of a slide are all skip
#: blocks, so this takes about a third off the segment pass at a few percent more bytes.
STILL_X264_PARAMS = "rc-lookahead=0:sync-lookahead=0:mbtree=0:me=dia:subme=1"
SEGMENT_RECIPE = f"seg-v2:libx264:high:veryfast:stillimage:bf0:yuv420p:{STILL_X264_PARAMS}"


def segments_command(slides: list[list[Still]], pattern: str, workdir: Path, *, fps: float,
                     preset: str = "veryfast") -> list[str]:
    """Slides (each a list of stills) → one video-only H.264 segment per slide, in one ffmpeg pass.

    ``pattern`` is a printf pattern (``seg-%04d.mp4``) numbered from 0 in the order given. One
    pass means one x264 start and every still decoded once; the segment muxer cuts at the
    keyframes forced at each slide's start, so every segment starts with an IDR frame and holds
    exactly that slide's whole frames.
    """
    stills = [Still(still.path, still.duration, keyframe=(index == 0))
              for slide in slides for index, still in enumerate(slide)]
    listing = workdir / (Path(pattern).stem.replace("%", "") + ".ffconcat")
    write_ffconcat(listing, stills)
    starts = keyframe_times(stills)
    frames = int(round(sum(still.duration for still in stills) * fps))
    video = (ffmpeg.input(str(listing), f="concat", safe=0).video
             .filter("format", "yuv420p").filter("fps", fps=fps))
    options = {"profile:v": "high", "frames:v": frames, "g": int(fps * 60),
               "force_key_frames": force_times(starts, fps)}
    if len(starts) > 1:
        # The muxer cuts at the first keyframe at or after each time (see ``force_times``).
        options["segment_times"] = force_times(starts[1:], fps)
    stream = ffmpeg.output(
        video, pattern, f="segment", segment_format="mp4", reset_timestamps=1,
        vcodec="libx264", preset=preset, tune="stillimage", pix_fmt="yuv420p", bf=0, **options,
        **{"x264-params": STILL_X264_PARAMS},
    )
    return _finish(stream)


def narration_command(wav: str, output: str, *, audio_rate: int = AUDIO_RATE,
                      gain_db: float | None = None) -> list[str]:
    """The whole narration → AAC-LC in an ``.m4a``, once (the job runs it beside the segment pass).

    With ``gain_db`` (see ``loudness``) the track is brought to its loudness target and its peaks
    limited; without it, it is only resampled.
    """
    options = {"acodec": "aac", "ac": 1, "aac_coder": "fast", "b:a": AUDIO_BITRATE}
    if gain_db is None:
        options["ar"] = audio_rate
    else:
        from .loudness import filter_chain

        options["af"] = filter_chain(gain_db, audio_rate)
    return _finish(ffmpeg.output(ffmpeg.input(wav).audio, output, **options))


@dataclass(frozen=True)
class Chapter:
    """A titled span of the video (one per slide)."""

    start: float
    end: float
    title: str


def write_chapters(path: Path, chapters: list[Chapter]) -> None:
    """Chapters as an ffmetadata file (what ``-map_chapters`` reads), in milliseconds."""
    def escape(text: str) -> str:
        text = " ".join(text.split())
        for char in "\\=;#":
            text = text.replace(char, "\\" + char)
        return text

    lines = [";FFMETADATA1"]
    for chapter in chapters:
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={int(round(chapter.start * 1000))}",
                  f"END={int(round(chapter.end * 1000))}", f"title={escape(chapter.title)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def join_command(segments: list[tuple[str, float]], audio: str, output: str, workdir: Path, *,
                 audio_rate: int = AUDIO_RATE, chapters: list[Chapter] | None = None,
                 subtitles: str | None = None, language: str | None = None) -> list[str]:
    """Video segments ``(path, seconds)`` joined without re-encoding + the narration encoded once.

    ``audio`` is a WAV (encoded here) or an ``.m4a`` from ``narration_command`` (copied as it is;
    the MP4 muxer carries its encoder delay over, so sync holds to the sample). ``chapters``
    become the MP4's chapters; ``subtitles`` (an SRT file) a ``mov_text`` caption stream.
    ``language`` (ISO 639-1) tags the audio and caption streams.
    """
    listing = workdir / "segments.ffconcat"
    lines = ["ffconcat version 1.0"]
    for path, duration in segments:
        lines += [f"file {_quote(path)}", f"duration {duration:.6f}"]
    listing.write_text("\n".join(lines) + "\n")
    total = sum(duration for _, duration in segments)
    args = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-progress", "pipe:1",
            "-f", "concat", "-safe", "0", "-i", str(listing), "-i", audio]
    maps = ["-map", "0:v:0", "-map", "1:a:0"]
    codecs = ["-c:v", "copy"]
    if audio.endswith(".m4a"):
        codecs += ["-c:a", "copy"]
    else:
        codecs += ["-c:a", "aac", "-ac", "1", "-ar", str(audio_rate), "-aac_coder", "fast", "-b:a", AUDIO_BITRATE]
    tags = []
    code = MP4_LANGUAGE.get(language or "", "und")
    tags += ["-metadata:s:a:0", f"language={code}"]
    inputs = 2
    if subtitles:
        args += ["-i", subtitles]
        maps += ["-map", f"{inputs}:s:0"]
        codecs += ["-c:s", "mov_text"]
        tags += ["-metadata:s:s:0", f"language={code}", "-metadata:s:s:0", "title=Narration"]
        inputs += 1
    if chapters:
        meta = workdir / "chapters.ffmeta"
        write_chapters(meta, chapters)
        args += ["-f", "ffmetadata", "-i", str(meta)]
        maps += ["-map_chapters", str(inputs)]
        inputs += 1
    return [*args, *maps, *codecs, *tags, "-movflags", "+faststart", "-t", f"{total:.6f}", "-y", output]


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
           on_progress: Callable[[float], None] | None = None, timeout: float | None = None,
           on_start: Callable[[int], None] | None = None) -> None:
    """Run an ffmpeg command; report the fraction done from its ``-progress`` output."""
    def on_line(line: str) -> None:
        if on_progress and line.startswith("out_time_us=") and total_s > 0:
            try:
                on_progress(min(1.0, max(0.0, int(line.split("=", 1)[1]) / 1e6 / total_s)))
            except ValueError:
                pass

    try:
        run(args, cancelled=cancelled, on_line=on_line, timeout=timeout, on_start=on_start)
    except ProcessFailed as exc:
        raise EncodeError(f"ffmpeg failed with status {exc.returncode}: {exc.tail.strip()[-1500:]}") from None
