"""Benchmark the render pipeline on a generated 10-slide 1080p deck with ~90 s of Japanese narration.

    python bench/render.py [--slides 10] [--sentences 5] [--skip-naive] [--url URL] [--local]

Prints progress to stderr and, as its last line, one JSON object:
video_s, tts_s, encode_s, total_s, encode_rtf, total_rtf, naive_encode_s,
speedup_vs_naive, rerender_one_slide_s, rerender_fraction (and a few details;
in-process, ``rerender_cpu_fraction``: the same ratio in CPU seconds of the
process and its ffmpeg children, which a loaded machine disturbs less).

``total_s`` is measured through the API when a dojo answers (``--url``, else
``DOJO_URL`` / the local settings; ``mode: "api"``): from the moment
``POST /v1/renders`` accepted the upload until the job's event stream says
succeeded; ``rerender_one_slide_s`` likewise for the same deck with one
slide's narration changed (the job's cache lives in the server's store).
``tts_s`` and ``job_encode_s`` are then the API job's own step timings. The
deck carries a per-run tag (slide titles, and a speed within 1% of 1.0 that is
part of the audio cache key) so no cache from an earlier run is hit. Without a
reachable dojo (or with ``--local``) it says so on stderr and measures the
render job function in-process instead (``mode: "in-process"``).

``encode_s`` is the job's encode, run here on the deck's stills and narration
with a cold cache: one ffmpeg pass writing a video-only segment per slide, then
the join (``-c:v copy``) with the narration encoded once. ``single_pass_encode_s``
is the one-pass recipe over the same inputs and ``naive_encode_s`` the naive one
(each still looped at 30 fps, libx264's default preset), one after the other in
this run.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

# The checkout this script lives in is what it measures (a worktree's too): its root goes first on the path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from actors.jobs import local_context  # noqa: E402
from actors.storage import LocalStore  # noqa: E402
from pipelines.render import encode, slides, timeline  # noqa: E402
from pipelines.render import loudness as loudness_module  # noqa: E402
from pipelines.render.audio import wav_bytes  # noqa: E402
from pipelines.render.cache import RenderCache  # noqa: E402
from pipelines.render.deck import load_deck  # noqa: E402
from pipelines.render.job import RenderOptions, run_render  # noqa: E402
from pipelines.render.sample import generated_deck  # noqa: E402
from pipelines.render.tts import engine_class  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (ffmpeg) so far."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def same_inputs(store, deck_bytes: bytes, options: RenderOptions, workdir: Path):
    """The stills and narration track the job encoded, rebuilt from its cache."""
    deck = load_deck([("deck.md", deck_bytes)])
    cache = RenderCache(store)
    engine_id = engine_class(options.engine).cache_id(options.voice)
    clips = [cache.get_audio(cache.audio_key(engine_id, options.speed, slide.narration)) for slide in deck.slides]
    tl, track = timeline.build(clips, fps=options.fps, pad_before=options.pad_before, pad_after=options.pad_after)
    audio = workdir / "narration.wav"
    audio.write_bytes(wav_bytes(track, tl.sample_rate))
    stills = []
    for slide, span in zip(deck.slides, tl.spans):
        path = workdir / f"slide-{slide.number:03d}.png"
        path.write_bytes(slides.png_bytes(slides.render_slide(slide, options.size)))
        stills.append(encode.Still(str(path), span.frames / tl.fps))
    return stills, str(audio), tl


def segmented_encode(stills: list[encode.Still], audio: str, workdir: Path, fps: float) -> None:
    """What the job does on a cold cache: the narration's AAC beside every slide's segment in one pass,
    then the join (copies both)."""
    from concurrent.futures import ThreadPoolExecutor

    m4a = str(workdir / "narration.m4a")
    with ThreadPoolExecutor(1) as beside:
        narration = beside.submit(encode.encode, encode.narration_command(audio, m4a), 0)
        encode.encode(encode.segments_command([[still] for still in stills], str(workdir / "seg-%04d.mp4"),
                                              workdir, fps=fps), 0)
        narration.result()
    segments = [(str(workdir / f"seg-{i:04d}.mp4"), still.duration) for i, still in enumerate(stills)]
    encode.encode(encode.join_command(segments, m4a, str(workdir / "segmented.mp4"), workdir), 0)


def find_api(url: str | None):
    """A Client for a dojo that answers with a valid token, or None (and why)."""
    try:
        from serve.client import Client

        client = Client(url=url, timeout=10)
        import requests

        requests.get(client.url + "/healthz", timeout=2).raise_for_status()
        client.list(limit=1)
        return client, None
    except Exception as exc:  # not running, refused, bad token: fall back to in-process
        return None, f"{type(exc).__name__}: {exc}"


def api_render(client, path: Path, options: dict) -> tuple[dict, float]:
    """Upload, then time accepted → succeeded on the job's event stream; returns the job and seconds."""
    job = client.render(str(path), **options)
    accepted = time.perf_counter()
    for event in client.events(job["id"]):
        if event["kind"] == "status" and event["data"]["status"] in ("succeeded", "failed", "cancelled"):
            break
    elapsed = time.perf_counter() - accepted
    done = client.get(job["id"])
    if done["status"] != "succeeded":
        raise SystemExit(f"render {job['id']} ended {done['status']}: {done.get('error')}")
    return done, elapsed


