"""A bench-only workflow that fans one reply out with the product's delivery code.

The delivery policy is an argument (``bench.fanout.configured_policy`` reads it from the
stack's ``[delivery]`` section), so the bench measures what the configuration does."""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hosting.models import DeliveryPolicy, PushRequest, ReplyAddress
    from workflows.delivery import push_with_retries


@workflow.defn
class FanoutWorkflow:
    @workflow.run
    async def run(self, destinations: int, policy: DeliveryPolicy) -> int:
        now = workflow.now()
        pushes = [
            PushRequest(
                idempotency_key=f"{workflow.info().workflow_id}:{i}:response",
                run_id=workflow.info().workflow_id,
                phase="response",
                address=ReplyAddress(channel="webhook", user_id=f"u{i}", conversation_id=f"c{i}"),
                text="fan-out",
                created_at=now,
                max_age_s=300,
                policy=policy,
            )
            for i in range(destinations)
        ]
        await asyncio.gather(*(push_with_retries(p) for p in pushes))
        return destinations
