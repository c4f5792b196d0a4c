"""A runner's link to its queue actor while it holds leases: its attempts' stream, heartbeats, stops, retirement.

One sender thread carries the runner's outbox (``actors/outbox.py``: every
attempt's progress and log lines, in order) and the heartbeat of every lease
in hand, as ONE actor call (``stream``) per flush: at once when items come
after a quiet spell, at most every ``FLUSH_DELAY_S`` while they keep coming,
and every ``interval`` otherwise. A call carrying items leaves only once the
previous one has landed (``self.sending``), and the ``runner_lease`` call that
reports finished attempts carries the items still waiting ahead of its
reports: items arrive in order by construction, never after their attempt's
final status, with no numbering and no waiting in the attempt.

With nothing to send, the call long-polls (``wait=interval``): it returns
early when the actor stops an attempt (cancel, timeout), so a stop reaches the
runner at once without polling fast, or when the runner nudges it because
items became pending. A stopped attempt is stopped on its own
(``actors.stopping``); if it ignores the stop, the runner *retires*: it leases
nothing more, lets its other attempts finish, reports them, gives back leases
it never started (and, after ``DRAIN_S``, the ones still running, as
interrupted), then ends its process.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import ray

from . import stopping
from .outbox import Outbox
from .stopping import ATTEMPTS

log = logging.getLogger(__name__)

#: Items wait at most this long for company before they are sent: a chatty runner costs at most ~200
#: stream calls a second, and live progress lags by a few ms more than a call per report did
#: (``bench/throughput.py``'s event latency measures it).
FLUSH_DELAY_S = 0.005
#: After a call carrying items, how long the sender waits for more before it long-polls.
LINGER_S = 0.25


class Heartbeat(threading.Thread):
    """Sends the attempts' streams, extends the leases in hand, stops an attempt the queue says is over,
    retires the runner if it must."""

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
        self.stream = Outbox(self.wake)  # the attempts' progress and log lines, in order
        self.sending = threading.Lock()  # held while a call carrying stream items is in flight
        self.unsettled = None  # (ref, items) of a call carrying items whose answer is late: it lands first
        self.pending: list[dict] = []  # leased, not started (a serial batch's rest)
        self.in_call = 0
        self.sent_at = 0.0  # when the last call carrying items left
        self.node = self.pid = None

    # -- what the runner loops use ----------------------------------------------------
    def lease(self, want: int, wait: float) -> list[dict]:
        """Report what finished and lease up to ``want`` more (none once retiring)."""
        with self.sending:  # a call carrying stream items lands before this one is sent
            self._await_in_flight()
            with self.lock:
                if self.retiring.is_set():
                    return []
                reports, self.outbox = self.outbox, []
                # Every lease this runner knows of (a superset while the call runs: only this call adds any).
                held = [p["token"] for p in self.pending] + ATTEMPTS.tokens()
                self.in_call += 1
            items = self.stream.take()  # after the reports: a reported attempt's items are all here
            leases: list[dict] = []
            try:
                leases = self.call(self.actor.runner_lease, self.runner_id, self.lane, reports, want, wait,
                                   self.node, self.pid, held, items)
                return leases
            except BaseException:
                self.stream.put_back(items)
                raise
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

    def flush(self) -> None:
        """Send the waiting items now; return once they landed (a call that must follow them comes next)."""
        with self.sending:
            self._await_in_flight()
            items = self.stream.take()
            if items:
                try:
                    self.call(self.actor.stream, items, [], self.node, self.pid)
                except BaseException:
                    self.stream.put_back(items)
                    raise

    @staticmethod
    def park() -> None:
        """Wait for the retiring thread to end the process."""
        threading.Event().wait()

    # -- the thread ---------------------------------------------------------------------
    def run(self) -> None:
        self.node, self.pid = ray.get_runtime_context().get_node_id(), os.getpid()
        while not self.stopped.is_set():
            if len(self.stream):  # the first items after a quiet spell go at once; a burst shares a call
                self.stopped.wait(max(0.0, self.sent_at + FLUSH_DELAY_S - time.monotonic()))
            with self.lock:
                held = [p["token"] for p in self.pending]  # a batch's unstarted leases must not expire either
            tokens = ATTEMPTS.live_tokens() + held
            if not tokens and not len(self.stream):
                self.wake.wait(self.interval)
                self.wake.clear()
                continue
            try:
                answers = self.send(tokens)
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

    def send(self, tokens: list[int]) -> dict:
        """One ``stream`` call: the waiting items (if any) and a heartbeat of ``tokens``; its answers."""
        self.wake.clear()
        with self.sending:
            self._land(self.interval + 2)
            items = self.stream.take()
            if items:  # sent and landed before the next call with items (or reports) leaves
                self.sent_at = time.monotonic()
                self.unsettled = (self.actor.stream.remote(items, tokens, self.node, self.pid), items)
                return self._land(self.interval + 2)
        # Nothing to send. Items just went, so more usually follow (a chatty attempt): wait for them here
        # a moment, rather than start a long poll that they would cut short with a nudge (two more round
        # trips before they can go). The leases in hand were just extended: nothing is owed yet.
        linger = self.sent_at + LINGER_S - time.monotonic()
        if linger > 0 and not self.stopped.is_set():
            self.wake.wait(linger)
            if len(self.stream):
                return {}
        # Long-poll, and cut it short when items come (the nudge carries no items).
        answer = self.actor.stream.remote([], tokens, self.node, self.pid, self.runner_id, self.interval).future()
        answer.add_done_callback(lambda _: self.wake.set())
        deadline = time.monotonic() + self.interval + 2
        nudged = False
        while not answer.done():  # woken by the answer, or by items becoming pending
            if time.monotonic() > deadline:
                answer.cancel()
                raise TimeoutError(f"no answer to a heartbeat within {self.interval + 2:.1f} s")
            self.wake.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            self.wake.clear()
            if not nudged and not answer.done() and (len(self.stream) or self.stopped.is_set()):
                self.actor.nudge.remote(self.runner_id)
                nudged = True
        return answer.result()

    def _land(self, timeout: float | None) -> dict:
        """Wait for the call carrying items in flight (under ``self.sending``); its answers ({} if none).

        Late (GetTimeoutError): it stays in flight, and nothing newer leaves before it lands. Failed (the
        actor died): its items go first again, so they are sent at least once and still in order.
        """
        if self.unsettled is None:
            return {}
        ref, items = self.unsettled
        try:
            answers = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise
        except BaseException:
            self.unsettled = None
            self.stream.put_back(items)
            raise
        self.unsettled = None
        return answers

    def _await_in_flight(self) -> None:
        """Before a call that carries items: the one in flight lands (or fails, its items back in the outbox)."""
        try:
            self._land(None)
        except Exception:  # noqa: BLE001  (the actor died: its items go with the next call)
            pass

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
            with self.sending:
                self._await_in_flight()
                items = self.stream.take()
                if reports or items:
                    self.call(self.actor.runner_lease, self.runner_id, self.lane, reports, 0, 0.0, self.node,
                              self.pid, None, items)
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
