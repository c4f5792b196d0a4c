"""The ``dojo`` command line: start a local dojo, submit and watch jobs.

Flags mirror the DOJO_* settings (``--port`` is DOJO_PORT, ...). Errors print
one line saying what was wrong and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before anything imports ray (see serve.launcher)

import requests  # noqa: E402

from .client import ApiError, Client  # noqa: E402


def _payload(text: str | None):
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise SystemExit(f"error: payload file {path} does not exist")
        text = path.read_text()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"error: --payload is not valid JSON ({exc}); pass JSON text or @file.json") from None


def _print(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def _apply_settings_flags(args) -> None:
    for flag, env in (("state_dir", "DOJO_STATE_DIR"), ("host", "DOJO_HOST"), ("port", "DOJO_PORT"),
                      ("url", "DOJO_URL"), ("token", "DOJO_API_TOKEN")):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value)


def cmd_up(args) -> None:
    from actors.settings import Settings

    from .launcher import describe, up

    settings = Settings.from_env()
    info = up(settings, num_cpus=args.num_cpus)
    print(describe(info))
    print(f"dojo is up at {info['url']}  (API token in {info['tokens']}; `dojo token` prints it)")
    print(f"Ray token in {info['ray_token']}; for Ray's CLIs (ray status, ray job submit, serve status) "
          "run: eval \"$(dojo env)\"")


def cmd_env(args) -> None:
    from .launcher import shell_exports

    for name, value in shell_exports().items():
        print(f"export {name}={shlex.quote(value)}")


def cmd_down(args) -> None:
    from .launcher import down

    down()
    print("dojo is down")


def cmd_token(args) -> None:
    from actors.settings import Settings

    print(Settings.from_env().api_token)


def cmd_submit(args) -> None:
    client = Client()
    options = dict(queue=args.queue, priority=args.priority, delay=args.delay, max_attempts=args.max_attempts,
                   timeout=args.timeout, unique_key=args.unique_key)
    job = client.submit(args.type, _payload(args.payload), **options)
    if args.watch:
        print(f"submitted {job['id']}", file=sys.stderr)
        _finish(client.wait(job["id"]))
    else:
        _print(job)


def _finish(job: dict) -> None:
    _print({k: job[k] for k in ("id", "type", "status", "attempts", "result", "error")})
    if job["status"] != "succeeded":
        raise SystemExit(1)


def cmd_get(args) -> None:
    job = Client().get(args.id)
    if args.report:
        _print_report(job)
    else:
        _print(job)


def _print_report(job: dict) -> None:
    """A flow's run report: children by status, summed result fields, errors grouped by message."""
    children = job.get("children") or {}
    duration = (job["finished_at"] or job["updated_at"]) - job["created_at"]
    print(f"{job['id']}  {job['type']}  {job['status']}  {duration:.1f}s")
    print(f"children: {children.get('final', 0)}/{children.get('total', 0)} final  "
          + "  ".join(f"{k}={v}" for k, v in sorted((children.get("counts") or {}).items())))
    for field, value in sorted((children.get("sums") or {}).items()):
        print(f"  {field}: {value}")
    for message, count in sorted((children.get("errors") or {}).items(), key=lambda kv: -kv[1]):
        print(f"  error x{count}: {message}")
    if isinstance(job.get("result"), dict):
        print("result: " + json.dumps(job["result"]))


def cmd_render(args) -> None:
    client = Client()
    for path in [*args.deck, *([args.script] if args.script else [])]:
        if not Path(path).is_file():
            raise SystemExit(f"error: {path} does not exist")
    job = client.render(args.deck, args.script, engine=args.engine, voice=args.voice, speed=args.speed,
                        resolution=args.resolution, subtitles=None if args.subtitles is None else args.subtitles,
                        burn_in=args.burn_in or None)
    print(f"render queued as {job['id']}", file=sys.stderr)
    if not args.watch:
        _print(job)
        return
    done = client.wait(job["id"])
    _finish_render(client, done)


def _finish_render(client: Client, job: dict) -> None:
    if job["status"] != "succeeded":
        _finish(job)
    from actors.settings import Settings

    outputs = client.outputs(job["id"])["urls"]
    result = job["result"]
    objects = Path(Settings.from_env().objects_dir)
    print(f"rendered {result.get('duration_s', 0):.1f}s of video from {result.get('slides')} slides")
    for name in ("video", "subtitles_vtt", "subtitles_srt", "chapters_vtt", "thumbnail", "manifest"):
        if name in outputs:
            local = objects / result[name]
            where = f"  file: {local}" if local.is_file() else ""
            print(f"{name:>14}: {client.url}{outputs[name]}{where}")


