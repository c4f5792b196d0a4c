"""The ``render`` job type: stored deck + script → narrated MP4, subtitles, thumbnail, manifest.

Payload (inputs are object keys, stored by ``routes`` after validation)::

    {"deck": ["inputs/u_1/deck-000.pdf"], "script": "inputs/u_1/script.yaml" or null,
     "names": ["talk.pdf"], "options": {"engine": "openjtalk", "speed": 1.0, ...}}

Steps and their progress stages: ``voice`` ("synthesizing voice 3/10"; Ray
tasks with the engine's resources when running inside Ray, in-process
otherwise), ``slides`` (rasterize/normalize, cached per slide, only for slides
whose video segment is not cached), ``encoding`` (one ffmpeg pass writes a
video-only segment for each slide not in the cache, then one ffmpeg call joins
all segments with ``-c:v copy`` and encodes the whole narration once; both
killed on cancel, their pids reported as ``ffmpeg_pid``), ``uploading``
(manifest last; on failure the outputs of this attempt are deleted, and each
object is all-or-nothing).

Result: ``{"video", "subtitles_vtt", "subtitles_srt", "thumbnail", "manifest"}``
keys plus ``duration_s``, slide count, cache hits and per-step timings.

Over 500 lines because it is the render's one sequence of steps, each with its progress, cancel and
cleanup rules side by side; the media work itself lives in the modules beside it (``deck``, ``tts``,
``encode``, ``loudness``, ``cache``, ``publish``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PIL import Image

from actors.exceptions import InvalidInput
from actors.jobs import JobCancelled, JobContext, job
from actors.storage import UploadAborted, validate_key

from . import encode, loudness, slides, subtitles, timeline
from .audio import SlideAudio, synthesize_narration, wav_bytes
from .cache import RenderCache
from .deck import Deck, Limits, load_deck
from .exceptions import RenderError
from .tts import Voice, check_voice, cluster_capacity, engine_class, get_engine, resources_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderOptions:
    """What the user may choose; ``from_dict`` says exactly what is wrong with a bad value."""

    engine: str = "openjtalk"
    voice: str = ""
    speed: float = 1.0
    width: int = 1920
    height: int = 1080
    pad_before: float = 0.3
    pad_after: float = 0.5
    subtitles: bool = True
    burn_in: bool = False
    fps: float = 2.0
    #: Integrated loudness target of the narration in LUFS (−16 for streaming, −23 for broadcast), or "off".
    loudness: str = "-16"

    @classmethod
    def from_dict(cls, data: dict | None) -> "RenderOptions":
        data = dict(data or {})
        if "resolution" in data:
            raw = str(data.pop("resolution")).lower()
            try:
                data["width"], data["height"] = (int(part) for part in raw.split("x"))
            except ValueError:
                raise InvalidInput(f"resolution must look like 1920x1080, got {raw!r}") from None
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise InvalidInput(f"unknown render options {sorted(unknown)}; known: {sorted(known)}")
        values = {}
        for name, value in data.items():
            kind = known[name].type
            try:
                if kind == "bool":
                    if isinstance(value, str):
                        if value.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                            raise ValueError
                        value = value.lower() in ("true", "1", "yes", "on")
                    values[name] = bool(value)
                elif kind == "int":
                    number = float(value)
                    if number != int(number):
                        raise ValueError
                    values[name] = int(number)
                elif kind == "float":
                    values[name] = float(value)
                else:
                    values[name] = "" if value is None else str(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"render option {name!r} must be {kind}, got {value!r}") from None
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        if not (320 <= self.width <= 3840 and 180 <= self.height <= 2160) or self.width % 2 or self.height % 2:
            raise InvalidInput(f"resolution {self.width}x{self.height} must be even numbers within "
                               f"320x180..3840x2160 (H.264 yuv420p needs even sizes)")
        if not 0.5 <= self.speed <= 2.0:
            raise InvalidInput(f"speed must be within 0.5..2.0, got {self.speed}")
        for name in ("pad_before", "pad_after"):
            if not 0.0 <= getattr(self, name) <= 10.0:
                raise InvalidInput(f"{name} must be within 0..10 seconds, got {getattr(self, name)}")
        if not 1 <= self.fps <= 30:
            raise InvalidInput(f"fps must be within 1..30, got {self.fps}")
        try:
            loudness.check_target(self.loudness)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        check_voice(Voice(self.engine, self.voice))

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def loudness_target(self) -> float | None:
        return loudness.check_target(self.loudness)

    def to_dict(self) -> dict:
        return asdict(self)


def validate_payload(payload) -> None:
    """Refuse a malformed payload at enqueue time (the queue calls this)."""
    if not isinstance(payload, dict):
        raise InvalidInput(f"render payload must be an object, got {type(payload).__name__}")
    deck = payload.get("deck")
    if not isinstance(deck, list) or not deck:
        raise InvalidInput("render payload needs 'deck': a non-empty list of object keys")
    for key in deck:
        validate_key(key)
    if payload.get("script") is not None:
        validate_key(payload["script"])
    names = payload.get("names")
    if names is not None and (not isinstance(names, list) or len(names) != len(deck)):
        raise InvalidInput("render payload 'names' must list one file name per deck key")
    unknown = set(payload) - {"deck", "script", "names", "options", "script_name"}
    if unknown:
        raise InvalidInput(f"unknown render payload fields {sorted(unknown)}")
    RenderOptions.from_dict(payload.get("options"))


def _synthesize_task(voice: Voice, text: str, speed: float, engine_env: dict | None = None) -> SlideAudio:
    """One slide's narration; runs as a Ray task or in-process.

    ``engine_env`` carries the engine settings of the job's process (e.g.
    DOJO_VOICEVOX_URL) to a task on another worker, whose environment may differ.
    """
    import os

    for name, value in (engine_env or {}).items():
        if value:
            os.environ[name] = value
    return synthesize_narration(get_engine(voice), text, speed)


_remote_synthesize = None


def _synthesize_all(ctx: JobContext, deck: Deck, voice: Voice, options: RenderOptions, cache: RenderCache,
                    report) -> tuple[list[SlideAudio], list[bool]]:
    engine_id = engine_class(voice.engine).cache_id(voice.voice)
    keys = [cache.audio_key(engine_id, options.speed, slide.narration) for slide in deck.slides]
    clips: list[SlideAudio | None] = [cache.get_audio(key) for key in keys]
    hits = [clip is not None for clip in clips]
    todo = [index for index, clip in enumerate(clips) if clip is None]
    done = len(deck) - len(todo)
    report(done)

    import ray

    resources = resources_for(voice, cluster_capacity()) if ray.is_initialized() and todo else None
    # Fan out over Ray tasks, except a single CPU slide (a re-render's usual case): a task would pay a
    # worker's start and the engine's load, about a second, for a third of a second of speech. (This
    # path was once taken back for a cancel test that hung; the hang was ffmpeg's fork, see process.py.)
    if resources is not None and (len(todo) > 1 or resources.num_gpus):
        global _remote_synthesize
        if _remote_synthesize is None:
            _remote_synthesize = ray.remote(_synthesize_task)
        task = _remote_synthesize.options(**resources.ray_options(), max_retries=2)
        import os

        engine_env = {"DOJO_VOICEVOX_URL": os.environ.get("DOJO_VOICEVOX_URL", "")}
        refs = {task.remote(voice, deck.slides[i].narration, options.speed, engine_env): i for i in todo}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
                ctx.check_cancelled()
                for ref, clip in zip(ready, ray.get(ready)):
                    clips[refs[ref]] = clip
                    cache.put_audio(keys[refs[ref]], clip)
                    done += 1
                    report(done)
        except BaseException:
            for ref in pending:  # force=True kills the worker process, and TTS with it
                ray.cancel(ref, force=True)
            raise
    else:
        for index in todo:
            ctx.check_cancelled()
            clip = _synthesize_task(voice, deck.slides[index].narration, options.speed)
            clips[index] = clip
            cache.put_audio(keys[index], clip)
            done += 1
            report(done)
    return clips, hits


def _pieces(slide, span: timeline.SlideSpan, tl: timeline.Timeline, burn_in: bool) -> list[tuple[str, int]]:
    """What a slide shows, in order: ``(caption, frames)``; one piece without burned-in captions."""
    cues = [cue for cue in tl.cues if cue.slide == slide.number] if burn_in else []
    if not cues:
        return [("", span.frames)]
    # Captions change on whole frames inside the slide, like the slides themselves.
    marks = [(0, "")]
    for cue in cues:
        marks.append((round((cue.start - span.start) * tl.fps), cue.text))
        marks.append((round((cue.end - span.start) * tl.fps), ""))
    marks.append((span.frames, None))
    pieces = []
    for (at, text), (until, _) in zip(marks, marks[1:]):
        until = min(until, span.frames)
        if until > at:
            pieces.append((text or "", until - at))
    return pieces


def _segments(deck: Deck, tl: timeline.Timeline, options: RenderOptions, cache: RenderCache, workdir: Path,
              ctx: JobContext) -> tuple[list[tuple[str, float]], bytes, list[bool], float]:
    """Each slide's video segment (from the cache, or encoded now in one ffmpeg pass) and the thumbnail.

    Returns ``[(segment path, seconds)]`` in slide order, the thumbnail JPEG, a cache hit per
    slide, and the seconds spent encoding.
    """
    def still(slide, caption: str, key: str) -> str:
        path = workdir / f"still-{key[:24]}.png"
        if path.exists():
            return str(path)
        png = cache.get_still(key)
        if png is None:
            image = slides.render_slide(slide, options.size)
            if caption:
                image = slides.draw_caption(image, caption)
            png = slides.png_bytes(image)
            cache.put_still(key, png)
        path.write_bytes(png)
        return str(path)

    recipe = f"{encode.SEGMENT_RECIPE}:{encode.ffmpeg_version()}"
    plans = []
    for slide, span in zip(deck.slides, tl.spans):
        pieces = _pieces(slide, span, tl, options.burn_in)
        keys = [cache.still_key(slide.content_hash(), options.size, caption) for caption, _ in pieces]
        segment = cache.segment_key(recipe, tl.fps, options.size, [(key, n) for key, (_, n) in zip(keys, pieces)])
        plans.append((slide, span, pieces, keys, segment))

    frame = 1.0 / tl.fps
    paths: list[str] = []
    hits: list[bool] = []
    for slide, span, _, _, segment in plans:
        ctx.check_cancelled()
        path = workdir / f"segment-{slide.number:04d}-{segment[:16]}.mp4"
        hits.append(cache.get_segment(segment, path))
        paths.append(str(path))
    todo = [index for index, hit in enumerate(hits) if not hit]

    stills_todo: list[list[encode.Still]] = []
    for number, index in enumerate(todo, 1):
        ctx.check_cancelled()
        slide, span, pieces, keys, _ = plans[index]
        ctx.progress(round(0.65 + 0.05 * number / len(todo), 4), stage="slides",
                     message=f"preparing slide {slide.number}/{len(deck)}")
        stills_todo.append([encode.Still(still(slide, caption, key), n * frame, keyframe=(j == 0))
                            for j, ((caption, n), key) in enumerate(zip(pieces, keys))])
    first = plans[0]
    thumb_key = cache.still_key(first[0].content_hash(), options.size, "")
    thumbnail = cache.get_thumbnail(thumb_key)
    if thumbnail is None:  # decoding and scaling a 1080p still cost a re-render ~0.1 s before its encode
        with Image.open(still(first[0], "", thumb_key)) as picture:
            thumbnail = slides.thumbnail_jpeg(picture.convert("RGB"))
        cache.put_thumbnail(thumb_key, thumbnail)

    ctx.check_cancelled()
    ctx.progress(0.7, stage="encoding", message="encoding",
                 slides_encoded=len(todo), slides_cached=len(deck) - len(todo))
    encode_s = 0.0
    if todo:
        mark = time.perf_counter()
        pattern = str(workdir / "fresh-%04d.mp4")
        args = encode.segments_command(stills_todo, pattern, workdir, fps=tl.fps)
        seconds = sum(still.duration for group in stills_todo for still in group)
        last = [0.0]

        def on_progress(fraction: float) -> None:
            if fraction - last[0] >= 0.25:
                last[0] = fraction
                ctx.progress(round(0.7 + 0.15 * fraction, 4), stage="encoding", message=f"encoding {fraction:.0%}")

        def on_start(pid: int) -> None:  # lets a watcher see (and a test check) the child that cancel kills
            ctx.progress(0.7, stage="encoding", message=f"encoding {len(todo)}/{len(deck)} slides",
                         ffmpeg_pid=pid)

        encode.encode(args, seconds, cancelled=ctx.cancelled, on_progress=on_progress, on_start=on_start)
        if Path(pattern % len(todo)).exists():
            raise RenderError(f"encoding: ffmpeg cut {len(todo)} slides into more segments than slides")
        for number, index in enumerate(todo):
            fresh = Path(pattern % number)
            if not fresh.is_file() or fresh.stat().st_size == 0:
                raise RenderError(f"encoding: ffmpeg wrote no segment for slide {index + 1}")
            fresh.replace(paths[index])
            cache.put_segment(plans[index][4], paths[index])
        encode_s = time.perf_counter() - mark
    return [(path, span.frames * frame) for path, span in zip(paths, tl.spans)], thumbnail, hits, encode_s


def _narration(wav: Path, m4a: Path, target: float | None, duration: float, cancelled, encoded: Future, *,
               speech=None, gain: float | None = None) -> loudness.Loudness:
    """Bring the narration to its loudness target, encode it once, then measure the encoded track.

    ``speech()`` measures the narration before its gain (slide by slide, see ``loudness.speech``);
    with ``gain`` it is not asked (a pass after the limiter took loudness off the peaks).
    ``encoded`` gets ``(speech measured, gain used)`` the moment the AAC is written, so the join
    runs while the encoded track is measured: both only read it.
    """
    try:
        before = None
        if gain is None and target is not None:
            before = speech()
            gain = loudness.gain_db(before, target)
        encode.encode(encode.narration_command(str(wav), str(m4a), gain_db=gain), duration, cancelled=cancelled)
    except BaseException as exc:
        encoded.set_exception(exc)
        raise
    encoded.set_result((before, gain))
    return loudness.measure(str(m4a), encode.ffmpeg_exe(), cancelled)


def _join(args: list[str], duration: float, encoded: Future, after: Future, ctx):
    """Join the segments and the encoded narration; returns ``encoded``'s and ``after``'s results."""
    speech, gain = encoded.result()
    try:
        encode.encode(args, duration, cancelled=ctx.cancelled,
                      on_start=lambda pid: ctx.progress(0.85, stage="encoding", message="joining", ffmpeg_pid=pid))
    finally:
        measured = after.result()
    return speech, gain, measured


def _chapters(deck: Deck, tl: timeline.Timeline) -> list[encode.Chapter]:
    return [encode.Chapter(span.start, span.end, slide.title())
            for slide, span in zip(deck.slides, tl.spans)]


def _audio_of(video: Path) -> dict:
    """The audio track of a rendered file as a player sees it: codec, sample rate, channels."""
    import av

    with av.open(str(video)) as container:
        sound = container.streams.audio[0].codec_context
        return {"codec": sound.name, "sample_rate": sound.sample_rate, "channels": sound.channels}


def run_render(ctx: JobContext, payload: dict, store, limits: Limits = Limits()) -> dict:
    """The whole render against ``store``; ``render`` (the job) builds the store from settings."""
    validate_payload(payload)
    options = RenderOptions.from_dict(payload.get("options"))
    voice = Voice(options.engine, options.voice)
    cache = RenderCache(store)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    ctx.progress(0.0, stage="loading", message="reading the deck")
    names = payload.get("names") or [key.rsplit("/", 1)[-1] for key in payload["deck"]]
    files = [(name, store.get_bytes(key)) for name, key in zip(names, payload["deck"])]
    script = None
    if payload.get("script"):
        script = (payload.get("script_name") or payload["script"].rsplit("/", 1)[-1], store.get_bytes(payload["script"]))
    deck = load_deck(files, script, limits)
    ctx.log(f"render: {len(deck)} slides, engine {voice.engine}")

    with tempfile.TemporaryDirectory(prefix="dojo-render-") as tmp:
        workdir = Path(tmp)
        mark = time.perf_counter()

        def report(done: int) -> None:
            ctx.progress(round(0.1 + 0.55 * done / len(deck), 4), stage="voice",
                         message=f"synthesizing voice {done}/{len(deck)}", done=done, total=len(deck))

        clips, hits = _synthesize_all(ctx, deck, voice, options, cache, report)
        timings["tts_s"] = time.perf_counter() - mark
        tl, track = timeline.build(clips, fps=options.fps, pad_before=options.pad_before,
                                   pad_after=options.pad_after)

        mark = time.perf_counter()
        # The narration (speech measured, AAC encoded, encoded track measured) runs beside the slides'
        # segment pass; the join then only copies.
        wav_path = workdir / "narration.wav"
        wav_path.write_bytes(wav_bytes(track, tl.sample_rate))
        audio_path = workdir / "narration.m4a"
        target = options.loudness_target
        starts = [round(span.start * tl.sample_rate) for span in tl.spans]

        def speech() -> loudness.Speech:
            return loudness.speech(track, tl.sample_rate, starts, cache, str(wav_path), ctx.cancelled)

        with ThreadPoolExecutor(1, thread_name_prefix="dojo-narration") as beside:
            encoded = Future()
            after = beside.submit(_narration, wav_path, audio_path, target, tl.duration, ctx.cancelled, encoded,
                                  speech=speech)
            segments, thumbnail, segment_hits, segments_s = _segments(deck, tl, options, cache, workdir, ctx)
            timings["slides_s"] = time.perf_counter() - mark - segments_s
            timings["segments_s"] = segments_s

            ctx.check_cancelled()
            ctx.progress(0.85, stage="encoding", message="joining slides and the narration")
            mark = time.perf_counter()
            video_path = workdir / "video.mp4"
            chapters = _chapters(deck, tl)
            srt_path = None
            if options.subtitles and tl.cues:
                srt_path = workdir / "captions.srt"
                srt_path.write_text(subtitles.to_srt(tl.cues), encoding="utf-8")
            args = encode.join_command(segments, str(audio_path), str(video_path), workdir, chapters=chapters,
                                       subtitles=str(srt_path) if srt_path else None,
                                       language=engine_class(voice.engine).language)
            before, gain, measured_after = _join(args, tl.duration, encoded, after, ctx)
            for passes in range(2, loudness.MAX_PASSES + 1):
                more = loudness.shortfall_db(measured_after, target)
                if not more:
                    break
                gain = round(gain + more, 2)  # the limiter took loudness off the peaks: ask for that much more
                encoded = Future()
                after = beside.submit(_narration, wav_path, audio_path, target, tl.duration, ctx.cancelled, encoded,
                                      gain=gain)
                _, _, measured_after = _join(args, tl.duration, encoded, after, ctx)
            measured = {"target_lufs": target, "gain_db": gain, **measured_after.to_dict(),
                        "speech": before.to_dict() if before is not None else None}
        timings["join_s"] = time.perf_counter() - mark
        timings["encode_s"] = segments_s + timings["join_s"]

        prefix = f"renders/{ctx.job_id}"
        keys = {"video": f"{prefix}/video.mp4", "thumbnail": f"{prefix}/thumbnail.jpg",
                "manifest": f"{prefix}/manifest.json",
                "subtitles_vtt": f"{prefix}/subtitles.vtt" if options.subtitles else None,
                "subtitles_srt": f"{prefix}/subtitles.srt" if options.subtitles else None,
                "chapters_vtt": f"{prefix}/chapters.vtt"}
        document = timeline.manifest(tl, engine=voice.engine, voice=voice.voice or engine_class(voice.engine).voices[0],
                                     clips=clips, options=options.to_dict(), keys=keys, cached=hits)
        for entry, hit in zip(document["slides"], segment_hits):
            entry["segment_cached"] = hit
        # The manifest states what the MP4 holds, read back from the file (the speech may have
        # been synthesized at another rate than the AAC track carries).
        document["audio"] = _audio_of(video_path)
        document["speech_sample_rate"] = document["sample_rate"]
        document["sample_rate"] = document["audio"]["sample_rate"]
        document["audio"]["loudness"] = measured
        document["audio"]["language"] = engine_class(voice.engine).language
        document["chapters"] = [{"start_s": round(c.start, 3), "end_s": round(c.end, 3), "title": c.title}
                                for c in chapters]
        document["captions_in_video"] = srt_path is not None

        ctx.check_cancelled()
        ctx.progress(0.9, stage="uploading", message="uploading")
        mark = time.perf_counter()
        written: list[str] = []
        try:
            store.put_file(keys["video"], video_path, content_type="video/mp4", cancelled=ctx.cancelled)
            written.append(keys["video"])
            if options.subtitles:
                for key, text, kind in ((keys["subtitles_vtt"], subtitles.to_vtt(tl.cues), "text/vtt"),
                                        (keys["subtitles_srt"], subtitles.to_srt(tl.cues), "application/x-subrip")):
                    store.put_bytes(key, text.encode("utf-8"), content_type=kind)
                    written.append(key)
            store.put_bytes(keys["chapters_vtt"], subtitles.chapters_vtt(chapters).encode("utf-8"),
                            content_type="text/vtt")
            written.append(keys["chapters_vtt"])
            store.put_bytes(keys["thumbnail"], thumbnail, content_type="image/jpeg")
            written.append(keys["thumbnail"])
            ctx.check_cancelled()
            store.put_bytes(keys["manifest"], json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"),
                            content_type="application/json")
        except BaseException as exc:
            for key in written:  # a failed attempt leaves no half set of outputs
                try:
                    store.delete(key)
                except Exception:
                    log.warning("could not delete %s after a failed upload", key)
            if isinstance(exc, UploadAborted):
                raise JobCancelled(str(exc)) from None
            raise
        timings["upload_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    ctx.progress(1.0, stage="done", message="done")
    return {**keys, "duration_s": round(tl.duration, 3), "slides": len(deck), "engine": voice.engine,
            "language": engine_class(voice.engine).language,
            "cached_audio": sum(hits), "cached_segments": sum(segment_hits),
            "timings": {k: round(v, 3) for k, v in timings.items()}}


@job("render", max_attempts=3, timeout=3600, num_cpus=1, validate=validate_payload)
def render(ctx: JobContext, payload: dict) -> dict:
    """Render a stored deck into a narrated video (see the module docstring)."""
    from actors.settings import Settings
    from actors.objects import store_from_settings

    return run_render(ctx, payload, store_from_settings(Settings.from_env()))

