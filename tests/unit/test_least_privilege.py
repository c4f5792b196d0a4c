"""Least privilege without Ray: what a token reaches, which objects belong to a job, which go with it."""

from __future__ import annotations


import pytest

from actors.exceptions import InvalidInput
from actors.queue import JobQueue, Limits
from actors.retention import delete_objects, folders_of, foreign_objects, outputs_of, owns, sweep
from actors.settings import Settings
from actors.storage import LocalStore
from actors.store import MemoryDisk
from serve.auth import Authenticator, channel_stream, mint, query_token_allowed

from .conftest import T0, make_queue
JOB = "j_0000000000000000ab12"
OTHER = "j_0000000000000000cd34.renders"


def test_a_job_owns_only_its_own_folder():
    assert owns(JOB, f"renders/{JOB}/video.mp4") and owns(JOB, f"a/b/{JOB}/c/d.txt")
    assert not owns(JOB, f"renders/{OTHER}/video.mp4")
    assert not owns(JOB, f"renders/{JOB}")  # the id as a file name is not a folder of the job
    assert not owns(JOB, "inputs/u_1/deck.pdf") and not owns(JOB, 7)
    job = {"id": JOB, "result": {"video": f"renders/{JOB}/video.mp4", "stolen": f"renders/{OTHER}/video.mp4",
                                 "duration_s": 3.0, "nested": {"deep": f"batches/{JOB}/results.parquet"}}}
    assert outputs_of(job) == {"video": f"renders/{JOB}/video.mp4"}
    assert folders_of(job) == {f"renders/{JOB}/", f"batches/{JOB}/"}
    assert outputs_of({"id": JOB, "result": [1]}) == {} and folders_of({"id": JOB, "result": None}) == set()


def test_a_result_naming_another_jobs_object_is_foreign():
    assert foreign_objects(JOB, {"video": f"renders/{OTHER}/video.mp4", "ok": f"renders/{JOB}/a.mp4"}) == [
        f"renders/{OTHER}/video.mp4"]
    assert foreign_objects(JOB, {"url": "s3://bucket/x", "n": 1}, result_key=f"x/{OTHER}/y") == [f"x/{OTHER}/y"]
    assert foreign_objects(JOB, {"video": f"renders/{JOB}/video.mp4"}, None) == []


def test_deleting_a_job_deletes_its_folders_and_nothing_else(tmp_path):
    store = LocalStore(tmp_path / "objects", secret="s")
    for key in (f"renders/{JOB}/video.mp4", f"renders/{JOB}/thumbnail.jpg", f"renders/{OTHER}/video.mp4",
                "renders/cache/audio/x.wav"):
        store.put_bytes(key, b"x")
    job = {"id": JOB, "result": {"video": f"renders/{JOB}/video.mp4"}}
    assert delete_objects(store, [job]) == 2
    assert sorted(store.list("renders/")) == sorted([f"renders/{OTHER}/video.mp4", "renders/cache/audio/x.wav"])


def test_delete_and_retention_hand_the_deleted_jobs_over_for_their_objects(tmp_path):
    q = make_queue(MemoryDisk(), now=T0)
    ids = []
    for _ in range(2):
        [(job, _)] = q.enqueue_many([{"type": "echo"}], T0)
        [lease] = q.lease("r1", ["echo"], 1, T0 + 1)
        q.complete(lease["token"], {"file": f"out/{job['id']}/a.txt"}, T0 + 2, job_id=job["id"])
        ids.append(job["id"])
    q.store.commit()
    q.delete(ids[0])
    q.store.commit()
    assert [j["id"] for j in q.forgotten] == [ids[0]]
    assert sweep(q, T0 + 40 * 86400, days=30) == 1
    assert [j["id"] for j in q.forgotten] == ids
    assert folders_of(q.forgotten[1]) == {f"out/{ids[1]}/"}


def test_a_channel_token_is_bound_to_one_channel_of_one_queue():
    auth = Authenticator("api", "worker", "secret")
    token = mint("secret", "channel", channel_stream("renders", "news"), 60)
    who = auth.principal(f"Bearer {token}")
    who.require_read("channel", channel_stream("renders", "news"))
    for queue, channel in (("default", "news"), ("renders", "sports")):
        with pytest.raises(Exception, match="cannot read channel"):
            who.require_read("channel", channel_stream(queue, channel))
    with pytest.raises(InvalidInput, match="names its queue"):
        mint("secret", "channel", "news", 60)


def test_a_token_in_the_url_counts_only_where_a_browser_cannot_send_a_header():
    assert query_token_allowed("GET", None, websocket=True)
    assert query_token_allowed("GET", "text/event-stream")
    assert not query_token_allowed("GET", "application/json")
    assert not query_token_allowed("GET", None)
    assert not query_token_allowed("POST", "text/event-stream")


def test_pull_types_per_queue():
    settings = Settings(pull_types=("echo", "renders:sleep"))
    assert settings.pull_types_of("default") == {"echo"}
    assert settings.pull_types_of("renders") == {"echo", "sleep"}
    assert Settings().pull_types_of("default") == set()


def test_list_filters_refuse_what_sqlite_cannot_take():
    import math

    from actors.facade import _list_filters, _position

    for bad in ({"created_after": math.inf}, {"created_before": math.nan}, {"created_after": 1e300},
                {"text": "a\x00b"}, {"text": "a\ud800"}):
        with pytest.raises(InvalidInput):
            _list_filters(bad)
    _list_filters({"created_after": 1.7e9, "created_before": None, "text": "render"})
    with pytest.raises(InvalidInput, match="after"):
        _position(2**63)
    assert _position(5) == 5
