"""The worker registers missing search attributes itself on a server that allows it."""

from __future__ import annotations

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from hosting import search_attributes as sa
from hosting.temporal_client import ensure_search_attributes
from tests.support import temporal_bin


async def test_missing_search_attributes_are_added_once() -> None:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=temporal_bin("temporal"))
    try:
        added = await ensure_search_attributes(env.client, "default")
        assert sorted(added) == sorted(k.name for k in sa.ALL)
        listed = await env.client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        assert {k.name for k in sa.ALL} <= set(listed.custom_attributes)
        assert await ensure_search_attributes(env.client, "default") == []
    finally:
        await env.shutdown()
