"""Benchmark the render pipeline on a generated 10-slide 1080p deck with ~90 s of Japanese narration.

    python bench/render.py [--slides 10] [--sentences 5] [--skip-naive]

Prints progress to stderr and, as its last line, one JSON object:
video_s, tts_s, encode_s, total_s, encode_rtf, total_rtf, naive_encode_s,
speedup_vs_naive, rerender_one_slide_s (and a few details).

``total_s`` runs the render job function directly with ``local_context()``
from the moment the inputs are stored until it returns (the API path comes
later). ``encode_s`` and ``naive_encode_s`` encode the very same stills and
narration track, the fast recipe and the naive one (each still looped at
30 fps, libx264's default preset), one after the other in this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where a sibling (bench/queue.py)
# would shadow the standard library; the repository root is what we want there.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from actors.jobs import local_context  # noqa: E402
from actors.storage import LocalStore  # noqa: E402
from pipelines.render import encode, slides, timeline  # noqa: E402
from pipelines.render.audio import wav_bytes  # noqa: E402
from pipelines.render.cache import RenderCache  # noqa: E402
from pipelines.render.deck import load_deck  # noqa: E402
from pipelines.render.job import RenderOptions, run_render  # noqa: E402
from pipelines.render.sample import generated_deck  # noqa: E402
from pipelines.render.tts import Voice, engine_class  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", type=int, default=10)
    parser.add_argument("--sentences", type=int, default=2, help="sentences of narration per slide")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow naive encode")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dojo-bench-") as tmp:
        root = Path(tmp)
        store = LocalStore(root / "objects", secret="bench")
        name, deck_bytes = generated_deck(args.slides, args.sentences)
        options = RenderOptions()
        store.put_bytes("inputs/bench/deck.md", deck_bytes)
        payload = {"deck": ["inputs/bench/deck.md"], "names": [name], "options": options.to_dict()}

        say(f"rendering {args.slides} slides at {options.width}x{options.height} ...")
        result, total_s = timed(run_render, local_context("render", job_id="j_bench"), payload, store)
        video_s = result["duration_s"]
        say(f"  video {video_s:.1f}s, total {total_s:.2f}s, steps {result['timings']}")

        workdir = root / "encode"
        workdir.mkdir()
        stills, audio, tl = same_inputs(store, deck_bytes, options, workdir)
        fast_args = encode.fast_command(stills, audio, str(workdir / "fast.mp4"), workdir, fps=tl.fps)
        _, encode_s = timed(encode.encode, fast_args, tl.duration)
        say(f"  fast encode {encode_s:.2f}s")
        naive_s = None
        if not args.skip_naive:
            say("  naive encode (30 fps, default preset) ...")
            naive_args = encode.naive_command(stills, audio, str(workdir / "naive.mp4"))
            _, naive_s = timed(encode.encode, naive_args, tl.duration)
            say(f"  naive encode {naive_s:.2f}s")

        # Change one slide's narration: only that slide is synthesized again.
        lines = deck_bytes.decode("utf-8").split("\n")
        for i, line in enumerate(lines):
            if line.startswith("Note:"):
                lines[i] = line + "この一文を追加しました。"
                break
        store.put_bytes("inputs/bench2/deck.md", "\n".join(lines).encode("utf-8"))
        payload2 = {**payload, "deck": ["inputs/bench2/deck.md"]}
        rerender, rerender_s = timed(run_render, local_context("render", job_id="j_bench2"), payload2, store)
        say(f"  re-render with one changed slide {rerender_s:.2f}s (cached audio {rerender['cached_audio']})")

    report = {
        "slides": args.slides,
        "resolution": f"{options.width}x{options.height}",
        "engine": options.engine,
        "video_s": round(video_s, 3),
        "tts_s": round(result["timings"]["tts_s"], 3),
        "job_encode_s": round(result["timings"]["encode_s"], 3),
        "encode_s": round(encode_s, 3),
        "total_s": round(total_s, 3),
        "encode_rtf": round(encode_s / video_s, 4),
        "total_rtf": round(total_s / video_s, 4),
        "naive_encode_s": round(naive_s, 3) if naive_s is not None else None,
        "speedup_vs_naive": round(naive_s / encode_s, 1) if naive_s is not None else None,
        "rerender_one_slide_s": round(rerender_s, 3),
        "rerender_fraction": round(rerender_s / total_s, 3),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
