"""The one data converter that worker, gateway and CLI share."""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from hosting.codec import AesGcmCodec
from hosting.settings import SecuritySettings


def build_data_converter(security: SecuritySettings) -> DataConverter:
    """Pydantic payloads, encrypted with AES-GCM, with failure messages encrypted too."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=AesGcmCodec(security.codec_key_pairs()),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
