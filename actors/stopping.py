"""Stopping one attempt without touching the others that share its process.

A runner process may hold many attempts at once (a threaded type runs up to
``threads`` jobs; a serial runner leases a batch). When the queue says one of
them is over (cancelled, timed out, lease gone), only that one may stop:

1. its ``ctx.cancelled`` event is set, so cooperative code (``ctx.check_cancelled()``,
   ``pipelines/render/process.run``) ends at its next check;
2. its child processes are killed: every child an attempt spawns through
   ``subprocess`` starts in a process group of its own (the hook below), so
   ``killpg`` takes the child and whatever it started (ffmpeg, a shell's
   ``sleep``) and nothing else;
3. the attempt gets ``GRACE_S`` to return. Python cannot kill a thread, so an
   attempt that ignores both (a long C call, a ``time.sleep``) is *abandoned*:
   the runner leases nothing more, lets the other attempts finish and report,
   gives back the leases it had not started, and only then ends its process
   (the only way to stop that code). If the others are still running after
   ``DRAIN_S`` they are given back as *interrupted* (no attempt spent, not
   failed) before the process goes.

Types whose code cannot be stopped cooperatively should say
``isolation="process"``: each of their attempts then has a runner process of
its own, so ending that process after the grace harms nobody.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: How long a stopped attempt has to return after its cancel event and the kill of its children.
GRACE_S = 2.0
#: How long an abandoned attempt's neighbours may run on before they are given back as interrupted.
DRAIN_S = 60.0


@dataclass(eq=False)
class Attempt:
    """One attempt running in this process: what it must be told, and what it started."""

    token: int
    cancelled: threading.Event
    thread: int = field(default_factory=threading.get_native_id)
    groups: set[int] = field(default_factory=set)
    finished: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False  # the queue said it is over; it no longer needs heartbeats
    abandoned: bool = False  # it ignored its stop: only the process's end will stop it


class Attempts:
    """The attempts of this runner process, by lease token (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_token: dict[int, Attempt] = {}
        self.local = threading.local()

    def begin(self, token: int, cancelled: threading.Event) -> Attempt:
        attempt = Attempt(token, cancelled)
        with self.lock:
            self.by_token[token] = attempt
        self.local.attempt = attempt
        return attempt

    def end(self, attempt: Attempt) -> None:
        self.local.attempt = None
        with self.lock:
            self.by_token.pop(attempt.token, None)
        attempt.finished.set()

    def live_tokens(self) -> list[int]:
        with self.lock:
            return [t for t, a in self.by_token.items() if not (a.stopping or a.abandoned)]

    def tokens(self) -> list[int]:
        """Every attempt's token, stopped and abandoned ones included."""
        with self.lock:
            return list(self.by_token)

    def get(self, token: int) -> Attempt | None:
        with self.lock:
            return self.by_token.get(token)

    def owner(self) -> Attempt | None:
        """The attempt a spawn on this thread belongs to (the only live one if the thread is not a job's)."""
        attempt = getattr(self.local, "attempt", None)
        if attempt is not None:
            return attempt
        with self.lock:
            live = [a for a in self.by_token.values() if not (a.stopping or a.abandoned)]
        return live[0] if len(live) == 1 else None


ATTEMPTS = Attempts()
_original_popen_init = subprocess.Popen.__init__


def _popen_init(self, *args, **kwargs):
    attempt = ATTEMPTS.owner()
    if attempt is not None and not kwargs.get("start_new_session") and kwargs.get("process_group") is None:
        kwargs["start_new_session"] = True  # a group of its own: killpg stops it and its descendants only
    _original_popen_init(self, *args, **kwargs)
    if attempt is not None:
        attempt.groups.add(self.pid)


def install_spawn_hook() -> None:
    """Make every child that an attempt spawns through ``subprocess`` killable on its own."""
    if subprocess.Popen.__init__ is not _popen_init:
        subprocess.Popen.__init__ = _popen_init


def kill_children(attempt: Attempt) -> None:
    """SIGKILL the attempt's process groups and any other child its thread started."""
    for group in list(attempt.groups):
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if attempt.finished.is_set():
        return  # its thread may run another attempt now: its children are not this one's
    with ATTEMPTS.lock:
        others = {g for a in ATTEMPTS.by_token.values() if a is not attempt for g in a.groups}
    try:
        with open(f"/proc/self/task/{attempt.thread}/children") as fh:
            pids = [int(p) for p in fh.read().split() if int(p) not in others]
    except OSError:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop(attempt: Attempt, why: str, grace: float = GRACE_S) -> bool:
    """Tell the attempt to stop and kill its children; True if it returned within ``grace``."""
    attempt.cancelled.set()
    kill_children(attempt)
    if attempt.finished.wait(grace):
        return True
    log.warning("attempt %s ignored its stop (%s) for %gs; abandoning it", attempt.token, why, grace)
    attempt.abandoned = True
    return False


def kill_all_children() -> None:
    """SIGKILL every child of this process (the process is about to end)."""
    with ATTEMPTS.lock:
        attempts = list(ATTEMPTS.by_token.values())
    for attempt in attempts:
        kill_children(attempt)
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[1] == me:
                    os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError):
            continue
