"""``/v1/responses`` (OpenAI-Responses-compatible) and the channel-neutral ``/v1/runs/{token}``.

A create without ``previous_response_id`` is a one-off run (one new workflow execution); with
one, it joins that conversation's session, so turns keep their order, share a transcript, and
follow the channel's multitask strategy. The response ``id`` is the continuation token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from channels.inbound_body import BodyError
from channels.responses import CreateResponse, ResponsesChannel
from channels.web import WebChannel
from hosting.ids import InvalidKey, isolation_key, session_workflow_id
from hosting.models import RunStatus, RunView, Turn
from hosting.policy import Decision, decide
from hosting.settings import Settings
from hosting.tokens import TokenClaims, issue, verify
from routes.intake import build_submission, start_run, submit
from routes.runs import cancel_run, fetch_view, pending_runs, session_of, wait_for_view

MAX_WAIT_S = 60.0


def openai_error(
    status: int, message: str, code: str, kind: str = "invalid_request_error"
) -> web.Response:
    """The OpenAI error body, which SDKs turn into typed exceptions."""
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


def not_found() -> web.Response:
    # One answer for forged, expired, unknown and other callers' tokens.
    return openai_error(404, "No response found with that id.", "not_found")


def response_object(
    token: str, view: RunView | None, created_at: float, labels: Mapping[str, str]
) -> dict[str, Any]:
    """A Responses API object from a run's view (or ``queued`` before the run exists)."""
    status = view.status if view else RunStatus.QUEUED
    output: list[dict[str, Any]] = []
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
    if status in (RunStatus.FAILED, RunStatus.EXPIRED):
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
        "status": status.value,
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


