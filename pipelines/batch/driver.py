"""``python -m pipelines.batch``: submit a manifest as one batch job, follow it, print where its results are.

On the cluster (the default when the process is on Ray: inside ``ray job
submit``, with ``RAY_ADDRESS`` set, or ``--direct``):

1. every row is read and checked (``manifest.read_manifest``); a bad row stops
   the run with ``row N: ...`` and exit status 2, and nothing is queued;
2. rows that succeeded before (same key, see the ledger in ``job``) are reused
   unless ``--force``; the others' inputs go into dojo's store;
3. one ``render.batch`` job is enqueued, tagged with the Ray submission id;
   its unique key is the manifest's, so a second submission of a manifest whose
   batch is still unfinished (its driver was killed) follows that batch instead
   of starting another;
4. the driver prints one line per deck state change and a summary every
   ``--summary-every`` seconds (a bar instead when stderr is a terminal);
   SIGTERM or SIGINT (``ray job stop``) cancels the batch, which cancels every
   unfinished render;
5. the last line is ``results: <URL>``: the results table, a signed URL
   (``DOJO_PUBLIC_URL``, ``DOJO_URL_TTL``); ``--out`` also writes it to a path
   or a URI pyarrow's filesystems take (``s3://...``).

Exit status: 0 when every row succeeded, 1 when any failed or was cancelled,
2 for a bad manifest.

Through the HTTP API instead (``POST /v1/renders``, one job per row, no batch
job, no Ray on this machine): ``dojo batch MANIFEST`` (``cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from actors.store import FINAL

from .job import BATCH, RESULT_COLUMNS, public_url, record, recorded, rendering
from .manifest import ManifestError, Row, read_manifest

QUEUE = "default"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def should_go_direct(flag: bool) -> bool:
    if flag:
        return True
    try:
        import ray

        if ray.is_initialized():
            return True
    except ImportError:
        return False
    return bool(os.environ.get("RAY_ADDRESS"))


def ray_tags() -> dict:
    """This driver's Ray job id and, under ``ray job submit``, its submission id (from the job config Ray injects)."""
    import ray

    tags = {"job_id": ray.get_runtime_context().get_job_id()}
    try:
        metadata = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("metadata") or {}
    except ValueError:
        metadata = {}
    tags["submission_id"] = metadata.get("job_submission_id") or os.environ.get("RAY_JOB_SUBMISSION_ID")
    return tags


