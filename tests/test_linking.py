"""Linking accounts across channels with /link, /link CODE and /unlink."""

from __future__ import annotations

import json
import re
import uuid

from hosting.models import RunInput, SessionLinks
from tests.conftest import Stack
from tests.support import event_payloads, eventually, session_id, webhook_headers, webhook_message

CODE = re.compile(r"\b([A-Z2-9]{4}-[A-Z2-9]{4})\b")
LOOPBACK_SESSION = session_id("loopback", "ann")
WEBHOOK_SESSION = session_id("webhook", "ann-w")


async def loopback_say(stack: Stack, text: str, user: str = "ann", direct: bool = True) -> str:
    msg_id = uuid.uuid4().hex
    body = {
        "message_id": msg_id,
        "user": user,
        "conversation": user,
        "text": text,
        "direct": direct,
    }
    resp = await stack.http.post("/channels/loopback", data=json.dumps(body))
    assert resp.status == 202
    return f"run/default/loopback/{msg_id}"


async def webhook_say(stack: Stack, text: str, user: str = "ann-w") -> str:
    body = webhook_message(user, user, text)
    msg_id = f"msg_{uuid.uuid4().hex}"
    resp = await stack.http.post(
        "/channels/webhook", data=body, headers=webhook_headers(body, msg_id)
    )
    assert resp.status == 202
    return f"run/default/webhook/{msg_id}"


async def session_of(stack: Stack, run_id: str) -> str:
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
    assert isinstance(inp, RunInput)
    return inp.session_id


async def links(stack: Stack, session_id: str) -> SessionLinks:
    result: SessionLinks = await stack.client.get_workflow_handle(session_id).query(
        "links", result_type=SessionLinks
    )
    return result


async def new_code(stack: Stack, user: str) -> str:
    before = len(stack.loopback.outbox.sent)
    await loopback_say(stack, "/link", user=user)
    sent = await stack.loopback.outbox.wait_for(before + 1)
    match = CODE.search(sent[-1].text)
    assert match, "no code in the reply"
    return match.group(1)


async def test_link_share_and_unlink(stack: Stack) -> None:
    code = await new_code(stack, "ann")
    await webhook_say(stack, f"/link {code}")
    [reply] = await stack.receiver.wait_for(1)
    assert str(reply["text"]).startswith("Linked with your loopback account")

    async def aliased() -> bool:
        return (await links(stack, WEBHOOK_SESSION)).alias_of == LOOPBACK_SESSION

    await eventually(aliased)
    primary = await links(stack, LOOPBACK_SESSION)
    assert [(i.channel, i.user_id) for i in primary.linked] == [("webhook", "ann-w")]

    # The linked account's messages now run in the shared session; replies still go home.
    run_id = await webhook_say(stack, "hello from the webhook side")
    received = await stack.receiver.wait_for(2)
    assert received[-1]["text"] == "echo: hello from the webhook side"
    assert await session_of(stack, run_id) == LOOPBACK_SESSION

    # A code is single-use.
    await webhook_say(stack, f"/link {code}", user="mallory")
    received = await stack.receiver.wait_for(3)
    assert received[-1]["text"] == "That code is not valid or has expired."

    await webhook_say(stack, "/unlink")
    received = await stack.receiver.wait_for(4)
    assert received[-1]["text"] == "This account is no longer linked to your other accounts."

    async def unaliased() -> bool:
        return (await links(stack, WEBHOOK_SESSION)).alias_of is None

    await eventually(unaliased)
    assert (await links(stack, LOOPBACK_SESSION)).linked == []
    run_id = await webhook_say(stack, "alone again")
    await stack.receiver.wait_for(5)
    assert await session_of(stack, run_id) == WEBHOOK_SESSION


async def test_link_codes_are_only_shown_in_direct_messages(stack: Stack) -> None:
    await loopback_say(stack, "/link", user="gus", direct=False)
    [sent] = await stack.loopback.outbox.wait_for(1)
    assert sent.text == "For your security, send /link to me in a direct message."
    assert not CODE.search(sent.text)


