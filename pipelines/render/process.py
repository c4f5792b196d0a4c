"""Child processes that die with the job.

ffmpeg runs as a child of the worker, in a process group of its own. Two
things must kill it: the job being cancelled or timing out (we poll
``cancelled`` while waiting and kill its group; the runner also kills the
groups an attempt spawned, see ``actors/stopping.py``), and the worker itself
dying (Linux's ``PR_SET_PDEATHSIG`` makes the kernel send SIGKILL to the child
then). The group is what keeps a stop to one job: other jobs' children in the
same worker live in other groups.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable

from actors.jobs import JobCancelled

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

# Resolved once, here in the parent: between fork and exec the child may only do the bare minimum, and
# loading a library there (dlopen) can deadlock on a lock another thread of the parent held at the fork.
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: cancellation polling still applies
    _prctl = None

#: One fork at a time from this process's job threads (a render spawns ffmpeg from two threads).
_spawn_lock = threading.Lock()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessFailed(Exception):
    def __init__(self, returncode: int, tail: str):
        self.returncode = returncode
        self.tail = tail
        super().__init__(f"exit status {returncode}: {tail}")


def run(args: list[str], *, cancelled: threading.Event | None = None, on_line: Callable[[str], None] | None = None,
        timeout: float | None = None, poll_s: float = 0.05, on_start: Callable[[int], None] | None = None) -> str:
    """Run ``args``; return its stderr tail. Kill it and raise JobCancelled when ``cancelled`` is set.

    ``on_line`` receives stdout lines (ffmpeg's ``-progress pipe:1`` output); ``on_start`` the child's pid.
    """
    with tempfile.TemporaryFile() as stderr:
        with _spawn_lock:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=stderr,
                                       stdout=subprocess.PIPE if on_line else subprocess.DEVNULL,
                                       preexec_fn=_die_with_parent, close_fds=True, start_new_session=True)
        if on_start:
            on_start(process.pid)
        reader = None
        if on_line:
            def pump():
                for raw in process.stdout:
                    try:
                        on_line(raw.decode("utf-8", "replace").rstrip("\n"))
                    except Exception:  # a progress callback must not wedge the pipe
                        log.exception("progress callback failed")
            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
        deadline = time.monotonic() + timeout if timeout else None
        try:
            while True:
                try:
                    process.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if cancelled is not None and cancelled.is_set():
                    raise JobCancelled(f"{args[0].rsplit('/', 1)[-1]} killed: the job was cancelled")
                if deadline and time.monotonic() > deadline:
                    raise TimeoutError(f"{args[0].rsplit('/', 1)[-1]} ran past {timeout}s")
        finally:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # the child and anything it started
                except (ProcessLookupError, PermissionError):
                    process.kill()
                process.wait()
            if reader is not None:
                reader.join(timeout=5)
            if process.stdout:
                process.stdout.close()
        stderr.seek(0)
        tail = stderr.read()[-4000:].decode("utf-8", "replace")
    if process.returncode != 0:
        raise ProcessFailed(process.returncode, tail)
    return tail
