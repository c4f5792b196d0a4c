"""One clip database for the whole cluster: a head-pinned actor is its only writer.

Crawl children run on whichever worker node has room, and a worker node's disk
is scratch (the autoscaler removes the machine). So the SQLite file lives on the
head, beside the queues' databases, and one named, detached actor per file
(``dojo:clips:<hash of the path>``) owns it, in the spirit of the queue actor:

- jobs call it with their batch of clips (10–100 per streamer page);
  concurrent calls that arrive while a commit is running are committed
  together in the next transaction (a group commit), each still counted on
  its own (:meth:`ClipDB.upsert_many`);
- upserts are idempotent (a clip's id is its key; a repeated batch changes
  nothing), so a call that Ray retries after the actor restarted, or a job
  that is delivered twice, leaves the same rows;
- readers on the head (``dojo clips export``, the tests) open the file
  directly: SQLite's WAL lets them read while the actor writes.

Outside Ray (unit tests, a script on one machine) :func:`open_clip_db` is the
plain :class:`ClipDB`.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import ray

from actors.settings import NAMESPACE

from .db import ClipDB, Upserted, read_streamer_file


class ClipDBService:
    """The body of the clip database actor (``ClipDBActor = ray.remote(ClipDBService)``)."""

    def __init__(self, path: str):
        self.db = ClipDB(path)
        self._pending: list[tuple[list[dict], asyncio.Future]] = []
        self._flushing: asyncio.Task | None = None

    async def upsert_clips(self, clips: list[dict]) -> Upserted:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((clips, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                counts = await asyncio.to_thread(self.db.upsert_many, [clips for clips, _ in group])
            except Exception:
                # One bad batch must not fail its neighbours: commit them one by one instead.
                for clips, future in group:
                    try:
                        future.set_result(await asyncio.to_thread(self.db.upsert_clips, clips))
                    except Exception as exc:
                        future.set_exception(exc)
                continue
            for (_, future), count in zip(group, counts):
                future.set_result(count)

    async def add_streamers(self, streamers: list[dict]) -> int:
        return await asyncio.to_thread(self.db.add_streamers, streamers)

    async def streamers(self) -> list[dict]:
        return await asyncio.to_thread(self.db.streamers)

    async def count(self) -> int:
        return await asyncio.to_thread(self.db.count)


ClipDBActor = ray.remote(ClipDBService)


def actor_name(path: str | Path) -> str:
    return "dojo:clips:" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


class ClusterClipDB:
    """``ClipDB``'s calls that jobs make, sent to the head's clip database actor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.actor = ClipDBActor.options(
            name=actor_name(path), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=3,  # safe: every call is idempotent
            max_concurrency=1000, num_cpus=0, resources={"node:__internal_head__": 0.001},
        ).remote(str(path))

    def __repr__(self) -> str:
        return f"ClusterClipDB({str(self.path)!r})"

    def upsert_clips(self, clips: list[dict]) -> Upserted:
        return ray.get(self.actor.upsert_clips.remote(clips))

    def add_streamers(self, streamers) -> int:
        return ray.get(self.actor.add_streamers.remote(list(streamers)))

    def streamers(self) -> list[dict]:
        return ray.get(self.actor.streamers.remote())

    def load_streamers(self, source: str | Path) -> list[dict]:
        """Read a streamer file on this node (it is the job's input) and add its rows to the one table."""
        streamers = read_streamer_file(source)
        self.add_streamers(streamers)
        return streamers

    def count(self) -> int:
        return ray.get(self.actor.count.remote())


_handles: dict[str, ClusterClipDB] = {}


def open_clip_db(path: str | Path) -> ClipDB | ClusterClipDB:
    """The clip database at ``path`` on the head: through its actor inside Ray, the file itself outside."""
    if not ray.is_initialized():
        return ClipDB(path)
    handle = _handles.get(str(path))
    if handle is None:  # one lookup per process and file, not one per job
        handle = _handles[str(path)] = ClusterClipDB(path)
    return handle