def tagged_deck(slides: int, sentences: int, tag: str) -> tuple[str, bytes]:
    name, data = generated_deck(slides, sentences)
    lines = data.decode("utf-8").split("\n")
    lines = [f"{line} ({tag})" if line.startswith("# ") else line for line in lines]
    return name, "\n".join(lines).encode("utf-8")


def change_one_slide(deck_bytes: bytes) -> bytes:
    lines = deck_bytes.decode("utf-8").split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Note:"):
            lines[i] = line + "この一文を追加しました。"
            break
    return "\n".join(lines).encode("utf-8")


def published_loudness(store, engine: str) -> tuple[float, float]:
    """Integrated loudness and true peak of a short render with ``engine``, by ffmpeg's EBU R128 meter."""
    language = engine_class(engine).language
    text = ("Welcome to the benchmark. Every engine lands on one loudness." if language == "en"
            else "ベンチマークへようこそ。どのエンジンも同じ大きさで話します。")
    key = f"inputs/loud-{engine}/deck.md"
    store.put_bytes(key, f"# {engine}\nNote: {text}\n\n---\n\n# two\nNote: {text}\n".encode())
    result = run_render(local_context("render", job_id=f"j_loud_{engine}"),
                        {"deck": [key], "options": {"engine": engine, "width": 640, "height": 360}}, store)
    measured = loudness_module.measure(str(store.path(result["video"])), encode.ffmpeg_exe())
    return measured.integrated_lufs, measured.true_peak_dbtp


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", type=int, default=10)
    parser.add_argument("--sentences", type=int, default=2, help="sentences of narration per slide")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow naive encode")
    parser.add_argument("--url", help="dojo API to measure total_s through (default: DOJO_URL or local settings)")
    parser.add_argument("--local", action="store_true", help="measure in-process even if a dojo answers")
    parser.add_argument("--loudness-engines", default="openjtalk,piper,kokoro",
                        help="engines whose published loudness and true peak are measured (comma-separated)")
    args = parser.parse_args(argv)

    tag = secrets.token_hex(3)
    client, why = (None, "--local given") if args.local else find_api(args.url)
    if client is None:
        say(f"note: no dojo reachable ({why}); total_s and the re-render are measured in-process "
            f"(run_render with local_context), not through the API")
    with tempfile.TemporaryDirectory(prefix="dojo-bench-") as tmp:
        root = Path(tmp)
        store = LocalStore(root / "objects", secret="bench")
        name, deck_bytes = tagged_deck(args.slides, args.sentences, tag)
        # A speed within 1% of 1.0, unique to this run, keys the audio cache away from earlier runs.
        options = RenderOptions(speed=round(1.0 + int(tag, 16) % 97 / 10000 + 0.0001, 4))
        store.put_bytes("inputs/bench/deck.md", deck_bytes)
        payload = {"deck": ["inputs/bench/deck.md"], "names": [name], "options": options.to_dict()}

        say(f"rendering {args.slides} slides at {options.width}x{options.height} in-process ...")
        cpu_mark = cpu_s()
        result, local_total_s = timed(run_render, local_context("render", job_id="j_bench"), payload, store)
        total_cpu_s = cpu_s() - cpu_mark
        video_s = result["duration_s"]
        say(f"  video {video_s:.1f}s, total {local_total_s:.2f}s, steps {result['timings']}")

        workdir = root / "encode"
        workdir.mkdir()
        stills, audio, tl = same_inputs(store, deck_bytes, options, workdir)
        _, encode_s = timed(segmented_encode, stills, audio, workdir, tl.fps)
        say(f"  encode (segments + join, cold cache) {encode_s:.2f}s")
        fast_args = encode.fast_command(stills, audio, str(workdir / "fast.mp4"), workdir, fps=tl.fps)
        _, single_s = timed(encode.encode, fast_args, tl.duration)
        say(f"  single-pass encode {single_s:.2f}s")
        naive_s = None
        if not args.skip_naive:
            say("  naive encode (30 fps, default preset) ...")
            naive_args = encode.naive_command(stills, audio, str(workdir / "naive.mp4"))
            _, naive_s = timed(encode.encode, naive_args, tl.duration)
            say(f"  naive encode {naive_s:.2f}s")

        changed = change_one_slide(deck_bytes)
        if client is not None:
            mode = "api"
            api_options = {"speed": options.speed}
            (root / "deck.md").write_bytes(deck_bytes)
            say(f"rendering through the API at {client.url} ...")
            job, total_s = api_render(client, root / "deck.md", api_options)
            timings = job["result"]["timings"]
            say(f"  {job['id']}: accepted → succeeded {total_s:.2f}s, steps {timings}")
            (root / "deck2.md").write_bytes(changed)
            rerender_job, rerender_s = api_render(client, root / "deck2.md", api_options)
            rerender = rerender_job["result"]
            rerender_cpu_s = None
        else:
            mode = "in-process"
            total_s, timings = local_total_s, result["timings"]
            store.put_bytes("inputs/bench2/deck.md", changed)
            payload2 = {**payload, "deck": ["inputs/bench2/deck.md"]}
            cpu_mark = cpu_s()
            rerender, rerender_s = timed(run_render, local_context("render", job_id="j_bench2"), payload2, store)
            rerender_cpu_s = cpu_s() - cpu_mark
        say(f"  re-render with one changed slide {rerender_s:.2f}s (cached audio {rerender['cached_audio']}, "
            f"cached segments {rerender.get('cached_segments')}, steps {rerender['timings']})")

        loudness = {}
        for engine in [e for e in args.loudness_engines.split(",") if e]:
            say(f"loudness of a short {engine} render ...")
            loudness[engine] = published_loudness(store, engine)
            say(f"  {engine}: {loudness[engine]}")

    report = {
        "slides": args.slides,
        "resolution": f"{options.width}x{options.height}",
        "engine": options.engine,
        "video_s": round(video_s, 3),
        "mode": mode,
        "tts_s": round(timings["tts_s"], 3),
        "job_encode_s": round(timings["encode_s"], 3),
        "encode_s": round(encode_s, 3),
        "single_pass_encode_s": round(single_s, 3),
        "total_s": round(total_s, 3),
        "encode_rtf": round(encode_s / video_s, 4),
        "total_rtf": round(total_s / video_s, 4),
        "in_process_total_s": round(local_total_s, 3),
        "naive_encode_s": round(naive_s, 3) if naive_s is not None else None,
        "speedup_vs_naive": round(naive_s / encode_s, 1) if naive_s is not None else None,
        "rerender_one_slide_s": round(rerender_s, 3),
        "rerender_fraction": round(rerender_s / total_s, 3),
        # In-process only: CPU seconds (this process and ffmpeg), steadier than wall time on a loaded machine.
        "rerender_cpu_fraction": round(rerender_cpu_s / total_cpu_s, 3) if rerender_cpu_s is not None else None,
        "loudness_target_lufs": loudness_module.DEFAULT_TARGET_LUFS,
        **{f"loudness_lufs_{engine}": figures[0] for engine, figures in loudness.items()},
        **{f"true_peak_dbtp_{engine}": figures[1] for engine, figures in loudness.items()},
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
