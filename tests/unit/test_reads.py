"""History reads without Ray: lists and search by index, the same rows as the scans they replace, pruning.

``old_list`` below is the store's list query as it was before the search index and keyset merge (an
``instr`` scan and one ``IN`` per column); every filter of the API and dashboard must give its rows.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading

import orjson
import pytest

from actors.store import queries as store_mod
from actors.reads import Reader
from actors.retention import prune_events
from actors.search import SearchIndex
from actors.store import Store, index_pending, select_events, select_jobs

T0 = 1_700_000_000.0
TYPES = ("noop", "echo", "render", "clips.crawl")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "retrying", "waiting")
WORDS = ("alpha", "動画", "配信者の切り抜き", "ナレーション", "Order", "order", "bad_input", "100%")


def old_list(db, *, status=None, type=None, parent_id=None, created_after=None, created_before=None,
             before_id=None, after_id=None, oldest_first=False, limit=100, text=None) -> list[dict]:
    where, args = [], []
    for column, value in (("status", status), ("type", type)):
        if value:
            where.append(f"{column} IN ({','.join('?' * len(value))})")
            args.extend(value)
    for column, value, op in (("parent_id", parent_id, "="), ("created_at", created_after, ">="),
                              ("created_at", created_before, "<"),
                              ("id", after_id if oldest_first else before_id, ">" if oldest_first else "<")):
        if value is not None and value != "":
            where.append(f"{column}{op}?")
            args.append(value)
    if text:
        where.append("instr(data, ?) > 0")
        args.append(text)
    sql = "SELECT data FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY id {'ASC' if oldest_first else 'DESC'} LIMIT ?"
    return [orjson.loads(d) for (d,) in db.execute(sql, [*args, limit])]


def record(i: int, rng: random.Random, parents: list[str]) -> dict:
    created = T0 + i * 0.37 + rng.random() * 0.2
    status = rng.choice(STATUSES)
    error = {"type": "ValueError", "message": f"{rng.choice(WORDS)} 在庫切れ #{i}", "traceback": None} \
        if status in ("failed", "retrying") else None
    return {"id": f"j_{int(created * 1000):011x}{i:05x}{rng.randrange(65536):04x}", "queue": "default",
            "type": rng.choice(TYPES), "status": status, "created_at": created, "updated_at": created + 1,
            "parent_id": rng.choice(parents) if parents and rng.random() < 0.3 else None,
            "payload": {"note": f"{rng.choice(WORDS)} {rng.choice(WORDS)}", "n": i}, "error": error,
            "unique_key": f"key-{i}" if i % 5 == 0 else None, "history": []}


def index_all(store) -> None:
    while index_pending(store.db, 200) >= 200:
        pass


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """1,500 jobs: most in the search index, some failed since they were indexed (stale), the newest not
    indexed yet (the indexer runs behind the commits): a search must find all of them alike."""
    store = Store(tmp_path_factory.mktemp("reads") / "q.sqlite3")
    rng = random.Random(7)
    jobs, parents = [], []
    for i in range(1500):
        job = record(i, rng, parents)
        if i % 100 == 0:
            parents.append(job["id"])
        jobs.append(job)
        store.put_job(job)
        if i % 200 == 0:
            store.commit()
        if i == 1300:
            store.commit()
            index_all(store)
    store.commit()
    for job in jobs[100:1300:25]:  # indexed, then failed with a new error
        job.update(status="failed", error={"type": "LateError", "message": f"配信者 stale {job['id'][-6:]}"})
        store.put_job(job)
    store.commit()
    assert store.db.execute("SELECT count(*) FROM job_text_stale").fetchone()[0] > 0
    return store, jobs, parents


def filter_cases(jobs, parents):
    mid = jobs[700]["created_at"]
    cases = [{}, {"status": ["failed"]}, {"status": ["failed", "cancelled", "retrying"]}, {"type": ["render"]},
             {"type": ["echo", "clips.crawl"], "status": ["succeeded", "queued"]}, {"parent_id": parents[3]},
             {"created_after": mid}, {"created_before": mid}, {"created_after": jobs[300]["created_at"],
                                                              "created_before": mid, "status": ["waiting"]},
             {"status": ["succeeded", "failed", "cancelled"], "created_before": mid}]
    texts = ["配信者", "動画", "ナレ", "在庫切れ", "Order", "order", "bad_input", "100%", "key-10",
             jobs[42]["id"][4:16], parents[1], "clips.crawl", "Value", "#1", "%"]
    cases += [{"text": t} for t in texts]
    cases += [{"text": "LateErr"}, {"text": "stale"}, {"text": jobs[1400]["id"][-8:]}, {"text": "配信者 stale"}]
    cases += [{"text": "在庫切れ", "status": ["failed"]}, {"text": "動画", "type": ["render", "echo"]},
              {"text": "alpha", "parent_id": parents[2]}, {"text": "alpha", "created_after": mid}]
    return cases


@pytest.mark.parametrize("rare", [store_mod.RARE_MATCHES, 3], ids=["few-matches", "many-matches"])
@pytest.mark.parametrize("oldest_first", [False, True], ids=["newest", "oldest"])
def test_every_list_filter_gives_the_rows_of_the_old_scan_page_by_page(filled, monkeypatch, rare, oldest_first):
    monkeypatch.setattr(store_mod, "RARE_MATCHES", rare)
    store, jobs, parents = filled
    for case in filter_cases(jobs, parents):
        cursor, pages = None, 0
        while True:
            key = "after_id" if oldest_first else "before_id"
            args = dict(case, limit=37, oldest_first=oldest_first, **{key: cursor})
            old = [j["id"] for j in old_list(store.db, **args)]
            new = [j["id"] for j in select_jobs(store.db, **args)]
            assert new == old, (case, cursor)
            if len(old) < 37:
                break
            cursor, pages = old[-1], pages + 1
        if case.get("text") in ("配信者", "Order") or case == {}:
            assert pages > 1  # the cases that matter page through several pages


def test_search_finds_substrings_of_ids_types_payloads_and_errors_in_any_script(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    jobs = [{"id": f"j_0000000000{i}000000000", "type": t, "status": "queued", "created_at": T0 + i,
             "updated_at": T0 + i, "parent_id": None, "payload": p, "error": None}
            for i, (t, p) in enumerate([("render", {"title": "今日の配信ハイライト"}), ("clips.crawl", {"login": "Streamer_X"}),
                                        ("echo", "plain text payload")])]
    for job in jobs:
        store.put_job(job)
    store.commit()

    def found(text):
        return [j["id"] for j in select_jobs(store.db, text=text, limit=10)]

    assert found("配信ハイ") == [jobs[0]["id"]]  # committed, not indexed yet: found all the same
    index_all(store)
    assert store.db.execute("SELECT count(*) FROM job_text").fetchone()[0] == 3
    assert found("配信ハイ") == [jobs[0]["id"]]
    assert found("配信") == [jobs[0]["id"]]  # two characters: checked row by row
    assert found("eamer_") == [jobs[1]["id"]]
    assert found("s.cra") == [jobs[1]["id"]]  # a type
    assert found("00001000") == [jobs[1]["id"]]  # an id
    assert found("text pay") == [jobs[2]["id"]]
    assert found("streamer_x") == []  # case-sensitive, like the scan it replaces
    # An error is found once the job has one, and not after the job is gone.
    failed = {**jobs[2], "status": "failed", "error": {"type": "TimeoutError", "message": "ffmpeg が応答しません"}}
    store.put_job(failed)
    store.commit()
    assert found("が応答し") == [jobs[2]["id"]]  # its indexed text is stale: the row itself is checked
    index_all(store)
    assert store.db.execute("SELECT count(*) FROM job_text_stale").fetchone()[0] == 0
    assert found("が応答し") == [jobs[2]["id"]]
    assert found("TimeoutErr") == [jobs[2]["id"]]
    store.delete_job(jobs[2]["id"])
    store.commit()
    assert found("が応答し") == [] and found("text pay") == []


def test_lists_and_search_read_by_index_not_by_scanning(filled):
    """Each filter's page is read from an index in page order: no table scan, no sort of every match."""
    store, jobs, parents = filled
    db = store.db
    plans = []
    real = db.execute

    def spy(sql, args=()):
        if sql.lstrip().upper().startswith("SELECT"):
            plans.append((sql, [row[3] for row in real("EXPLAIN QUERY PLAN " + sql, args)]))
        return real(sql, args)

    class Spy:
        execute = staticmethod(spy)
        in_transaction = True

    for case in filter_cases(jobs, parents):
        if case.get("text") and len(case["text"]) < 3:
            continue  # one or two characters are checked row by row, by design
        plans.clear()
        select_jobs(Spy, limit=50, **case)
        for sql, plan in plans:
            text = " ".join(plan)
            assert "TEMP B-TREE" not in text or "job_text" in sql and "count" not in sql, (case, plan)
            assert not any(step.startswith("SCAN jobs") and "INDEX" not in step for step in plan), (case, plan)
            if case.get("text"):
                assert "job_text" in sql, case


