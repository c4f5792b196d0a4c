"""The clip database: streamers to crawl and the clips found, in SQLite (WAL).

- ``streamers(broadcaster_id PRIMARY KEY, login, ...)``: loaded from a CSV or
  Parquet file (:meth:`ClipDB.load_streamers`) or written directly.
- ``clips(id PRIMARY KEY, <every Helix field>, first_seen_at, updated_at)``:
  :meth:`ClipDB.upsert_clips` inserts new clips and updates ``view_count`` /
  ``title`` / ``is_featured`` of known ones, in one transaction, and says how
  many were new, updated or unchanged. Delivering the same batch twice changes
  nothing the second time (all unchanged), so at-least-once delivery is safe.
- :meth:`ClipDB.export_parquet` writes the clips with pyarrow.

Each call opens its own connection, so one ``ClipDB`` can be used from many
threads (``asyncio.to_thread``) and many processes of one machine share the
file; writers take SQLite's write lock up front (``BEGIN IMMEDIATE``) and wait
up to ``busy_timeout`` for it.

On a Ray cluster the file lives on the head and jobs never open it themselves
(a worker node's disk is scratch): :func:`pipelines.clips.cluster_db.open_clip_db`
gives them the head's one writer instead.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .exceptions import StreamerSourceError
from .helix import CLIP_FIELDS, parse_time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streamers (
    broadcaster_id TEXT PRIMARY KEY,
    login TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY,
    url TEXT, embed_url TEXT,
    broadcaster_id TEXT NOT NULL, broadcaster_name TEXT,
    creator_id TEXT, creator_name TEXT,
    video_id TEXT, game_id TEXT, language TEXT,
    title TEXT, view_count INTEGER NOT NULL,
    created_at TEXT NOT NULL, thumbnail_url TEXT,
    duration REAL, vod_offset INTEGER, is_featured INTEGER NOT NULL DEFAULT 0,
    first_seen_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS clips_by_broadcaster ON clips (broadcaster_id, created_at);
"""

#: Columns of a streamer file that may hold the broadcaster id / the login, in order of preference.
ID_COLUMNS = ("broadcaster_id", "user_id", "id")
LOGIN_COLUMNS = ("login", "broadcaster_login", "user_login", "name", "broadcaster_name")
#: Fields of a known clip that a later crawl may change.
MUTABLE_FIELDS = ("view_count", "title", "is_featured")


