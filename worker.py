"""The Temporal worker: sessions, runs, the agent and every push.

``python worker.py`` runs it against the Temporal server named in ``switchboard.toml``;
run as many as you like on the same task queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

import aiohttp
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.agent import AgentActivities
from activities.agent_backends import build_backend
from activities.delivery import DeliveryActivities
from activities.linking import LinkActivities
from activities.redelivery import RedeliveryActivities
from activities.schedules import CheckInActivities, OwnCheckInActivities
from activities.schedules_tools import check_in_tools
from activities.tools import ToolActivities, ToolRegistry
from channels.catalog import load_settings
from channels.registry import ChannelRegistry, build_registry
from hosting.logs import configure_logging, get_logger
from hosting.metrics import RunMetricsInterceptor
from hosting.settings import ConfigError, Settings
from hosting.telemetry import Tracing, start_tracing
from hosting.temporal_client import (
    SearchAttributesMissing,
    connect,
    ensure_search_attributes,
    metrics_runtime,
)
from routes.schedules import fire_check_in
from workflows.agent_loop import ToolApprovalWorkflow
from workflows.checkin import CheckInWorkflow
from workflows.link import LinkChallengeWorkflow
from workflows.message import ProactiveMessageWorkflow
from workflows.redelivery import RedeliveryWorkflow
from workflows.run import AgentRunWorkflow
from workflows.session import SessionWorkflow

WORKFLOWS = [
    SessionWorkflow,
    AgentRunWorkflow,
    LinkChallengeWorkflow,
    RedeliveryWorkflow,
    ProactiveMessageWorkflow,
    CheckInWorkflow,
    ToolApprovalWorkflow,
]
log = get_logger("switchboard.worker")


def workflow_runner() -> SandboxedWorkflowRunner:
    # Our own modules are passed through: they hold no state of their own, the sandbox still
    # refuses non-deterministic calls made from them, and re-importing the workflow modules for
    # every new run cost about a quarter of the worker's CPU per message (bench/RESULTS.md).
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "hosting",
            "workflows",
            "activities",
            "pydantic",
            "pydantic_core",
            "annotated_types",
        )
    )


@asynccontextmanager
async def build_worker(
    client: Client,
    settings: Settings,
    *,
    registry: ChannelRegistry | None = None,
    task_queue: str | None = None,
) -> AsyncIterator[Worker]:
    """A configured worker with its HTTP session; the caller runs it."""
    registry = registry if registry is not None else build_registry(settings)
    # Imports the tools: a bad one stops start-up here. [schedules] agent_tool adds its own.
    tools = ToolRegistry(settings.agent, check_in_tools(client, settings, registry))
    async with aiohttp.ClientSession() as http:
        agent = AgentActivities(
            build_backend(settings.agent, http, tools),
            client,
            channels=registry,
            http=http,
            progress_every_ms=settings.agent.progress_every_ms,
        )
        delivery = DeliveryActivities(registry, http)
        linking = LinkActivities(client, settings.security.signing_key_bytes())
        redelivery = RedeliveryActivities(client)
        # A check-in enters its session through the gateway's own intake code.
        check_ins = CheckInActivities(partial(fire_check_in, client, settings, registry))
        tool_calls = ToolActivities(tools, client)
        own_check_ins = OwnCheckInActivities(client, settings, registry)
        yield Worker(
            client,
            task_queue=task_queue or settings.temporal.task_queue,
            workflows=WORKFLOWS,
            activities=[
                agent.invoke_agent,
                agent.model_step,
                agent.resume_agent,
                tool_calls.call_tool,
                tool_calls.answer_approval,
                delivery.push_reply,
                linking.new_link_code,
                linking.confirm_link,
                redelivery.load_dead_letter,
                check_ins.submit_check_in,
                own_check_ins.list_own_check_ins,
                own_check_ins.delete_own_check_in,
            ],
            workflow_runner=workflow_runner(),
            # Runs by status and time to first delta; tracing comes with the client.
            interceptors=[RunMetricsInterceptor()],
            graceful_shutdown_timeout=timedelta(seconds=10),
            max_concurrent_activities=settings.worker.max_concurrent_activities,
            max_concurrent_workflow_tasks=settings.worker.max_concurrent_workflow_tasks,
            max_cached_workflows=settings.worker.max_cached_workflows,
            # Heartbeats carry cancellation to a running agent call: send them promptly.
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
        )


async def run(settings: Settings, tracing: Tracing | None = None) -> None:
    registry = build_registry(settings)
    client = await connect(
        settings,
        runtime=metrics_runtime(settings.worker.metrics_address),
        interceptors=[tracing.interceptor()] if tracing is not None else [],
    )
    added = await ensure_search_attributes(client, settings.temporal.namespace)
    if added:
        log.info("registered search attributes", names=added)
    async with build_worker(client, settings, registry=registry) as worker:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "worker started",
            task_queue=settings.temporal.task_queue,
            namespace=settings.temporal.namespace,
            channels=registry.names(),
        )
        async with worker:
            await stop.wait()
            log.info("worker stopping")
    log.info("worker stopped")


def main() -> None:
    try:
        settings = load_settings()
        settings.require_keys()
        build_registry(settings)
        tracing = start_tracing(settings.telemetry, "switchboard-worker")
    except ConfigError as exc:
        sys.exit(f"switchboard worker: configuration error: {exc}")
    configure_logging(settings.gateway.log_format)
    try:
        asyncio.run(run(settings, tracing))
    except ConfigError as exc:
        sys.exit(f"switchboard worker: configuration error: {exc}")
    except SearchAttributesMissing as exc:
        sys.exit(f"switchboard worker: {exc}")
    except RuntimeError as exc:
        if "connect" in str(exc).lower():
            sys.exit(
                f"switchboard worker: cannot reach Temporal at {settings.temporal.address} ({exc})"
            )
        raise
    finally:
        if tracing is not None:
            tracing.shutdown()
    # Stopped cleanly. The SDK's native runtime threads can outlive the event loop and abort
    # the interpreter's teardown (temporalio/sdk-python#300), turning a clean stop into a
    # crash report: nothing is left to clean up, so leave without the teardown.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
