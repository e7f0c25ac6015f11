"""Chat commands every channel understands, as the run workflow reads them.

The parser is pure and lives in :mod:`hosting.commands`, so the gateway and the activities
(which may not import workflows) read a message exactly as the run does.
"""

from __future__ import annotations

from hosting.commands import Command, CommandName, parse_command

__all__ = ["Command", "CommandName", "parse_command"]
