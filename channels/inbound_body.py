"""Parsing a JSON body into a pydantic model, with a reason that is safe to return."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class PlatformBody(BaseModel):
    """A platform's payload: unknown fields are ignored, because platforms add fields."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class OwnBody(BaseModel):
    """A body in our own format: unknown fields are an error, so typos are caught."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BodyError(ValueError):
    """The body is not what the channel accepts; the message is safe to show the caller."""


def parse_body(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "json_invalid":
            raise BodyError("body is not valid JSON") from None
        raise BodyError(f"{loc}: {err['msg']}") from None
