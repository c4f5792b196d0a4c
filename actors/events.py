"""The queue's event log: numbered events, staged with the commit and published after it.

Every change a subscriber may see is an event: ``gseq`` orders all of a queue's events, ``seq`` numbers
those of one stream (``job:<id>``, ``channel:<name>``, ``queue:<name>``), so a client resumes a stream or
the whole queue from the last number it saw. Events are staged in the store beside the change they
describe (one commit) and handed to the actor by ``take()`` to be published only once committed.
"""

from __future__ import annotations


class EventLog:
    """Numbers and stages a queue's events. Single-threaded, like the rules that emit them."""

    def __init__(self, store):
        self.store = store
        self.next_gseq = store.max_gseq() + 1
        self._seq: dict[str, int] = {}  # stream -> its last seq (streams seen since the start)
        self._staged: list[dict] = []

    def emit(self, stream: str, kind: str, data: dict, now: float) -> dict:
        seq = self._seq.get(stream)
        if seq is None:
            seq = self.store.last_seq(stream)
        seq += 1
        self._seq[stream] = seq
        event = {"gseq": self.next_gseq, "stream": stream, "seq": seq, "at": now, "kind": kind, "data": data}
        self.next_gseq += 1
        self.store.add_event(event)
        self._staged.append(event)
        return event

    def begin(self, stream: str) -> None:
        """A new stream (a job just made): its numbers start at 1 without asking the store."""
        self._seq[stream] = 0

    def end(self, stream: str) -> None:
        """A stream that will get no more events (a finished or deleted job): forget its number."""
        self._seq.pop(stream, None)

    def take(self) -> list[dict]:
        """Events staged since the last call; publish them only after the commit."""
        events, self._staged = self._staged, []
        return events
