"""Typed payloads that cross a boundary: gateway → workflow → activity → channel.

Every model that is stored in a workflow history carries ``version``; an unknown version is
refused rather than guessed, so an old worker never misreads a newer payload.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

PAYLOAD_VERSION = 1


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Versioned(Frozen):
    version: int = PAYLOAD_VERSION

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != PAYLOAD_VERSION:
            raise ValueError(
                f"payload version {value} is not supported (this build reads {PAYLOAD_VERSION})"
            )
        return value


class RunStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.IN_PROGRESS)


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD_LETTER = "dead_letter"
    SKIPPED = "skipped"


class ReplyAddress(Frozen):
    """Everything a channel needs to push to one conversation, without the message itself."""

    channel: str
    user_id: str
    conversation_id: str
    thread_id: str | None = None
    reply_to_message_id: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)


class ChannelRequest(Versioned):
    """One inbound user message, parsed and verified by a channel adapter."""

    tenant: str
    channel: str
    message_key: str
    user_id: str
    conversation_id: str
    thread_id: str | None = None
    is_direct: bool = True
    text: str = Field(max_length=100_000)
    reply_to: ReplyAddress
    claims: dict[str, str] = Field(default_factory=dict)


class Turn(Frozen):
    role: Literal["user", "assistant"]
    text: str


class DeliveryPolicy(Frozen):
    """Retry schedule and age limit of one run's deliveries, fixed when the run starts.

    ``[delivery]`` in the configuration extends this model, so the two cannot drift."""

    initial_interval_s: float = Field(default=1.0, gt=0)
    backoff: float = Field(default=2.0, ge=1.0)
    max_interval_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=10, ge=1, le=1000)
    max_age_s: float = Field(default=3600.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    # The first attempt runs as a local activity, inside the workflow task that has the reply
    # (no activity task, no second workflow task); retries are ordinary activities, visible as
    # pending in the Web UI. Absent from runs recorded before, which replay as they ran.
    first_attempt_local: bool = False


Multitask = Literal["enqueue", "reject", "interrupt"]


class QueueLimits(Frozen):
    """How much one session may have waiting: every queued turn later runs the agent (which
    costs money), and the whole queue is carried through continue-as-new.

    ``[sessions]`` in the configuration is this model."""

    max_queued: int = Field(default=10, ge=1, le=1000)
    max_queued_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)


class ResponseTarget(Frozen):
    """Where replies go; see :mod:`hosting.targets`."""

    kind: Literal["originating", "channels", "active", "all_linked", "none"] = "originating"
    channels: list[str] = Field(default_factory=list)

    @property
    def non_originating(self) -> bool:
        return self.kind not in ("originating", "none")


class RunOptions(Frozen):
    """Per-run settings decided by the gateway from configuration (workflows read no config)."""

    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    echo_input: bool = False
    agent_timeout_s: float = 300.0
    agent_heartbeat_s: float = 10.0
    max_duration_s: float = 3600.0
    continuation_s: float = 86400.0
    transcript_turns: int = 20
    multitask: Multitask = "enqueue"
    deliver_to_origin: bool = True
    linking: LinkingPolicy = Field(default_factory=lambda: LinkingPolicy())
    target: ResponseTarget = Field(default_factory=ResponseTarget)
    max_fanout: int = 8
    stream_every_ms: int = 0  # record the answer so far at most this often; 0: only at the end
    queue: QueueLimits = Field(default_factory=lambda: QueueLimits())


# W3C Trace Context version 00, lowercase hex (no lookarounds: pydantic's regex has none).
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


class SubmitInput(Versioned):
    request: ChannelRequest
    isolation_key: str
    identity_hash: str
    options: RunOptions = Field(default_factory=RunOptions)
    caller: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)  # e.g. API model and metadata
    # For "/link CODE": the code's keyed hash, so no workflow input ever carries a usable code.
    link_code_hash: str | None = None
    # The W3C trace context the submission arrived in (set by the session when traced): its
    # run joins that trace rather than the trace that started the session.
    traceparent: str | None = Field(default=None, pattern=TRACEPARENT_PATTERN)


QUEUE_FULL = "queue_full"  # SubmitResult.reason: the session's queue is at its bound


class SubmitResult(Frozen):
    run_id: str
    accepted: bool = True
    duplicate: bool = False
    deferred: bool = False  # recorded by signal while no worker answered; runs when one does
    continuation_token: str | None = None  # for pull channels: where the caller follows the run
    reason: str | None = None
    position: int = 0


class SessionState(Versioned):
    """Everything a session carries across continue-as-new."""

    tenant: str
    isolation_key: str
    identity_hash: str
    channel: str
    recent_keys: list[str] = Field(default_factory=list)
    transcript: list[Turn] = Field(default_factory=list)
    queue: list[SubmitInput] = Field(default_factory=list)
    linked: list[Identity] = Field(default_factory=list)
    alias_of: str | None = None
    link_failures: list[datetime] = Field(default_factory=list)
    home: Identity | None = None
    active_channel: str | None = None
    # ``agent_framework`` agents: the framework's serialised conversation state, and how many
    # times it was replaced (a turn that waited for approval only updates the generation it
    # started from).
    agent_state: str | None = None
    agent_state_generation: int = 0


class RunInput(Versioned):
    submit: SubmitInput
    run_id: str
    session_id: str | None = None  # None: a one-off run with no conversation to report to
    transcript: list[Turn] = Field(default_factory=list)
    link_locked: bool = False  # too many wrong link codes from this session lately
    linked: list[Identity] = Field(default_factory=list)
    home: Identity | None = None  # the session's own account, for multi-channel replies
    active_channel: str | None = None
    cancelled: bool = False  # cancelled while it waited in the session's queue
    agent_state: str | None = None  # the session's agent_framework state (see SessionState)
    agent_state_generation: int = 0

    def caller(self, session_id: str | None = None) -> Identity | None:
        """The person the run is for, as an account of ``session_id`` (by default the run's
        session): who may approve, whom tools and commands act for. None without a session."""
        sid = session_id or self.session_id
        if sid is None:
            return None
        request = self.submit.request
        return Identity(
            channel=request.channel,
            user_id=request.user_id,
            address=request.reply_to,
            session_id=sid,
        )


class RunFinished(Frozen):
    """Signal from a run to its session once its replies are out."""

    run_id: str
    status: RunStatus
    user_text: str
    reply_text: str | None = None
    command: bool = False  # commands and their answers stay out of the agent's transcript
    link_failed: bool = False
    unlink: Identity | None = None  # this account leaves the session
    unlink_all: bool = False
    # The agent's conversation state after this turn (``agent_framework``; None: none kept).
    agent_state: str | None = None
    # A late turn's state: kept only while the session's state is still this generation (the
    # one the run started from); None: the late turn carries no state.
    agent_state_generation: int | None = None


class DestinationStatus(Frozen):
    destination: str
    state: DeliveryState
    attempts: int = 0
    reason: str | None = None
    updated_at: datetime | None = None


ToolCallPhase = Literal["waiting", "calling", "completed", "failed", "declined"]


class ToolCallState(Frozen):
    """One tool call of a turn as readers see it: Responses API items, progress notes."""

    call_id: str
    name: str
    arguments: str  # JSON text as the model wrote it: content
    phase: ToolCallPhase
    # Calls that needed approval: the code, and the workflow that waits for the answer.
    approval_code: str | None = None
    approval_workflow: str | None = None


def progress_note(calls: list[ToolCallState]) -> str | None:
    """A short line for readers while a tool runs or waits for the person; None otherwise."""
    for call in reversed(calls):
        if call.phase == "waiting":
            return "waiting for your approval"
        if call.phase == "calling":
            return f"calling {call.name}…"
    return None


class RunView(Frozen):
    """What a query on a run returns: status, output and per-destination delivery; also a
    finished run's (or proactive message's) workflow result, read after it has closed."""

    run_id: str
    status: RunStatus
    channel: str
    created_at: datetime
    updated_at: datetime
    input_text: str | None = None
    output_text: str | None = None
    error: str | None = None
    deliveries: list[DestinationStatus] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    usage_input_tokens: int | None = None
    usage_output_tokens: int | None = None
    # While the agent is still answering: the text so far, and where each recorded batch of
    # it ends (readers number stream events by batch, so a reconnect resumes exactly).
    partial_text: str | None = None
    stream_ends: list[int] = Field(default_factory=list)
    # While a tool call waits for the person's approval: the tool's name, and the message that
    # asked them (pull channels show it here; push channels also got it as a message).
    pending_tool: str | None = None
    action_text: str | None = None
    # The turn's tool calls so far, and a short note while one runs or waits ("calling
    # search…", "waiting for your approval"), from the run's state: no activity of its own.
    tool_calls: list[ToolCallState] = Field(default_factory=list)
    progress_note: str | None = None
    # Only in the workflow's result: what each dead-lettered destination is still owed, so an
    # operator can replay it after the run has closed. Queries and readers never carry it.
    owed: dict[str, list[PushRequest]] = Field(default_factory=dict)

    @property
    def shown_status(self) -> str:
        """The status callers and operators see: ``requires_action`` while a tool call waits
        for a person (the run itself is ``in_progress``, which recorded histories carry)."""
        if self.pending_tool is not None and not self.status.finished:
            return "requires_action"
        return self.status.value


class AgentRequest(Versioned):
    run_id: str
    text: str
    transcript: list[Turn] = Field(default_factory=list)
    channel: str
    identity_hash: str
    # > 0: the activity records the reply so far in the run at most this often (a stream).
    progress_every_ms: int = 0
    # Where the reply will land, for live progress on the platform (typing, drafts); None: none.
    progress_to: ReplyAddress | None = None
    # ``agent_framework``: the conversation state the session kept (None: start from transcript).
    agent_state: str | None = None


class AgentProgress(Versioned):
    """One batch of an answer being produced, signalled to its run by the agent activity."""

    attempt: int  # a retried activity starts its answer again
    seq: int  # batches of one attempt, from 0
    text: str


class ToolCall(Frozen):
    """One call the model asked for, with the policy the worker's ``[agent]`` settings give
    it (decided where the model's answer was read, so the workflow reads no configuration)."""

    call_id: str
    name: str
    arguments: str  # JSON text as the model wrote it: content
    known: bool = True  # a configured tool; an unknown name is answered without running
    requires_approval: bool = False
    timeout_s: float = 300.0
    max_attempts: int = Field(default=3, ge=1)  # 1: not idempotent, never retried


class ToolResult(Frozen):
    call_id: str
    content: str  # what the model reads: content
    ok: bool = True


class ToolExchange(Frozen):
    """One model step that asked for tools, and what they answered."""

    text: str | None = None  # what the model said alongside its calls
    calls: list[ToolCall]
    results: list[ToolResult]


class ToolLoopLimits(Frozen):
    max_steps: int = Field(default=8, ge=1)  # model calls per turn
    approval_timeout_s: float = Field(default=86400.0, gt=0)


class AgentReply(Versioned):
    text: str
    usage_input_tokens: int | None = None
    usage_output_tokens: int | None = None
    # With ``[agent] tools``: the calls the model asked for instead of answering (none: this is
    # the answer), and the turn's bounds.
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_limits: ToolLoopLimits | None = None
    # ``agent_framework``: the calls the agent paused on until the person approves them (its
    # own approval requests are in ``agent_state``), and its conversation state after the step.
    approval_requests: list[ToolCall] = Field(default_factory=list)
    agent_state: str | None = None
    # The platform message that already shows this answer as it grew (a Slack stream's ts, a
    # Teams stream id, a Discord original): the reply's push completes it rather than posting.
    live_message: str | None = None


class AgentStep(Versioned):
    """One model call after the first of a turn with tools: the request and every exchange
    so far (the activity rebuilds the Chat Completions messages from them)."""

    request: AgentRequest
    exchanges: list[ToolExchange] = Field(default_factory=list)
    # The step's progress batches count attempts from here, above every earlier step's, so
    # the run starts the answer so far afresh (0: recorded before steps streamed).
    progress_attempt_base: int = 0


class ToolDecision(Frozen):
    """The person's answer to one paused call; ``why`` (for the model) when it did not run."""

    call_id: str
    approved: bool
    why: str | None = None


class AgentResume(Versioned):
    """Resume an ``agent_framework`` turn that paused on approvals, from its paused state."""

    request: AgentRequest
    agent_state: str
    decisions: list[ToolDecision]
    # The resumed step's progress batches count attempts from here, above every earlier
    # step's, so the run starts the answer so far afresh.
    progress_attempt_base: int = 0


class ToolInvocation(Versioned):
    run_id: str
    call: ToolCall
    idempotency_key: str  # ``{run_id}:{call_id}``: the tool's key for its own side effects
    # The person whose message started the run (None for a run with no conversation): tools
    # that act for them, like ``schedule_check_in``, act as them.
    caller: Identity | None = None


class ApprovalStart(Versioned):
    """One tool call waiting for a person (``approval/{session}/{code}``)."""

    run_id: str
    code: str
    tool: str
    approvers: list[Identity]  # who started the run and the accounts linked to them
    timeout_s: float = Field(gt=0)


class ApprovalAnswer(Versioned):
    """``/approve CODE`` or ``/deny CODE``, from the account that typed it (in the session
    it was typed in: ``identity.session_id``)."""

    code: str
    approve: bool
    identity: Identity


class ApprovalOutcome(Frozen):
    accepted: bool  # False: unknown, expired, answered or not theirs (all look the same)


class ApprovalDecision(Frozen):
    approved: bool
    timed_out: bool = False


class PushRequest(Versioned):
    idempotency_key: str
    run_id: str
    phase: Literal["echo", "response", "approval"]
    address: ReplyAddress
    text: str
    created_at: datetime
    max_age_s: float
    policy: DeliveryPolicy
    skip_parts: int = 0  # parts of a split message already delivered by an earlier attempt
    attempts_before: int = 0  # attempts made before this activity (the local first attempt)
    live_message: str | None = None  # the agent's live message at this address (AgentReply)


class PushResult(Frozen):
    attempts: int = 1
    platform_message_ids: list[str] = Field(default_factory=list)


class Identity(Frozen):
    """One account of a person on one channel, with where to reach it and its own session."""

    channel: str
    user_id: str
    address: ReplyAddress
    session_id: str

    def same_account(self, other: Identity) -> bool:
        return (self.channel, self.user_id) == (other.channel, other.user_id)


class LinkingPolicy(Frozen):
    """How accounts are linked; ``[linking]`` in the configuration is this model."""

    enabled: bool = True
    code_ttl_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    # Histories recorded before the field took its setting's name carry ``direct_only``.
    require_approval: bool = Field(
        default=True,
        validation_alias=AliasChoices("require_approval", "direct_only"),
        description="hand out link codes only in a direct message, where the account's owner "
        "approves the link; a /link in a group is answered with a pointer to the DM",
    )


class LinkCode(Frozen):
    """A new link code as the workflow sees it: its hash (the challenge's id) and the reply
    that shows it to the person; the code itself is in no other field."""

    code_hash: str
    reply_text: str | None = None
    code: str | None = None  # only in histories recorded before the code moved into the reply


class LinkStart(Versioned):
    tenant: str
    initiator: Identity
    ttl_s: float


class LinkConfirm(Versioned):
    tenant: str
    identity: Identity
    code_hash: str | None = None  # hashed by the gateway from the "/link CODE" it received
    code: str | None = None  # only in histories recorded before codes were hashed at the door


class SessionLinks(Frozen):
    """A session's links: whom it forwards to, and which accounts joined it."""

    alias_of: str | None = None
    linked: list[Identity] = Field(default_factory=list)


class SessionContact(SessionLinks):
    """Where a session's person can be reached: their home conversation (where they last
    wrote from), the channel they used last, and the accounts linked to them."""

    home: Identity | None = None
    active_channel: str | None = None


class LinkOutcome(Frozen):
    linked: bool
    initiator: Identity | None = None


class RedeliveryInput(Versioned):
    run_id: str
    destination: str


class RedeliveryResult(Frozen):
    """A replay's outcome, also read by whoever shows the closed run it replayed (the run can
    no longer be told)."""

    destination: str
    state: DeliveryState
    reason: str | None = None
    attempts: int | None = None  # None in results recorded before runs closed
    updated_at: datetime | None = None


class MessageInput(Versioned):
    """One proactive message (``POST /v1/messages``): no agent step, only delivery.

    ``origin`` is where the message goes by default (the address given, or the person's home
    conversation as their session recorded it); ``accounts`` and ``active_channel`` are the
    session's, for ``active`` and ``all_linked``. Resolved in the workflow like a run's reply."""

    message_id: str  # the workflow id, ``message/{tenant}/{key}``
    tenant: str
    caller: str  # the ``[messages].api_keys`` name that sent it
    text: str = Field(min_length=1, max_length=100_000)
    origin: ReplyAddress
    target: ResponseTarget = Field(default_factory=ResponseTarget)
    accounts: list[Identity] = Field(default_factory=list)
    active_channel: str | None = None
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    max_fanout: int = Field(default=8, ge=1)
    continuation_s: float = Field(default=86400.0, gt=0)


class CheckInTo(Frozen):
    """Whom a check-in reaches: a person by their user id on a channel, in the conversation
    given or (without one) the home conversation their session records when it fires."""

    channel: str
    user_id: str
    conversation_id: str | None = None
    thread_id: str | None = None


class CheckInInput(Versioned):
    """A scheduled check-in (``POST /v1/schedules``), the fixed input of every firing.

    The prompt is content: it is encrypted with every payload and shown by no listing."""

    public_id: str  # ``sch_…``; the schedule is ``schedule/{tenant}/{public_id}``
    tenant: str
    caller: str  # the ``[messages].api_keys`` name that created it
    prompt: str = Field(min_length=1, max_length=100_000)
    to: CheckInTo
    max_age_s: float = Field(default=3600.0, gt=0)  # a firing not submitted by then is dropped


class CheckInFiring(Versioned):
    """One firing of a check-in, as the workflow hands it to the submitting activity."""

    check_in: CheckInInput
    message_key: str  # from the schedule id and the firing's scheduled time
    fired_at: datetime


CheckInOutcome = Literal[
    "submitted", "duplicate", "busy", "queue_full", "recipient_not_found", "channel_unavailable"
]


class CheckInResult(Frozen):
    """What one firing did; ``GET /v1/schedules`` shows the last one's ``outcome``."""

    outcome: CheckInOutcome
    run_id: str | None = None


class CheckInQuery(Versioned):
    """``/schedules`` or ``/unschedule ID`` from one account: the check-ins that reach the
    person (found by their keyed identity hash), or the one of them with ``public_id``."""

    owner: Identity
    public_id: str | None = None


class CheckInSummary(Frozen):
    """One check-in as its person sees it: metadata only, never the prompt."""

    id: str
    spec: dict[str, str | int] = Field(default_factory=dict)
    next_at: datetime | None = None
    paused: bool = False


class CheckInListing(Frozen):
    check_ins: list[CheckInSummary] = Field(default_factory=list)


class CheckInRemoved(Frozen):
    deleted: bool  # False: unknown, or someone else's (both look the same)
