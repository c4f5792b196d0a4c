"""Live streams are capped per token and in total; a subscriber that stops reading is cut off.

The app runs in this process under uvicorn with small caps (the shared Serve app keeps the defaults),
on the shared Ray cluster, reached with real WebSocket and HTTP clients.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import socket
import threading
import time

import aiohttp
import pytest
import uvicorn

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def small_app(settings, ray_cluster, monkeypatch):
    """The API with at most 3 streams, 2 per token, and sends that stall after 1 s, on 127.0.0.1."""
    from serve import streams
    from serve.app import create_app

    monkeypatch.setattr(streams, "SEND_S", 1.0)
    port = _free_port()
    app = create_app(dataclasses.replace(settings, port=port, max_streams=3, max_streams_per_token=2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def _job(s, url, headers) -> dict:
    async with s.post(f"{url}/v1/jobs", json={"type": "echo", "payload": 1}, headers=headers) as r:
        assert r.status == 201
        return await r.json()


async def test_streams_are_capped_per_token_and_in_total(small_app, headers):
    url = small_app
    async with aiohttp.ClientSession() as s:
        job = await _job(s, url, headers)
        reader = {"Authorization": f"Bearer {job['read_token']}"}
        path = f"{url}/v1/jobs/{job['id']}/events"
        first = await s.ws_connect(path, headers=headers)
        second = await s.ws_connect(path, headers=headers)
        for ws in (first, second):
            assert json.loads((await ws.receive(timeout=10)).data)["seq"] == 1
        # A third for the same token: refused with a clear error and close code; so is an event stream.
        async with s.ws_connect(path, headers=headers) as third:
            refused = json.loads((await third.receive(timeout=10)).data)
            assert refused["error"] == "TooManyStreams" and "DOJO_MAX_STREAMS_PER_TOKEN" in refused["message"]
            await third.receive(timeout=10)
            assert third.close_code == 4429
        async with s.get(path, headers={**headers, "Accept": "text/event-stream"}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0
            assert (await r.json())["error"] == "TooManyStreams"
        # Another token has streams of its own, up to the replica's total.
        other = await s.ws_connect(path, headers=reader)
        assert json.loads((await other.receive(timeout=10)).data)["seq"] == 1
        async with s.ws_connect(path, headers=reader) as fourth:
            refused = json.loads((await fourth.receive(timeout=10)).data)
            assert refused["error"] == "TooManyStreams" and "DOJO_MAX_STREAMS" in refused["message"]
        # A closed stream frees its place.
        await first.close()
        for _ in range(100):
            again = await s.ws_connect(path, headers=headers)
            message = json.loads((await again.receive(timeout=10)).data)
            if message.get("seq") == 1:
                break
            await again.close()
            await asyncio.sleep(0.05)
        assert message.get("seq") == 1, message
        for ws in (second, other, again):
            await ws.close()
        # Requests that are not streams are not counted.
        async with s.get(f"{url}/v1/jobs/{job['id']}", headers=headers) as r:
            assert r.status == 200


def _stalled_websocket(url: str, path: str, token: str) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that never reads what it is sent."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


async def test_a_subscriber_that_stops_reading_is_cut_off(small_app, headers, settings):
    await _stalled_stream_is_cut_off(small_app, headers, settings.api_token, wait=60)


@pytest.mark.slow
async def test_over_the_real_port_a_subscriber_that_stops_reading_is_cut_off(api, headers, settings):
    """The deployed API (Serve's replica serving DOJO_PORT itself), with the default SEND_S (30 s)."""
    from serve import streams

    if settings.ingress != "replica":
        pytest.skip("behind Serve's proxy a send is queued by Serve, not blocked: see serve/streams.py")
    await _stalled_stream_is_cut_off(api, headers, settings.api_token, wait=60, stall=streams.SEND_S + 5)


async def _stalled_stream_is_cut_off(url: str, headers: dict, token: str, wait: float, stall: float = 0) -> None:
    """A client that stops reading while a channel sends ~12 MB; ``stall``: seconds it goes on not reading
    after the last message, before it reads what it was sent (until ``wait`` more seconds pass)."""
    channel = f"slow-{time.time_ns()}"
    sock = _stalled_websocket(url, f"/v1/channels/{channel}?after=0", token)
    try:
        big = {"blob": "x" * 200_000}
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{url}/v1/channels/{channel}?after=0", headers=headers) as watcher:
                for i in range(60):  # ~12 MB: more than the socket buffers between the app and the stalled client
                    async with s.post(f"{url}/v1/channels/{channel}/messages", json={**big, "i": i},
                                      headers=headers) as r:
                        assert r.status == 201
                    assert json.loads((await watcher.receive(timeout=30)).data)["data"]["message"]["i"] == i
        await asyncio.sleep(stall)
        # The stalled stream was ended by the server: reading what it was sent ends in a close frame (4408).
        sock.setblocking(False)
        received, deadline = b"", time.monotonic() + wait
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.05)
                continue
            except ConnectionResetError:  # the server dropped it without a closing handshake: ended too
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
            closed = (4408).to_bytes(2, "big") + b"too slow" in received[-4096:]
        assert closed, f"the stalled stream was not ended ({len(received)} bytes read)"
    finally:
        sock.close()
