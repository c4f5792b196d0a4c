"""A runner's outbox: the ordered stream of each attempt's progress and log lines, on its way to the actor.

``ctx.progress``, ``ctx.log`` and captured output append items here, in the
order the job made them; the runner's heartbeat takes them all at once and
sends them in ONE actor call (``QueueService.stream``), or ahead of the
reports in the ``runner_lease`` call that ends the attempts. Calls carrying
items are sent one at a time, so items arrive in order by construction, and a
job's last lines can never land after its final status.

An item is ``(token, job_id, kind, data)``: kind ``"progress"`` with the
report (a dict), or ``"log"`` with up to ``LOG_ITEM_LINES`` lines (each one
log event on the job's stream).

Bounded, so a runaway ``ctx.log`` loop cannot grow memory without limit:
past ``MAX_PENDING_CHARS`` of waiting lines, new lines are dropped and
counted; past ``MAX_PENDING_PROGRESS`` waiting reports, a new report replaces
its attempt's newest waiting one (every report is an event, as promise 4
says, unless the job reports faster than they can be sent). The counts reach
the job's log as one notice line per attempt when the batch is taken.
"""

from __future__ import annotations

import threading

LOG_ITEM_LINES = 200  # the most lines JobQueue.log_lines keeps from one item
LINE_CHARS = 4000  # the most of one line JobQueue.log_lines keeps
MAX_PENDING_CHARS = 2_000_000
MAX_PENDING_PROGRESS = 1000


class Outbox:
    """Items waiting to be sent, in emission order, across every attempt of one runner (thread-safe)."""

    def __init__(self, signal: threading.Event | None = None):
        self.lock = threading.Lock()
        self.items: list[tuple] = []
        self.signal = signal  # set when items become pending: the sender wakes to send them
        self.chars = 0  # of the waiting log lines
        self.progress_waiting = 0
        self.signalled = False
        self.dropped: dict[tuple[int, str], list[int]] = {}  # (token, job_id) -> [lines dropped, reports merged]

    def __len__(self) -> int:
        return len(self.items)

    def progress(self, token: int, job_id: str, report: dict) -> None:
        with self.lock:
            if self.progress_waiting >= MAX_PENDING_PROGRESS:
                for i in range(len(self.items) - 1, -1, -1):
                    if self.items[i][0] == token and self.items[i][2] == "progress":
                        del self.items[i]
                        self.progress_waiting -= 1
                        self.dropped.setdefault((token, job_id), [0, 0])[1] += 1
                        break
            self.items.append((token, job_id, "progress", report))
            self.progress_waiting += 1
            self._signal()

    def log(self, token: int, job_id: str, lines: list[str]) -> None:
        with self.lock:
            for line in lines:
                line = str(line)[:LINE_CHARS]
                if self.chars + len(line) > MAX_PENDING_CHARS:
                    self.dropped.setdefault((token, job_id), [0, 0])[0] += 1
                    continue
                self.chars += len(line)
                last = self.items[-1] if self.items else None
                if last is not None and last[0] == token and last[2] == "log" and len(last[3]) < LOG_ITEM_LINES:
                    last[3].append(line)
                else:
                    self.items.append((token, job_id, "log", [line]))
            self._signal()

    def take(self) -> list[tuple]:
        """Every waiting item, in order (and a notice for each attempt that lost some); the outbox is empty."""
        with self.lock:
            items, self.items = self.items, []
            for (token, job_id), (lines, reports) in self.dropped.items():
                what = " and ".join(part for part in (f"{lines} log lines dropped" if lines else "",
                                                      f"{reports} progress reports merged" if reports else "") if part)
                items.append((token, job_id, "log", [f"[dojo] {what}: the job reported faster than it could be sent"]))
            self.dropped.clear()
            self.chars = self.progress_waiting = 0
            self.signalled = False
            return items

    def put_back(self, items: list[tuple]) -> None:
        """Items whose call failed go first again (the calls carrying items are sent one at a time)."""
        with self.lock:
            self.items[:0] = items
            self.chars += sum(len(line) for item in items if item[2] == "log" for line in item[3])
            self.progress_waiting += sum(item[2] == "progress" for item in items)
            self._signal()

    def _signal(self) -> None:
        if self.items and not self.signalled and self.signal is not None:
            self.signalled = True  # once per batch: a busy job does not keep waking the sender
            self.signal.set()
