"""Responses API objects and stream events, rendered from a run's view.

Pure functions of the view: a response, its output items (tool calls as ``mcp_call`` items, a
call waiting for the person as an ``mcp_approval_request``, the answer as a message) and every
stream event the state allows so far, each with a sequence number that never changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hosting.models import RunStatus, RunView, ToolCallState

SERVER_LABEL = "switchboard"  # the "MCP server" of every tool call item: this deployment


def awaiting(view: RunView | None) -> ToolCallState | None:
    """The tool call the run waits on a person for, if any."""
    if view is None or view.status.finished:
        return None
    if not view.tool_calls or view.tool_calls[-1].phase != "waiting":
        return None
    return view.tool_calls[-1]


def approval_request_id(call: ToolCallState) -> str:
    return f"mcpr_{call.approval_code}"


def current_part(view: RunView) -> list[tuple[int, ToolCallState]]:
    """The tool calls of the response as it stands. A response stops at an approval request
    (as OpenAI's do), and the one that answers it carries the turn on: so its part starts at
    the last answered approval, that call included."""
    calls = view.tool_calls
    if view.status.finished:
        # Cancelled or expired mid-call: a call in hand never finished, an approval never came.
        ended = {"waiting": "declined", "calling": "failed"}
        calls = [c.model_copy(update={"phase": ended.get(c.phase, c.phase)}) for c in calls]
    start = 0
    for index, call in enumerate(calls):
        if call.approval_code is not None and call.phase != "waiting":
            start = index
    return list(enumerate(calls))[start:]


def tool_item(index: int, call: ToolCallState, *, final: bool = True) -> dict[str, Any]:
    """An ``mcp_call`` item (``mcp_approval_request`` while it waits for the person)."""
    if call.phase == "waiting":
        return {
            "type": "mcp_approval_request",
            "id": approval_request_id(call),
            "name": call.name,
            "arguments": call.arguments,
            "server_label": SERVER_LABEL,
        }
    status = {"calling": "calling", "completed": "completed"}.get(call.phase, "failed")
    return {
        "type": "mcp_call",
        "id": f"mcp_{index}",
        "name": call.name,
        "arguments": call.arguments,
        "server_label": SERVER_LABEL,
        "status": status if final else "in_progress",
        "approval_request_id": approval_request_id(call) if call.approval_code else None,
        "output": None,
        "error": None,
    }


def output_items(view: RunView) -> list[dict[str, Any]]:
    return [tool_item(i, c) for i, c in current_part(view) if c.phase != "declined"]


def stream_events(
    token: str, view: RunView, created_at: float, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Every stream event the run's state allows so far, each with its fixed sequence number:
    the opening events, the tool calls as they start and end, one delta per recorded batch of
    the answer, and once the run has finished (or stops at an approval request) the rest of
    the text and the closing events. Each event depends only on state that no longer changes,
    so a reader that resumes after event N gets exactly the rest."""
    opening = response_object(token, None, created_at, labels) | {"status": "in_progress"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
    ]
    index = 0
    for position, call in current_part(view):
        if call.phase == "declined":
            continue
        item = tool_item(position, call)
        if call.phase == "waiting":
            events += [
                {"type": "response.output_item.added", "output_index": index, "item": item},
                {"type": "response.output_item.done", "output_index": index, "item": item},
                {"type": "response.completed",
                 "response": response_object(token, view, created_at, labels)},
            ]  # fmt: skip
            return [event | {"sequence_number": n} for n, event in enumerate(events)]
        head = {"item_id": item["id"], "output_index": index}
        events += [
            {"type": "response.output_item.added", "output_index": index,
             "item": tool_item(position, call, final=False)},
            {"type": "response.mcp_call.in_progress", **head},
        ]  # fmt: skip
        if call.phase == "calling":
            return [event | {"sequence_number": n} for n, event in enumerate(events)]
        done = "completed" if call.phase == "completed" else "failed"
        events += [
            {"type": f"response.mcp_call.{done}", **head},
            {"type": "response.output_item.done", "output_index": index, "item": item},
        ]
        index += 1
    finished = view.status.finished
    if finished or view.stream_ends:
        events += message_events(token, view, created_at, labels, index)
    return [event | {"sequence_number": n} for n, event in enumerate(events)]


def message_events(
    token: str, view: RunView, created_at: float, labels: Mapping[str, str], index: int
) -> list[dict[str, Any]]:
    """The answer as one message item at ``index``: opened once text (or the end) is there."""
    item_id = f"msg_{token[-24:]}"
    head = {"item_id": item_id, "output_index": index, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index,
         "item": {"type": "message", "id": item_id, "status": "in_progress",
                  "role": "assistant", "content": []}},
        {"type": "response.content_part.added", **head,
         "part": {"type": "output_text", "text": "", "annotations": []}},
    ]  # fmt: skip
    finished = view.status.finished
    source = (view.output_text or "") if finished else (view.partial_text or "")
    start = 0
    for end in view.stream_ends:
        if end > len(source):
            break
        events.append({"type": "response.output_text.delta", **head,
                       "delta": source[start:end], "logprobs": []})  # fmt: skip
        start = end
    if finished:
        if start < len(source):
            events.append({"type": "response.output_text.delta", **head,
                           "delta": source[start:], "logprobs": []})  # fmt: skip
        final = response_object(token, view, created_at, labels)
        text = view.output_text or ""
        part = {"type": "output_text", "text": text, "annotations": []}
        events += [
            {"type": "response.output_text.done", **head, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **head, "part": part},
            {"type": "response.output_item.done", "output_index": index,
             "item": {"type": "message", "id": item_id, "status": "completed",
                      "role": "assistant", "content": [part]}},
            {"type": "response.completed" if view.status == RunStatus.COMPLETED
             else "response.failed", "response": final},
        ]  # fmt: skip
    return events


def response_object(
    token: str, view: RunView | None, created_at: float, labels: Mapping[str, str]
) -> dict[str, Any]:
    """A Responses API object from a run's view (or ``queued`` before the run exists)."""
    status = view.status.value if view else RunStatus.QUEUED.value
    output: list[dict[str, Any]] = output_items(view) if view is not None else []
    if awaiting(view) is not None:
        status = "completed"  # as OpenAI: the response ends at the approval request
    if view is not None and view.output_text is not None:
        output.append(
            {
                "type": "message",
                "id": f"msg_{token[-24:]}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": view.output_text, "annotations": []}],
            }
        )
    error = None
    if status in (RunStatus.FAILED.value, RunStatus.EXPIRED.value):
        error = {
            "code": "server_error",
            "message": (view.error if view else None) or "the run failed",
        }
    usage = None
    if view is not None and view.usage_input_tokens is not None:
        i, o = view.usage_input_tokens, view.usage_output_tokens or 0
        usage = {
            "input_tokens": i,
            "output_tokens": o,
            "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    return {
        "id": token,
        "object": "response",
        "created_at": int(view.created_at.timestamp()) if view else int(created_at),
        "status": status,
        "background": labels.get("background") == "true",
        "model": labels.get("model", "switchboard"),
        "output": output,
        "error": error,
        "incomplete_details": None,
        "metadata": json.loads(labels.get("metadata", "{}")),
        "usage": usage,
        "instructions": None,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": None,
        "top_p": None,
        "previous_response_id": labels.get("previous_response_id"),
    }