def cmd_schedule(args) -> None:
    client = Client()
    if args.action == "add":
        body = {"name": args.name, "cron": args.cron, "timezone": args.timezone, "missed": args.missed,
                "job": {"type": args.type, "payload": _payload(args.payload)}}
        _print(client._call("POST", "/v1/schedules", body, queue=args.queue))
    elif args.action == "list":
        for sched in client._call("GET", "/v1/schedules", queue=args.queue)["schedules"]:
            state = "paused" if sched["paused"] else "active"
            import datetime

            nxt = datetime.datetime.fromtimestamp(sched["next_run"]).isoformat(timespec="seconds")
            print(f"{sched['name']:<24} {sched['cron']:<16} {sched['timezone']:<12} {state:<7} next {nxt}  "
                  f"fired {sched['fired']}  last job {sched['last_job_id'] or '-'}")
    elif args.action == "rm":
        _print(client._call("DELETE", f"/v1/schedules/{args.name}", queue=args.queue))
    else:
        action = {"pause": "pause", "resume": "resume", "run": "run"}[args.action]
        _print(client._call("POST", f"/v1/schedules/{args.name}/{action}", queue=args.queue))


def cmd_crawl(args) -> None:
    """Enqueue one clip crawl (the parent fans out a child per streamer) and show its run report."""
    client = Client()
    payload = {k: v for k, v in (("source", args.source), ("started_at", args.since), ("ended_at", args.until))
               if v}
    if args.fake_helix:
        payload["fake_helix"] = args.fake_helix
        if not (args.since or args.until):  # the fake's clips sit in a fixed range: crawl that range
            payload.update(_fake_helix_range(args.fake_helix))
    job = client.submit("clips.crawl", payload, queue=args.queue)
    print(f"crawl queued as {job['id']}", file=sys.stderr)
    if args.watch:
        done = client.wait(job["id"])
        _print_report(done)
        if done["status"] != "succeeded":
            raise SystemExit(1)
    else:
        _print(job)


def cmd_clips(args) -> None:
    """Write the clip database's clips to a Parquet file (pyarrow)."""
    from pipelines.clips.db import ClipDB
    from pipelines.clips.settings import ClipsSettings

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


def cmd_list(args) -> None:
    page = Client().list(queue=args.queue, status=args.status, type=args.type, limit=args.limit, cursor=args.cursor)
    for job in page["jobs"]:
        progress = (job.get("progress") or {}).get("message") or ""
        print(f"{job['id']}  {job['type']:<16} {job['status']:<10} attempts={job['attempts']}  {progress}")
    if page["next_cursor"]:
        print(f"more: dojo list --cursor {page['next_cursor']}")


def cmd_watch(args) -> None:
    _finish(Client().wait(args.id))


def cmd_cancel(args) -> None:
    _print(Client().cancel(args.id))


def cmd_retry(args) -> None:
    _print(Client().retry(args.id))


def cmd_logs(args) -> None:
    """Print a job's log lines; with --follow keep printing until the job finishes."""
    client = Client()
    if not args.follow:
        after = 0
        while True:
            page = client._call("GET", f"/v1/jobs/{args.id}/logs", after=after)
            for line in page["lines"]:
                print(line["line"])
            after = page["next_after"]
            if not page["more"]:
                return
    response = client.session.get(f"{client.url}/v1/jobs/{args.id}/logs", params={"follow": 1},
                                  headers={"Accept": "text/event-stream"}, stream=True, timeout=(10, None))
    if response.status_code >= 400:
        raise ApiError(response.status_code, response.json())
    kind = None
    for raw in response.iter_lines(decode_unicode=True):
        if raw.startswith("event: "):
            kind = raw[7:]
        elif raw.startswith("data: "):
            data = json.loads(raw[6:])
            if kind == "log":
                for line in data["lines"]:
                    print(line, flush=True)
            elif kind == "end":
                print(f"-- job {args.id} {data['status']}", file=sys.stderr)
                return


