"""The end-to-end floor: a bare client starts one workflow with two trivial activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def floor_step(value: str) -> str:
    return value


@workflow.defn
class FloorWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        first = await workflow.execute_activity(
            floor_step, value, start_to_close_timeout=timedelta(seconds=30)
        )
        return await workflow.execute_activity(
            floor_step, first, start_to_close_timeout=timedelta(seconds=30)
        )
