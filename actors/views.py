"""What a reader may see of a job: the API's, the dashboard's and a callback's view of one record.

A lease shows where and since when its attempt runs, not the lease itself.
"""

from __future__ import annotations

PUBLIC_JOB_FIELDS = ("id", "queue", "type", "status", "payload", "priority", "attempts", "max_attempts", "run_at",
                     "created_at", "updated_at", "started_at", "finished_at", "timeout", "unique_key",
                     "concurrency_key", "concurrency_limit", "resources", "backoff", "result", "result_key", "error",
                     "progress", "parent_id", "children", "phase", "history", "expires_at", "dedup", "debounce",
                     "throttle", "group", "trace", "callback", "steps", "wake")


def public(job: dict) -> dict:
    out = {k: job.get(k) for k in PUBLIC_JOB_FIELDS}
    if job.get("lease"):
        out["lease"] = {k: job["lease"].get(k) for k in ("node", "pid", "started_at", "expires", "deadline")}
    if "created" in job:
        out["created"] = job["created"]
    return out