def test_a_database_from_before_the_search_index_is_indexed_when_opened(tmp_path):
    path = tmp_path / "old.sqlite3"
    store = Store(path)
    store.put_job({"id": "j_00000000001000000000", "type": "echo", "status": "succeeded", "created_at": T0,
                   "updated_at": T0, "parent_id": None, "payload": {"q": "古いジョブ"}, "error": None})
    store.commit()
    store.db.executescript("DROP TABLE job_text; DROP TABLE job_text_terms; DROP TABLE job_text_stale; "
                           "DROP TRIGGER job_text_forget;")
    # Before the index, INSERT OR REPLACE gave a row a new rowid at each update: rowids out of id order.
    for i in range(9, 1, -1):
        store.db.execute("INSERT OR REPLACE INTO jobs VALUES (?, 'echo', 'succeeded', ?, ?, NULL, ?)",
                         (f"j_0000000000{i}000000000", T0 + i, T0 + i,
                          orjson.dumps({"id": f"j_0000000000{i}000000000", "payload": f"古いジョブ {i}"}).decode()))
    store.close()
    store = Store(path)
    assert [j["id"] for j in select_jobs(store.db, text="古いジョブ 3")] == ["j_00000000003000000000"]
    index_all(store)
    assert [j["id"] for j in select_jobs(store.db, text="古いジョブ 3")] == ["j_00000000003000000000"]
    ids = [i for (i,) in store.db.execute("SELECT id FROM jobs ORDER BY rowid")]
    assert ids == sorted(ids) and len(ids) == 9  # rewritten in id order: the index walks rowids as ids
    for rare in (store_mod.RARE_MATCHES, 1):
        store_mod.RARE_MATCHES, saved = rare, store_mod.RARE_MATCHES
        try:
            page = [j["id"] for j in select_jobs(store.db, text="古いジョ", limit=4)]
            assert page == sorted(ids, reverse=True)[:4]
            assert [j["id"] for j in select_jobs(store.db, text="古いジョ", limit=4, before_id=page[-1])] == \
                sorted(ids, reverse=True)[4:8]
        finally:
            store_mod.RARE_MATCHES = saved


