"""Objects every node of the cluster reaches, with zero configuration: the head's directory, through Ray.

Why this design (and not a second server): a worker node's disk is scratch —
the autoscaler adds and removes those machines — so the one lasting copy of
an object lives on the head, in ``<state_dir>/objects``, next to the queues'
databases. One named, detached actor per directory (``dojo:objects:<hash>``), pinned to the head
like the queue actors, owns that directory:

- it moves bytes over Ray's own transport, which every node already has and
  which token auth already protects: no extra service, port, credential or
  process for ``dojo up``, ``cluster.yaml`` or KubeRay to start and secure,
  and it behaves the same on all three;
- processes on the head (the API, a single-node cluster's jobs) skip the
  actor and use the directory directly, so one machine pays nothing;
- processes on other nodes stream in chunks of ``CHUNK`` bytes, a few in
  flight at once (``WINDOW``): a 2 GB video never sits whole in one process's
  memory, neither the job's nor the actor's;
- a write is all or nothing, as in ``LocalStore``: an upload fills a temp file
  on the head and is renamed onto its key only when every byte arrived
  (``commit`` checks the size). An upload that is aborted, or whose uploader
  died, leaves nothing under a key; its temp file is removed after
  ``UPLOAD_IDLE_S`` without a chunk, or when the actor restarts;
- a read is of one version: each chunk names the file's identity (inode,
  mtime, size), and a reader that sees it change mid-way starts again.

For production, S3 or R2 (``DOJO_S3_BUCKET``, see ``storage``) takes the head's
disk out of the data path and makes objects outlive the cluster.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

import ray

from .exceptions import ConfigError, InvalidInput, NotFound
from .settings import NAMESPACE, private_dir
from .storage import LocalStore, ObjectStore, S3Store, UploadAborted, validate_key

#: The actor of a directory is named after it (``dojo:objects:<hash>``): one per head directory.
ACTOR_PREFIX = "dojo:objects:"
#: Bytes per actor call when streaming (Ray moves args and results this big through its object store).
CHUNK = 8 * 1024 * 1024
#: Chunks in flight per stream: enough to overlap transfer and disk, bounded memory (WINDOW * CHUNK).
WINDOW = 4
#: An upload with no chunk for this long is considered abandoned (its uploader died) and removed.
UPLOAD_IDLE_S = 600.0
_UPLOAD_PREFIX = "upload-"


class ObjectService:
    """The body of the objects actor: a ``LocalStore`` on the head plus chunked uploads and reads."""

    def __init__(self, root: str):
        self.store = LocalStore(root)
        self.tmp = private_dir(self.store.root / LocalStore.TMP)
        self._uploads: dict[str, tuple[str, Path, float]] = {}  # id -> (key, temp path, last touched)
        self._lock = threading.Lock()
        # Uploads of an earlier incarnation of this actor cannot be finished: their ids died with it.
        for stale in self.tmp.glob(_UPLOAD_PREFIX + "*"):
            stale.unlink(missing_ok=True)

    def describe(self) -> dict:
        return {"node_id": ray.get_runtime_context().get_node_id(), "root": str(self.store.root)}

    # -- writes ---------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.store.put_bytes(key, data)

    def begin(self, key: str) -> str:
        self.store.path(key)  # validates the key before any byte moves
        self._sweep()
        upload_id = secrets.token_hex(8)
        path = self.tmp / f"{_UPLOAD_PREFIX}{upload_id}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))  # users' data: this user only
        with self._lock:
            self._uploads[upload_id] = (key, path, time.monotonic())
        return upload_id

    def _upload(self, upload_id: str) -> tuple[str, Path]:
        with self._lock:
            entry = self._uploads.get(upload_id)
            if entry is None:
                raise UploadAborted(f"upload {upload_id} is unknown (aborted, expired or the objects actor "
                                    "restarted); upload the object again")
            self._uploads[upload_id] = (entry[0], entry[1], time.monotonic())
            return entry[0], entry[1]

    def write(self, upload_id: str, offset: int, data: bytes) -> None:
        _, path = self._upload(upload_id)
        with open(path, "r+b") as fh:  # positioned writes: chunks may arrive in any order
            fh.seek(offset)
            fh.write(data)

    def commit(self, upload_id: str, size: int) -> None:
        key, path = self._upload(upload_id)
        try:
            actual = path.stat().st_size
            if actual != size:
                raise UploadAborted(f"upload of {key!r} has {actual} of {size} bytes; nothing was stored")
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            target = self.store.path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        finally:
            self.abort(upload_id)

    def abort(self, upload_id: str) -> None:
        with self._lock:
            entry = self._uploads.pop(upload_id, None)
        if entry is not None:
            entry[1].unlink(missing_ok=True)

    def _sweep(self) -> None:
        cutoff = time.monotonic() - UPLOAD_IDLE_S
        with self._lock:
            stale = [upload_id for upload_id, (_, _, touched) in self._uploads.items() if touched < cutoff]
        for upload_id in stale:
            self.abort(upload_id)

    # -- reads ----------------------------------------------------------------------------------

    def read(self, key: str, offset: int, length: int) -> tuple[tuple, bytes] | None:
        """``(identity, bytes)`` of ``key`` from ``offset``, or None when there is no such object."""
        try:
            with open(self.store.path(key), "rb") as fh:
                st = os.fstat(fh.fileno())
                fh.seek(offset)
                return (st.st_ino, st.st_mtime_ns, st.st_size), fh.read(length)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def size(self, key: str) -> int | None:
        try:
            return self.store.size(key)
        except NotFound:
            return None

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.store.list(prefix)


ObjectsActor = ray.remote(ObjectService)


def actor_name(root: str) -> str:
    return ACTOR_PREFIX + hashlib.sha1(str(root).encode()).hexdigest()[:12]


def objects_actor(root: str):
    """The actor of the head's directory ``root``, created on first use (detached, restarted if it dies)."""
    return ObjectsActor.options(
        name=actor_name(root), namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=-1,
        max_task_retries=0, max_concurrency=32, num_cpus=0, resources={"node:__internal_head__": 0.001},
    ).remote(root)


