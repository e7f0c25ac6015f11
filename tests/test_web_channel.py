"""The web channel over HTTP: cookie identity, CSRF, SSE progress, ownership, cancel."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Stack
from tests.support import eventually

pytestmark = pytest.mark.parametrize(
    "settings_overrides",
    [{"channels": {"web": {}}, "agent": {"delay_ms": 300}}],
    indirect=True,
)


async def open_page(http: TestClient) -> str:
    resp = await http.get("/")
    assert resp.status == 200
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match
    return match.group(1)


async def post(
    http: TestClient, csrf: str, text: str, message_id: str | None = None
) -> tuple[int, dict[str, object], str]:
    message_id = message_id or uuid.uuid4().hex
    resp = await http.post(
        "/channels/web",
        json={"message_id": message_id, "text": text},
        headers={"X-CSRF-Token": csrf},
    )
    return resp.status, await resp.json(), message_id


async def events(http: TestClient, message_id: str) -> list[dict[str, object]]:
    resp = await http.get(f"/channels/web/runs/{message_id}/events")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    seen = []
    async for line in resp.content:
        if line.startswith(b"data: "):
            seen.append(json.loads(line[6:]))
    return seen


async def test_cookie_identity_and_sse_progress(stack: Stack) -> None:
    first = await stack.http.get("/")
    set_cookie = first.headers["Set-Cookie"]
    assert set_cookie.startswith("sb_web=")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    csrf = await open_page(stack.http)
    assert "Set-Cookie" not in (await stack.http.get("/")).headers  # identity is kept
    status, body, mid = await post(stack.http, csrf, "hi from the browser")
    assert status == 202 and body["accepted"] is True
    browser_id = set_cookie.split("=", 1)[1].split(".", 1)[0]
    assert browser_id not in str(body["run_id"])  # run IDs reach logs; identities must not
    seen = await events(stack.http, mid)
    statuses = [e.get("status") for e in seen if e]
    assert statuses[-1] == "completed"
    assert "in_progress" in statuses or "queued" in statuses
    assert seen[-2]["output_text"] == "echo: hi from the browser"
    # Pull channel: nothing was pushed anywhere; the channel-neutral endpoint knows the run.
    assert stack.receiver.received == []
    run = await stack.http.get(f"/v1/runs/{body['token']}")
    assert run.status == 200
    assert (await run.json())["output_text"] == "echo: hi from the browser"


async def test_post_without_csrf_or_from_another_origin_is_refused(stack: Stack) -> None:
    csrf = await open_page(stack.http)
    resp = await stack.http.post(
        "/channels/web", json={"message_id": uuid.uuid4().hex, "text": "x"}
    )
    assert resp.status == 403
    resp = await stack.http.post(
        "/channels/web",
        json={"message_id": uuid.uuid4().hex, "text": "x"},
        headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
    )
    assert resp.status == 403
    resp = await stack.http.post(
        "/channels/web", json={"message_id": "bad/id", "text": "x"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status == 400


async def test_another_browser_cannot_see_or_cancel_my_run(stack: Stack) -> None:
    csrf = await open_page(stack.http)
    _, _, mid = await post(stack.http, csrf, "private")
    await events(stack.http, mid)
    mine = await stack.http.get(f"/channels/web/runs/{mid}")
    assert (await mine.json())["output_text"] == "echo: private"
    stack.http.session.cookie_jar.clear()
    other_csrf = await open_page(stack.http)  # a fresh browser identity
    theirs = await stack.http.get(f"/channels/web/runs/{mid}")
    assert (await theirs.json()) == {"status": "queued", "found": False}
    cancel = await stack.http.post(
        f"/channels/web/runs/{mid}/cancel", headers={"X-CSRF-Token": other_csrf}
    )
    assert cancel.status == 404


async def test_cancel_a_slow_run(stack: Stack) -> None:
    csrf = await open_page(stack.http)
    _, _, mid = await post(stack.http, csrf, "slow one")

    async def running() -> bool:
        state = await (await stack.http.get(f"/channels/web/runs/{mid}")).json()
        return bool(state["status"] == "in_progress")

    await eventually(running)
    resp = await stack.http.post(f"/channels/web/runs/{mid}/cancel", headers={"X-CSRF-Token": csrf})
    assert resp.status == 202
    seen = await events(stack.http, mid)
    assert seen[-2]["status"] == "cancelled"


async def test_cookie_cancel_on_v1_runs_needs_csrf_and_same_origin(stack: Stack) -> None:
    csrf = await open_page(stack.http)
    status, body, _ = await post(stack.http, csrf, "cancel me through /v1/runs")
    assert status == 202
    url = f"/v1/runs/{body['token']}/cancel"
    assert (await stack.http.post(url)).status == 401  # the cookie alone is not enough
    foreign = await stack.http.post(
        url, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    )
    assert foreign.status == 401
    resp = await stack.http.post(url, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    assert (await resp.json())["status"] in ("cancelled", "completed")
