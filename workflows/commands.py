"""Chat commands every channel understands (``/link``, ``/unlink``), parsed purely."""

from __future__ import annotations

import re
from typing import Literal

from hosting.models import Frozen

CommandName = Literal["link", "unlink"]
_COMMAND = re.compile(r"^/(link|unlink)(?:@[A-Za-z0-9_]+)?(?:\s+(\S+))?\s*$", re.IGNORECASE)


class Command(Frozen):
    name: CommandName
    argument: str | None = None


def parse_command(text: str) -> Command | None:
    """``/link``, ``/link CODE``, ``/unlink`` (``/cmd@botname`` too); anything else is chat."""
    match = _COMMAND.match(text.strip())
    if not match:
        return None
    name: CommandName = "link" if match.group(1).lower() == "link" else "unlink"
    return Command(name=name, argument=match.group(2))