_placed: dict[tuple[str, str], tuple[object, bool]] = {}


def _where(root: str) -> tuple[object, bool]:
    """``root``'s actor and whether this process is on another node; asked once per process and Ray job."""
    context = ray.get_runtime_context()
    key = (root, context.get_job_id())
    if key not in _placed:
        actor = objects_actor(root)
        head = ray.get(actor.describe.remote())
        _placed[key] = (actor, head["node_id"] != context.get_node_id())
    return _placed[key]


class ClusterStore(LocalStore):
    """The zero-configuration store: ``LocalStore`` on the head node, the objects actor elsewhere.

    Outside Ray (a CLI on the head, unit tests) it is the directory. URLs are the
    API's HMAC-signed ``/v1/objects/...`` paths, as for ``LocalStore``; the API
    runs on the head and serves them from the directory.
    """

    def __init__(self, root: str | os.PathLike, secret: str = "", url_prefix: str = "/v1/objects",
                 remote: bool | None = None):
        """``remote``: None decides by this process's node; True always goes through the actor (tests)."""
        # No mkdir here: on a worker node this path is not where objects live.
        self.root = Path(root)
        self.secret = secret
        self.url_prefix = url_prefix.rstrip("/")
        self._actor = objects_actor(str(self.root)) if remote else None
        self._remote: bool | None = remote or None
        self._decide = threading.Lock()

    def __repr__(self) -> str:
        where = {None: "undecided", True: "via the objects actor", False: "on the head"}[self._remote]
        return f"ClusterStore({str(self.root)!r}, {where})"

    @property
    def remote(self) -> bool:
        """True when this process is not on the head node, so bytes go through the actor."""
        if self._remote is None:
            with self._decide:
                if self._remote is None:
                    if not ray.is_initialized():
                        self._remote = False
                    else:
                        self._actor, self._remote = _where(str(self.root))
                    if not self._remote:
                        private_dir(self.root)
        return self._remote

    # -- writes ---------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        if not self.remote:
            return super().put_bytes(key, data, content_type)
        validate_key(key)
        if len(data) <= CHUNK:
            ray.get(self._actor.put.remote(key, data))
            return
        view = memoryview(data)
        self._stream_up(key, (bytes(view[at:at + CHUNK]) for at in range(0, len(data), CHUNK)), len(data), None)

    def put_file(self, key, path, content_type=None, cancelled=None) -> None:
        if not self.remote:
            return super().put_file(key, path, content_type, cancelled)
        validate_key(key)
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            self._stream_up(key, iter(lambda: fh.read(CHUNK), b""), size, cancelled)

    def _stream_up(self, key: str, chunks, size: int, cancelled: threading.Event | None) -> None:
        upload_id = ray.get(self._actor.begin.remote(key))
        try:
            pending: deque = deque()
            offset = 0
            for chunk in chunks:
                if cancelled is not None and cancelled.is_set():
                    raise UploadAborted(f"upload of {key!r} cancelled after {offset} bytes")
                pending.append(self._actor.write.remote(upload_id, offset, chunk))
                offset += len(chunk)
                if len(pending) >= WINDOW:
                    ray.get(pending.popleft())
            ray.get(list(pending))
            ray.get(self._actor.commit.remote(upload_id, size))
        except BaseException:
            self._actor.abort.remote(upload_id)  # fire and forget: the original error matters more
            raise

    # -- reads ----------------------------------------------------------------------------------

    def _stream_down(self, key: str, sink) -> None:
        """Feed ``sink(bytes, first)`` the whole object, one version of it (restarting if it is replaced)."""
        for _ in range(3):
            first = ray.get(self._actor.read.remote(key, 0, CHUNK))
            if first is None:
                raise NotFound(f"no object with key {key!r}")
            ident, data = first
            sink(data, True)
            offsets = deque(range(CHUNK, ident[2], CHUNK))
            pending: deque = deque()
            changed = False
            while offsets or pending:
                while offsets and len(pending) < WINDOW:
                    pending.append(self._actor.read.remote(key, offsets.popleft(), CHUNK))
                answer = ray.get(pending.popleft())
                if answer is None or answer[0] != ident:
                    changed = True
                    break
                sink(answer[1], False)
            if not changed:
                return
        raise NotFound(f"object {key!r} kept changing while it was read; try again")

    def get_bytes(self, key: str) -> bytes:
        if not self.remote:
            return super().get_bytes(key)
        validate_key(key)
        parts: list[bytes] = []

        def sink(data: bytes, first: bool) -> None:
            if first:
                parts.clear()
            parts.append(data)

        self._stream_down(key, sink)
        return b"".join(parts)

    def get_file(self, key: str, path) -> None:
        if not self.remote:
            return super().get_file(key, path)
        validate_key(key)
        with open(path, "wb") as fh:
            def sink(data: bytes, first: bool) -> None:
                if first:
                    fh.seek(0)
                    fh.truncate()
                fh.write(data)

            try:
                self._stream_down(key, sink)
            except BaseException:
                fh.close()
                Path(path).unlink(missing_ok=True)
                raise

    def exists(self, key: str) -> bool:
        if not self.remote:
            return super().exists(key)
        validate_key(key)
        return ray.get(self._actor.size.remote(key)) is not None

    def size(self, key: str) -> int:
        if not self.remote:
            return super().size(key)
        validate_key(key)
        size = ray.get(self._actor.size.remote(key))
        if size is None:
            raise NotFound(f"no object with key {key!r}")
        return size

    def delete(self, key: str) -> None:
        if not self.remote:
            return super().delete(key)
        validate_key(key)
        ray.get(self._actor.delete.remote(key))

    def list(self, prefix: str = "") -> list[str]:
        if not self.remote:
            return super().list(prefix)
        return ray.get(self._actor.list.remote(prefix))

    def path(self, key: str) -> Path:
        if self.remote:
            raise InvalidInput(f"object {key!r} is on the head node, not on this one; read it with get_file")
        return super().path(key)


def store_from_settings(settings) -> ObjectStore:
    """S3 when ``DOJO_S3_BUCKET`` is set, else a ``ClusterStore`` over the head's ``settings.objects_dir``.

    S3 variables: DOJO_S3_BUCKET, DOJO_S3_ENDPOINT (empty for AWS), DOJO_S3_ACCESS_KEY,
    DOJO_S3_SECRET_KEY, DOJO_S3_REGION (default us-east-1).
    """
    env = os.environ
    bucket = env.get("DOJO_S3_BUCKET", "").strip()
    if not bucket:
        return ClusterStore(settings.objects_dir, secret=settings.object_signing_key)
    access, secret = env.get("DOJO_S3_ACCESS_KEY", ""), env.get("DOJO_S3_SECRET_KEY", "")
    if bool(access) != bool(secret):
        raise ConfigError("set both DOJO_S3_ACCESS_KEY and DOJO_S3_SECRET_KEY, or neither to use boto3's defaults")
    return S3Store(bucket, endpoint_url=env.get("DOJO_S3_ENDPOINT") or None, access_key=access or None,
                   secret_key=secret or None, region=env.get("DOJO_S3_REGION") or None)
