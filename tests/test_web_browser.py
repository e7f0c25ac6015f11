"""The chat page in a real headless Chromium: send, see the reply, reload, cancel, escaping."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.client import Client

from channels.registry import build_registry
from gateway import build_app
from tests.conftest import temporal_address
from tests.support import make_settings
from worker import build_worker

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@asynccontextmanager
async def serve_site(client: Client, agent: dict[str, int]) -> AsyncIterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(
        f"tq-web-{uuid.uuid4().hex}",
        temporal_address(client),
        gateway={"public_url": url},
        temporal={"ui_url": "http://127.0.0.1:8233"},
        agent=agent,
        channels={"web": {}},
    )
    registry = build_registry(settings)
    async with build_worker(client, settings, registry=registry) as worker, worker:
        server = TestServer(
            build_app(settings, client=client, registry=registry), host="127.0.0.1", port=port
        )
        await server.start_server()
        try:
            yield url
        finally:
            await server.close()


@pytest.fixture
async def site(client: Client) -> AsyncIterator[str]:
    async with serve_site(client, {"delay_ms": 1200}) as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it")
        pytest.skip("chromium is not installed (run `make test`, which installs it)")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def send(page: Page, text: str) -> None:
    await page.locator("#input").fill(text)
    await page.locator("#input").press("Enter")


async def test_chat_in_a_real_browser(site: str, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await page.goto(site + "/")

    await send(page, "hello browser")
    replies = page.locator(".bubble.agent")
    await expect(replies.nth(0)).to_have_text("echo: hello browser", timeout=20_000)
    await expect(page.locator(".status").nth(0)).to_have_text("completed")
    link = page.locator(".meta a").nth(0)
    href = await link.get_attribute("href")
    assert href and href.startswith(
        "http://127.0.0.1:8233/namespaces/default/workflows/run%2Fdefault%2Fweb%2F"
    )

    # Shift+Enter adds a line, Enter sends.
    await page.locator("#input").fill("line one")
    await page.locator("#input").press("Shift+Enter")
    await page.locator("#input").press_sequentially("line two")
    await page.locator("#input").press("Enter")
    await expect(page.locator(".bubble.me").nth(1)).to_have_text("line one\nline two")
    await expect(replies.nth(1)).to_have_text("echo: line one\nline two", timeout=20_000)

    # Hostile text is shown as text, never run or rendered.
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)><b>bold</b>'
    await send(page, hostile)
    await expect(replies.nth(2)).to_have_text(f"echo: {hostile}", timeout=20_000)
    await expect(page.locator(".bubble.me").nth(2)).to_have_text(hostile)
    assert await page.locator("#log b, #log img, #log script").count() == 0
    await page.screenshot(path=str(ARTIFACTS / "web-chat-desktop.png"))

    # A reload keeps the conversation.
    await page.reload()
    await expect(page.locator(".bubble.me")).to_have_count(3)
    await expect(replies.nth(0)).to_have_text("echo: hello browser", timeout=10_000)
    await expect(replies.nth(2)).to_have_text(f"echo: {hostile}", timeout=10_000)

    # Commands work from the page like from any channel: /link answers with a code.
    await send(page, "/link")
    await expect(replies.nth(3)).to_contain_text("Your link code is", timeout=20_000)

    # Cancel a slow run while it is in progress.
    await send(page, "please take your time")
    cancel = page.locator(".turn").nth(4).locator("button", has_text="Cancel")
    await expect(cancel).to_be_visible(timeout=10_000)
    await expect(page.locator(".turn").nth(4).locator(".status")).to_have_text(
        "in progress", timeout=10_000
    )
    await cancel.click()
    await expect(page.locator(".turn").nth(4).locator(".status")).to_have_text(
        "cancelled", timeout=20_000
    )
    assert dialogs == []
    await context.close()


async def test_phone_sized_window(site: str, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(
        viewport={"width": 390, "height": 760}, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    await page.goto(site + "/")
    await send(page, "hi from a phone")
    await expect(page.locator(".bubble.agent").nth(0)).to_have_text(
        "echo: hi from a phone", timeout=20_000
    )
    box = await page.locator("#composer").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1
    await page.screenshot(path=str(ARTIFACTS / "web-chat-phone.png"))
    await context.close()


async def test_a_reply_grows_word_by_word_in_the_page(client: Client, browser: Browser) -> None:
    text = "one two three four five six"
    async with serve_site(client, {"stream_delay_ms": 250, "stream_every_ms": 50}) as url:
        page = await (await browser.new_context()).new_page()
        await page.goto(url + "/")
        await send(page, text)
        reply = page.locator(".bubble.agent").nth(0)
        seen: list[tuple[str, bool]] = []
        for _ in range(400):
            # Text and class read together: the page may change between two separate reads.
            shown, classes = await reply.evaluate("e => [e.textContent, e.className]")
            streaming = "streaming" in classes
            if not seen or seen[-1] != (shown, streaming):
                seen.append((shown, streaming))
            if shown == f"echo: {text}" and not streaming:
                break
            await page.wait_for_timeout(25)
        full = f"echo: {text}"
        partial = [shown for shown, streaming in seen if streaming]
        growing = {p for p in partial if p != full}
        assert len(growing) >= 2, seen  # it grew in steps, shown while streaming
        assert all(full.startswith(p) for p in partial), seen
        assert seen[-1] == (full, False)
