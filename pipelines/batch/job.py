"""The ``render.batch`` job type: one parent job per batch, one ``render`` child per row to render.

Its payload (built by the driver, ``pipelines.batch.driver``)::

    {"manifest": "decks.csv", "nonce": "...", "ray": {"submission_id": ..., "job_id": ...},
     "rows": [{"row": 1, "key": "...", "deck": "a.md", "render": {<render payload>}},
              {"row": 2, "key": "...", "deck": "b.md", "reused": {"job_id", "video", "duration_s"}}]}

``perform`` enqueues the renders as children (one call); when every child is
final ``summarize`` writes the results table (Parquet) to dojo's store under
``batches/<job id>/results.parquet`` and returns it as the job's ``results``
output (``GET /v1/jobs/{id}/outputs``), with counts per status. Cancelling the
batch cancels its unfinished renders (a flow's cascading cancel).

The ledger: each succeeded row leaves ``batches/rows/<hash of its key>.json``
in the store (``{"job_id", "video", "duration_s"}``); the next submission of a
manifest reuses a row whose ledger entry and video are still there.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from actors.exceptions import InvalidInput
from actors.jobs import JobContext, job

BATCH = "render.batch"
RESULT_COLUMNS = ("row", "key", "job_id", "deck", "status", "reused", "duration_s", "output", "output_url", "error")


def ledger_key(row_key: str) -> str:
    return f"batches/rows/{hashlib.sha256(row_key.encode()).hexdigest()[:40]}.json"


def recorded(store, row_key: str) -> dict | None:
    """The ledger entry of a row that succeeded before, if its video is still stored."""
    key = ledger_key(row_key)
    try:
        if not store.exists(key):
            return None
        entry = json.loads(store.get_bytes(key))
    except (OSError, ValueError):
        return None
    return entry if entry.get("video") and store.exists(entry["video"]) else None


def record(store, row_key: str, job_id: str, result: dict) -> None:
    """Remember a succeeded row (idempotent: the same row always writes the same entry)."""
    entry = {"key": row_key, "job_id": job_id, "video": result.get("video"), "duration_s": result.get("duration_s")}
    store.put_bytes(ledger_key(row_key), json.dumps(entry).encode(), content_type="application/json")


def public_url(settings, store, key: str | None) -> str | None:
    """A signed URL of a stored object that works from outside: the API's public base for the local store."""
    from actors.storage import public_link

    return public_link(store, key, settings.public_base, settings.url_ttl) if key else None


def validate_batch(payload: Any) -> None:
    from pipelines.render.job import validate_payload

    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list) or not payload["rows"]:
        raise InvalidInput("a render.batch payload needs 'rows': a non-empty list (python -m pipelines.batch builds it)")
    for index, row in enumerate(payload["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("row"), int) or not isinstance(row.get("key"), str):
            raise InvalidInput(f"rows[{index}] needs 'row' (int) and 'key' (str)")
        if ("render" in row) == ("reused" in row):
            raise InvalidInput(f"rows[{index}] needs exactly one of 'render' (a render payload) or 'reused'")
        if "render" in row:
            validate_payload(row["render"])


def rendering(payload: dict) -> list[dict]:
    """The rows that get a render child, in the order the children are enqueued (ids ascend in that order)."""
    return [row for row in payload["rows"] if "render" in row]


def batch(ctx: JobContext, payload: dict) -> dict:
    """Enqueue one render per row to render; a batch with nothing to render summarizes at once."""
    specs = [{"type": "render", "payload": row["render"]} for row in rendering(payload)]
    if not specs:
        return summarize(ctx, payload, [])
    ctx.progress(0.0, stage="enqueue", message=f"{len(specs)} renders")
    for start in range(0, len(specs), 1000):
        ctx.enqueue_many(specs[start:start + 1000])
    return {"rows": len(payload["rows"]), "rendering": len(specs)}


def results_table(payload: dict, outcomes: list[dict], settings, store) -> list[dict]:
    """One result per manifest row, in row order; records each newly succeeded row in the ledger."""
    children = sorted(outcomes, key=lambda o: o["id"])
    rows = rendering(payload)
    if len(children) != len(rows):
        raise RuntimeError(f"batch has {len(children)} children for {len(rows)} rows to render")
    by_row = {}
    for row, child in zip(rows, children):
        result = child.get("result") if isinstance(child.get("result"), dict) else {}
        error = None if child["status"] == "succeeded" else (child.get("error") or {}).get("message", child["status"])
        if child["status"] == "succeeded":
            record(store, row["key"], child["id"], result)
        by_row[row["row"]] = {"job_id": child["id"], "status": child["status"], "reused": False,
                              "duration_s": result.get("duration_s"), "output": result.get("video"), "error": error}
    out = []
    for row in payload["rows"]:
        reused = row.get("reused")
        found = by_row.get(row["row"]) or {"job_id": reused["job_id"], "status": "succeeded", "reused": True,
                                           "duration_s": reused.get("duration_s"), "output": reused["video"],
                                           "error": None}
        out.append({"row": row["row"], "key": row["key"], "deck": row.get("deck"), **found,
                    "output_url": public_url(settings, store, found["output"])})
    return out


def to_parquet(results: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("row", pa.int64()), ("key", pa.string()), ("job_id", pa.string()), ("deck", pa.string()),
                        ("status", pa.string()), ("reused", pa.bool_()), ("duration_s", pa.float64()),
                        ("output", pa.string()), ("output_url", pa.string()), ("error", pa.string())])
    table = pa.Table.from_pylist([{k: r.get(k) for k in RESULT_COLUMNS} for r in results], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def summarize(ctx: JobContext, payload: dict, outcomes: list) -> dict:
    """All renders are final: store the results table as the batch's ``results`` output."""
    from actors.settings import Settings
    from actors.objects import store_from_settings

    settings = Settings.from_env()
    store = store_from_settings(settings)
    results = results_table(payload, outcomes, settings, store)
    key = f"batches/{ctx.job_id}/results.parquet"
    store.put_bytes(key, to_parquet(results), content_type="application/vnd.apache.parquet")
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return {"results": key, "rows": len(results), "reused": sum(r["reused"] for r in results), **counts}


# max_attempts=1: a retried attempt would enqueue the children twice.
job(BATCH, max_attempts=1, timeout=300, num_cpus=0.1, validate=validate_batch, on_children_done=summarize)(batch)
