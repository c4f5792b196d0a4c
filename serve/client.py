"""Python clients for the dojo API: ``Client`` (sync) and ``AsyncClient``.

Both find the server and token the way the CLI does: arguments first, then
``DOJO_URL`` / ``DOJO_API_TOKEN``, then the tokens file ``dojo up`` wrote.

    from serve.client import Client
    job = Client().submit("countdown", {"steps": 5})
    Client().wait(job["id"])          # progress bar (tqdm; works in notebooks)

Over 500 lines because the two clients mirror each other method for method (the same API, blocking
and async); keeping them side by side is how they stay alike.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, AsyncIterator, Iterator

import requests

from actors.settings import Settings
from actors.store import FINAL

from .coalesce import Coalescer, ThreadCoalescer


class ApiError(Exception):
    """The API refused a request; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")


def _defaults(url: str | None, token: str | None) -> tuple[str, str]:
    if url is None:
        url = os.environ.get("DOJO_URL")
    if url is None or token is None:
        settings = Settings.from_env()
        url = url or f"http://{settings.host}:{settings.port}"
        token = token or settings.api_token
    return url.rstrip("/"), token


def _spec(type: str, payload: Any, options: dict) -> dict:
    return {"type": type, "payload": payload, **{k: v for k, v in options.items() if v is not None}}


#: Jobs per ``POST /v1/jobs`` (the queue's limit per call).
MAX_BATCH = 1000


def _batches(specs: list[dict]) -> list[list[int]]:
    """Indexes of ``specs`` grouped into requests: one queue per request, at most MAX_BATCH jobs each."""
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise TypeError(f"expected a list of job specs (dicts), got {type(specs).__name__}")
    by_queue: dict[Any, list[int]] = {}
    for index, spec in enumerate(specs):
        by_queue.setdefault(spec.get("queue", "default"), []).append(index)
    return [indexes[i:i + MAX_BATCH] for indexes in by_queue.values() for i in range(0, len(indexes), MAX_BATCH)]


def _refused_one(exc: BaseException) -> int | None:
    """Which spec of a batched POST the API refused (-1: not said), or None when the whole request was."""
    if not isinstance(exc, ApiError) or exc.status not in (400, 413, 422):
        return None
    index = exc.body.get("index") if isinstance(exc.body, dict) else None
    return index if isinstance(index, int) else -1


