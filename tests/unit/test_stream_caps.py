"""StreamCaps without Ray: a small Starlette app of endless streams behind the middleware, under uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import aiohttp
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from serve.streams import StreamCaps


async def _ticks(request):
    async def body():
        n = 0
        while True:
            n += 1
            yield f"data: {n} {'x' * 60_000}\n\n"
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="text/event-stream")


async def _socket(websocket):
    await websocket.accept()
    n = 0
    while True:
        n += 1
        await websocket.send_text(f"{n} {'x' * 60_000}")
        await asyncio.sleep(0.001)


async def _plain(request):
    return JSONResponse({"ok": True})


@pytest.fixture
def served():
    app = StreamCaps(Starlette(routes=[Route("/ticks", _ticks), Route("/plain", _plain),
                                       WebSocketRoute("/socket", _socket)]), total=3, per_token=2, send_s=0.5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


async def test_caps_per_token_and_in_total_and_a_closed_stream_frees_its_place(served):
    url, caps = served
    a, b = {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}
    async with aiohttp.ClientSession() as s:
        first = await s.ws_connect(f"{url}/socket", headers=a)
        second = await s.ws_connect(f"{url}/socket", headers=a)
        for ws in (first, second):
            assert (await ws.receive(timeout=5)).data.startswith("1 ")
        async with s.ws_connect(f"{url}/socket", headers=a) as third:
            refused = (await third.receive(timeout=5)).json()
            assert refused["error"] == "TooManyStreams" and "PER_TOKEN" in refused["message"]
            await third.receive(timeout=5)
            assert third.close_code == 4429
        async with s.get(f"{url}/ticks", headers={**a, "Accept": "text/event-stream"}) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "5"
        async with s.get(f"{url}/plain", headers=a) as r:  # not a stream: not counted
            assert r.status == 200
        other = await s.ws_connect(f"{url}/socket", headers=b)
        assert (await other.receive(timeout=5)).data.startswith("1 ")
        async with s.get(f"{url}/ticks", headers={**b, "Accept": "text/event-stream"}) as r:
            assert r.status == 429 and "DOJO_MAX_STREAMS" in (await r.json())["message"]
        await first.close()
        for _ in range(100):
            if sum(caps.open.values()) < 3:
                break
            await asyncio.sleep(0.05)
        again = await s.ws_connect(f"{url}/socket", headers=a)
        assert (await again.receive(timeout=5)).data.startswith("1 ")
        for ws in (second, other, again):
            await ws.close()
    for _ in range(100):
        if not caps.open:
            break
        await asyncio.sleep(0.05)
    assert not caps.open


async def test_a_subscriber_that_stops_reading_is_cut_off(served):
    url, caps = served
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /ticks HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    try:
        for _ in range(200):  # the stream counts while it runs, and is ended once its sends stall
            if caps.open:
                break
            await asyncio.sleep(0.05)
        assert caps.open
        for _ in range(400):
            if not caps.open:
                break
            await asyncio.sleep(0.05)
        assert not caps.open, "a stream whose client stopped reading was not ended"
    finally:
        sock.close()
