"""The payload codec: encryption at rest, key rotation, clear errors for unknown keys."""

from __future__ import annotations

import base64
import os

import pytest
from temporalio.api.common.v1 import Payload

from hosting.codec import ENCODING, AesGcmCodec, CodecKeyError
from hosting.converter import build_data_converter
from hosting.models import Turn
from hosting.settings import SecuritySettings


def key(n: int) -> bytes:
    return bytes([n]) * 32


def plain(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


async def test_roundtrip_hides_the_payload_and_names_the_key() -> None:
    codec = AesGcmCodec([("k1", key(1))])
    [enc] = await codec.encode([plain(b'"secret text"')])
    assert enc.metadata["encoding"] == ENCODING
    assert enc.metadata["encryption-key-id"] == b"k1"
    assert b"secret text" not in enc.data
    [dec] = await codec.decode([enc])
    assert dec == plain(b'"secret text"')


async def test_same_payload_encrypts_differently_each_time() -> None:
    codec = AesGcmCodec([("k1", key(1))])
    a, b = await codec.encode([plain(b"x"), plain(b"x")])
    assert a.data != b.data


async def test_rotation_new_key_encrypts_old_key_still_decrypts() -> None:
    old = AesGcmCodec([("k1", key(1))])
    [by_old] = await old.encode([plain(b"1")])
    rotated = AesGcmCodec([("k2", key(2)), ("k1", key(1))])
    [by_new] = await rotated.encode([plain(b"2")])
    assert by_new.metadata["encryption-key-id"] == b"k2"
    assert await rotated.decode([by_old, by_new]) == [plain(b"1"), plain(b"2")]


async def test_unknown_key_id_is_a_clear_error() -> None:
    [enc] = await AesGcmCodec([("gone", key(3))]).encode([plain(b"1")])
    with pytest.raises(CodecKeyError, match="'gone'.*not configured"):
        await AesGcmCodec([("k1", key(1))]).decode([enc])


async def test_tampered_ciphertext_or_key_id_fails_authentication() -> None:
    codec = AesGcmCodec([("k1", key(1)), ("k2", key(2))])
    [enc] = await codec.encode([plain(b"1")])
    flipped = Payload(metadata=dict(enc.metadata), data=enc.data[:-1] + bytes([enc.data[-1] ^ 1]))
    with pytest.raises(CodecKeyError, match="authentication"):
        await codec.decode([flipped])
    relabelled = Payload(metadata={**enc.metadata, "encryption-key-id": b"k2"}, data=enc.data)
    with pytest.raises(CodecKeyError):
        await codec.decode([relabelled])


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = AesGcmCodec([("k1", key(1))])
    assert await codec.decode([plain(b"1")]) == [plain(b"1")]


async def test_data_converter_encrypts_pydantic_models_end_to_end() -> None:
    security = SecuritySettings(
        signing_key=base64.b64encode(os.urandom(32)).decode(),  # type: ignore[arg-type]
        codec_keys=["k1:" + base64.b64encode(key(1)).decode()],  # type: ignore[list-item]
    )
    conv = build_data_converter(security)
    [payload] = await conv.encode([Turn(role="user", text="hello there")])
    assert b"hello there" not in payload.SerializeToString()
    [back] = await conv.decode([payload], [Turn])
    assert back == Turn(role="user", text="hello there")


async def test_unknown_key_id_error_does_not_list_configured_ids() -> None:
    [enc] = await AesGcmCodec([("gone", key(3))]).encode([plain(b"1")])
    with pytest.raises(CodecKeyError) as caught:
        await AesGcmCodec([("k1", key(1)), ("k2", key(2))]).decode([enc])
    assert "k1" not in str(caught.value) and "k2" not in str(caught.value)