class Progress:
    """Per-deck state lines and a periodic summary; a tqdm bar instead when stderr is a terminal."""

    def __init__(self, total: int, summary_every: float, bar: bool | None = None):
        self.total = total
        self.summary_every = summary_every
        self.states: dict[int, str] = {}
        self.last_summary = time.monotonic()
        self.bar = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="decks", unit="deck")

    def update(self, number: int, label: str, status: str, detail: str = "") -> None:
        if self.states.get(number) == status:
            return
        before = self.states.get(number)
        self.states[number] = status
        if self.bar is not None:
            if status in FINAL and before not in FINAL:
                self.bar.update(1)
            return
        say(f"row {number} ({label}): {status}{(' ' + detail) if detail else ''}")

    def summary(self, force: bool = False) -> None:
        if self.bar is not None or not (force or time.monotonic() - self.last_summary >= self.summary_every):
            return
        self.last_summary = time.monotonic()
        counts: dict[str, int] = {}
        for status in self.states.values():
            counts[status] = counts.get(status, 0) + 1
        say(f"summary: {sum(counts.get(s, 0) for s in FINAL)}/{self.total} final; "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _connect_ray() -> None:
    """Join the cluster: RAY_ADDRESS (set inside a Ray job), else the local head ``dojo up`` started."""
    import ray

    if not ray.is_initialized():
        from actors.facade import connect

        connect()


def batch_key(rows: list[Row], force: bool) -> str:
    digest = hashlib.sha256(json.dumps([row.key for row in rows]).encode())
    return f"{BATCH}:{digest.hexdigest()[:40]}{':force' if force else ''}"


def build_payload(rows: list[Row], store, manifest: str, force: bool) -> tuple[dict, list[str]]:
    """The batch job's payload; inputs of rows to render go into the store (their keys are returned too)."""
    from pipelines.render.inputs import store_inputs, validate_render

    entries, stored = [], []
    for row in rows:
        entry = {"row": row.number, "key": row.key, "deck": row.label}
        found = None if force else recorded(store, row.key)
        if found:
            entry["reused"] = {"job_id": found["job_id"], "video": found["video"], "duration_s": found["duration_s"]}
        else:
            _, options = validate_render(row.files, row.script, row.options)
            entry["render"] = store_inputs(store, row.files, row.script, options)
            stored += [*entry["render"]["deck"], *filter(None, [entry["render"].get("script")])]
        entries.append(entry)
    return {"manifest": manifest, "nonce": secrets.token_hex(8), "rows": entries}, stored


def write_out(data: bytes, out: str) -> None:
    """Write the results table to a local path or a URI pyarrow's filesystems take (s3://, gs://, ...)."""
    import pyarrow.fs as pafs

    if "://" in out:
        filesystem, path = pafs.FileSystem.from_uri(out)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        filesystem, path = pafs.LocalFileSystem(), str(Path(out).resolve())
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


async def follow(queues, settings, store, batch: dict, progress: Progress, stop: asyncio.Event,
                 poll_s: float) -> dict:
    """Follow the batch and its renders until the batch is final, cancelling it when ``stop`` is set."""
    rows = rendering(batch["payload"])
    labels = {row["row"]: row["deck"] for row in batch["payload"]["rows"]}
    for row in batch["payload"]["rows"]:
        if "reused" in row:
            progress.update(row["row"], row["deck"], "succeeded", f"(reused {row['reused']['job_id']})")
    recorded_ids: set[str] = set()
    cancelling = False
    while True:
        if stop.is_set() and not cancelling:
            cancelling = True
            say(f"stop requested: cancelling batch {batch['id']} and its unfinished renders")
            try:
                await queues.cancel(batch["id"])
            except Exception as exc:  # already final: nothing left to cancel
                say(f"batch {batch['id']}: {exc}")
        batch, children = await asyncio.gather(
            queues.get(batch["id"]), queues.list(QUEUE, parent_id=batch["id"], limit=100_000))
        for row, child in zip(rows, sorted(children, key=lambda c: c["id"])):
            detail = ""
            if child["status"] not in ("queued", "running", "succeeded") and child.get("error"):
                detail = f"({child['error'].get('message')})"
            progress.update(row["row"], labels[row["row"]], child["status"], detail)
            if child["status"] == "succeeded" and child["id"] not in recorded_ids and isinstance(child["result"], dict):
                recorded_ids.add(child["id"])
                await asyncio.to_thread(record, store, row["key"], child["id"], child["result"])
        progress.summary()
        if batch["status"] in FINAL:
            return batch
        try:
            await asyncio.wait_for(stop.wait() if not cancelling else asyncio.sleep(poll_s), poll_s)
        except asyncio.TimeoutError:
            pass


def run_direct(rows: list[Row], manifest: str, *, force: bool = False, out: str | None = None,
               summary_every: float = 30.0, poll_s: float = 0.5, bar: bool | None = None) -> int:
    """Submit the batch job on Ray and follow it; returns the exit status."""
    from actors.facade import Queues
    from actors.settings import Settings
    from actors.objects import store_from_settings
    from pipelines.render.inputs import delete_inputs

    _connect_ray()
    settings = Settings.from_env()
    store = store_from_settings(settings)
    payload, stored = build_payload(rows, store, manifest, force)
    payload["ray"] = ray_tags()
    reused = sum("reused" in row for row in payload["rows"])

    async def main() -> int:
        queues = Queues(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        spec = {"type": BATCH, "queue": QUEUE, "payload": payload, "unique_key": batch_key(rows, force)}
        try:
            [batch] = await queues.enqueue([spec])
        except BaseException:
            delete_inputs(store, stored)
            raise
        if batch["payload"].get("nonce") != payload["nonce"]:
            delete_inputs(store, stored)  # an unfinished batch of this manifest runs already: follow it
            say(f"batch {batch['id']} of this manifest is unfinished (Ray submission "
                f"{(batch['payload'].get('ray') or {}).get('submission_id')}); following it instead of starting another")
        else:
            say(f"batch {batch['id']}: {len(rows)} deck(s) from {manifest}, {len(rows) - reused} to render, "
                f"{reused} reused (Ray submission {payload['ray']['submission_id']}, driver pid {os.getpid()})")
        progress = Progress(len(rows), summary_every, bar)
        try:
            batch = await follow(queues, settings, store, batch, progress, stop, poll_s)
        finally:
            progress.close()
        progress.summary(force=True)
        result = batch.get("result") if isinstance(batch.get("result"), dict) else {}
        if batch["status"] != "succeeded" or not result.get("results"):
            error = (batch.get("error") or {}).get("message") or batch["status"]
            say(f"batch {batch['id']} {batch['status']}: {error}")
            return 1
        data = await asyncio.to_thread(store.get_bytes, result["results"])
        if out:
            await asyncio.to_thread(write_out, data, out)
            say(f"results also written to {out}")
        failed = [(n, s) for n, s in sorted(progress.states.items()) if s != "succeeded"]
        for number, status in failed:
            say(f"  row {number}: {status}")
        say(f"batch {batch['id']}: {result.get('succeeded', 0)}/{result['rows']} succeeded")
        print(f"results: {public_url(settings, store, result['results'])}", flush=True)
        return 0 if result.get("succeeded", 0) == result["rows"] else 1

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.batch", description=__doc__.split("\n")[0])
    parser.add_argument("manifest", help="Parquet or CSV table with a 'deck' column (see pipelines.batch)")
    parser.add_argument("--out", default=None,
                        help="also write the results table here: a path or a URI (s3://bucket/key.parquet)")
    parser.add_argument("--url", help=argparse.SUPPRESS)  # moved to `dojo --url URL batch MANIFEST` (cli)
    parser.add_argument("--direct", action="store_true",
                        help="submit the batch job on Ray (automatic inside a Ray job or with RAY_ADDRESS)")
    parser.add_argument("--force", action="store_true", help="render every row, even those that succeeded before")
    parser.add_argument("--timeout", type=float, help=argparse.SUPPRESS)  # (dojo batch's) accepted, unused on Ray
    parser.add_argument("--summary-every", type=float, default=30.0, help="seconds between summary lines")
    parser.add_argument("--no-progress", action="store_true", help="lines instead of a bar, even in a terminal")
    args = parser.parse_args(argv)
    if args.url:
        parser.error(f"through the HTTP API, run: dojo --url {args.url} batch {args.manifest} (one job per row)")
    bar = False if args.no_progress else None
    try:
        rows = read_manifest(args.manifest)
    except ManifestError as exc:
        say(f"error: {exc}")
        return 2
    if not should_go_direct(args.direct):
        say("error: not on a Ray cluster (no RAY_ADDRESS): pass --direct to submit to the head `dojo up` started, "
            f"or go through the HTTP API with `dojo batch {args.manifest}`")
        return 2
    return run_direct(rows, args.manifest, force=args.force, out=args.out, summary_every=args.summary_every, bar=bar)


__all__ = ["main", "run_direct", "RESULT_COLUMNS", "ManifestError"]
