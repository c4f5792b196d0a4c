"""Child processes that die with the job.

ffmpeg runs as a child of the worker, in a process group of its own. Two
things must kill it: the job being cancelled or timing out (we poll
``cancelled`` while waiting and kill its group; the runner also kills the
groups an attempt spawned, see ``actors/stopping.py``), and the worker itself
dying (Linux's ``PR_SET_PDEATHSIG``, set by ``setpriv`` before it execs the
command, makes the kernel send SIGKILL to the child then). The group is what keeps a stop to one job: other jobs' children in the
same worker live in other groups.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Callable

from actors.jobs import JobCancelled

log = logging.getLogger(__name__)


def ffmpeg_exe() -> str:
    """The ffmpeg binary every render runs (imageio-ffmpeg's, from its wheel)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()

#: util-linux's ``setpriv`` sets PR_SET_PDEATHSIG and then execs the command in the same process, so the
#: child runs no Python between fork and exec. A ``preexec_fn`` did run Python there, and under load a
#: render's ffmpeg child sometimes hung forever on a lock another thread of the worker (Ray's, the
#: heartbeat's) held at the fork; the render then sat "running" until its timeout.
_SETPRIV = shutil.which("setpriv")

#: One fork at a time from this process's job threads (a render spawns ffmpeg from two threads).
_spawn_lock = threading.Lock()


def _await_exec(pid: int, limit_s: float = 2.0) -> None:
    """Wait until ``setpriv`` has set the death signal and exec'd the command (its /proc exe changes).

    Until then the child would outlive a worker killed in that instant; a second at most, usually
    a millisecond.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if os.path.realpath(f"/proc/{pid}/exe") != os.path.realpath(_SETPRIV):
                return
        except OSError:
            return
        time.sleep(0.001)


class _ExitWaiter:
    """``waiter(seconds)``: True once the child has exited, returning the moment it does.

    ``Popen.wait(timeout)`` sleeps in steps of up to 50 ms, so each ffmpeg call ended up to 50 ms
    after ffmpeg did; a render's critical path makes several. A pidfd is readable at the exit itself.
    """

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.poller = select.poll()
        try:
            self.fd = os.pidfd_open(process.pid)
            self.poller.register(self.fd, select.POLLIN)
        except (AttributeError, OSError):  # not Linux >= 5.3: Popen's own wait
            self.fd = None

    def __call__(self, seconds: float) -> bool:
        if self.fd is None:
            try:
                self.process.wait(timeout=seconds)
                return True
            except subprocess.TimeoutExpired:
                return False
        self.poller.poll(seconds * 1000)
        return self.process.poll() is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _dies_with_parent(args: list[str]) -> list[str]:
    if _SETPRIV is None:  # not Linux, or no util-linux: cancellation polling still applies
        return list(args)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *args]


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
            process = subprocess.Popen(_dies_with_parent(args), stdin=subprocess.DEVNULL, stderr=stderr,
                                       stdout=subprocess.PIPE if on_line else subprocess.DEVNULL,
                                       close_fds=True, start_new_session=True)
        if _SETPRIV is not None:
            _await_exec(process.pid)
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
        exited = _ExitWaiter(process)
        try:
            while True:
                if exited(poll_s):
                    break
                if cancelled is not None and cancelled.is_set():
                    raise JobCancelled(f"{args[0].rsplit('/', 1)[-1]} killed: the job was cancelled")
                if deadline and time.monotonic() > deadline:
                    raise TimeoutError(f"{args[0].rsplit('/', 1)[-1]} ran past {timeout}s")
        finally:
            exited.close()
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
