"""The ``dojo`` command line: start a local dojo, submit and watch jobs.

Flags mirror the DOJO_* settings (``--port`` is DOJO_PORT, ...). Errors print
one line saying what was wrong and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before anything imports ray (see serve.launcher)

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
    _print(Client().get(args.id))


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

    ls = sub.add_parser("list", help="list jobs, newest first")
    ls.add_argument("--queue", default="default")
    ls.add_argument("--status", help="comma-separated statuses")
    ls.add_argument("--type")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--cursor")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> None:
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
