"""The store's contract, checked on both stores (SQLite and its in-memory twin, the ``path`` fixture):
the queue rules' tests run on either, so the twin must answer as the real one does."""

from __future__ import annotations

from actors.ids import JobIds

from .conftest import T0, open_store


def job(job_id: str, status: str = "queued", type: str = "echo", parent_id: str | None = None, **extra) -> dict:
    return {"id": job_id, "type": type, "status": status, "created_at": T0 + int(job_id[-1]), "updated_at": T0,
            "parent_id": parent_id, "payload": {"n": job_id}, "unique_key": None, "error": None, "history": [],
            **extra}


def event(gseq: int, stream: str, seq: int, kind: str = "status", at: float = T0) -> dict:
    return {"gseq": gseq, "stream": stream, "seq": seq, "at": at, "kind": kind, "data": {"gseq": gseq}}


def test_what_is_staged_is_durable_only_once_committed(path):
    store = open_store(path)
    record = job("j1")
    store.put_job(record)
    store.add_event(event(1, "job:j1", 1))
    store.set_meta("epoch", 3)
    assert store.dirty and store.get_job("j1") is record  # the writer reads what it staged
    assert open_store(path).get_job("j1") is None and open_store(path).max_gseq() == 0
    store.commit()
    assert not store.dirty
    again = open_store(path)
    assert again.get_job("j1") == record and again.get_job("j1") is not record  # a copy, as a row is
    assert (again.max_gseq(), again.last_seq("job:j1"), again.get_meta("epoch"), again.get_meta("x", 7)) == (1, 1, 3, 7)


def test_a_deleted_job_takes_its_events_and_deliveries_with_it(path):
    store = open_store(path)
    store.put_job(job("j1", "succeeded"))
    store.put_job(job("j2", "succeeded"))
    store.add_event(event(1, "job:j1", 1))
    store.add_event(event(2, "job:j2", 1))
    store.put_delivery({"id": "j1.1", "job_id": "j1", "state": "pending"})
    store.commit()
    store.delete_job("j1")
    assert store.get_job("j1") is None
    store.commit()
    again = open_store(path)
    assert again.get_job("j1") is None and [e["gseq"] for e in again.events_after(None, 0)] == [2]
    assert again.pending_deliveries() == [] and again.deliveries_of("j1") == []


def test_events_page_by_stream_and_globally(path):
    store = open_store(path)
    for gseq in range(1, 7):
        store.add_event(event(gseq, "job:a" if gseq % 2 else "job:b", (gseq + 1) // 2))
    store.commit()
    assert [e["gseq"] for e in store.events_after(None, 2, limit=3)] == [3, 4, 5]
    assert [(e["seq"], e["gseq"]) for e in store.events_after("job:a", 1)] == [(2, 3), (3, 5)]
    assert store.events_after("job:a", 0)[0] == {"gseq": 1, "stream": "job:a", "seq": 1, "at": T0, "kind": "status",
                                                 "data": {"gseq": 1}}
    assert (store.last_seq("job:b"), store.last_seq("job:none"), store.max_gseq()) == (3, 0, 6)


def test_job_lists_filter_and_page_like_select_jobs(path):
    store = open_store(path)
    made = JobIds("default")
    j = [None] + [made.next(T0 + i) for i in range(1, 5)]  # real ids: they carry their creation time
    for i, status in enumerate(["queued", "failed", "succeeded", "failed"], start=1):
        store.put_job({**job(f"j{i}", status, type="flaky" if i % 2 else "echo", parent_id=j[1] if i > 2 else None),
                       "id": j[i], "payload": {"n": f"n{i}"}})
    store.commit()
    ids = lambda rows: [j.index(r["id"]) for r in rows]  # noqa: E731
    assert ids(store.list_jobs()) == [4, 3, 2, 1]
    assert ids(store.list_jobs(oldest_first=True, after_id=j[1], limit=2)) == [2, 3]
    assert ids(store.list_jobs(status=["failed"], before_id=j[4])) == [2]
    assert ids(store.list_jobs(type="flaky", parent_id=j[1])) == [3]
    assert ids(store.list_jobs(created_after=T0 + 2, created_before=T0 + 4)) == [3, 2]
    assert ids(store.list_jobs(text="n3")) == [3]
    assert store.count_by_status() == {"queued": 1, "failed": 2, "succeeded": 1}
    assert [j.index(r["id"]) for r in store.active_jobs()] == [1]


def test_children_include_staged_rows_and_leave_out_deleted_ones(path):
    store = open_store(path)
    store.put_job(job("j1"))
    store.put_job(job("j2", parent_id="j1"))
    store.put_job(job("j3", parent_id="j1"))
    store.commit()
    store.put_job(job("j4", parent_id="j1"))
    store.delete_job("j2")
    assert sorted(c["id"] for c in store.children_of("j1")) == ["j3", "j4"]


def test_schedules_buckets_controls_and_deliveries_round_trip(path):
    store = open_store(path)
    store.put_schedule("a", {"name": "a", "n": 1})
    store.put_schedule("b", {"name": "b"})
    store.put_bucket("api", {"rate": 2.0})
    store.put_control("dedup", "k", {"job": "j1"})
    store.put_control("dedup", "gone", {"job": "j2"})
    store.put_job(job("j1"))
    for n, state in ((1, "failed"), (2, "pending"), (10, "pending")):
        store.put_delivery({"id": f"j1.{n}", "job_id": "j1", "state": state})
    store.commit()
    store.put_schedule("b", None)
    store.put_control("dedup", "gone", None)
    store.commit()
    again = open_store(path)
    assert again.schedules() == {"a": {"name": "a", "n": 1}} and again.buckets() == {"api": {"rate": 2.0}}
    assert again.controls("dedup") == {"k": {"job": "j1"}} and again.controls("throttle") == {}
    assert [d["id"] for d in again.pending_deliveries()] == ["j1.10", "j1.2"]  # by id, as SQL orders them
    assert [d["id"] for d in again.deliveries_of("j1")] == ["j1.1", "j1.2", "j1.10"]  # by try number


def test_pruning_keeps_each_finished_jobs_last_event_and_unfinished_jobs_events(path):
    store = open_store(path)
    store.put_job(job("j1", "succeeded"))
    store.put_job(job("j2", "running"))
    for gseq, (stream, seq) in enumerate([("job:j1", 1), ("job:j1", 2), ("job:j2", 1), ("job:j2", 2),
                                          ("channel:c", 1)], start=1):
        store.add_event(event(gseq, stream, seq, at=T0))
    store.commit()
    store.prune_events(T0 + 1)
    assert [(e["stream"], e["seq"]) for e in store.events_after(None, 0)] == [
        ("job:j1", 2), ("job:j2", 1), ("job:j2", 2), ("channel:c", 1)]