class _Bar:
    """A job's progress from its events: a tqdm bar where a redrawn bar reads well, else plain lines.

    A terminal or a notebook kernel gets the bar. Anywhere else (CI logs,
    ``| tee``, ``ray job logs``) carriage-return frames would glue into one
    line, so it prints one line per status or stage change instead.
    """

    def __init__(self, job_id: str, show: bool, stream=None):
        self.job_id = job_id
        self.bar = None
        self.stream = stream or sys.stderr
        self.lines = show and not _redraws(self.stream)
        self.last: tuple | None = None
        if show and not self.lines:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=1000, desc=job_id, unit="‰", file=self.stream,
                            bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")

    def update(self, event: dict) -> None:
        if self.lines:
            self._line(event)
        if self.bar is None:
            return
        data = event["data"]
        if event["kind"] == "progress" and data.get("fraction") is not None:
            self.bar.n = int(data["fraction"] * 1000)
            self.bar.set_postfix_str(data.get("message") or data.get("stage") or "", refresh=False)
            self.bar.refresh()
        elif event["kind"] == "status":
            if data["status"] == "succeeded":
                self.bar.n = 1000
            self.bar.set_postfix_str(data["status"], refresh=True)

    def _line(self, event: dict) -> None:
        data = event["data"]
        if event["kind"] == "status":
            key, text = ("status", data["status"]), data["status"]
        elif event["kind"] == "progress" and data.get("stage"):
            fraction = data.get("fraction")
            key = ("stage", data["stage"])
            text = (f"{fraction * 100:3.0f}% " if fraction is not None else "") + data["stage"]
        else:
            return
        if key != self.last:
            self.last = key
            print(f"{self.job_id} {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _redraws(stream) -> bool:
    """True in a terminal or a Jupyter kernel (tqdm.auto draws a widget there)."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _types(types: list[str] | None) -> dict:
    return {} if types is None else {"types": list(types)}


class Client:
    """The API from synchronous code.

    ``submit`` from many threads at once shares requests: callers that arrive while a
    ``POST /v1/jobs`` of their queue is in flight go together in the next one (a list), and each
    still gets its own job or its own error (``batch=False`` sends one request per call).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30,
                 batch: bool = True):
        self.url, token = _defaults(url, token)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._batcher = ThreadCoalescer(self._post_many, _refused_one) if batch else None

    def _call(self, method: str, path: str, body: Any = None, **params) -> Any:
        response = self.session.request(method, self.url + path, params={k: v for k, v in params.items()
                                                                         if v is not None},
                                        data=None if body is None else json.dumps(body),
                                        headers={"Content-Type": "application/json"}, timeout=self.timeout)
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, data)
        return data

    def submit(self, type: str, payload: Any = None, **options) -> dict:
        """Enqueue one job; options: queue, priority, delay, run_at, max_attempts, timeout, unique_key, ..."""
        spec = _spec(type, payload, options)
        if self._batcher is None:
            return self._call("POST", "/v1/jobs", spec)
        return self._batcher.submit(spec.get("queue", "default"), spec)

    def submit_many(self, specs: list[dict]) -> list[dict]:
        """Enqueue many jobs in as few requests as possible (one per queue and 1,000 jobs); in order.

        Each request is all-or-nothing: a refused spec raises ``ApiError`` (its ``index`` in the body
        counts within that request) and the jobs of requests sent before it stay enqueued.
        """
        out: list[Any] = [None] * len(specs)
        for indexes in _batches(specs):
            for index, job in zip(indexes, self._call("POST", "/v1/jobs", [specs[i] for i in indexes])):
                out[index] = job
        return out

    def _post_many(self, queue: Any, specs: list[dict]) -> list[dict]:
        if len(specs) == 1:
            return [self._call("POST", "/v1/jobs", specs[0])]
        return self._call("POST", "/v1/jobs", specs)

    def get(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def list(self, queue: str = "default", **filters) -> dict:
        return self._call("GET", "/v1/jobs", queue=queue, **filters)

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def retry(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/retry")

    def delete(self, job_id: str) -> dict:
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def stats(self, queue: str = "default") -> dict:
        return self._call("GET", f"/v1/queues/{queue}")

    # -- queue control -------------------------------------------------------------
    def pause(self, queue: str = "default", types: list[str] | None = None) -> dict:
        """Start no more jobs of the queue (or of ``types``); running jobs finish. Holds until resumed."""
        return self._call("POST", f"/v1/queues/{queue}/pause", _types(types))

    def resume(self, queue: str = "default", types: list[str] | None = None) -> dict:
        return self._call("POST", f"/v1/queues/{queue}/resume", _types(types))

    def purge(self, queue: str = "default", *, confirm: str, types: list[str] | None = None) -> dict:
        """Delete the queue's jobs waiting for a start; ``confirm`` must repeat the queue's name."""
        return self._call("POST", f"/v1/queues/{queue}/purge", {"confirm": confirm, **_types(types)})

    def bulk(self, action: str, **filters) -> dict:
        """One page of ``POST /v1/jobs/{cancel,retry,delete}`` (filters: queue, type, status, created_after,
        created_before, limit, cursor)."""
        return self._call("POST", f"/v1/jobs/{action}", {k: v for k, v in filters.items() if v is not None})

    def bulk_all(self, action: str, **filters) -> dict:
        """Every page of a bulk action; returns the summed ``changed`` and ``skipped``."""
        total = {"action": action, "changed": 0, "skipped": 0}
        while True:
            page = self.bulk(action, **filters)
            total["changed"] += page["changed"]
            total["skipped"] += page["skipped"]
            if not page["next_cursor"]:
                return total
            filters["cursor"] = page["next_cursor"]

    def render(self, deck: str | list[str], script: str | None = None, **options) -> dict:
        """Upload a deck (PDF, images, or a Markdown deck with speaker notes) and queue its render.

        Options: engine, voice, speed, resolution ('1920x1080'), pad_before, pad_after, subtitles, burn_in.
        """
        paths = [deck] if isinstance(deck, str) else list(deck)
        handles = []
        try:
            files = []
            for path in paths:
                handle = open(path, "rb")
                handles.append(handle)
                files.append(("deck", (os.path.basename(path), handle)))
            if script:
                handle = open(script, "rb")
                handles.append(handle)
                files.append(("script", (os.path.basename(script), handle)))
            data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items() if v is not None}
            response = self.session.post(f"{self.url}/v1/renders", files=files, data=data, timeout=300)
        finally:
            for handle in handles:
                handle.close()
        body = response.json()
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def publish(self, channel: str, message: Any, queue: str = "default") -> dict:
        """Publish a message to a channel (it wakes ``ctx.wait_for`` and fires triggers)."""
        return self._call("POST", f"/v1/channels/{channel}/messages", message, queue=queue)

    def put_trigger(self, name: str, channel: str, job: dict, match: dict | None = None,
                    queue: str = "default") -> dict:
        """Each message on ``channel`` that has ``match`` enqueues one job from the spec ``job``."""
        return self._call("PUT", f"/v1/triggers/{name}", {"channel": channel, "match": match or {}, "job": job},
                          queue=queue)

    def triggers(self, queue: str = "default") -> list[dict]:
        return self._call("GET", "/v1/triggers", queue=queue)["triggers"]

    def delete_trigger(self, name: str, queue: str = "default") -> dict:
        return self._call("DELETE", f"/v1/triggers/{name}", queue=queue)

    def put_hook(self, name: str, channel: str, rotate: bool = False, queue: str = "default") -> dict:
        """A webhook that publishes to ``channel``; the answer holds its secret when new or rotated."""
        return self._call("PUT", f"/v1/hooks/{name}", {"channel": channel, "rotate": rotate}, queue=queue)

    def hooks(self, queue: str = "default") -> list[dict]:
        return self._call("GET", "/v1/hooks", queue=queue)["hooks"]

    def delete_hook(self, name: str, queue: str = "default") -> dict:
        return self._call("DELETE", f"/v1/hooks/{name}", queue=queue)

    def deliveries(self, job_id: str) -> list[dict]:
        """The job's callback deliveries (state, tries and each try's answer)."""
        return self._call("GET", f"/v1/jobs/{job_id}/deliveries")["deliveries"]

    def outputs(self, job_id: str) -> dict:
        """Signed URLs of the objects a job produced (e.g. a render's video), plus local paths when stored locally."""
        return self._call("GET", f"/v1/jobs/{job_id}/outputs")

    def events(self, job_id: str, after: int = 0, follow: bool = True,
               timeout: float | None = None) -> Iterator[dict]:
        """The job's events after ``after``; with follow, live until the job is final (SSE, resumes on drops).

        ``timeout`` bounds the whole follow: past it, ``TimeoutError`` even if the stream is quiet
        (the server sends a keep-alive every 15 s, so a silent stream still wakes the check).
        """
        if not follow:
            yield from self._call("GET", f"/v1/jobs/{job_id}/events", after=after)["events"]
            return
        deadline = None if timeout is None else time.monotonic() + timeout

        def check() -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not final after {timeout}s (last event seq {last})")

        last = after
        while True:
            check()
            job = self.get(job_id)
            if job["status"] in FINAL:
                # Nothing live will come: drain what is stored and stop.
                backlog = self._call("GET", f"/v1/jobs/{job_id}/events", after=last)["events"]
                yield from backlog
                if len(backlog) < 1000:
                    return
                last = backlog[-1]["seq"]
                continue
            try:
                with self.session.get(f"{self.url}/v1/jobs/{job_id}/events", stream=True, timeout=(10, 60),
                                      headers={"Accept": "text/event-stream", "Last-Event-ID": str(last)}) as resp:
                    if resp.status_code >= 400:
                        raise ApiError(resp.status_code, resp.json())
                    for line in resp.iter_lines(decode_unicode=True):
                        check()
                        if not line or not line.startswith("data: "):
                            continue
                        event = json.loads(line[6:])
                        last = event["seq"]
                        yield event
                        if event["kind"] == "status" and event["data"]["status"] in FINAL:
                            return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                time.sleep(0.5)  # the server went away for a moment: resume from the last sequence

    def wait(self, job_id: str, timeout: float | None = None, progress: bool = True) -> dict:
        """Block until the job is final, showing a progress bar; returns the job."""
        bar = _Bar(job_id, progress)
        try:
            for event in self.events(job_id, timeout=timeout):
                bar.update(event)
        finally:
            bar.close()
        return self.get(job_id)


class AsyncClient:
    """The API from asyncio code.

    Concurrent ``submit`` calls share requests (``serve.coalesce.Coalescer``): the ones made in the
    same loop turn, or while a ``POST /v1/jobs`` of their queue is in flight, go together as a list;
    each caller still gets its own job or its own error (``batch=False``: one request per call).
    """

    def __init__(self, url: str | None = None, token: str | None = None, batch: bool = True):
        self.url, self.token = _defaults(url, token)
        self._session = None
        self._batcher = Coalescer(self._post_many, _refused_one, max_inflight=2) if batch else None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def session(self):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None, **params) -> Any:
        async with self.session.request(method, self.url + path, params={k: str(v) for k, v in params.items()
                                                                         if v is not None},
                                        data=None if body is None else json.dumps(body),
                                        headers={"Content-Type": "application/json"}) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(response.status, data)
            return data

    async def submit(self, type: str, payload: Any = None, **options) -> dict:
        """Enqueue one job (see ``Client.submit``); concurrent calls share requests."""
        spec = _spec(type, payload, options)
        if self._batcher is None:
            return await self._call("POST", "/v1/jobs", spec)
        return await self._batcher.submit(spec.get("queue", "default"), spec)

    async def submit_many(self, specs: list[dict]) -> list[dict]:
        """Enqueue many jobs in as few requests as possible (see ``Client.submit_many``); in order."""
        out: list[Any] = [None] * len(specs)
        for indexes in _batches(specs):
            for index, job in zip(indexes, await self._call("POST", "/v1/jobs", [specs[i] for i in indexes])):
                out[index] = job
        return out

    async def _post_many(self, queue: Any, specs: list[dict]) -> list[dict]:
        if len(specs) == 1:
            return [await self._call("POST", "/v1/jobs", specs[0])]
        return await self._call("POST", "/v1/jobs", specs)

    async def get(self, job_id: str) -> dict:
        return await self._call("GET", f"/v1/jobs/{job_id}")

    async def list(self, queue: str = "default", **filters) -> dict:
        return await self._call("GET", "/v1/jobs", queue=queue, **filters)

    async def cancel(self, job_id: str) -> dict:
        return await self._call("POST", f"/v1/jobs/{job_id}/cancel")

    async def retry(self, job_id: str) -> dict:
        return await self._call("POST", f"/v1/jobs/{job_id}/retry")

    async def delete(self, job_id: str) -> dict:
        return await self._call("DELETE", f"/v1/jobs/{job_id}")

    async def stats(self, queue: str = "default") -> dict:
        return await self._call("GET", f"/v1/queues/{queue}")

    async def pause(self, queue: str = "default", types: list[str] | None = None) -> dict:
        return await self._call("POST", f"/v1/queues/{queue}/pause", _types(types))

    async def resume(self, queue: str = "default", types: list[str] | None = None) -> dict:
        return await self._call("POST", f"/v1/queues/{queue}/resume", _types(types))

    async def purge(self, queue: str = "default", *, confirm: str, types: list[str] | None = None) -> dict:
        return await self._call("POST", f"/v1/queues/{queue}/purge", {"confirm": confirm, **_types(types)})

    async def bulk(self, action: str, **filters) -> dict:
        return await self._call("POST", f"/v1/jobs/{action}", {k: v for k, v in filters.items() if v is not None})

    async def publish(self, channel: str, message: Any, queue: str = "default") -> dict:
        """Publish a message to a channel (see ``Client.publish``)."""
        return await self._call("POST", f"/v1/channels/{channel}/messages", message, queue=queue)

    async def put_trigger(self, name: str, channel: str, job: dict, match: dict | None = None,
                          queue: str = "default") -> dict:
        return await self._call("PUT", f"/v1/triggers/{name}", {"channel": channel, "match": match or {}, "job": job},
                                queue=queue)

    async def triggers(self, queue: str = "default") -> list[dict]:
        return (await self._call("GET", "/v1/triggers", queue=queue))["triggers"]

    async def delete_trigger(self, name: str, queue: str = "default") -> dict:
        return await self._call("DELETE", f"/v1/triggers/{name}", queue=queue)

    async def put_hook(self, name: str, channel: str, rotate: bool = False, queue: str = "default") -> dict:
        return await self._call("PUT", f"/v1/hooks/{name}", {"channel": channel, "rotate": rotate}, queue=queue)

    async def hooks(self, queue: str = "default") -> list[dict]:
        return (await self._call("GET", "/v1/hooks", queue=queue))["hooks"]

    async def delete_hook(self, name: str, queue: str = "default") -> dict:
        return await self._call("DELETE", f"/v1/hooks/{name}", queue=queue)

    async def deliveries(self, job_id: str) -> list[dict]:
        """The job's callback deliveries (state, tries and each try's answer)."""
        return (await self._call("GET", f"/v1/jobs/{job_id}/deliveries"))["deliveries"]

    async def outputs(self, job_id: str) -> dict:
        """Signed URLs of the objects a job produced (e.g. a render's video)."""
        return await self._call("GET", f"/v1/jobs/{job_id}/outputs")

    async def render(self, deck: str | list[str], script: str | None = None, **options) -> dict:
        """Upload a deck and queue its render (see ``Client.render``)."""
        import aiohttp

        form = aiohttp.FormData()
        for path in [deck] if isinstance(deck, str) else list(deck):
            with open(path, "rb") as fh:
                form.add_field("deck", fh.read(), filename=os.path.basename(path))
        if script:
            with open(script, "rb") as fh:
                form.add_field("script", fh.read(), filename=os.path.basename(script))
        for key, value in options.items():
            if value is not None:
                form.add_field(key, str(value).lower() if isinstance(value, bool) else str(value))
        async with self.session.post(f"{self.url}/v1/renders", data=form) as response:
            body = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(response.status, body)
            return body

    async def events(self, job_id: str, after: int = 0, follow: bool = True) -> AsyncIterator[dict]:
        """The job's events after ``after``; with follow, live over WebSocket until the job is final.

        A dropped connection is opened again with ``after`` = the last sequence received, so
        no event is missed or repeated.
        """
        import asyncio

        import aiohttp

        if not follow:
            for event in (await self._call("GET", f"/v1/jobs/{job_id}/events", after=after))["events"]:
                yield event
            return
        last = after
        while True:
            try:
                async with self.session.ws_connect(f"{self.url}/v1/jobs/{job_id}/events?after={last}") as ws:
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            break
                        event = json.loads(message.data)
                        if "error" in event:
                            raise ApiError(ws.close_code or 400, event)
                        last = event["seq"]
                        yield event
                        if event["kind"] == "status" and event["data"]["status"] in FINAL:
                            return
            except aiohttp.WSServerHandshakeError as exc:
                if 400 <= exc.status < 500:  # refused (token, unknown job): trying again will not help
                    raise ApiError(exc.status, {"message": exc.message}) from None
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)  # the connection dropped: open it again after the last sequence

    async def wait(self, job_id: str, progress: bool = True) -> dict:
        """Until the job is final (progress as ``Client.wait`` shows it); returns the job."""
        bar = _Bar(job_id, progress)
        try:
            async for event in self.events(job_id):
                bar.update(event)
        finally:
            bar.close()
        return await self.get(job_id)
