"""``dojo render``: upload a deck and render a narrated video, from the command line.

The ``dojo`` command finds ``add_commands`` through ``CLI`` in the package and lends it a
``kit`` (an HTTP client factory and its printers), so this package never imports ``serve``.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUTPUTS = ("video", "subtitles_vtt", "subtitles_srt", "chapters_vtt", "thumbnail", "manifest")


def add_commands(sub, kit) -> None:
    render = sub.add_parser("render", help="upload a deck and render a narrated video")
    render.add_argument("deck", nargs="+", help="a PDF, images, or a Markdown deck whose notes are the narration")
    render.add_argument("--script", help="narration per slide (YAML or JSON list)")
    render.add_argument("--engine", help="openjtalk (Japanese, default), kokoro, piper (English), voicevox")
    render.add_argument("--voice")
    render.add_argument("--speed", type=float)
    render.add_argument("--resolution", help="e.g. 1920x1080")
    render.add_argument("--subtitles", choices=["true", "false"])
    render.add_argument("--burn-in", action="store_true")
    render.add_argument("--no-watch", dest="watch", action="store_false")
    render.set_defaults(func=lambda args: cmd_render(args, kit))


def cmd_render(args, kit) -> None:
    client = kit.client()
    for path in [*args.deck, *([args.script] if args.script else [])]:
        if not Path(path).is_file():
            raise SystemExit(f"error: {path} does not exist")
    job = client.render(args.deck, args.script, engine=args.engine, voice=args.voice, speed=args.speed,
                        resolution=args.resolution, subtitles=None if args.subtitles is None else args.subtitles,
                        burn_in=args.burn_in or None)
    print(f"render queued as {job['id']}", file=sys.stderr)
    if not args.watch:
        kit.print(job)
        return
    done = client.wait(job["id"])
    if done["status"] != "succeeded":
        kit.finish(done)
    print_outputs(client, done)


def print_outputs(client, job: dict) -> None:
    """The render's length and its outputs' signed URLs (and the file, when this machine holds it)."""
    from actors.settings import Settings

    outputs = client.outputs(job["id"])["urls"]
    result = job["result"]
    objects = Path(Settings.from_env().objects_dir)
    print(f"rendered {result.get('duration_s', 0):.1f}s of video from {result.get('slides')} slides")
    for name in OUTPUTS:
        if name in outputs:
            local = objects / result[name]
            where = f"  file: {local}" if local.is_file() else ""
            print(f"{name:>14}: {outputs[name]}{where}")
