"""Teams approval buttons: an Adaptive Card with two ``Action.Execute`` buttons, and the
answers an ``adaptiveCard/action`` invoke expects.

A press of ``Action.Execute`` is an ``invoke`` activity named ``adaptiveCard/action`` whose
``value.action`` carries the verb and the data we put on the button. Teams waits for the HTTP
answer to the invoke itself: ``{"statusCode": 200, "type": ..., "value": ...}`` with either a
card (which replaces the pressed card in the conversation: that is how the buttons go away) or
a message (shown to the presser only, the card stays).
"""

from __future__ import annotations

import json
import re
from typing import Any

from channels.base import HttpAnswer

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
MESSAGE_TYPE = "application/vnd.microsoft.activity.message"
CARD_ACTION = "adaptiveCard/action"  # the invoke's name
CARD_VERSION = "1.4"  # Action.Execute (Universal Actions) needs 1.4
# The approval prompt's instruction (workflows/agent_loop.py), and what its buttons carry.
APPROVAL_CODE = re.compile(r"/approve\s+([A-Za-z0-9]{4,16})\s+or\s+/deny\s+\1\b")
CODE = re.compile(r"^[A-Za-z0-9]{4,16}$")
VERBS = ("approve", "deny")
MAX_PROMPT = 2000  # what the card (and its answered copy) shows of the prompt


def _card(prompt: str, actions: list[dict[str, Any]], note: str | None = None) -> dict[str, Any]:
    body: list[dict[str, Any]] = [{"type": "TextBlock", "text": prompt, "wrap": True}]
    if note:
        body.append({"type": "TextBlock", "text": note, "wrap": True, "isSubtle": True})
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return card


def approval_card(text: str) -> dict[str, Any] | None:
    """The prompt with Approve/Deny buttons, or None if it names no code. Each button's data
    carries the code and the prompt, so the answered card can show what was answered."""
    match = APPROVAL_CODE.search(text)
    if match is None:
        return None
    code, prompt = match.group(1), text[:MAX_PROMPT]
    actions = [
        {"type": "Action.Execute", "title": title, "verb": verb, "style": style,
         "data": {"code": code, "prompt": prompt}}
        for title, verb, style in (("Approve", "approve", "positive"),
                                   ("Deny", "deny", "destructive"))
    ]  # fmt: skip
    return _card(prompt, actions)


def answered_card(prompt: str, command: str) -> dict[str, Any]:
    """The pressed card without its buttons."""
    return _card(prompt[:MAX_PROMPT], [], note=f"Answered: {command}")


def attachment(card: dict[str, Any]) -> dict[str, Any]:
    return {"contentType": CARD_TYPE, "content": card}


def invoke_card(card: dict[str, Any]) -> HttpAnswer:
    """Answer a card action with a card that replaces the pressed one."""
    body = {"statusCode": 200, "type": CARD_TYPE, "value": card}
    return HttpAnswer(status=200, body=json.dumps(body).encode())


def invoke_message(text: str) -> HttpAnswer:
    """Answer a card action with a short message to the presser; the card stays."""
    body = {"statusCode": 200, "type": MESSAGE_TYPE, "value": text}
    return HttpAnswer(status=200, body=json.dumps(body).encode())
