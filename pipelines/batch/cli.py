"""``dojo batch MANIFEST``: every row of a manifest through the HTTP API, one render job per row.

The other way to run a manifest (``python -m pipelines.batch``, see ``driver``) submits one batch
job on Ray. This one is for a machine that reaches dojo only over HTTP (``dojo --url URL batch``):
no batch job, no ledger of earlier rows; the results table goes to ``--out``. The ``dojo`` command
finds ``add_commands`` through ``CLI`` in the package and lends it a ``kit`` (an HTTP client factory
and the client's error type), so this package never imports ``serve``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from actors.store import FINAL

from .driver import Progress, say, write_out
from .job import to_parquet
from .manifest import ManifestError, Row, read_manifest


def add_commands(sub, kit) -> None:
    batch = sub.add_parser("batch", help="render every deck of a manifest through the API (one job per row)")
    batch.add_argument("manifest", help="Parquet or CSV table with a 'deck' column (see pipelines.batch)")
    batch.add_argument("--out", default="results.parquet",
                       help="write the results table here: a path or a URI (s3://bucket/key.parquet)")
    batch.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    batch.add_argument("--summary-every", type=float, default=30.0, help="seconds between summary lines")
    batch.add_argument("--no-progress", action="store_true", help="lines instead of a bar, even in a terminal")
    batch.set_defaults(func=lambda args: cmd_batch(args, kit))


def cmd_batch(args, kit) -> None:
    """Exit status: 0 when every row succeeded, 1 when any did not, 2 for a bad manifest."""
    try:
        rows = read_manifest(args.manifest)
    except ManifestError as exc:
        say(f"error: {exc}")
        raise SystemExit(2) from None
    say(f"{len(rows)} deck(s) from {args.manifest}, through the API")
    results = run_api(rows, kit.client(), kit.ApiError, timeout=args.timeout, summary_every=args.summary_every,
                      bar=False if args.no_progress else None)
    write_out(to_parquet(results), args.out)
    ok = sum(r["status"] == "succeeded" for r in results)
    for r in results:
        if r["status"] != "succeeded":
            say(f"  row {r['row']} ({r['deck']}): {r['status']}: {r['error']}")
    say(f"{ok}/{len(results)} succeeded")
    print(f"results: {args.out}", flush=True)
    if ok != len(results):
        raise SystemExit(1)


def run_api(rows: list[Row], client, refused: type[Exception], timeout: float | None = None, poll_s: float = 0.5,
            summary_every: float = 30.0, bar: bool | None = None) -> list[dict]:
    """Upload every deck with ``client.render`` (one job per row), then wait for all; results in row order.

    ``refused`` is the client's error for a request the API turns down: that row fails, the others go on.
    """
    ids: dict[int, str] = {}
    results: dict[int, dict] = {}
    progress = Progress(len(rows), summary_every, bar)
    with tempfile.TemporaryDirectory(prefix="dojo-batch-") as tmp:
        for row in rows:
            folder = Path(tmp) / str(row.number)
            folder.mkdir()
            paths = []
            for name, data in row.files:
                (folder / name).write_bytes(data)
                paths.append(str(folder / name))
            script = None
            if row.script:
                script = folder / ("script-" + row.script[0])
                script.write_bytes(row.script[1])
            try:
                ids[row.number] = client.render(paths, str(script) if script else None, **row.options)["id"]
            except refused as exc:  # checked already; this is the server disagreeing (e.g. other limits)
                results[row.number] = _result(row, None, "failed", None, None, f"refused by the API: {exc}")
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = dict(ids)
    by_number = {row.number: row for row in rows}
    try:
        while pending:
            for number, job_id in list(pending.items()):
                job = client.get(job_id)
                progress.update(number, by_number[number].label, job["status"])
                if job["status"] in FINAL:
                    result = job.get("result") if isinstance(job.get("result"), dict) else {}
                    link = None
                    if job["status"] == "succeeded":
                        video = client.outputs(job_id)["urls"].get("video")
                        link = video if not video or video.startswith("http") else client.url + video
                    error = None if job["status"] == "succeeded" else (job.get("error") or {}).get("message")
                    results[number] = _result(by_number[number], job_id, job["status"], result, link, error)
                    del pending[number]
            progress.summary()
            if pending:
                if deadline and time.monotonic() > deadline:
                    for number, job_id in pending.items():
                        results[number] = _result(by_number[number], job_id, "timeout", {}, None,
                                                  f"not finished after {timeout}s")
                    break
                time.sleep(poll_s)
    finally:
        progress.close()
    return [results[row.number] for row in rows]


def _result(row: Row, job_id, status, result, url, error) -> dict:
    return {"row": row.number, "key": row.key, "job_id": job_id, "deck": row.label, "status": status,
            "reused": False, "duration_s": (result or {}).get("duration_s"), "output": (result or {}).get("video"),
            "output_url": url, "error": error}
