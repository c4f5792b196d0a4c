"""Dashboard sessions end on the server: logout, a new API token; logins are rate limited; Secure behind https.

The API app runs in this process under uvicorn (no Ray: logging in touches no queue), reached over
real HTTP with aiohttp.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import aiohttp
import pytest
import uvicorn

from actors.settings import Settings
from serve.app import create_app
from serve.dashboard import logins, session as sessions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """The dojo app of ``settings`` on a free port of 127.0.0.1, in a thread."""

    def __init__(self, settings: Settings):
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve_app(tmp_path):
    running = []

    def start(api_token: str = "token-a", **options) -> Served:
        settings = Settings(state_dir=str(tmp_path / "state"), api_token=api_token, worker_token="worker",
                            secret="secret", **options)
        running.append(Served(settings))
        return running[-1]

    yield start
    for served in running:
        served.stop()


async def _log_in(s: aiohttp.ClientSession, url: str, token: str) -> aiohttp.ClientResponse:
    async with s.post(f"{url}/dashboard/login", data={"token": token, "next": "/dashboard"},
                      allow_redirects=False) as r:
        await r.read()
        return r


async def _status(url: str, path: str, cookie: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + path, headers={"Cookie": f"{sessions.COOKIE}={cookie}"}) as r:
            return r.status


async def test_logging_out_ends_the_session_on_the_server(serve_app):
    app = serve_app()
    async with aiohttp.ClientSession() as s:
        r = await _log_in(s, app.url, "token-a")
        assert r.status == 303
        cookie = r.cookies[sessions.COOKIE].value
        assert await _status(app.url, "/dashboard/jobs", cookie) == 200
        jar = {"Cookie": f"{sessions.COOKIE}={cookie}"}
        async with s.get(f"{app.url}/dashboard/jobs", headers=jar) as page:
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text()).group(1)
        async with s.post(f"{app.url}/dashboard/logout", data={"csrf": csrf}, headers=jar,
                          allow_redirects=False) as out:
            assert out.status == 303
    # A copy of the cookie kept elsewhere (another tab, a stolen one) no longer works either.
    assert await _status(app.url, "/dashboard/jobs", cookie) == 401
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{app.url}/dashboard/api/queues",
                         headers={"Cookie": f"{sessions.COOKIE}={cookie}"}) as r:
            assert r.status == 401 and "ended" in (await r.json())["message"]


async def test_a_new_api_token_ends_every_session(serve_app):
    before = serve_app("token-a")
    async with aiohttp.ClientSession() as s:
        cookie = (await _log_in(s, before.url, "token-a")).cookies[sessions.COOKIE].value
    assert await _status(before.url, "/dashboard/jobs", cookie) == 200
    after = serve_app("token-b")  # same secret and state dir, the API token rotated
    assert await _status(after.url, "/dashboard/jobs", cookie) == 401


async def test_login_attempts_are_rate_limited(serve_app):
    app = serve_app()
    async with aiohttp.ClientSession() as s:
        for _ in range(logins.PER_CLIENT):
            assert (await _log_in(s, app.url, "a-guess")).status == 401
        refused = await _log_in(s, app.url, "another-guess")
        assert refused.status == 429 and int(refused.headers["Retry-After"]) > 0
        # Past the limit the token is not even compared: the right one is refused too.
        right = await _log_in(s, app.url, "token-a")
        assert right.status == 429 and sessions.COOKIE not in right.cookies


async def test_the_cookie_is_secure_when_the_public_url_is_https(serve_app):
    app = serve_app(public_url="https://dojo.example.com")
    async with aiohttp.ClientSession() as s:
        r = await _log_in(s, app.url, "token-a")
        assert r.status == 303
        cookie = r.cookies[sessions.COOKIE]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"].lower() == "strict"


def test_the_login_book_counts_per_client_and_in_total(tmp_path):
    book = logins.LoginBook(tmp_path / "dashboard.sqlite3")
    t0 = 1_700_000_000.0
    for i in range(logins.PER_CLIENT):
        book.check("10.0.0.1", t0 + i)
        book.failed("10.0.0.1", t0 + i)
    with pytest.raises(logins.TooManyLogins) as caught:
        book.check("10.0.0.1", t0 + 20)
    assert caught.value.status == 429 and 0 < caught.value.context["retry_after"] <= logins.WINDOW_S
    book.check("10.0.0.2", t0 + 20)  # another client is not held back by this one
    book.check("10.0.0.1", t0 + logins.WINDOW_S + 10)  # the window slides
    book.end("nonce-1", expires=t0 + 100, now=t0)
    assert book.ended("nonce-1") and not book.ended("nonce-2") and not book.ended(None)
    assert (tmp_path / "dashboard.sqlite3").stat().st_mode & 0o077 == 0


async def test_the_api_docs_load_nothing_from_a_cdn_and_hold_no_token(serve_app):
    app = serve_app()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{app.url}/docs?token=token-a", allow_redirects=False) as r:
            assert r.status == 307 and r.headers["Location"] == "/dashboard/docs"
        async with s.get(f"{app.url}/dashboard/docs") as r:
            assert r.status == 401  # the login form: the docs need a dashboard session
        cookie = (await _log_in(s, app.url, "token-a")).cookies[sessions.COOKIE].value
        jar = {"Cookie": f"{sessions.COOKIE}={cookie}"}
        async with s.get(f"{app.url}/dashboard/docs", headers=jar) as r:
            page = await r.text()
            assert r.status == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sources and all(src.startswith("/dashboard/") for src in sources), sources
        assert "token-a" not in page
        for src in sources:
            async with s.get(app.url + src, headers=jar) as r:
                assert r.status == 200 and len(await r.read()) > 100, src
        async with s.get(f"{app.url}/dashboard/openapi.json", headers=jar) as r:
            assert r.status == 200 and "/v1/jobs" in (await r.json())["paths"]
