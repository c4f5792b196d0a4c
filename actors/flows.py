"""Flows: a job's children and its run report, in plain Python.

A running job may enqueue children (``parent_id``). The parent keeps a report of them in its
``children`` field: how many there are and how many are final, counts per final status, errors grouped
by message (the first ``MAX_ERRORS`` messages), and the sum of each numeric field of the children's
results. The report is updated in the same commit as the child row that changes it, and rebuilt from
the child rows at a reload (the table is the truth). The state changes a report calls for (a waiting
parent whose last child is final runs its ``on_children_done`` or succeeds) are the life cycle's:
``JobQueue._child_final`` and ``JobQueue._children_done``.
"""

from __future__ import annotations

from typing import Iterable

from .store import FINAL

#: Distinct error messages a report keeps (more messages are left out; their counts still add up).
MAX_ERRORS = 50
#: Characters of an error message a report keys on.
MESSAGE_MAX = 200


def new_report() -> dict:
    return {"total": 0, "final": 0, "counts": {}, "errors": {}, "sums": {}}


def count_child(report: dict, child: dict, status: str) -> None:
    """Add one child that reached the final ``status`` to the report."""
    report["final"] += 1
    report["counts"][status] = report["counts"].get(status, 0) + 1
    if status != "succeeded" and child.get("error"):
        message = str(child["error"].get("message"))[:MESSAGE_MAX]
        if message in report["errors"] or len(report["errors"]) < MAX_ERRORS:
            report["errors"][message] = report["errors"].get(message, 0) + 1
    if isinstance(child.get("result"), dict):
        for field, value in child["result"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                report["sums"][field] = report["sums"].get(field, 0) + value


def recount(children: Iterable[dict]) -> dict:
    """A parent's report, rebuilt from its children's rows."""
    report = new_report()
    for child in children:
        report["total"] += 1
        if child["status"] in FINAL:
            count_child(report, child, child["status"])
    return report


def finished_by_key(children: Iterable[dict]) -> dict[str, dict]:
    """A retried parent's finished children by unique_key: enqueuing one again returns it, uncounted."""
    return {c["unique_key"]: c for c in children if c.get("unique_key") and c["status"] in FINAL}


def progress_of(report: dict) -> dict:
    """The parent's progress while it waits for its children."""
    return {"fraction": report["final"] / max(report["total"], 1), "stage": "children",
            "message": f"{report['final']}/{report['total']} children done"}