class ResponsesApi:
    def __init__(
        self,
        settings: Settings,
        channel: ResponsesChannel | None,
        web_channel: WebChannel | None,
        client_key: web.AppKey[Client],
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._web = web_channel
        self._client_key = client_key
        self._key = settings.security.signing_key_bytes()
        self._tenant = settings.gateway.tenant

    # -- helpers ---------------------------------------------------------------------------

    def _api_caller(self, request: web.Request) -> str | None:
        return self._channel.caller(request.headers) if self._channel else None

    def _caller(self, request: web.Request, *, for_write: bool = False) -> str | None:
        """API callers by bearer key, browsers by their signed cookie. A browser's write also
        needs its CSRF token and a same-origin Origin, like every other cookie route."""
        caller = self._api_caller(request)
        if caller is None and self._web is not None:
            if for_write:
                browser_id = self._web.browser_from(request.cookies, request.headers)
            else:
                browser_id = self._web.identity.browser_id(request.cookies)
            caller = f"{self._web.name}:{browser_id}" if browser_id else None
        return caller

    def _admitted(self, caller: str) -> bool:
        """The channel's authorization policy, exactly as ``POST /channels/responses`` applies
        it: every door that starts a run asks the same question."""
        assert self._channel is not None
        user_id = caller.split(":", 1)[1]
        default = self._settings.authorization.default
        return decide(self._channel.settings, default, user_id, {}) is Decision.ALLOWED

    def _claims(self, token: str, caller: str) -> TokenClaims | None:
        return verify(self._key, token, tenant=self._tenant, caller=caller, now=time.time())

    async def _token_view(self, client: Client, claims: TokenClaims) -> RunView | None:
        """The run's view; for a run still waiting in its session's queue, a ``queued`` view."""
        view = await fetch_view(client, claims.run_id)
        session_id = self._session_of(claims)
        if view is not None or session_id is None:
            return view
        waiting = await pending_runs(client, session_id)
        if waiting is None or claims.run_id not in waiting:
            return None
        now = datetime.now(UTC)
        return RunView(
            run_id=claims.run_id,
            status=RunStatus.QUEUED,
            channel=claims.caller.split(":", 1)[0],
            created_at=now,
            updated_at=now,
        )

    # -- /v1/responses ---------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        caller = self._api_caller(request)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        if not self._admitted(caller):
            return openai_error(
                403, "This caller is not allowed here.", "forbidden", "permission_error"
            )
        try:
            body = CreateResponse.model_validate_json(await request.read())
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            return openai_error(400, f"{where}: {err['msg']}", "invalid_request")
        if body.stream:
            return openai_error(
                400, "stream is not supported here; use background=true and poll.", "unsupported"
            )
        conversation: str | None = None
        seed: list[Turn] = []
        client = request.app[self._client_key]
        if body.previous_response_id:
            previous = self._claims(body.previous_response_id, caller)
            if previous is None:
                return openai_error(
                    404, "previous_response_id not found.", "previous_response_not_found"
                )
            conversation = previous.conversation
            before = await fetch_view(client, previous.run_id)
            if (
                before is not None
                and before.input_text is not None
                and before.output_text is not None
            ):
                seed = [
                    Turn(role="user", text=before.input_text),
                    Turn(role="assistant", text=before.output_text),
                ]
        try:
            assert self._channel is not None
            chat, history = self._channel.build_request(
                tenant=self._tenant,
                caller=caller,
                body=body,
                idempotency_key=request.headers.get("Idempotency-Key"),
                conversation=conversation,
            )
        except (BodyError, InvalidKey) as exc:
            return openai_error(400, str(exc), "invalid_request")
        labels = {
            "model": body.model,
            "metadata": json.dumps(body.metadata or {}),
            "background": "true" if body.background else "false",
        }
        if body.previous_response_id:
            labels["previous_response_id"] = body.previous_response_id
        submission = build_submission(
            self._settings, self._channel, chat, caller=caller, deliver_to_origin=False
        ).model_copy(update={"labels": labels})
        try:
            if conversation is None:
                run_id = await start_run(client, self._settings, submission, transcript=history)
            else:
                result = await submit(
                    client,
                    self._settings,
                    submission,
                    timeout_s=self._settings.gateway.submit_timeout_s,
                    seed=seed,
                )
                if not result.accepted:
                    return openai_error(
                        409,
                        "This conversation is busy with another response.",
                        "conversation_busy",
                        "conflict",
                    )
                run_id = result.run_id
        except WorkflowUpdateFailedError:
            return openai_error(400, "request refused", "invalid_request")
        except (TimeoutError, RPCError, RuntimeError):
            return openai_error(
                503, "Temporarily unavailable, retry later.", "unavailable", "server_error"
            )
        created = time.time()
        if conversation is None:
            # The run's own start time fixes the token, so a retried create gets the same id.
            desc = await client.get_workflow_handle(run_id).describe()
            created = desc.start_time.timestamp()
        token = issue(
            self._key,
            TokenClaims(
                run_id=run_id,
                tenant=self._tenant,
                caller=caller,
                expires_at=int(created + self._settings.runs.continuation_s),
                conversation=chat.conversation_id,
            ),
        )
        if body.background:
            view = await fetch_view(client, run_id)
        else:
            view = await wait_for_view(
                client,
                run_id,
                lambda v: v is not None and v.status.finished,
                self._settings.agent.max_duration_s,
            )
        return web.json_response(response_object(token, view, created, labels))

    def _response_claims(self, request: web.Request) -> TokenClaims | web.Response:
        """The ``{id}`` token's claims for this API caller, or the answer instead (401 or 404)."""
        caller = self._api_caller(request)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        claims = self._claims(request.match_info["id"], caller)
        return not_found() if claims is None else claims

    async def retrieve(self, request: web.Request) -> web.Response:
        claims = self._response_claims(request)
        if isinstance(claims, web.Response):
            return claims
        view = await self._token_view(request.app[self._client_key], claims)
        if view is None:
            return not_found()
        return web.json_response(response_object(request.match_info["id"], view, 0, view.labels))

    async def cancel(self, request: web.Request) -> web.Response:
        claims = self._response_claims(request)
        if isinstance(claims, web.Response):
            return claims
        client = request.app[self._client_key]
        view = await self._cancel(client, claims)
        if view is None:
            return not_found()
        return web.json_response(response_object(request.match_info["id"], view, 0, view.labels))

    def _session_of(self, claims: TokenClaims) -> str | None:
        """The session a token's run waits in, for runs that have a conversation."""
        kind, _, who = claims.caller.partition(":")
        if self._web is not None and kind == self._web.name:
            # The browser's own session, under the scope the web channel is configured with.
            return session_of(self._tenant, self._web, who, who)
        if claims.conversation:
            key = isolation_key("per_conversation", kind, who, claims.conversation)
            return session_workflow_id(self._tenant, key)
        return None

    async def _cancel(self, client: Client, claims: TokenClaims) -> RunView | None:
        view = await fetch_view(client, claims.run_id)
        if view is not None and view.status.finished:
            return view
        if not await cancel_run(client, claims.run_id, self._session_of(claims)):
            return None
        # A queued run becomes a run at once, already cancelled; a running one stops.
        return await wait_for_view(
            client, claims.run_id, lambda v: v is not None and v.status.finished, 10.0
        )

    # -- /v1/runs/{token} ------------------------------------------------------------------

    def _run_json(self, token: str, view: RunView) -> dict[str, Any]:
        return {
            "id": token,
            "object": "run",
            "run_id": view.run_id,
            "status": view.status.value,
            "channel": view.channel,
            "output_text": view.output_text,
            "error": view.error,
            "created_at": view.created_at.isoformat(),
            "updated_at": view.updated_at.isoformat(),
            "deliveries": [
                {
                    "destination": d.destination,
                    "state": d.state.value,
                    "attempts": d.attempts,
                    "reason": d.reason,
                    "updated_at": d.updated_at.isoformat() if d.updated_at else None,
                }
                for d in view.deliveries
            ],
        }

    def _run_claims(
        self, request: web.Request, *, for_write: bool = False
    ) -> TokenClaims | web.Response:
        """The token's claims for this caller, or the answer to give instead (401 or 404)."""
        caller = self._caller(request, for_write=for_write)
        if caller is None:
            return openai_error(401, "Authentication required.", "unauthenticated")
        claims = self._claims(request.match_info["token"], caller)
        return not_found() if claims is None else claims

    async def run_status(self, request: web.Request) -> web.Response:
        claims = self._run_claims(request)
        if isinstance(claims, web.Response):
            return claims
        try:
            wait = min(float(request.query.get("wait", "0")), MAX_WAIT_S)
        except ValueError:
            return openai_error(400, "wait must be a number of seconds", "invalid_request")
        client = request.app[self._client_key]
        view = await self._token_view(client, claims)
        if view is None:
            return not_found()
        if wait > 0 and not view.status.finished:
            first = view.status
            changed = await wait_for_view(
                client, claims.run_id, lambda v: v is not None and v.status != first, wait
            )
            view = changed or view
        return web.json_response(self._run_json(request.match_info["token"], view))

    async def run_cancel(self, request: web.Request) -> web.Response:
        claims = self._run_claims(request, for_write=True)
        if isinstance(claims, web.Response):
            return claims
        view = await self._cancel(request.app[self._client_key], claims)
        if view is None:
            return not_found()
        return web.json_response(self._run_json(request.match_info["token"], view))

    def add_routes(self, app: web.Application) -> None:
        if self._channel is not None:
            app.router.add_post("/v1/responses", self.create)
            app.router.add_get("/v1/responses/{id}", self.retrieve)
            app.router.add_post("/v1/responses/{id}/cancel", self.cancel)
        app.router.add_get("/v1/runs/{token}", self.run_status)
        app.router.add_post("/v1/runs/{token}/cancel", self.run_cancel)