def cmd_export(args) -> None:
    """Write job history (one row per attempt) to a Parquet file."""
    from .dashboard.export import attempt_rows, collect, parse_time, write_parquet

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    jobs = collect(Client(), since, until, args.queue or None)
    count = write_parquet(attempt_rows(jobs), args.out)
    print(f"wrote {count} attempts of {len(jobs)} jobs to {args.out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dojo", description="dojo: durable jobs on Ray")
    p.add_argument("--url", help="API base URL (DOJO_URL); default http://DOJO_HOST:DOJO_PORT")
    p.add_argument("--token", help="API token (DOJO_API_TOKEN); default: the one `dojo up` generated")
    p.add_argument("--state-dir", help="state directory (DOJO_STATE_DIR)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a local Ray head and the API (idempotent)")
    up.add_argument("--host", help="listen address (DOJO_HOST, default 127.0.0.1)")
    up.add_argument("--port", type=int, help="listen port (DOJO_PORT, default 8000)")
    up.add_argument("--num-cpus", type=int, help="CPUs the local Ray head offers")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the API and the local Ray head").set_defaults(func=cmd_down)
    sub.add_parser("token", help="print the API token").set_defaults(func=cmd_token)
    sub.add_parser("env", help="print the exports Ray's CLIs need for this cluster: eval \"$(dojo env)\"") \
        .set_defaults(func=cmd_env)

    submit = sub.add_parser("submit", help="enqueue a job")
    submit.add_argument("type")
    submit.add_argument("--payload", help="JSON text, or @file.json")
    submit.add_argument("--queue", default=None)
    submit.add_argument("--priority", type=int)
    submit.add_argument("--delay", type=float, help="seconds before it may start")
    submit.add_argument("--max-attempts", type=int)
    submit.add_argument("--timeout", type=float, help="seconds an attempt may run")
    submit.add_argument("--unique-key")
    submit.add_argument("--watch", action="store_true", help="show live progress until it finishes")
    submit.set_defaults(func=cmd_submit)

    for name, func, text in (("get", cmd_get, "show a job"), ("watch", cmd_watch, "live progress of a job"),
                             ("cancel", cmd_cancel, "cancel a job"), ("retry", cmd_retry, "run a failed job again")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("id")
        cmd.set_defaults(func=func)

    get = sub.choices["get"]
    get.add_argument("--report", action="store_true", help="a flow's run report (children, sums, errors)")

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
    render.set_defaults(func=cmd_render)

    sched = sub.add_parser("schedule", help="cron schedules: add, list, rm, pause, resume, run")
    sched.add_argument("action", choices=["add", "list", "rm", "pause", "resume", "run"])
    sched.add_argument("name", nargs="?")
    sched.add_argument("--cron", help="five fields: minute hour day month weekday")
    sched.add_argument("--timezone", default="UTC")
    sched.add_argument("--missed", default="skip", choices=["skip", "run_once"])
    sched.add_argument("--type", help="job type to enqueue each tick")
    sched.add_argument("--payload")
    sched.add_argument("--queue", default="default")
    sched.set_defaults(func=cmd_schedule)

    crawl = sub.add_parser("crawl", help="collect clips: enqueue a crawl of every streamer")
    crawl.add_argument("what", choices=["clips"])
    crawl.add_argument("--source", help="'db' (the clip database's streamers), or a .csv / .parquet file")
    crawl.add_argument("--since", help="RFC3339 start (default: the lookback window)")
    crawl.add_argument("--until", help="RFC3339 end")
    crawl.add_argument("--fake-helix", help="URL of a local fake Helix server (python -m pipelines.clips.fake_helix)")
    crawl.add_argument("--queue", default="default")
    crawl.add_argument("--no-watch", dest="watch", action="store_false")
    crawl.set_defaults(func=cmd_crawl)

    clips = sub.add_parser("clips", help="the clip database: export the collected clips to Parquet")
    clips.add_argument("action", choices=["export"])
    clips.add_argument("out", help="output file, e.g. clips.parquet")
    clips.add_argument("--broadcaster", help="only this broadcaster id")
    clips.add_argument("--db", help="the clip database (default: DOJO_CLIPS_DB, else <state dir>/clips.sqlite3)")
    clips.set_defaults(func=cmd_clips)

    ls = sub.add_parser("list", help="list jobs, newest first")
    ls.add_argument("--queue", default="default")
    ls.add_argument("--status", help="comma-separated statuses")
    ls.add_argument("--type")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--cursor")
    ls.set_defaults(func=cmd_list)

    logs = sub.add_parser("logs", help="a job's log lines (ctx.log and captured stdout/stderr)")
    logs.add_argument("id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the job finishes")
    logs.set_defaults(func=cmd_logs)

    export = sub.add_parser("export", help="write job history (one row per attempt) to a Parquet file")
    export.add_argument("out", help="output file, e.g. history.parquet")
    export.add_argument("--since", help="jobs created at or after: epoch seconds, ISO date/time (UTC) or an age (7d)")
    export.add_argument("--until", help="jobs created before: same forms as --since")
    export.add_argument("--queue", action="append", help="a queue to export (repeatable; default: every queue)")
    export.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> None:
    if hasattr(signal, "SIGPIPE"):  # `dojo list | head` ends quietly, like other command-line tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser().parse_args(argv)
    _apply_settings_flags(args)
    try:
        args.func(args)
    except ApiError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else exc.body
        print(f"error: {message} (HTTP {exc.status})", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001
        import requests

        if isinstance(exc, requests.ConnectionError):
            print("error: cannot reach the dojo API; start it with `dojo up` (or set DOJO_URL)", file=sys.stderr)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    main()
