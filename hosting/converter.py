"""The one data converter that worker, gateway and CLI share."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

from hosting.codec import AesGcmCodec
from hosting.settings import SecuritySettings


@functools.lru_cache(maxsize=1024)
def _adapter(type_hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_hint)


class _SharedAdapterJSONConverter(PydanticJSONPlainPayloadConverter):
    """Pydantic JSON whose type adapters are cached once per process.

    The SDK builds a new payload converter for every serialization context (each workflow
    command), so a per-converter cache starts empty each time and every payload would build its
    validator schema again: that was the largest share of the worker's CPU per message.
    """

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        hint: Any = type_hint if type_hint is not None else Any
        try:
            adapter = _adapter(hint)
        except TypeError:  # an unhashable hint cannot be cached
            adapter = TypeAdapter(hint)
        return adapter.validate_json(payload.data)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default encodings, with pydantic JSON in place of plain JSON."""

    def __init__(self) -> None:
        json = _SharedAdapterJSONConverter()
        super().__init__(
            *(
                json if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


def build_data_converter(security: SecuritySettings) -> DataConverter:
    """Pydantic payloads, encrypted with AES-GCM, with failure messages encrypted too."""
    return DataConverter(
        payload_converter_class=PayloadConverter,
        payload_codec=AesGcmCodec(security.codec_key_pairs()),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
