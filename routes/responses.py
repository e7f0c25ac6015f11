"""``/v1/responses``: the OpenAI-Responses-compatible surface of the responses channel.

A create without ``previous_response_id`` is a one-off run (one new workflow execution); with
one, it joins that conversation's session, so turns keep their order, share a transcript, and
follow the channel's multitask strategy. The response ``id`` is the continuation token.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import time
from collections.abc import Mapping

from aiohttp import web
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from channels.base import Channel
from channels.inbound_body import BodyError
from channels.responses import ApprovalResponse, CreateResponse, ResponsesChannel
from hosting.ids import Caller, InvalidKey
from hosting.models import (
    ApprovalAnswer,
    Identity,
    ReplyAddress,
    RunView,
    Turn,
)
from hosting.policy import Decision, decide
from hosting.settings import ConfigError, Settings
from hosting.tokens import TokenClaims, issue
from routes.errors import openai_error, parse_json_body, token_not_found
from routes.inbound import QUEUE_RETRY_S, queue_full
from routes.intake import build_submission, start_run, submit
from routes.keys import CLIENT, LIMITS
from routes.limits import TooMany
from routes.response_objects import (
    approval_request_id,
    awaiting,
    response_object,
    stream_events,
)
from routes.runs import RunAccess
from routes.watch import fetch_view
from workflows.agent_loop import ToolApprovalWorkflow


def _settled(view: RunView | None) -> bool:
    """A response is settled once its run has finished or stops at an approval request."""
    return view is not None and (view.status.finished or awaiting(view) is not None)


def _waits_on(view: RunView, code: str) -> bool:
    waiting = awaiting(view)
    return waiting is not None and waiting.approval_code == code


def approval_not_found() -> web.Response:
    return openai_error(
        404, "No approval request with that id waits here.", "approval_request_not_found"
    )


def too_many_requests(retry_after_s: float) -> web.Response:
    answer = openai_error(
        429, "Rate limit reached, retry later.", "rate_limit_exceeded", "rate_limit_error"
    )
    answer.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return answer


class ResponsesApi:
    def __init__(
        self,
        settings: Settings,
        channel: ResponsesChannel,
        access: RunAccess,
        client_key: web.AppKey[Client],
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._access = access
        self._client_key = client_key
        self._key = settings.security.signing_key_bytes()
        self._tenant = settings.gateway.tenant

    def _admitted(self, caller: Caller) -> bool:
        """The channel's authorization policy, exactly as ``POST /channels/responses`` applies
        it: every door that starts a run asks the same question."""
        default = self._settings.authorization.default
        return decide(self._channel.settings, default, caller.user_id, {}) is Decision.ALLOWED

    # -- /v1/responses ---------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        caller = self._channel.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        if not self._admitted(caller):
            return openai_error(
                403, "This caller is not allowed here.", "forbidden", "permission_error"
            )
        wait = request.app[LIMITS].messages.take(caller.key)
        if wait > 0:
            return too_many_requests(wait)
        body = parse_json_body(CreateResponse, await request.read())
        if isinstance(body, web.Response):
            return body
        if body.background and not body.stream:
            return await self._create(request, caller, body)
        try:  # a foreground create holds its connection open until the run has finished
            with request.app[LIMITS].streams.hold(caller.key):
                return await self._create(request, caller, body)
        except TooMany as exc:
            return too_many_requests(exc.retry_after_s)

    async def _create(
        self, request: web.Request, caller: Caller, body: CreateResponse
    ) -> web.StreamResponse:
        conversation: str | None = None
        seed: list[Turn] = []
        client = request.app[self._client_key]
        approval = body.approval()
        if approval is not None:
            return await self._answer(request, caller, body, approval)
        if body.previous_response_id:
            previous = self._access.claims(body.previous_response_id, caller)
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
            self._settings, self._channel, chat, caller=caller.key, deliver_to_origin=False
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
        except WorkflowUpdateFailedError as exc:
            if queue_full(exc):
                return too_many_requests(QUEUE_RETRY_S)
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
                caller=caller.key,
                expires_at=int(created + self._settings.runs.continuation_s),
                conversation=chat.conversation_id,
            ),
        )
        if body.stream:
            return await self._stream(request, token, run_id, created, labels, after=-1)
        if body.background:
            view = await fetch_view(client, run_id)
        else:
            view = await self._access.views.wait_for(
                client, run_id, _settled, self._settings.agent.max_duration_s
            )
        return web.json_response(response_object(token, view, created, labels))

    async def _answer(
        self, request: web.Request, caller: Caller, body: CreateResponse, answer: ApprovalResponse
    ) -> web.StreamResponse:
        """An ``mcp_approval_response``: answers the call its previous response waits on, as
        that response's own caller, and answers with the same response carried on."""
        if not body.previous_response_id:
            return openai_error(
                400, "An mcp_approval_response needs previous_response_id.", "invalid_request"
            )
        token = body.previous_response_id
        claims = self._access.claims(token, caller)
        if claims is None:
            return openai_error(
                404, "previous_response_id not found.", "previous_response_not_found"
            )
        client = request.app[self._client_key]
        waiting = awaiting(await fetch_view(client, claims.run_id))
        if (
            waiting is None
            or waiting.approval_code is None
            or waiting.approval_workflow is None
            or not hmac.compare_digest(
                approval_request_id(waiting).encode(), answer.approval_request_id.encode()
            )
        ):
            return approval_not_found()
        me = ReplyAddress(channel=caller.channel, user_id=caller.user_id, conversation_id=token)
        try:
            await client.get_workflow_handle(waiting.approval_workflow).execute_update(
                ToolApprovalWorkflow.answer,
                ApprovalAnswer(
                    code=waiting.approval_code,
                    approve=answer.approve,
                    identity=Identity(
                        channel=caller.channel,
                        user_id=caller.user_id,
                        address=me,
                        session_id=claims.run_id,
                    ),
                ),
            )
        except WorkflowUpdateFailedError:
            return approval_not_found()  # answered meanwhile, expired, or not this caller's
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return approval_not_found()
            return openai_error(
                503, "Temporarily unavailable, retry later.", "unavailable", "server_error"
            )
        code = waiting.approval_code
        # Read on once the run has taken the answer, so nobody sees the old request again.
        view = await self._access.views.wait_for(
            client, claims.run_id, lambda v: v is None or not _waits_on(v, code), 30.0
        )
        if body.stream:
            return await self._stream(request, token, claims.run_id, 0, None, after=-1)
        if not body.background:
            view = await self._access.views.wait_for(
                client, claims.run_id, _settled, self._settings.agent.max_duration_s
            )
        if view is None:
            return token_not_found()
        return web.json_response(response_object(token, view, 0, view.labels))

    def _response_claims(self, request: web.Request) -> TokenClaims | web.Response:
        """The ``{id}`` token's claims for this API caller, or the answer instead (401 or 404)."""
        caller = self._channel.caller(request.headers)
        if caller is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        claims = self._access.claims(request.match_info["id"], caller)
        return token_not_found() if claims is None else claims

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        claims = self._response_claims(request)
        if isinstance(claims, web.Response):
            return claims
        if request.query.get("stream") == "true":
            try:
                after = int(request.query.get("starting_after", "-1"))
            except ValueError:
                return openai_error(400, "starting_after must be an integer", "invalid_request")
            try:
                with request.app[LIMITS].streams.hold(claims.caller):
                    return await self._stream(
                        request, request.match_info["id"], claims.run_id, 0, None, after=after
                    )
            except TooMany as exc:
                return too_many_requests(exc.retry_after_s)
        view = await self._access.view(request.app[self._client_key], claims)
        if view is None:
            return token_not_found()
        return web.json_response(response_object(request.match_info["id"], view, 0, view.labels))

    async def cancel(self, request: web.Request) -> web.Response:
        claims = self._response_claims(request)
        if isinstance(claims, web.Response):
            return claims
        view = await self._access.cancel(request.app[self._client_key], claims)
        if view is None:
            return token_not_found()
        return web.json_response(response_object(request.match_info["id"], view, 0, view.labels))

    async def _stream(
        self,
        request: web.Request,
        token: str,
        run_id: str,
        created: float,
        labels: Mapping[str, str] | None,
        *,
        after: int,
    ) -> web.StreamResponse:
        """Server-Sent Events as the OpenAI SDK reads them, numbered from the run's durable
        state: a reader that reconnects with ``starting_after`` gets exactly the rest."""
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        client = request.app[self._client_key]
        deadline = time.monotonic() + self._settings.agent.max_duration_s
        with contextlib.suppress(ConnectionResetError):
            async with self._access.views.follow(client, run_id) as watch:
                seen = 0
                while await watch.newer_than(seen, deadline - time.monotonic()):
                    seen = watch.version
                    view = watch.view
                    if view is None:
                        continue
                    for event in stream_events(token, view, created, labels or view.labels):
                        if event["sequence_number"] > after:
                            data = json.dumps(event)
                            await resp.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
                            after = event["sequence_number"]
                    if _settled(view):
                        break
        return resp

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self.create)
        app.router.add_get("/v1/responses/{id}", self.retrieve)
        app.router.add_post("/v1/responses/{id}/cancel", self.cancel)


def mount(app: web.Application, settings: Settings, channel: Channel, access: RunAccess) -> None:
    """The ``responses_api`` surface of a channel that declares it."""
    if not isinstance(channel, ResponsesChannel):
        raise ConfigError(f"channels.{channel.name}: the Responses API needs a responses channel")
    ResponsesApi(settings, channel, access, CLIENT).add_routes(app)