@dataclass(frozen=True)
class Upserted:
    """How one batch changed the table."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0

    def to_dict(self) -> dict:
        return {"new": self.new, "updated": self.updated, "unchanged": self.unchanged}


class ClipDB:
    """The clip database at ``path`` (created with its tables on first use)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0, synchronous: str = "NORMAL"):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- streamers ----------------------------------------------------------------------------

    def add_streamers(self, streamers: Iterable[dict]) -> int:
        """Insert or rename streamers (``{"broadcaster_id", "login"}``); return how many rows were given."""
        now = time.time()
        rows = [(str(s["broadcaster_id"]), str(s.get("login") or ""), now) for s in streamers]
        with self._write() as conn:
            conn.executemany("INSERT INTO streamers (broadcaster_id, login, added_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (broadcaster_id) DO UPDATE SET login = excluded.login", rows)
        return len(rows)

    def streamers(self) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute("SELECT broadcaster_id, login FROM streamers ORDER BY broadcaster_id").fetchall()
        return [{"broadcaster_id": bid, "login": login} for bid, login in rows]

    def load_streamers(self, source: str | Path) -> list[dict]:
        """Read streamers from a .csv or .parquet file into the table; return them."""
        streamers = read_streamer_file(source)
        self.add_streamers(streamers)
        return streamers

    # -- clips --------------------------------------------------------------------------------

    def upsert_clips(self, clips: list[dict]) -> Upserted:
        """Insert new clips, update changed ones, count both; one transaction, safe to repeat."""
        return self.upsert_many([clips])[0]

    def upsert_many(self, batches: list[list[dict]]) -> list[Upserted]:
        """Several callers' batches in one transaction (a group commit), counted per batch in order.

        A clip in two batches is new in the first and unchanged (or updated) in the second,
        exactly as if the batches had been committed one after the other.
        """
        if not any(batches):
            return [Upserted() for _ in batches]
        with self._write() as conn:
            return [self._upsert(conn, clips) for clips in batches]

    @staticmethod
    def _upsert(conn: sqlite3.Connection, clips: list[dict]) -> Upserted:
        if not clips:
            return Upserted()
        batch: dict[str, dict] = {}
        for clip in clips:
            batch[str(clip["id"])] = clip  # a clip twice in one batch counts once
        now = time.time()
        new, changed, unchanged = [], [], 0
        known: dict[str, tuple] = {}
        ids = list(batch)
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            for row in conn.execute(f"SELECT id, view_count, title, is_featured FROM clips WHERE id IN ({marks})",
                                    part):
                known[row[0]] = row[1:]
        for clip_id, clip in batch.items():
            values = (int(clip["view_count"]), clip.get("title"), int(bool(clip.get("is_featured"))))
            if clip_id not in known:
                new.append(_clip_row(clip, now))
            elif known[clip_id] != values:
                changed.append((*values, now, clip_id))
            else:
                unchanged += 1
        if new:
            columns = ", ".join((*CLIP_FIELDS, "first_seen_at", "updated_at"))
            marks = ", ".join("?" * (len(CLIP_FIELDS) + 2))
            conn.executemany(f"INSERT INTO clips ({columns}) VALUES ({marks})", new)
        if changed:
            conn.executemany("UPDATE clips SET view_count = ?, title = ?, is_featured = ?, updated_at = ? "
                             "WHERE id = ?", changed)
        return Upserted(new=len(new), updated=len(changed), unchanged=unchanged)

    def clip_ids(self, broadcaster_id: str | None = None) -> list[str]:
        query, args = "SELECT id FROM clips", ()
        if broadcaster_id is not None:
            query, args = query + " WHERE broadcaster_id = ?", (str(broadcaster_id),)
        with self._connect() as conn:
            return [row[0] for row in conn.execute(query + " ORDER BY id", args)]

    def clips(self, broadcaster_id: str | None = None) -> list[dict]:
        """Clips as Helix-shaped dicts (plus first_seen_at, updated_at)."""
        columns = (*CLIP_FIELDS, "first_seen_at", "updated_at")
        query, args = f"SELECT {', '.join(columns)} FROM clips", ()
        if broadcaster_id is not None:
            query, args = query + " WHERE broadcaster_id = ?", (str(broadcaster_id),)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY broadcaster_id, created_at, id", args).fetchall()
        out = []
        for row in rows:
            clip = dict(zip(columns, row))
            clip["is_featured"] = bool(clip["is_featured"])
            out.append(clip)
        return out

    def count(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM clips").fetchone()[0]

    def export_parquet(self, path: str | Path, broadcaster_id: str | None = None) -> int:
        """Write the clips (all, or one broadcaster's) to a Parquet file; return the row count."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        clips = self.clips(broadcaster_id)
        schema = pa.schema([
            ("id", pa.string()), ("url", pa.string()), ("embed_url", pa.string()),
            ("broadcaster_id", pa.string()), ("broadcaster_name", pa.string()),
            ("creator_id", pa.string()), ("creator_name", pa.string()), ("video_id", pa.string()),
            ("game_id", pa.string()), ("language", pa.string()), ("title", pa.string()),
            ("view_count", pa.int64()), ("created_at", pa.timestamp("ms", tz="UTC")),
            ("thumbnail_url", pa.string()), ("duration", pa.float64()), ("vod_offset", pa.int64()),
            ("is_featured", pa.bool_()), ("first_seen_at", pa.timestamp("ms", tz="UTC")),
            ("updated_at", pa.timestamp("ms", tz="UTC")),
        ])
        columns = {name: [c[name] for c in clips] for name in schema.names}
        columns["created_at"] = [parse_time(v) for v in columns["created_at"]]
        for name in ("first_seen_at", "updated_at"):
            columns[name] = [int(v * 1000) for v in columns[name]]
        table = pa.table(columns, schema=schema)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return table.num_rows


def _clip_row(clip: dict, now: float) -> tuple:
    missing = [name for name in ("id", "broadcaster_id", "view_count", "created_at") if clip.get(name) is None]
    if missing:
        raise ValueError(f"a clip needs {', '.join(missing)}; got keys {sorted(clip)}")
    row = [clip.get(name) for name in CLIP_FIELDS]
    row[CLIP_FIELDS.index("is_featured")] = int(bool(clip.get("is_featured")))
    return (*row, now, now)


def read_streamer_file(source: str | Path) -> list[dict]:
    """Streamers from a .csv or .parquet file with a broadcaster id column (and optionally a login)."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise StreamerSourceError(f"unknown streamer source {str(source)!r}: expected 'db' (the streamers table) "
                                  "or a path ending in .csv or .parquet")
    if not path.is_file():
        raise StreamerSourceError(f"streamer file {str(path)!r} does not exist; check DOJO_CLIPS_STREAMERS "
                                  "or the crawl's 'source'")
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise StreamerSourceError(f"cannot read streamer file {str(path)!r} as Parquet: {exc}") from None
        columns = table.column_names
        rows = table.to_pylist()
    id_column = next((c for c in ID_COLUMNS if c in columns), None)
    if id_column is None:
        raise StreamerSourceError(f"streamer file {str(path)!r} has columns {columns}; expected one of "
                                  f"{list(ID_COLUMNS)} holding the numeric Twitch user id")
    login_column = next((c for c in LOGIN_COLUMNS if c in columns), None)
    streamers, seen = [], set()
    for line, row in enumerate(rows, start=2 if suffix == ".csv" else 1):
        raw = row.get(id_column)
        bid = str(raw).strip() if raw is not None else ""
        if not bid.isdigit():
            raise StreamerSourceError(f"streamer file {str(path)!r}, row {line}: {id_column} must be a numeric "
                                      f"Twitch user id, got {raw!r}")
        if bid in seen:
            continue
        seen.add(bid)
        login = row.get(login_column) if login_column else ""
        streamers.append({"broadcaster_id": bid, "login": str(login or "")})
    return streamers


def read_streamers(source: str | Path, db: ClipDB | None = None) -> list[dict]:
    """The streamers of ``source``: 'db' reads the table, a file path is loaded into it (when a db is given)."""
    if str(source) == "db":
        if db is None:
            raise StreamerSourceError("streamer source 'db' needs the clip database (DOJO_CLIPS_DB)")
        streamers = db.streamers()
        if not streamers:
            raise StreamerSourceError(f"the streamers table in {str(db.path)!r} is empty; load streamers "
                                      "from a .csv/.parquet file first (ClipDB.load_streamers) or pass a file "
                                      "as the source")
        return streamers
    if db is not None:
        return db.load_streamers(source)
    return read_streamer_file(source)
