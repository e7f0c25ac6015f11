"""Connecting to Temporal the same way from every process."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig

from hosting import search_attributes
from hosting.converter import build_data_converter
from hosting.metrics import WORKER_HISTOGRAM_BUCKETS
from hosting.settings import Settings


async def connect(
    settings: Settings,
    *,
    lazy: bool = False,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    t = settings.temporal
    tls: bool | TLSConfig = t.tls
    if t.tls_client_cert_path and t.tls_client_key_path:
        tls = TLSConfig(
            client_cert=t.tls_client_cert_path.read_bytes(),
            client_private_key=t.tls_client_key_path.read_bytes(),
        )
    return await Client.connect(
        t.address,
        namespace=t.namespace,
        data_converter=build_data_converter(settings.security),
        tls=tls,
        api_key=t.api_key.get_secret_value() if t.api_key else None,
        lazy=lazy,
        runtime=runtime,
        interceptors=interceptors,  # tracing, when [telemetry] turns it on
    )


def metrics_runtime(address: str) -> Runtime | None:
    """A runtime that serves the SDK's metrics, and ours recorded through its meter."""
    if not address:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                counters_total_suffix=True,
                # Our histograms are in seconds; the SDK's default buckets are not.
                histogram_bucket_overrides={
                    name: list(buckets) for name, buckets in WORKER_HISTOGRAM_BUCKETS.items()
                },
            )
        )
    )


class SearchAttributesMissing(RuntimeError):
    pass


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register missing search attributes; say which command to run where that is refused."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    present = set(listed.custom_attributes) | set(listed.system_attributes)
    missing = [k.name for k in search_attributes.ALL if k.name not in present]
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing
                },
            )
        )
    except Exception as exc:  # the server's refusal, e.g. no permission on a cloud namespace
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {namespace} "
            f"--name {name} --type Keyword"
            for name in missing
        )
        raise SearchAttributesMissing(
            f"search attributes {', '.join(missing)} are missing and could not be added "
            f"({type(exc).__name__}); run: {commands}"
        ) from None
    return missing
