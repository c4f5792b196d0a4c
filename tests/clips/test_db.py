"""The clip database: idempotent upserts, streamer sources, Parquet export."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.clips.db import read_streamers
from pipelines.clips.exceptions import StreamerSourceError
from pipelines.clips.fake_helix import FakeHelix


@pytest.fixture
def clips():
    return FakeHelix(seed=5).clips("100001")


def test_upsert_counts_new_updated_unchanged_and_repeats_change_nothing(db, clips):
    assert db.upsert_clips(clips).to_dict() == {"new": 30, "updated": 0, "unchanged": 0}
    assert db.upsert_clips(clips).to_dict() == {"new": 0, "updated": 0, "unchanged": 30}
    changed = [dict(c, view_count=c["view_count"] + 1) if i < 4 else c for i, c in enumerate(clips)]
    retitled = changed[:5] + [dict(changed[5], title="new title")] + changed[6:]
    assert db.upsert_clips(retitled).to_dict() == {"new": 0, "updated": 5, "unchanged": 25}
    assert db.upsert_clips(retitled).to_dict() == {"new": 0, "updated": 0, "unchanged": 30}
    assert db.count() == 30
    assert {c["id"]: c["title"] for c in db.clips()}[clips[5]["id"]] == "new title"


def test_a_clip_twice_in_one_batch_counts_once(db, clips):
    assert db.upsert_clips(clips + clips[:3]).to_dict() == {"new": 30, "updated": 0, "unchanged": 0}


def test_concurrent_duplicate_deliveries_insert_once(db, clips):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: db.upsert_clips(clips), range(8)))
    assert sum(r.new for r in results) == 30 and db.count() == 30
    assert sum(r.unchanged for r in results) == 7 * 30


def test_a_group_commit_counts_each_batch_as_if_committed_in_turn(db, clips):
    bumped = [dict(c, view_count=c["view_count"] + 1) for c in clips[:10]]
    counts = db.upsert_many([clips[:20], [], clips, bumped, bumped])
    assert [c.to_dict() for c in counts] == [
        {"new": 20, "updated": 0, "unchanged": 0}, {"new": 0, "updated": 0, "unchanged": 0},
        {"new": 10, "updated": 0, "unchanged": 20}, {"new": 0, "updated": 10, "unchanged": 0},
        {"new": 0, "updated": 0, "unchanged": 10}]
    assert db.count() == 30


async def test_the_clip_database_actor_commits_concurrent_batches_once_each(tmp_path, clips):
    """The actor's body without Ray: many callers at once, one bad batch, every clip stored once."""
    from pipelines.clips.cluster_db import ClipDBService

    service = ClipDBService(str(tmp_path / "clips.sqlite3"))
    calls = [service.upsert_clips(clips[i:i + 5]) for i in range(0, 30, 5)] + [service.upsert_clips(clips)]
    bad = service.upsert_clips([{"id": "x"}])  # no broadcaster, no view_count: refused alone
    results = await asyncio.gather(*calls, bad, return_exceptions=True)
    assert isinstance(results[-1], (KeyError, ValueError))
    assert sum(r.new for r in results[:-1]) == 30 and results[-2].unchanged + results[-2].new == 30
    assert await service.count() == 30


def test_database_is_wal_and_round_trips_clips(db, clips):
    db.upsert_clips(clips)
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    stored = {c["id"]: c for c in db.clips()}
    for clip in clips:
        row = stored[clip["id"]]
        assert {k: row[k] for k in clip} == clip


def test_streamers_from_csv_and_parquet(db, tmp_path):
    path = tmp_path / "streamers.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["broadcaster_id", "login"])
        writer.writerows([["100002", "bob"], ["100001", "alice"], ["100001", "alice"]])
    assert read_streamers(path, db) == [{"broadcaster_id": "100002", "login": "bob"},
                                        {"broadcaster_id": "100001", "login": "alice"}]
    pq.write_table(pa.table({"user_id": [100003], "user_login": ["carol"]}), tmp_path / "more.parquet")
    db.load_streamers(tmp_path / "more.parquet")
    assert [s["login"] for s in read_streamers("db", db)] == ["alice", "bob", "carol"]


def test_bad_streamer_sources_say_what_to_do(db, tmp_path):
    with pytest.raises(StreamerSourceError, match="table .* is empty"):
        read_streamers("db", db)
    with pytest.raises(StreamerSourceError, match="unknown streamer source 'streamers.json'"):
        read_streamers("streamers.json", db)
    with pytest.raises(StreamerSourceError, match="does not exist"):
        read_streamers(tmp_path / "missing.csv", db)
    (tmp_path / "cols.csv").write_text("name\nalice\n")
    with pytest.raises(StreamerSourceError, match=r"has columns \['name'\]; expected one of"):
        read_streamers(tmp_path / "cols.csv", db)
    (tmp_path / "ids.csv").write_text("broadcaster_id\nalice\n")
    with pytest.raises(StreamerSourceError, match="row 2: broadcaster_id must be a numeric"):
        read_streamers(tmp_path / "ids.csv", db)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(StreamerSourceError, match="cannot read"):
        read_streamers(tmp_path / "broken.parquet", db)
    assert db.streamers() == []  # nothing half-loaded


def test_export_parquet(db, clips, tmp_path):
    other = FakeHelix(seed=5).clips("100002")
    db.upsert_clips(clips + other)
    assert db.export_parquet(tmp_path / "out" / "clips.parquet") == 60
    table = pq.read_table(tmp_path / "out" / "clips.parquet")
    assert table.num_rows == 60
    assert table.schema.field("view_count").type == pa.int64()
    assert str(table.schema.field("created_at").type) == "timestamp[ms, tz=UTC]"
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[clips[0]["id"]]["view_count"] == clips[0]["view_count"]
    assert db.export_parquet(tmp_path / "one.parquet", broadcaster_id="100002") == 30