def test_the_reader_reads_committed_rows_on_read_only_connections(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    reader = Reader(store.path)

    async def scenario():
        assert await reader.run(select_jobs, limit=5) == []
        store.put_job({"id": "j_00000000001000000000", "type": "echo", "status": "queued", "created_at": T0,
                       "updated_at": T0, "parent_id": None, "payload": None, "error": None})
        assert await reader.run(select_jobs, limit=5) == []  # staged, not committed
        store.commit()
        assert [j["id"] for j in await reader.run(select_jobs, limit=5)] == ["j_00000000001000000000"]
        with pytest.raises(sqlite3.OperationalError):
            await reader.run(lambda db: db.execute("DELETE FROM jobs"))
        # Off the loop: a read that waits for the loop to do something else can finish only if the loop
        # is free while it runs (on the loop, it would wait in vain).
        loop_thread, loop_ran = threading.get_ident(), threading.Event()

        def read_waiting_for_the_loop(db):
            return threading.get_ident(), loop_ran.wait(30)

        async def meanwhile():
            await asyncio.sleep(0)
            loop_ran.set()

        (read_thread, saw_loop), _ = await asyncio.gather(reader.run(read_waiting_for_the_loop), meanwhile())
        assert read_thread != loop_thread and saw_loop

    try:
        asyncio.run(scenario())
    finally:
        reader.close()


def _job_with_events(store, i, status, at, gseq):
    job_id = f"j_{i:011x}00000{i:04x}"
    store.put_job({"id": job_id, "type": "echo", "status": status, "created_at": at, "updated_at": at + 5,
                   "parent_id": None, "payload": None, "error": None})
    for seq, kind in enumerate(["status", "progress", "log", "status"], 1):
        gseq += 1
        store.add_event({"gseq": gseq, "stream": "job:" + job_id, "seq": seq, "at": at + seq, "kind": kind,
                         "data": {"job_id": job_id}})
    return job_id, gseq


def test_pruning_drops_old_events_of_finished_jobs_only_and_keeps_each_last_event(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    now, day = T0 + 100 * 86400, 86400
    gseq, old_finished, unfinished, recent = 0, [], [], []
    for i in range(1, 40):  # in time order, like the queue writes them
        status = ("running", "queued", "waiting", "retrying", "scheduled")[i % 5] if i % 3 == 0 else \
            ("succeeded", "failed", "cancelled", "expired")[i % 4]
        at = now - (30 if i < 25 else 1) * day + i
        job_id, gseq = _job_with_events(store, i, status, at, gseq)
        if i % 3 == 0:
            unfinished.append(job_id)  # old ones too: an unfinished job's events stay, whatever their age
        elif i < 25:
            old_finished.append(job_id)
        else:
            recent.append(job_id)
        if i == 10:
            gseq += 1
            store.add_event({"gseq": gseq, "stream": "channel:news", "seq": 1, "at": at, "kind": "message",
                             "data": {}})
    store.commit()
    while prune_events(store, now, days=7, limit=7) == 7:
        pass
    through = store.get_meta("events_pruned")["through"]
    assert store.db.execute("SELECT max(at) FROM events WHERE gseq<=?", (through,)).fetchone()[0] < now - 7 * day
    assert store.db.execute("SELECT min(at) FROM events WHERE gseq>?", (through,)).fetchone()[0] > now - 7 * day

    def seqs(job_id):
        return [e["seq"] for e in select_events(store.db, "job:" + job_id, 0)]

    assert all(seqs(j) == [4] for j in old_finished)
    assert all(seqs(j) == [1, 2, 3, 4] for j in unfinished + recent)
    assert store.last_seq("job:" + old_finished[0]) == 4  # a retried job's stream goes on after its last seq
    assert len(select_events(store.db, "channel:news", 0)) == 1
    assert store.max_gseq() == gseq
    # An old job that was unfinished when pruning passed it is pruned once it has finished.
    late = unfinished[0]
    store.put_job({"id": late, "type": "echo", "status": "succeeded", "created_at": now - 30 * day,
                   "updated_at": now - 2 * day, "parent_id": None, "payload": None, "error": None})
    gseq += 1
    store.add_event({"gseq": gseq, "stream": "job:" + late, "seq": 5, "at": now - 2 * day, "kind": "status",
                     "data": {}})
    store.commit()
    prune_events(store, now, days=7)
    assert seqs(late) == [5]
    assert all(seqs(j) == [1, 2, 3, 4] for j in unfinished[1:] + recent)
    assert prune_events(store, now, days=0) == 0


def test_the_search_index_catches_up_between_commits_and_searches_stay_exact_meanwhile(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    search = SearchIndex(store, batch=50)
    for i in range(120):
        store.put_job({"id": f"j_{i + 1:011x}00000abcd", "type": "echo", "status": "queued", "created_at": T0 + i,
                       "updated_at": T0 + i, "parent_id": None, "payload": {"n": f"номер-{i:03d}"}, "error": None})
    store.commit()
    search.wake()
    assert search.due(idle=False, now=T0) and search.due(idle=True, now=T0)
    steps = 0
    while search.behind:
        assert [j["payload"]["n"] for j in select_jobs(store.db, text="номер-07", limit=20)] == \
            [f"номер-{i:03d}" for i in range(79, 69, -1)]
        search.step(T0)
        steps += 1
        assert not search.due(idle=False, now=T0 + 0.1)  # busy: not again so soon
    assert steps == 3 and store.db.execute("SELECT count(*) FROM job_text").fetchone()[0] == 120


def test_a_search_longer_than_the_limit_is_refused_with_a_message():
    from actors.exceptions import InvalidInput
    from serve.http import MAX_SEARCH, check_search

    assert check_search("配信") == "配信" and check_search("") is None and check_search(None) is None
    with pytest.raises(InvalidInput, match="at most 256 characters"):
        check_search("x" * (MAX_SEARCH + 1))
