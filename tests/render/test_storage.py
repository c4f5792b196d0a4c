"""Object stores: the local directory and S3 (a real SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from actors.exceptions import InvalidInput, NotFound
from actors.settings import Settings
from actors.objects import ClusterStore, ObjectService, store_from_settings
from actors.storage import LocalStore, S3Store, UploadAborted, validate_key

BAD_KEYS = ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a\\b", "C:/x", "a\x00b", "a\nb", "x/..",
            ".tmp/put-1", "a" * 1025]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_before_any_io(store, key):
    with pytest.raises(InvalidInput):
        store.put_bytes(key, b"x")
    assert store.list() == []


def test_validate_key_accepts_plain_names():
    assert validate_key("renders/j_1/video.mp4") == "renders/j_1/video.mp4"


def test_local_roundtrip(store, tmp_path):
    store.put_bytes("a/b.txt", b"hello")
    source = tmp_path / "big.bin"
    source.write_bytes(b"z" * 3_000_000)
    store.put_file("a/c.bin", source)
    assert store.get_bytes("a/b.txt") == b"hello"
    assert store.size("a/c.bin") == 3_000_000
    assert store.list("a/") == ["a/b.txt", "a/c.bin"]
    store.get_file("a/c.bin", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    with pytest.raises(NotFound):
        store.get_bytes("a/b.txt")


def test_local_cancelled_upload_leaves_nothing(store, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(b"z" * 5_000_000)
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(UploadAborted):
        store.put_file("v/video.mp4", source, cancelled=cancelled)
    assert store.list() == []
    assert list((store.root / LocalStore.TMP).iterdir()) == []


def test_signed_urls_verify_and_expire(store):
    url = store.signed_url("renders/j 1/video.mp4", expires_s=60)
    parts = urlsplit(url)
    assert parts.path.startswith("/v1/objects/renders/j%201/video.mp4")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert store.verify("renders/j 1/video.mp4", query["exp"], query["sig"])
    assert not store.verify("renders/j 1/other.mp4", query["exp"], query["sig"])
    assert not store.verify("renders/j 1/video.mp4", int(query["exp"]) + 1, query["sig"])
    assert not store.verify("renders/j 1/video.mp4", query["exp"], query["sig"], now=time.time() + 120)
    assert not store.verify("../etc/passwd", query["exp"], query["sig"])
    assert not LocalStore(store.root, secret="other").verify("renders/j 1/video.mp4", query["exp"], query["sig"])


def test_store_from_settings(tmp_path, monkeypatch):
    settings = Settings(state_dir=str(tmp_path), secret="s")
    monkeypatch.delenv("DOJO_S3_BUCKET", raising=False)
    local = store_from_settings(settings)
    # Outside Ray (no cluster to reach) the cluster store is the head's directory itself.
    assert isinstance(local, ClusterStore) and local.root == tmp_path / "objects" and not local.remote
    monkeypatch.setenv("DOJO_S3_BUCKET", "renders")
    monkeypatch.setenv("DOJO_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("DOJO_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("DOJO_S3_SECRET_KEY", "b")
    s3 = store_from_settings(settings)
    assert isinstance(s3, S3Store) and s3.bucket == "renders" and s3.endpoint_url == "http://127.0.0.1:9"


def test_s3_roundtrip_and_presigned_url(s3_store, tmp_path):
    s3_store.put_bytes("a/b.txt", b"hello", content_type="text/plain")
    assert s3_store.get_bytes("a/b.txt") == b"hello"
    assert s3_store.exists("a/b.txt") and not s3_store.exists("a/missing")
    assert s3_store.list("a/") == ["a/b.txt"]
    with urllib.request.urlopen(s3_store.signed_url("a/b.txt", 60), timeout=10) as response:
        assert response.read() == b"hello"
    s3_store.get_file("a/b.txt", tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_bytes() == b"hello"
    s3_store.delete("a/b.txt")
    with pytest.raises(NotFound):
        s3_store.get_bytes("a/b.txt")


def _small_parts(store: S3Store) -> S3Store:
    store.multipart_threshold = 6 * 1024 * 1024
    store.part_size = 5 * 1024 * 1024  # S3's smallest part
    return store


def test_s3_multipart_upload(s3_store, tmp_path):
    store = _small_parts(s3_store)
    source = tmp_path / "video.bin"
    source.write_bytes(bytes(range(256)) * (45 * 1024))  # 11.25 MiB: three parts
    store.put_file("renders/j/video.mp4", source, content_type="video/mp4")
    assert store.size("renders/j/video.mp4") == source.stat().st_size
    assert store.get_bytes("renders/j/video.mp4") == source.read_bytes()


class _Interrupting:
    """A real boto3 client that cancels (or breaks) the upload after its first part."""

    def __init__(self, client, event: threading.Event | None = None, fail: bool = False):
        self._client, self._event, self._fail = client, event, fail

    def __getattr__(self, name):
        return getattr(self._client, name)

    def upload_part(self, **kwargs):
        if self._fail and kwargs["PartNumber"] == 2:
            raise ConnectionError("network dropped")
        answer = self._client.upload_part(**kwargs)
        if self._event is not None:
            self._event.set()
        return answer


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_s3_aborted_upload_leaves_no_object(s3_store, tmp_path, how):
    cancelled = threading.Event()
    client = _Interrupting(s3_store.client, event=cancelled if how == "cancelled" else None, fail=how == "failed")
    store = _small_parts(S3Store(s3_store.bucket, client=client))
    source = tmp_path / "video.bin"
    source.write_bytes(b"v" * (11 * 1024 * 1024))
    with pytest.raises(UploadAborted if how == "cancelled" else ConnectionError):
        store.put_file("renders/j/video.mp4", source, cancelled=cancelled)
    assert not s3_store.exists("renders/j/video.mp4")
    assert s3_store.list() == []
    assert s3_store.client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads", []) == []


# -- the cluster store: the head's directory, reached from other nodes through the objects actor ----------


def test_object_service_uploads_are_all_or_nothing(tmp_path):
    service = ObjectService(str(tmp_path / "objects"))
    upload = service.begin("renders/j/video.mp4")
    service.write(upload, 4, b"5678")  # chunks may arrive in any order
    service.write(upload, 0, b"1234")
    assert service.list() == [] and service.read("renders/j/video.mp4", 0, 8) is None
    with pytest.raises(UploadAborted):
        service.commit(upload, 9)  # a byte is missing: nothing is stored
    assert service.list() == [] and list(service.tmp.iterdir()) == []
    with pytest.raises(UploadAborted):
        service.write(upload, 8, b"9")  # the failed upload is gone

    upload = service.begin("renders/j/video.mp4")
    service.write(upload, 0, b"12345678")
    service.commit(upload, 8)
    ident, data = service.read("renders/j/video.mp4", 2, 3)
    assert data == b"345" and ident[2] == 8 and service.size("renders/j/video.mp4") == 8

    aborted = service.begin("renders/j/other.mp4")
    service.write(aborted, 0, b"x")
    service.abort(aborted)
    assert service.list() == ["renders/j/video.mp4"] and list(service.tmp.iterdir()) == []
    with pytest.raises(InvalidInput):
        service.begin(".tmp/upload-1")


def test_object_service_restart_drops_unfinished_uploads(tmp_path):
    service = ObjectService(str(tmp_path / "objects"))
    upload = service.begin("a/b.bin")
    service.write(upload, 0, b"half")
    again = ObjectService(str(tmp_path / "objects"))  # the actor restarted: its uploader cannot finish
    assert list(again.tmp.iterdir()) == [] and again.list() == []


@pytest.mark.ray
def test_cluster_store_streams_through_the_actor_in_chunks(ray_cluster, tmp_path, monkeypatch):
    import actors.objects as objects

    monkeypatch.setattr(objects, "CHUNK", 64 * 1024)  # many chunks, several in flight
    head = ClusterStore(tmp_path / "objects", secret="s")
    remote = ClusterStore(tmp_path / "objects", secret="s", remote=True)
    assert not head.remote and remote.remote and head.root == remote.root
    source = tmp_path / "video.bin"
    source.write_bytes(bytes(range(256)) * 4099)  # ~1 MiB, not a multiple of the chunk
    remote.put_file("renders/j/video.mp4", source)
    remote.put_bytes("renders/j/big.bin", source.read_bytes())
    remote.put_bytes("renders/j/small.txt", b"hi")
    assert head.get_bytes("renders/j/video.mp4") == source.read_bytes()  # on the head's disk
    assert remote.get_bytes("renders/j/big.bin") == source.read_bytes()
    remote.get_file("renders/j/video.mp4", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert remote.list("renders/j/") == ["renders/j/big.bin", "renders/j/small.txt", "renders/j/video.mp4"]
    assert remote.size("renders/j/small.txt") == 2 and remote.exists("renders/j/small.txt")
    remote.delete("renders/j/small.txt")
    assert not remote.exists("renders/j/small.txt")
    with pytest.raises(NotFound):
        remote.get_bytes("renders/j/small.txt")
    with pytest.raises(NotFound):
        remote.get_file("renders/j/small.txt", tmp_path / "none.bin")
    assert not (tmp_path / "none.bin").exists()

    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(UploadAborted):
        remote.put_file("renders/j/cancelled.mp4", source, cancelled=cancelled)
    assert not head.exists("renders/j/cancelled.mp4")
    assert head.signed_url("renders/j/video.mp4").startswith("/v1/objects/renders/j/video.mp4?exp=")
