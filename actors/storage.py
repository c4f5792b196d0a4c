"""Object storage behind one small interface: a local directory or any S3 endpoint.

Both stores make the same promises:

- A key is a relative, '/'-separated name (``renders/j_1/video.mp4``); keys with
  ``..``, empty or absolute segments, backslashes or control characters are
  refused with ``InvalidInput`` before any I/O.
- A write is all or nothing: readers see the old object, or the complete new
  one, never a prefix. ``LocalStore`` writes a temp file and renames it;
  ``S3Store`` creates the object only when the upload completes and aborts a
  multipart upload that fails or is cancelled, so it leaves no part behind.
- ``signed_url(key, expires_s)`` gives a link that works without the API token
  until it expires: an HMAC-signed ``/v1/objects/...`` path served by the API
  for the local store, a presigned GET for S3.

``objects.store_from_settings`` picks S3 when ``DOJO_S3_BUCKET`` is set (production:
S3, R2 or any S3-compatible endpoint), else ``objects.ClusterStore``: the
directory ``<state_dir>/objects`` on the head node, which processes on other
nodes reach through the head-pinned objects actor (see ``actors/objects.py``
for why). Never a node's own disk: a worker node's files are scratch.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Protocol
from urllib.parse import quote

from .exceptions import ConfigError, DojoError, InvalidInput, NotFound
from .settings import private_dir

#: Largest key accepted (S3's own limit).
MAX_KEY_LENGTH = 1024
_KEY_CHARS = re.compile(r"^[A-Za-z0-9._\-/=+@ ]+$")


class UploadAborted(Exception):
    """An upload was stopped before it completed; nothing was stored under its key."""


def validate_key(key: object) -> str:
    """Return ``key`` if it is a safe relative object name, else raise InvalidInput."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"object key must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"object key is {len(key)} characters; at most {MAX_KEY_LENGTH} are allowed")
    if key.startswith("/") or "\\" in key or ":" in key.split("/")[0]:
        raise InvalidInput(f"object key {key!r} must be relative, like 'renders/j_1/video.mp4'")
    if not _KEY_CHARS.match(key):
        raise InvalidInput(f"object key {key!r} may only contain letters, digits, space and . _ - / = + @")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(f"object key {key!r} has an empty, '.' or '..' segment; use plain names")
        if segment.startswith(" ") or segment.endswith(" "):
            raise InvalidInput(f"object key {key!r} has a segment starting or ending with a space")
    return key


class ObjectStore(Protocol):
    """What dojo needs from object storage."""

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None,
                 cancelled: threading.Event | None = None) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, path: str | os.PathLike) -> None: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def signed_url(self, key: str, expires_s: float = 3600) -> str: ...


def output_urls(store: ObjectStore, result: object, base: str, expires_s: float) -> dict[str, str]:
    """Signed URLs, absolute, of the stored objects a job's result names (``{"video": "renders/…"}``).

    The local store signs ``/v1/objects/…`` paths, which are put under ``base`` (the API's public URL);
    S3 presigns its own. Names whose object is missing are left out, so a link never 404s at once.
    """
    urls = {}
    for name, key in (result.items() if isinstance(result, dict) else ()):
        if not (isinstance(key, str) and "/" in key):
            continue
        try:
            if not store.exists(key):
                continue
        except DojoError:
            continue
        urls[name] = public_link(store, key, base, expires_s)
    return urls


def public_link(store: ObjectStore, key: str, base: str, expires_s: float) -> str:
    """A signed URL of one stored object: S3's presigned URL, or the local store's path under ``base``."""
    url = store.signed_url(key, expires_s)
    return base.rstrip("/") + url if url.startswith("/") else url


def _copy_stream(src: BinaryIO, dst: BinaryIO, cancelled: threading.Event | None, chunk: int = 1 << 20) -> None:
    while True:
        if cancelled is not None and cancelled.is_set():
            raise UploadAborted("upload cancelled before it completed")
        block = src.read(chunk)
        if not block:
            return
        dst.write(block)