async def test_wrong_codes_lock_out_and_answers_are_all_the_same(stack: Stack) -> None:
    good = await new_code(stack, "owner")
    attempts = stack.settings.linking.max_attempts
    for i in range(attempts):
        await webhook_say(stack, f"/link WXYZ-{2345 + i}", user="eve")
    received = await stack.receiver.wait_for(attempts)
    assert {r["text"] for r in received} == {"That code is not valid or has expired."}
    # Locked out: even the right code is refused now, with the same answer.
    await webhook_say(stack, f"/link {good}", user="eve")
    received = await stack.receiver.wait_for(attempts + 1)
    assert received[-1]["text"] == "That code is not valid or has expired."
    assert (await links(stack, session_id("loopback", "owner"))).linked == []


async def test_commands_stay_out_of_the_agent_transcript(stack: Stack) -> None:
    await new_code(stack, "tess")
    run_id = await loopback_say(stack, "a real question", user="tess")
    await stack.loopback.outbox.wait_for(2)
    history = await stack.client.get_workflow_handle(run_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [inp] = await stack.client.data_converter.decode(started.input.payloads, [RunInput])
    assert isinstance(inp, RunInput) and inp.transcript == []


async def test_operator_revokes_links_and_purges_an_account(stack: Stack) -> None:
    from cli.operations import purge_identity, revoke_links, session_id_for, show_links

    code = await new_code(stack, "olga")
    await webhook_say(stack, f"/link {code}", user="olga-w")
    await stack.receiver.wait_for(1)
    primary = session_id_for(stack.settings, "loopback", "olga", None, "per_user")
    secondary = session_id_for(stack.settings, "webhook", "olga-w", None, "per_user")

    async def linked() -> bool:
        return (await show_links(stack.client, secondary)).alias_of == primary

    await eventually(linked)
    await revoke_links(stack.client, secondary)

    async def revoked() -> bool:
        a, b = await show_links(stack.client, primary), await show_links(stack.client, secondary)
        return a.linked == [] and b.alias_of is None

    await eventually(revoked)

    run_id = await webhook_say(stack, "remember me?", user="olga-w")
    await stack.receiver.wait_for(2)
    deleted = await purge_identity(stack.client, stack.settings, secondary)
    assert secondary in deleted and run_id in deleted
    for wid in (secondary, run_id):

        async def gone(wid: str = wid) -> bool:
            try:
                await stack.client.get_workflow_handle(wid).describe()
            except Exception:
                return True
            return False

        await eventually(gone)
    # The other account's session is untouched.
    assert (await show_links(stack.client, primary)).alias_of is None


CONTENT = {"text", "reply_text", "output_text", "user_text", "transcript", "input_text"}


def _where(value: object, needle: str, key: str = "") -> list[str]:
    """The fields (at any depth) whose value contains ``needle``."""
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _where(v, needle, k)]
    if isinstance(value, list):
        return [f for v in value for f in _where(v, needle, key)]
    return [key] if isinstance(value, str) and needle in value else []


async def test_a_link_code_is_only_ever_in_reply_text(stack: Stack) -> None:
    """Anyone who can decode payloads must not find a usable code outside what the person was
    told (content, which the support role never sees): state and inputs carry its hash."""
    code = await new_code(stack, "cody")
    await webhook_say(stack, f"/link {code}", user="cody-w")
    [reply] = await stack.receiver.wait_for(1)
    assert str(reply["text"]).startswith("Linked with your loopback account")
    raw = code.replace("-", "")
    found: dict[str, list[str]] = {}
    async for wf in stack.client.list_workflows(
        f'TaskQueue = "{stack.settings.temporal.task_queue}"'
    ):
        history = await stack.client.get_workflow_handle(wf.id).fetch_history()
        for event in history.events:
            for payload in event_payloads(event):
                [plain] = await stack.client.data_converter.payload_codec.decode([payload])  # type: ignore[union-attr]
                text = plain.data.decode(errors="replace")
                for needle in (code, raw):
                    if needle in text:
                        fields = _where(json.loads(text), needle) if text[:1] in "[{" else ["?"]
                        found.setdefault(wf.workflow_type, []).extend(fields)
    assert "LinkChallengeWorkflow" not in found  # the challenge knows only the hash
    assert found, "the code should at least be in the reply that showed it"
    for workflow_type, fields in found.items():
        assert set(fields) <= CONTENT, (workflow_type, fields)
