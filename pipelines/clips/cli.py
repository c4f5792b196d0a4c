"""``dojo crawl clips`` and ``dojo clips export``: the clip crawler's commands.

The ``dojo`` command finds ``add_commands`` through ``CLI`` in the package and lends it a ``kit``
(an HTTP client factory and its printers), so this package never imports ``serve``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests


def add_commands(sub, kit) -> None:
    crawl = sub.add_parser("crawl", help="collect clips: enqueue a crawl of every streamer")
    crawl.add_argument("what", choices=["clips"])
    crawl.add_argument("--source", help="'db' (the clip database's streamers), or a .csv / .parquet file")
    crawl.add_argument("--since", help="RFC3339 start (default: the lookback window)")
    crawl.add_argument("--until", help="RFC3339 end")
    crawl.add_argument("--fake-helix", help="URL of a local fake Helix server (python -m pipelines.clips.fake_helix)")
    crawl.add_argument("--queue", default="default")
    crawl.add_argument("--no-watch", dest="watch", action="store_false")
    crawl.set_defaults(func=lambda args: cmd_crawl(args, kit))

    clips = sub.add_parser("clips", help="the clip database: export the collected clips to Parquet")
    clips.add_argument("action", choices=["export"])
    clips.add_argument("out", help="output file, e.g. clips.parquet")
    clips.add_argument("--broadcaster", help="only this broadcaster id")
    clips.add_argument("--db", help="the clip database (default: DOJO_CLIPS_DB, else <state dir>/clips.sqlite3)")
    clips.set_defaults(func=cmd_clips)


def cmd_crawl(args, kit) -> None:
    """Enqueue one clip crawl (the parent fans out a child per streamer) and show its run report."""
    client = kit.client()
    payload = {k: v for k, v in (("source", args.source), ("started_at", args.since), ("ended_at", args.until))
               if v}
    if args.fake_helix:
        payload["helix_url"] = args.fake_helix
        if not (args.since or args.until):  # the fake's clips sit in a fixed range: crawl that range
            payload.update(_fake_helix_range(args.fake_helix))
    job = client.submit("clips.crawl", payload, queue=args.queue)
    print(f"crawl queued as {job['id']}", file=sys.stderr)
    if args.watch:
        done = client.wait(job["id"])
        kit.report(done)
        if done["status"] != "succeeded":
            raise SystemExit(1)
    else:
        kit.print(job)


def cmd_clips(args) -> None:
    """Write the clip database's clips to a Parquet file (pyarrow)."""
    from .db import ClipDB
    from .settings import ClipsSettings

    path = Path(args.db or ClipsSettings.from_env().db_path)
    if not path.exists():
        raise SystemExit(f"dojo: no clip database at {path}; run `dojo crawl clips` first, or pass --db / set "
                         "DOJO_CLIPS_DB")
    count = ClipDB(path).export_parquet(args.out, broadcaster_id=args.broadcaster)
    print(f"{count} clips written to {args.out}")


def _fake_helix_range(url: str) -> dict:
    base = url.rstrip("/").removesuffix("/helix")
    try:
        stats = requests.get(f"{base}/_stats", timeout=10).json()
    except (requests.RequestException, ValueError) as exc:
        raise SystemExit(f"dojo: no fake Helix answers at {base} ({type(exc).__name__}); start one with "
                         "`python -m pipelines.clips.fake_helix --port 8787` or drop --fake-helix") from None
    return {"started_at": stats["started_at"], "ended_at": stats["ended_at"]}
