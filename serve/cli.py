"""The ``dojo`` command line: start a local dojo, submit and watch jobs.

Flags mirror the DOJO_* settings (``--port`` is DOJO_PORT, ...). Errors print
one line saying what was wrong and exit with status 2.

About 500 lines because it is the whole command tree in one place (each subcommand a parser and a
few lines over ``Client``): `dojo --help` and this file read alike. Job packages add their own
commands from their folders (``CLI``), not here.
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
    exposed = [p for p in info.get("ray_ports_beyond_loopback", ()) if "port" in p]
    if exposed:
        ports = ", ".join(f"{p['address']}:{p['port']} ({p['process']})" for p in exposed)
        print(f"Note: Ray listens beyond 127.0.0.1 on {ports}; Ray cannot bind these to loopback. Its token "
              "guards them: firewall them from other machines (README, Security).")


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

    settings = Settings.from_env()
    if args.callback_key:
        from actors.callbacks import signing_key

        print(signing_key(settings).decode())
    else:
        print(settings.api_token)


def cmd_submit(args) -> None:
    client = Client()
    options = dict(queue=args.queue, priority=args.priority, delay=args.delay, max_attempts=args.max_attempts,
                   timeout=args.timeout, unique_key=args.unique_key)
    if args.count != 1:
        if args.count < 1 or args.watch:
            raise SystemExit("error: --count must be at least 1, and --watch follows one job (leave --count out)")
        # One request per 1,000 jobs, not one per job.
        _print_jobs(client.submit_many([{"type": args.type, "payload": _payload(args.payload),
                                         **{k: v for k, v in options.items() if v is not None}}] * args.count))
        return
    job = client.submit(args.type, _payload(args.payload), **options)
    if args.watch:
        print(f"submitted {job['id']}", file=sys.stderr)
        _finish(client.wait(job["id"]))
    else:
        _print(job)


def cmd_submit_many(args) -> None:
    """Specs from a file (or - for stdin): a JSON list, or one JSON object per line; 1,000 per request."""
    if args.file == "-":
        text = sys.stdin.read()
    else:
        path = Path(args.file)
        if not path.is_file():
            raise SystemExit(f"error: spec file {path} does not exist")
        text = path.read_text()
    try:
        specs = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise SystemExit(f"error: {args.file} is not a JSON list of job specs nor JSON lines ({exc})") from None
    if not specs or not all(isinstance(spec, dict) for spec in specs):
        raise SystemExit(f"error: {args.file} holds no job specs; each is an object like "
                         '{"type": "noop", "payload": {}}')
    if args.queue:
        specs = [{**spec, "queue": spec.get("queue", args.queue)} for spec in specs]
    _print_jobs(Client().submit_many(specs))


def _print_jobs(jobs: list[dict]) -> None:
    """One compact JSON line per job, in the order submitted."""
    for job in jobs:
        print(json.dumps({k: job.get(k) for k in ("id", "queue", "type", "status", "created")}))


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


def cmd_trigger(args) -> None:
    client = Client()

    def add() -> dict:
        _required(args.name and args.channel and args.type,
                  "dojo trigger add NAME --channel CHANNEL --type TYPE [--payload JSON] [--match JSON]")
        job = {"type": args.type, **({"payload": _payload(args.payload)} if args.payload else {})}
        return client.put_trigger(args.name, args.channel, job, _payload(args.match), queue=args.queue)

    def line(trigger: dict) -> str:
        return (f"{trigger['name']:<24} on {trigger['channel']:<20} match {json.dumps(trigger['match']):<30} "
                f"-> {trigger['job']['type']:<16} fired {trigger['fired']}"
                + (f"  last error: {trigger['last_error']}" if trigger.get("last_error") else ""))

    _add_list_rm(args, "trigger", add, client.triggers, line, client.delete_trigger)


def cmd_hook(args) -> None:
    client = Client()

    def add() -> dict:
        _required(args.name and args.channel, "dojo hook add NAME --channel CHANNEL [--rotate]")
        return client.put_hook(args.name, args.channel, rotate=args.rotate, queue=args.queue)

    def line(hook: dict) -> str:
        return f"{hook['name']:<24} -> {hook['channel']:<20} received {hook['received']}"

    _add_list_rm(args, "hook", add, client.hooks, line, client.delete_hook)


def _add_list_rm(args, noun: str, add, items, line, delete) -> None:
    """``dojo NOUN add|list|rm`` on a queue's named things: add prints what was stored, list a line each."""
    if args.action == "add":
        _print(add())
    elif args.action == "list":
        for item in items(queue=args.queue):
            print(line(item))
    else:
        _print(delete(_required(args.name, f"dojo {noun} rm NAME"), queue=args.queue))


def cmd_publish(args) -> None:
    _print(Client().publish(args.channel, _payload(args.message), queue=args.queue))


def _required(value, usage: str):
    if not value:
        raise SystemExit(f"error: {usage}")
    return value


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
    if args.id is None:
        return _bulk("cancel", args)
    _print(Client().cancel(args.id))


def cmd_retry(args) -> None:
    if args.id is None:
        return _bulk("retry", args)
    _print(Client().retry(args.id))


def _bulk(action: str, args) -> None:
    """``dojo cancel|retry --status ... --type ...``: every job of the filter, a page per request."""
    from .dashboard.export import parse_time

    if not (args.status or args.type or args.since or args.until):
        raise SystemExit(f"error: give a job id, or a filter (--status, --type, --since, --until) to {action} "
                         "every job it matches")
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    total = Client().bulk_all(action, queue=args.queue, status=args.status.split(",") if args.status else None,
                              type=args.type.split(",") if args.type else None, created_after=since,
                              created_before=until)
    print(f"{action}: {total['changed']} jobs changed, {total['skipped']} skipped (changed meanwhile)")


