"""Chat commands every channel understands (``/link``, ``/unlink``, ``/approve``, ``/deny``,
``/schedules``, ``/unschedule``), parsed purely.

Here, in the core, because the gateway (link codes, refused check-in prompts), the activities
(a check-in prompt made by the agent's tool) and the run workflow must read them alike.
"""

from __future__ import annotations

import re
from typing import Literal, cast

from hosting.models import Frozen

CommandName = Literal["link", "unlink", "approve", "deny", "schedules", "unschedule"]
_COMMAND = re.compile(
    r"^/(link|unlink|approve|deny|schedules|unschedule)(?:@[A-Za-z0-9_]+)?(?:\s+(\S+))?\s*$",
    re.IGNORECASE,
)


class Command(Frozen):
    name: CommandName
    argument: str | None = None


def parse_command(text: str) -> Command | None:
    """``/link``, ``/link CODE``, ``/unlink``, ``/approve CODE``, ``/deny CODE``,
    ``/schedules``, ``/unschedule ID`` (``/cmd@botname`` too); anything else is chat."""
    match = _COMMAND.match(text.strip())
    if not match:
        return None
    name = cast(CommandName, match.group(1).lower())
    return Command(name=name, argument=match.group(2))
