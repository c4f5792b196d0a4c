"""A runner's link to its queue actor while it holds leases: heartbeats, stops, and retirement.

The heartbeat long-polls the actor (``heartbeat(..., wait=interval)``): one
call extends every lease in hand and returns early when the actor stops one of
them (cancel, timeout), so a stop reaches the runner at once without polling
fast. A stopped attempt is stopped on its own (``actors.stopping``); if it
ignores the stop, the runner *retires*: it leases nothing more, lets its other
attempts finish, reports them, gives back leases it never started (and, after
``DRAIN_S``, the ones still running, as interrupted), then ends its process.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import ray

from . import stopping
from .stopping import ATTEMPTS

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Extends the leases in hand; stops an attempt the queue says is over; retires the runner if it must."""

    def __init__(self, actor, runner_id: str, lane: str, interval: float, call):
        super().__init__(daemon=True, name="dojo-heartbeat")
        self.actor = actor
        self.runner_id = runner_id
        self.lane = lane
        self.interval = interval
        self.call = call  # the runner's actor call that rides out actor restarts
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.wake = threading.Event()  # an attempt began: heartbeat it (and hear its stop) promptly
        self.retiring = threading.Event()
        self.outbox: list[dict] = []  # reports of finished attempts the actor has not acknowledged
        self.pending: list[dict] = []  # leased, not started (a serial batch's rest)
        self.in_call = 0
        self.node = self.pid = None

    # -- what the runner loops use ----------------------------------------------------
    def lease(self, want: int, wait: float) -> list[dict]:
        """Report what finished and lease up to ``want`` more (none once retiring)."""
        with self.lock:
            if self.retiring.is_set():
                return []
            reports, self.outbox = self.outbox, []
            # Every lease this runner knows of (a superset while the call runs: only this call adds any).
            held = [p["token"] for p in self.pending] + ATTEMPTS.tokens()
            self.in_call += 1
        leases: list[dict] = []
        try:
            leases = self.call(self.actor.runner_lease, self.runner_id, self.lane, reports, want, wait,
                               self.node, self.pid, held)
            return leases
        finally:
            with self.lock:
                self.in_call -= 1
                self.pending += leases  # held (and heartbeated) from the moment they arrive until claimed

    def claim(self, lease: dict, cancelled: threading.Event) -> stopping.Attempt | None:
        """Begin a held lease's attempt on this thread; None once the runner retires (it is given back)."""
        with self.lock:
            if self.retiring.is_set():
                return None
            self.pending = [p for p in self.pending if p["token"] != lease["token"]]
            return ATTEMPTS.begin(lease["token"], cancelled)

    def finish(self, attempt: stopping.Attempt, report: dict) -> None:
        """End an attempt with its report in the outbox, in one step.

        A leased token is always in exactly one place under ``self.lock``: pending, running, or
        reported. A retiring runner that looked in between (attempt ended, report not yet queued)
        handed back nothing for it and ended its process: the job was lost though it had succeeded.
        """
        with self.lock:
            self.outbox.append(report)
            ATTEMPTS.end(attempt)

    @staticmethod
    def park() -> None:
        """Wait for the retiring thread to end the process."""
        threading.Event().wait()

    # -- the thread ---------------------------------------------------------------------
    def run(self) -> None:
        self.node, self.pid = ray.get_runtime_context().get_node_id(), os.getpid()
        while not self.stopped.is_set():
            with self.lock:
                held = [p["token"] for p in self.pending]  # a batch's unstarted leases must not expire either
            tokens = ATTEMPTS.live_tokens() + held
            if not tokens:
                self.wake.wait(self.interval)
                self.wake.clear()
                continue
            try:
                answers = ray.get(self.actor.heartbeat.remote(tokens, self.node, self.pid, self.runner_id,
                                                              self.interval), timeout=self.interval + 2)
            except Exception as exc:  # the actor may be restarting: try again soon (a call sent into the
                # restart can hang), the lease outlives a short gap
                log.warning("heartbeat failed: %s", exc)
                self.stopped.wait(min(self.interval, 1.0))
                continue
            for token, answer in answers.items():
                attempt = ATTEMPTS.get(int(token))  # None for an unstarted lease: claim() finds it is over
                if answer != "ok" and attempt is not None and not attempt.stopping:
                    attempt.stopping = True
                    threading.Thread(target=self._stop, args=(attempt, answer), daemon=True,
                                     name=f"dojo-stop-{token}").start()

    def _stop(self, attempt, answer: str) -> None:
        if not stopping.stop(attempt, answer):
            self.retire(f"attempt {attempt.token} ignored its stop ({answer})")

    def retire(self, why: str) -> None:
        """Let the other attempts finish, report them, give back the rest, end the process."""
        with self.lock:
            if self.retiring.is_set():
                return
            self.retiring.set()
        log.warning("runner %s retires: %s", self.runner_id, why)
        reports, released, interrupted = self.hand_back(stopping.DRAIN_S)
        try:
            if reports:
                self.call(self.actor.runner_lease, self.runner_id, self.lane, reports, 0, 0.0, self.node, self.pid)
            if released or interrupted:
                self.call(self.actor.give_back, self.runner_id, released, interrupted, why)
        except Exception:  # noqa: BLE001  (the leases then expire and are retried)
            log.exception("runner %s could not hand back its work", self.runner_id)
        stopping.kill_all_children()
        os._exit(1)

    def hand_back(self, drain: float) -> tuple[list[dict], list[int], list[int]]:
        """Once retiring: wait up to ``drain`` s for running attempts and lease calls, then take
        (reports to send, unstarted leases to release, attempts still running to interrupt)."""
        deadline = time.monotonic() + drain
        while (ATTEMPTS.live_tokens() or self.in_call) and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:  # one consistent view: every token is pending, still running, or reported
            reports, self.outbox = self.outbox, []
            released, self.pending = [p["token"] for p in self.pending], []
            interrupted = ATTEMPTS.live_tokens()
        return reports, released, interrupted
