"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, logged in to the dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
async def browser():
    async_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def anonymous(browser, api):
    context = await browser.new_context(base_url=api, viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


async def log_in(page, token: str = "test-api-token", path: str = "/dashboard") -> None:
    await page.goto(path)
    await page.fill("#token", token)
    async with page.expect_navigation():
        await page.click("#login button[type=submit]")


@pytest.fixture
async def page(anonymous):
    await log_in(anonymous)
    await anonymous.wait_for_selector("header.top nav")
    return anonymous


@pytest.fixture
async def http(api, headers):
    async with aiohttp.ClientSession(base_url=api, headers=headers) as session:
        yield session


async def submit(http, spec: dict) -> dict:
    async with http.post("/v1/jobs", data=json.dumps(spec), headers={"Content-Type": "application/json"}) as r:
        body = await r.json()
        assert r.status in (200, 201), body
        return body


async def get_job(http, job_id: str) -> dict:
    async with http.get(f"/v1/jobs/{job_id}") as r:
        return await r.json()


async def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