class LocalStore:
    """Objects as files under ``root``; URLs are signed paths the API serves."""

    #: Temp files live here, outside any key's namespace (keys cannot start with '.tmp/').
    TMP = ".tmp"

    def __init__(self, root: str | os.PathLike, secret: str = "", url_prefix: str = "/v1/objects"):
        self.root = Path(root)
        self.secret = secret
        self.url_prefix = url_prefix.rstrip("/")
        private_dir(self.root)  # objects are the users' data: 0700 (files are 0600, from mkstemp)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file that holds ``key`` (it may not exist)."""
        validate_key(key)
        if key == self.TMP or key.startswith(self.TMP + "/"):
            raise InvalidInput(f"object key {key!r} is reserved; keys may not start with '{self.TMP}/'")
        return self.root / key

    def _atomic_write(self, key: str, fill: Callable[[BinaryIO], None]) -> None:
        target = self.path(key)
        tmp_dir = private_dir(self.root / self.TMP)  # the first write may be what creates the root
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._atomic_write(key, lambda fh: fh.write(data))

    def put_file(self, key, path, content_type=None, cancelled=None) -> None:
        with open(path, "rb") as src:
            self._atomic_write(key, lambda fh: _copy_stream(src, fh, cancelled))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"no object with key {key!r}") from None

    def get_file(self, key: str, path) -> None:
        source = self.path(key)
        if not source.is_file():
            raise NotFound(f"no object with key {key!r}")
        shutil.copyfile(source, path)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no object with key {key!r}") from None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == self.TMP or rel_dir.startswith(self.TMP + os.sep):
                dirnames.clear()
                continue
            for name in filenames:
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _sign(self, key: str, exp: int) -> str:
        if not self.secret:
            raise ConfigError("LocalStore needs a secret to sign URLs; set DOJO_SECRET")
        message = f"{key}\n{exp}".encode()
        return hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()

    def signed_url(self, key: str, expires_s: float = 3600) -> str:
        validate_key(key)
        exp = int(time.time() + expires_s)
        return f"{self.url_prefix}/{quote(key)}?exp={exp}&sig={self._sign(key, exp)}"

    def verify(self, key: str, exp: int | str, sig: str, now: float | None = None) -> bool:
        """True if ``sig`` was made by ``signed_url`` for ``key`` and ``exp`` has not passed."""
        try:
            validate_key(key)
            exp = int(exp)
        except (InvalidInput, TypeError, ValueError):
            return False
        if exp < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._sign(key, exp), str(sig))


class S3Store:
    """Objects in an S3 bucket (AWS, R2, MinIO, SeaweedFS...) through boto3."""

    #: Files at least this big go up as multipart uploads, in parts of ``part_size``.
    multipart_threshold = 16 * 1024 * 1024
    part_size = 8 * 1024 * 1024

    def __init__(self, bucket: str, endpoint_url: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, region: str | None = None, client=None):
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                aws_access_key_id=access_key or None,
                aws_secret_access_key=secret_key or None,
                region_name=region or "us-east-1",
                # Path style works with every S3-compatible server; virtual hosts need DNS.
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
            )
        self.client = client

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def _extra(self, content_type: str | None) -> dict:
        return {"ContentType": content_type} if content_type else {}

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        validate_key(key)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._extra(content_type))

    def put_file(self, key, path, content_type=None, cancelled=None) -> None:
        validate_key(key)
        size = os.path.getsize(path)
        if size < self.multipart_threshold:
            if cancelled is not None and cancelled.is_set():
                raise UploadAborted("upload cancelled before it started")
            with open(path, "rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=fh, **self._extra(content_type))
            return
        self._multipart(key, path, content_type, cancelled)

    def _multipart(self, key, path, content_type, cancelled) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **self._extra(content_type))
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(path, "rb") as fh:
                number = 1
                while True:
                    if cancelled is not None and cancelled.is_set():
                        raise UploadAborted(f"upload of {key!r} cancelled after {number - 1} parts")
                    block = fh.read(self.part_size)
                    if not block:
                        break
                    answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                     PartNumber=number, Body=block)
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            # The object only appears on complete; aborting frees the parts already sent.
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # the original error matters more
                pass
            raise

    def _missing(self, exc) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise NotFound(f"no object with key {key!r}") from None
            raise

    def get_file(self, key: str, path) -> None:
        validate_key(key)
        try:
            self.client.download_file(self.bucket, key, str(path))
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise NotFound(f"no object with key {key!r}") from None
            raise

    def _head(self, key: str) -> dict | None:
        validate_key(key)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise NotFound(f"no object with key {key!r}")
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        validate_key(key)
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def signed_url(self, key: str, expires_s: float = 3600) -> str:
        validate_key(key)
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key},
                                                  ExpiresIn=int(expires_s))

