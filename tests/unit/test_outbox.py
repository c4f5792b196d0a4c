"""The runner's outbox (actors/outbox.py): one ordered stream per attempt, batched and bounded."""

from __future__ import annotations

import threading

from actors import outbox
from actors.outbox import Outbox


def test_items_keep_emission_order_and_lines_share_items_up_to_the_event_size():
    box = Outbox()
    box.progress(1, "a", {"fraction": 0.1})
    box.log(1, "a", ["x"])
    box.log(2, "b", ["other attempt"])
    box.log(1, "a", ["y"])
    box.log(1, "a", [f"l{i}" for i in range(outbox.LOG_ITEM_LINES + 5)])
    items = box.take()
    assert [(t, kind) for t, _, kind, _ in items] == [(1, "progress"), (1, "log"), (2, "log"), (1, "log"), (1, "log")]
    assert items[3][3][:2] == ["y", "l0"] and len(items[3][3]) == outbox.LOG_ITEM_LINES
    assert len(items[4][3]) == 6 and box.take() == [] and len(box) == 0


def test_a_runaway_log_loop_is_bounded_and_the_drop_is_counted(monkeypatch):
    monkeypatch.setattr(outbox, "MAX_PENDING_CHARS", 1000)
    box = Outbox()
    for i in range(10_000):
        box.log(7, "j", [f"{i:09d}"])  # 9 characters each: 111 fit
    items = box.take()
    lines = [line for *_, data in items for line in data]
    assert lines[:111] == [f"{i:09d}" for i in range(111)]
    assert lines[111:] == ["[dojo] 9889 log lines dropped: the job reported faster than it could be sent"]
    box.log(7, "j", ["after"])  # the budget is back once the batch is taken
    assert box.take() == [(7, "j", "log", ["after"])]


def test_progress_past_the_cap_replaces_the_attempts_newest_waiting_report(monkeypatch):
    monkeypatch.setattr(outbox, "MAX_PENDING_PROGRESS", 3)
    box = Outbox()
    for i in range(3):
        box.progress(1, "a", {"i": i})
    box.log(1, "a", ["between"])
    box.progress(1, "a", {"i": 3})  # over the cap: {"i": 2} goes, the newest stands at its place
    items = box.take()
    assert [data for *_, data in items] == [{"i": 0}, {"i": 1}, ["between"], {"i": 3},
                                            ["[dojo] 1 progress reports merged: the job reported faster than it "
                                             "could be sent"]]


def test_a_failed_batch_goes_first_again_and_the_sender_is_signalled_once_per_batch():
    signal = threading.Event()
    box = Outbox(signal)
    box.log(1, "a", ["first"])
    assert signal.is_set()
    signal.clear()
    box.log(1, "a", ["second"])
    assert not signal.is_set()  # a busy job does not keep waking the sender
    sent = box.take()
    box.progress(1, "a", {"i": 1})
    box.put_back(sent)
    assert [data for *_, data in box.take()] == [["first", "second"], {"i": 1}]
