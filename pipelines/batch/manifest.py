"""A batch manifest: its rows, where each row's files come from, and each row's key.

Every row is read and checked (reachable, right type, size limits, options,
the deck itself as ``POST /v1/renders`` checks it) before anything is
queued; the first bad row raises ``ManifestError`` naming it.

A file cell may be:

- a path: looked up next to the manifest, then in the current directory
  (inside ``ray job submit --working-dir .`` that is the uploaded copy);
- ``s3://bucket/key``: read with boto3's own configuration (``AWS_*``
  variables, ``AWS_ENDPOINT_URL`` for an S3-compatible server);
- ``https://...`` (or ``http://``): downloaded;
- ``dojo:KEY``: an object already in dojo's store (``DOJO_S3_*`` or the local
  store of ``DOJO_STATE_DIR``).

A row's key is its ``key`` cell, else a hash of the row's cells and of the
bytes of its files: a re-run finds the rows that already succeeded by it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

OPTION_COLUMNS = ("engine", "voice", "speed", "resolution", "width", "height", "pad_before", "pad_after",
                  "subtitles", "burn_in", "fps")
COLUMNS = ("deck", "script", "key", *OPTION_COLUMNS)
REMOTE = ("s3://", "https://", "http://", "dojo:")
FETCH_TIMEOUT_S = 60


class ManifestError(ValueError):
    """The manifest is unusable; the message names the row or column and what to fix."""


@dataclass
class Row:
    number: int  # 1-based data row (the header is not counted)
    label: str  # the deck cell as written
    files: list[tuple[str, bytes]] = field(repr=False)
    script: tuple[str, bytes] | None = field(repr=False)
    options: dict
    key: str

    @property
    def deck(self) -> list[str]:
        """The deck's file names (for messages)."""
        return [name for name, _ in self.files]


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _read_local(cell: str, base: Path, row: int, column: str, limit: int) -> tuple[str, bytes]:
    path = Path(cell).expanduser()
    candidates = [path] if path.is_absolute() else [base / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            if candidate.stat().st_size > limit:
                raise ManifestError(f"row {row}: {column} file {cell!r} is {candidate.stat().st_size} bytes; "
                                    f"the limit is {limit} (DOJO_MAX_UPLOAD_BYTES)")
            return candidate.name, candidate.read_bytes()
    tried = " or ".join(str(c) for c in candidates)
    raise ManifestError(f"row {row}: {column} file {cell!r} not found (looked at {tried})")


def _read_s3(uri: str, limit: int) -> bytes:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urllib.parse.urlparse(uri)
    if not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError("expected s3://BUCKET/KEY")
    try:
        client = boto3.client("s3")
        head = client.head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        if head["ContentLength"] > limit:
            raise ValueError(f"it is {head['ContentLength']} bytes; the limit is {limit} (DOJO_MAX_UPLOAD_BYTES)")
        return client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise ValueError(f"{exc} (boto3 reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL)") from None


def _read_http(url: str, limit: int) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise ValueError(f"the server answered {exc.code} {exc.reason}") from None
    except OSError as exc:
        raise ValueError(f"cannot download it: {exc}") from None
    if len(data) > limit:
        raise ValueError(f"it is over the limit of {limit} bytes (DOJO_MAX_UPLOAD_BYTES)")
    return data


def _read_dojo(key: str, limit: int) -> bytes:
    from actors.objects import store_from_settings
    from actors.settings import Settings
    from actors.storage import validate_key

    # Reading needs no tokens: do not create a tokens file as Settings.from_env() would.
    store = store_from_settings(Settings(state_dir=os.environ.get("DOJO_STATE_DIR") or Settings().state_dir))
    validate_key(key)
    if not store.exists(key):
        raise ValueError("no such object in dojo's store")
    if store.size(key) > limit:
        raise ValueError(f"it is {store.size(key)} bytes; the limit is {limit} (DOJO_MAX_UPLOAD_BYTES)")
    return store.get_bytes(key)


def read_source(cell: str, base: Path, row: int, column: str, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of one file cell: a path, ``s3://``, ``https://`` or ``dojo:KEY``."""
    cell = cell.strip()
    if not cell.startswith(REMOTE):
        return _read_local(cell, base, row, column, limit)
    name = urllib.parse.urlparse(cell).path.rstrip("/").rsplit("/", 1)[-1] or cell.rsplit(":", 1)[-1]
    try:
        if cell.startswith("s3://"):
            data = _read_s3(cell, limit)
        elif cell.startswith("dojo:"):
            name = cell[5:].rstrip("/").rsplit("/", 1)[-1]
            data = _read_dojo(cell[5:], limit)
        else:
            data = _read_http(cell, limit)
    except ManifestError:
        raise
    except Exception as exc:
        raise ManifestError(f"row {row}: {column} {cell!r}: {exc}") from None
    return name, data


def read_table(path: str | os.PathLike):
    """The manifest as a pyarrow Table (Parquet by magic bytes or suffix, else CSV; every CSV column as text)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} not found")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    try:
        if magic == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        # Every column as text: the options are parsed (and checked) by RenderOptions.
        names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={name: "string" for name in names}, strings_can_be_null=True))
    except Exception as exc:
        raise ManifestError(f"manifest {str(path)!r} is neither Parquet nor CSV that pyarrow can read: {exc}") from None


def row_key(cells: dict, files: list[tuple[str, bytes]], script: tuple[str, bytes] | None) -> str:
    """The row's identity when it has no ``key`` cell: its cells and the bytes of its files."""
    digest = hashlib.sha256(json.dumps(cells, sort_keys=True, default=str).encode())
    for _, data in [*files, *([script] if script else [])]:
        digest.update(hashlib.sha256(data).digest())
    return "h:" + digest.hexdigest()[:40]


def read_manifest(path: str | os.PathLike, max_bytes: int | None = None) -> list[Row]:
    """Parse and check every row (files, columns, options, and each deck as the API checks it)."""
    from actors.exceptions import DojoError
    from actors.settings import Settings
    from pipelines.render.job import RenderOptions
    from pipelines.render.inputs import validate_render

    limit = max_bytes or Settings().max_upload_bytes
    table = read_table(path)
    base = Path(path).resolve().parent
    columns = [name.strip() for name in table.column_names]
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise ManifestError(f"manifest column(s) {unknown} unknown; columns are {list(COLUMNS)}")
    if "deck" not in columns:
        raise ManifestError(f"the manifest needs a 'deck' column; it has {columns}")
    if table.num_rows == 0:
        raise ManifestError("the manifest has no rows")
    rows: list[Row] = []
    keys: dict[str, int] = {}
    for number, record in enumerate(table.to_pylist(), 1):
        record = {key.strip(): value for key, value in record.items()}
        cell = record.get("deck")
        if _blank(cell):
            raise ManifestError(f"row {number}: 'deck' is empty; give a path or URI, or several separated by ';'")
        files = [read_source(part, base, number, "deck", limit) for part in str(cell).split(";") if part.strip()]
        script = None if _blank(record.get("script")) else read_source(str(record["script"]), base, number,
                                                                      "script", limit)
        options = {}
        for name in OPTION_COLUMNS:
            value = record.get(name)
            if not _blank(value):
                options[name] = value.strip() if isinstance(value, str) else value
        try:
            RenderOptions.from_dict(options)
            validate_render(files, script, options)
        except DojoError as exc:
            raise ManifestError(f"row {number} ({cell}): {exc}") from None
        cells = {k: v for k, v in record.items() if not _blank(v)}
        key = str(record["key"]).strip() if not _blank(record.get("key")) else row_key(cells, files, script)
        if key in keys:
            raise ManifestError(f"row {number}: key {key!r} is also row {keys[key]}'s; keys must be unique")
        keys[key] = number
        rows.append(Row(number, str(cell), files, script, options, key))
    return rows
