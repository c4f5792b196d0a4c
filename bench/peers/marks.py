"""What every benchmark job does, for dojo and each peer alike (stdlib only: imported in every venv).

``mark(folder, i)`` appends the job's id as one fixed-width record to a file of
its own process (``<folder>/<pid>.ids``, opened O_APPEND), so a count survives
kill -9 of the worker and duplicates stay visible: completed = file bytes /
RECORD, distinct = the set of ids. ``stamp(key, i, sent)`` pushes when the job
started to a Redis list the driver blocks on (peers), for dispatch latency.
"""

from __future__ import annotations

import os
import time

RECORD = 11  # "%010d\n"
_files: dict[str, int] = {}


def mark(folder: str, i: int) -> None:
    key = f"{folder}/{os.getpid()}"
    fd = _files.get(key)
    if fd is None:
        fd = _files[key] = os.open(f"{key}.ids", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"%010d\n" % i)


def nap(folder: str, i: int, seconds: float) -> None:
    time.sleep(seconds)
    mark(folder, i)


def count(folder: str) -> int:
    total = 0
    for name in os.listdir(folder):
        if name.endswith(".ids"):
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total // RECORD


def ids(folder: str) -> list[int]:
    out: list[int] = []
    for name in os.listdir(folder):
        if name.endswith(".ids"):
            with open(os.path.join(folder, name), "rb") as fh:
                out.extend(int(line) for line in fh.read().split() if line.strip())
    return out