def cmd_queue(args) -> None:
    """``dojo queue pause|resume|purge``."""
    client = Client()
    if args.action == "purge":
        if not args.yes:
            raise SystemExit(f"error: a purge deletes every waiting job of queue {args.queue!r} for good; "
                             "add --yes to confirm")
        answer = client.purge(args.queue, confirm=args.queue, types=args.type)
        print(f"purged {answer['purged']} waiting jobs of queue {args.queue!r}")
        return
    _print(getattr(client, args.action)(args.queue, types=args.type))


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
    token = sub.add_parser("token", help="print the API token")
    token.add_argument("--callback-key", action="store_true",
                       help="print the key that signs callbacks instead (X-Dojo-Signature; see actors/callbacks.py)")
    token.set_defaults(func=cmd_token)
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
    submit.add_argument("--count", type=int, default=1, help="enqueue this many such jobs (in batches)")
    submit.set_defaults(func=cmd_submit)
    many = sub.add_parser("submit-many", help="enqueue the job specs of a file in batches of 1,000")
    many.add_argument("file", help="a JSON list of specs or JSON lines; - reads stdin")
    many.add_argument("--queue", default=None, help="queue for the specs that name none")
    many.set_defaults(func=cmd_submit_many)

    for name, func, text in (("get", cmd_get, "show a job"), ("watch", cmd_watch, "live progress of a job"),
                             ("cancel", cmd_cancel, "cancel a job"), ("retry", cmd_retry, "run a failed job again")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("id", nargs="?" if name in ("cancel", "retry") else None)
        cmd.set_defaults(func=func)
    for name in ("cancel", "retry"):  # or every job of a filter: dojo cancel --status queued --type echo
        cmd = sub.choices[name]
        cmd.add_argument("--queue", default="default")
        cmd.add_argument("--status", help="comma-separated statuses (default: every status the action applies to)")
        cmd.add_argument("--type", help="comma-separated job types")
        cmd.add_argument("--since", help="jobs created at or after: epoch seconds, ISO date/time (UTC) or an age")
        cmd.add_argument("--until", help="jobs created before: same forms as --since")

    queue = sub.add_parser("queue", help="queue control: pause, resume, purge (waiting jobs)")
    queue.add_argument("action", choices=["pause", "resume", "purge"])
    queue.add_argument("--queue", default="default")
    queue.add_argument("--type", action="append", help="only this job type (repeatable)")
    queue.add_argument("--yes", action="store_true", help="confirm a purge")
    queue.set_defaults(func=cmd_queue)

    get = sub.choices["get"]
    get.add_argument("--report", action="store_true", help="a flow's run report (children, sums, errors)")

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

    trig = sub.add_parser("trigger", help="triggers: each matching channel message enqueues a job")
    trig.add_argument("action", choices=["add", "list", "rm"])
    trig.add_argument("name", nargs="?")
    trig.add_argument("--channel")
    trig.add_argument("--match", help="JSON object of key-values a message must have")
    trig.add_argument("--type", help="job type to enqueue (the message is added to its payload as 'message')")
    trig.add_argument("--payload", help="JSON object, or @file.json")
    trig.add_argument("--queue", default="default")
    trig.set_defaults(func=cmd_trigger)

    hook = sub.add_parser("hook", help="incoming webhooks: signed POSTs that publish to a channel")
    hook.add_argument("action", choices=["add", "list", "rm"])
    hook.add_argument("name", nargs="?")
    hook.add_argument("--channel")
    hook.add_argument("--rotate", action="store_true", help="replace the hook's secret")
    hook.add_argument("--queue", default="default")
    hook.set_defaults(func=cmd_hook)

    pub = sub.add_parser("publish", help="publish a message to a channel (wakes waits, fires triggers)")
    pub.add_argument("channel")
    pub.add_argument("message", help="JSON, or @file.json")
    pub.add_argument("--queue", default="default")
    pub.set_defaults(func=cmd_publish)

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
    _add_job_commands(sub)
    return p


def _add_job_commands(sub) -> None:
    """The commands job packages bring (``dojo render``, ``dojo crawl``, ...): each module's ``CLI``."""
    from types import SimpleNamespace

    from actors.exceptions import ConfigError
    from actors.jobs import extensions
    from actors.settings import Settings

    kit = SimpleNamespace(client=Client, ApiError=ApiError, print=_print, finish=_finish, report=_print_report)
    for module_name in Settings.from_env().job_modules:
        try:
            adders = extensions([module_name], "CLI")
        except ConfigError as exc:  # a job package this machine lacks brings no commands
            print(f"dojo: skipping the commands of {module_name}: {exc}", file=sys.stderr)
            continue
        for add_commands in adders:
            add_commands(sub, kit)


def main(argv: list[str] | None = None) -> None:
    if argv is None and hasattr(signal, "SIGPIPE"):
        # `dojo list | head` ends quietly, like other command-line tools. Only as the `dojo` program:
        # a process that calls main() with its own arguments (a test, a notebook) keeps its own handler,
        # or its next write to a closed pipe would kill it.
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
        if isinstance(exc, requests.ConnectionError):
            print("error: cannot reach the dojo API; start it with `dojo up` (or set DOJO_URL)", file=sys.stderr)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    main()
