"""POST /v1/renders over real HTTP (uvicorn on 127.0.0.1): validate everything, then store and enqueue."""

from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
import pytest
import uvicorn
from fastapi import FastAPI

from actors.storage import LocalStore
from pipelines.render.routes import router

from .conftest import pdf, png, script
from .test_deck import huge_png_header, zip_of


class RecordingDojo:
    """Stands in for the queue facade: keeps what was enqueued."""

    def __init__(self):
        self.specs = []
        self.fail = False

    async def enqueue(self, specs):
        if self.fail:
            raise RuntimeError("queue unavailable")
        self.specs.extend(specs)
        return [{"id": f"j_{len(self.specs)}", "type": spec["type"], "state": "queued"} for spec in specs]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = FastAPI()
    app.include_router(router)
    app.state.dojo = RecordingDojo()
    app.state.store = LocalStore(tmp_path_factory.mktemp("objects"), secret="s")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        threading.Event().wait(0.02)
    yield {"url": f"http://127.0.0.1:{port}", "app": app}
    uv.should_exit = True
    thread.join(10)


async def post(server, files, script_file=None, **options):
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field("deck", data, filename=name, content_type="application/octet-stream")
    if script_file:
        form.add_field("script", script_file[1], filename=script_file[0])
    for key, value in options.items():
        form.add_field(key, str(value))
    async with aiohttp.ClientSession() as session:
        async with session.post(server["url"] + "/v1/renders", data=form) as response:
            return response.status, await response.json()


async def test_a_good_upload_is_stored_and_enqueued(server):
    store, dojo = server["app"].state.store, server["app"].state.dojo
    status, body = await post(server, [("a.png", png()), ("b.png", png())], ("s.yaml", "- 一。\n- 二。\n".encode()),
                              speed="1.2", resolution="1280x720", burn_in="true")
    assert status == 202 and body["type"] == "render"
    payload = dojo.specs[-1]["payload"]
    assert payload["names"] == ["a.png", "b.png"]
    assert payload["options"]["speed"] == 1.2 and payload["options"]["width"] == 1280
    for key in [*payload["deck"], payload["script"]]:
        assert store.exists(key)
    assert store.get_bytes(payload["deck"][0]) == png()


@pytest.mark.parametrize("files, script_file, options, expected", [
    ([("deck.pdf", b"%PDF-1.4 broken")], ("s.json", script(["a"])), {}, "not a readable PDF"),
    ([("notes.png", b"hello, I am text")], ("s.json", script(["a"])), {}, "content is Markdown text"),
    ([("a.png", png()), ("b.png", png())], ("s.json", script(["a"])), {}, "script has 1 entries"),
    ([("big.png", huge_png_header())], ("s.json", script(["a"])), {}, "slide 1 (big.png)"),
    ([("d.zip", zip_of({"x.png": b"\0" * 8_000_000}))], ("s.json", script(["a"])), {}, "ZIP bomb"),
    ([("../../x.png", png())], ("s.json", script(["a"])), {}, "file name"),
    ([("d.pdf", pdf(1))], ("s.json", script(["a"])), {"speed": "fast"}, "speed"),
    ([("d.pdf", pdf(1))], ("s.json", script(["a"])), {"engine": "nope"}, "unknown TTS engine"),
    ([("d.pdf", pdf(1))], ("s.json", script(["a"])), {"color": "red"}, "unknown form fields"),
])
async def test_bad_uploads_are_refused_and_nothing_is_stored(server, files, script_file, options, expected):
    store, dojo = server["app"].state.store, server["app"].state.dojo
    before_keys, before_specs = store.list(), len(dojo.specs)
    status, body = await post(server, files, script_file, **options)
    assert status == 422, body
    assert expected in body["message"]
    assert store.list() == before_keys and len(dojo.specs) == before_specs


async def test_a_failed_enqueue_leaves_nothing_stored(server):
    store, dojo = server["app"].state.store, server["app"].state.dojo
    before = store.list()
    dojo.fail = True
    try:
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("deck", "# A\nNote: こんにちは。".encode(), filename="deck.md")
            async with session.post(server["url"] + "/v1/renders", data=form) as response:
                assert response.status == 500
    finally:
        dojo.fail = False
    assert store.list() == before
