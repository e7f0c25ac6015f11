"""``switchboard``: one command-line tool for developers and operators.

Operator commands show metadata (statuses, delivery states, counts, hashes), never message
content, so support can work without reading anyone's messages. With ``--json`` each prints
one JSON document on stdout instead, holding the same information.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from channels.catalog import load_settings
from hosting.settings import ConfigError, Settings

if TYPE_CHECKING:
    from temporalio.client import Client


class CommandError(Exception):
    """Ends a command with ``switchboard: <message>`` on stderr (or as the JSON ``error``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Report:
    """What a command found: a JSON document, the same as text lines, and the exit code.

    ``error`` goes to stderr in text mode and into the document's ``error`` with ``--json``."""

    doc: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    code: int = 0
    error: str | None = None


def emit(report: Report, as_json: bool) -> int:
    if as_json:
        doc: dict[str, Any] = {"ok": report.code == 0, **report.doc}
        if report.error:
            doc["error"] = report.error.removeprefix("switchboard: ")
        print(json.dumps(doc, indent=2, default=str))
    else:
        for line in report.lines:
            print(line)
        if report.error:
            print(report.error, file=sys.stderr)
    return report.code


def _load_settings() -> Settings:
    # Locally, the configuration `switchboard dev` generated is the natural default.
    dev_config = Path(".data/switchboard.toml")
    user_config = Path("switchboard.toml")
    if (
        not os.environ.get("SWITCHBOARD_CONFIG")
        and not user_config.is_file()
        and dev_config.is_file()
    ):
        os.environ["SWITCHBOARD_CONFIG"] = str(dev_config)
    return load_settings()


def _settings(require_keys: bool = True) -> Settings:
    try:
        settings = _load_settings()
        if require_keys:
            settings.require_keys()
        return settings
    except ConfigError as exc:
        raise CommandError(f"configuration error: {exc}") from None


def _run(coro: Coroutine[Any, Any, Report]) -> Report:
    """Run one command's coroutine; a refusal from Temporal ends it with the server's words."""
    from temporalio.service import RPCError

    try:
        return asyncio.run(coro)
    except RPCError as exc:
        status = exc.status.name if exc.status else "error"
        raise CommandError(f"Temporal answered {status}: {exc.message[:200]}") from None


async def _client(settings: Settings) -> Client:
    from hosting.temporal_client import connect

    try:
        return await connect(settings)
    except RuntimeError:  # the SDK's "Failed client connect: ..." (long, and not for users)
        raise CommandError(
            f"cannot connect to Temporal at {settings.temporal.address} "
            "(`switchboard doctor` says why)"
        ) from None


def cmd_dev(args: argparse.Namespace) -> Report:
    from cli.devstack import run_dev

    return Report(code=asyncio.run(run_dev()))


def cmd_check_config(args: argparse.Namespace) -> Report:
    from channels.registry import build_registry
    from hosting.policy import check_policy

    settings = _settings()
    try:
        registry = build_registry(settings)
        check_policy(settings)
    except ConfigError as exc:
        raise CommandError(f"configuration error: {exc}") from None
    t = settings.temporal
    key_ids = [k for k, _ in settings.security.codec_key_pairs()]
    doc = {
        "temporal": {"address": t.address, "namespace": t.namespace, "task_queue": t.task_queue},
        "gateway": {"public_url": settings.gateway.public_url},
        "agent": {"kind": settings.agent.kind},
        "channels": registry.names(),
        "codec_keys": key_ids,
    }
    lines = [
        "configuration ok",
        f"  temporal   {t.address}  namespace={t.namespace}  task_queue={t.task_queue}",
        f"  gateway    {settings.gateway.public_url}",
        f"  agent      {settings.agent.kind}",
        f"  channels   {', '.join(registry.names()) or '(none)'}",
        f"  codec keys {', '.join(key_ids)}",
    ]
    return Report(doc, lines)


def cmd_doctor(args: argparse.Namespace) -> Report:
    from cli.doctor import diagnose, failed

    checks = asyncio.run(diagnose(_load_settings, timeout_s=args.timeout))
    counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
    width = max(len(c.name) for c in checks)
    lines = [f"{c.status:<4}  {c.name:<{width}}  {c.detail}" for c in checks]
    lines.append(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    doc = {"checks": [c.as_dict() for c in checks], "counts": counts}
    return Report(doc, lines, code=1 if failed(checks) else 0)


def cmd_send(args: argparse.Namespace) -> Report:
    from cli.devstack import send_message

    return Report(code=asyncio.run(send_message(_settings(), args.text, args.user, args.wait)))


async def _show_run(settings: Settings, run_id: str) -> Report:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    from routes.watch import closed_view
    from workflows.run import AgentRunWorkflow

    client = await _client(settings)
    handle = client.get_workflow_handle(run_id)
    try:
        desc = await handle.describe()
        # Open: its query; closed: its result with later replays laid over it (no worker).
        view = (
            await handle.query(AgentRunWorkflow.view)
            if desc.status == WorkflowExecutionStatus.RUNNING
            else await closed_view(client, run_id)
        )
    except RPCError as exc:
        return Report({"run_id": run_id}, code=1, error=f"switchboard: {run_id}: {exc.message}")
    if view is None:  # deleted between the two calls
        return Report({"run_id": run_id}, code=1, error=f"switchboard: {run_id}: not found")
    web_ui = None
    if settings.temporal.ui_url:
        from urllib.parse import quote

        ns = settings.temporal.namespace
        web_ui = f"{settings.temporal.ui_url}/namespaces/{ns}/workflows/{quote(run_id, safe='')}"
    run = {
        "run_id": view.run_id,
        "workflow_status": desc.status.name if desc.status else None,
        "status": view.shown_status,
        "pending_tool": view.pending_tool,
        "channel": view.channel,
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "output_chars": len(view.output_text or ""),
        "error": view.error,
        "deliveries": [
            {
                "destination": d.destination,
                "state": d.state.value,
                "attempts": d.attempts,
                "reason": d.reason,
            }
            for d in view.deliveries
        ],
        "web_ui": web_ui,
    }
    lines = [
        f"run          {view.run_id}",
        f"workflow     {run['workflow_status'] or 'unknown'}",
        f"status       {view.shown_status}"
        + (f" (waiting for approval of {view.pending_tool})" if view.pending_tool else ""),
        f"channel      {view.channel}",
        f"created      {run['created_at']}",
        f"updated      {run['updated_at']}",
        f"output       {run['output_chars']} characters",
    ]
    if view.error:
        lines.append(f"error        {view.error}")
    for d in view.deliveries:
        reason = f" ({d.reason})" if d.reason else ""
        lines.append(
            f"delivery     {d.destination}: {d.state.value}, {d.attempts} attempt(s){reason}"
        )
    if web_ui:
        lines.append(f"web ui       {web_ui}")
    return Report({"run": run}, lines)


def cmd_runs_show(args: argparse.Namespace) -> Report:
    return _run(_show_run(_settings(), args.run_id))


async def _cancel_run(settings: Settings, args: argparse.Namespace) -> Report:
    from cli.operations import session_id_for
    from routes.runs import cancel_run
    from routes.watch import fetch_view

    client = await _client(settings)
    finished = await fetch_view(client, args.run_id)
    if finished is not None and finished.status.finished:
        # Runs close when done: there is nothing left to cancel.
        doc = {"run_id": args.run_id, "status": finished.status.value, "already_finished": True}
        return Report(doc, [f"{args.run_id} already finished: {finished.status.value}"])
    session_id = None
    if args.channel and args.user:
        session_id = session_id_for(
            settings, args.channel, args.user, args.conversation, args.scope
        )
    # The same queue-aware cancel the HTTP routes use: a run still waiting in its session's
    # queue (no workflow yet) is taken out of the queue and ends cancelled.
    cancelled = await cancel_run(client, args.run_id, session_id)
    doc = {"run_id": args.run_id, "session_id": session_id, "cancellation_requested": cancelled}
    if not cancelled:
        hint = (
            "" if session_id else " (a queued run needs --channel and --user to find its session)"
        )
        return Report(doc, code=1, error=f"switchboard: {args.run_id}: no such run{hint}")
    return Report(doc, [f"cancellation requested for {args.run_id}"])


def cmd_runs_cancel(args: argparse.Namespace) -> Report:
    return _run(_cancel_run(_settings(), args))


async def _list_dead_letters(settings: Settings, limit: int) -> Report:
    from temporalio.client import WorkflowExecutionStatus

    from hosting.models import DeliveryState
    from routes.watch import closed_view

    client = await _client(settings)
    query = 'SwitchboardDeliveryState = "dead_letter"'
    runs: list[dict[str, Any]] = []
    async for wf in client.list_workflows(query, limit=limit):
        if wf.workflow_type == "RedeliveryWorkflow":
            continue  # a replay that failed: its run is listed by its own search attribute
        if wf.status != WorkflowExecutionStatus.RUNNING:
            # A closed run's search attribute stays as it closed: a later replay that
            # delivered (its own SwitchboardDeliveryState) took it off the list.
            view = await closed_view(client, wf.id)
            owing = (DeliveryState.DEAD_LETTER, DeliveryState.PENDING)  # pending: a replay runs
            if view is None or all(d.state not in owing for d in view.deliveries):
                continue
        runs.append(
            {
                "run_id": wf.id,
                "started_at": wf.start_time.isoformat(),
                "workflow_status": wf.status.name if wf.status else None,
            }
        )
    lines = [
        f"{r['run_id']}  started={r['started_at']}  workflow={r['workflow_status'] or '?'}"
        for r in runs
    ]
    lines.append(f"{len(runs)} run(s) with dead-lettered deliveries")
    return Report({"runs": runs, "count": len(runs)}, lines)


def cmd_dead_letters_list(args: argparse.Namespace) -> Report:
    return _run(_list_dead_letters(_settings(), args.limit))


async def _replay(settings: Settings, run_id: str, destination: str | None) -> Report:
    from cli.operations import replay_dead_letters

    client = await _client(settings)
    try:
        results = await replay_dead_letters(
            client, settings.temporal.task_queue, run_id, destination
        )
    except LookupError as exc:
        return Report({"run_id": run_id, "results": []}, code=1, error=f"switchboard: {exc}")
    doc: dict[str, Any] = {
        "run_id": run_id,
        "results": [
            {"destination": r.destination, "state": r.state.value, "reason": r.reason}
            for r in results
        ],
    }
    if not results:
        return Report(
            {**doc, "error": "no dead-lettered destination to replay"},
            [f"{run_id}: no dead-lettered destination to replay"],
            code=1,
        )
    lines = [f"{r.destination}: {r.state.value}" + (f" ({r.reason})" if r.reason else "")
             for r in results]  # fmt: skip
    return Report(doc, lines, code=0 if all(r.state == "delivered" for r in results) else 1)


def cmd_dead_letters_replay(args: argparse.Namespace) -> Report:
    return _run(_replay(_settings(), args.run_id, args.destination))


def _add_identity_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--channel", required=required)
    parser.add_argument("--user", required=required, help="the user's id on that channel")
    parser.add_argument("--conversation", help="for per-conversation scopes")
    parser.add_argument(
        "--scope",
        default="per_user",
        choices=["per_user", "per_user_per_conversation", "per_conversation"],
    )


async def _links(settings: Settings, args: argparse.Namespace) -> Report:
    from cli.operations import revoke_links, session_id_for, show_links
    from hosting.ids import identity_hash

    client = await _client(settings)
    session_id = session_id_for(settings, args.channel, args.user, args.conversation, args.scope)
    if args.links_command == "revoke":
        await revoke_links(client, session_id)
        return Report({"session_id": session_id, "revoked": True},
                      [f"links of {session_id} revoked"])  # fmt: skip
    links = await show_links(client, session_id)
    key = settings.security.identity_key_bytes()
    # Hashes, not ids: support sees structure, not identities.
    linked = [
        {"channel": a.channel, "identity_hash": identity_hash(key, a.user_id)} for a in links.linked
    ]
    lines = [f"session      {session_id}", f"alias of     {links.alias_of or '-'}"]
    lines += [f"linked       {a['channel']}  {a['identity_hash']}" for a in linked]
    return Report({"session_id": session_id, "alias_of": links.alias_of, "linked": linked}, lines)


def cmd_links(args: argparse.Namespace) -> Report:
    return _run(_links(_settings(), args))


async def _purge(settings: Settings, args: argparse.Namespace) -> Report:
    from cli.operations import purge_identity, session_id_for

    session_id = session_id_for(settings, args.channel, args.user, args.conversation, args.scope)
    if not args.yes:
        return Report(
            {"session_id": session_id, "deleted": [], "deleted_count": 0},
            code=2,
            error=f"this deletes {session_id} and all its runs; run again with --yes",
        )
    client = await _client(settings)
    deleted = await purge_identity(client, settings, session_id)
    return Report(
        {"session_id": session_id, "deleted": deleted, "deleted_count": len(deleted)},
        [f"deleted {len(deleted)} workflow execution(s)"],
    )


def cmd_purge(args: argparse.Namespace) -> Report:
    return _run(_purge(_settings(), args))


async def _register(settings: Settings, name: str, url: str | None) -> Report:
    import aiohttp

    from channels.base import RegistersWithPlatform
    from channels.registry import build_registry

    channel = build_registry(settings).get(name)
    if channel is None:
        raise CommandError(f"channels.{name} is not configured", code=2)
    if not isinstance(channel, RegistersWithPlatform):
        raise CommandError(f"channel {name!r} is not registered through an API", code=2)
    target = url or f"{settings.gateway.public_url.rstrip('/')}/channels/{name}"
    async with aiohttp.ClientSession() as http:
        ok, detail = await channel.register(http, target)
    return Report(
        {"channel": name, "url": target, "registered": ok, "detail": detail},
        [f"register {name} {target}: {detail}"],
        code=0 if ok else 1,
    )


def cmd_channels_register(args: argparse.Namespace) -> Report:
    settings = _settings()
    try:
        return _run(_register(settings, args.channel, args.url))
    except ConfigError as exc:
        raise CommandError(f"configuration error: {exc}") from None


def cmd_channels_package(args: argparse.Namespace) -> Report:
    from channels.base import BuildsAppPackage
    from channels.registry import build_registry

    settings = _settings()
    try:
        channel = build_registry(settings).get(args.channel)
    except ConfigError as exc:
        raise CommandError(f"configuration error: {exc}") from None
    if not isinstance(channel, BuildsAppPackage):
        raise CommandError(f"channel {args.channel!r} has no app package", code=2)
    out = Path(args.out or f"{args.channel}-app.zip")
    out.write_bytes(channel.app_package(settings.gateway.public_url.rstrip("/")))
    size = out.stat().st_size
    return Report(
        {"channel": args.channel, "path": str(out), "bytes": size},
        [f"wrote {out} ({size} bytes): upload it to the platform"],
    )


def cmd_keys_rotate(args: argparse.Namespace) -> Report:
    from cli.keys import rotate

    return rotate(args)


async def _schedules_list(settings: Settings) -> Report:
    from activities.schedules_store import list_check_ins

    client = await _client(settings)
    found = await list_check_ins(client, settings.gateway.tenant)
    lines = []
    for s in found:
        last = s["last"] or {}
        lines.append(
            f"{s['id']}  caller={s['caller']}  channel={s['channel']}  "
            f"spec={json.dumps(s['spec'])}  next={s['next_at'] or '-'}  "
            f"paused={'yes' if s['paused'] else 'no'}  "
            f"last={last.get('outcome') or last.get('status') or '-'}"
        )
    lines.append(f"{len(found)} schedule(s)")
    return Report({"schedules": found, "count": len(found)}, lines)


def cmd_schedules_list(args: argparse.Namespace) -> Report:
    return _run(_schedules_list(_settings()))


async def _schedules_change(settings: Settings, given: str, change: str) -> Report:
    from activities.schedules_store import apply_change, owned_schedule
    from hosting.checkins import public_id_of

    client = await _client(settings)
    public_id = public_id_of(given)  # ``sch_…`` or the whole ``schedule/{tenant}/sch_…``
    handle = await owned_schedule(client, settings.gateway.tenant, public_id)
    if handle is None:
        return Report({"id": public_id}, code=1, error=f"switchboard: {given}: no such schedule")
    answer = await apply_change(handle, change, note=f"{change} by an operator")
    done = {"delete": "deleted", "pause": "paused", "resume": "resumed"}[change]
    return Report({"id": public_id, **answer}, [f"{public_id}: {done}"])


def cmd_schedules_change(args: argparse.Namespace) -> Report:
    return _run(_schedules_change(_settings(), args.schedule_id, args.schedules_command))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # Every operator command: one JSON document on stdout instead of text.
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print one JSON document (same information)"
    )
    op = [as_json]

    sub.add_parser("dev", help="run everything on the embedded Temporal dev server").set_defaults(
        fn=cmd_dev
    )
    sub.add_parser("check-config", help="validate the configuration", parents=op).set_defaults(
        fn=cmd_check_config
    )
    doctor = sub.add_parser(
        "doctor",
        help="check keys, Temporal and every channel's platform credentials (read-only)",
        parents=op,
    )
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds for each network check")
    doctor.set_defaults(fn=cmd_doctor)
    send = sub.add_parser("send", help="send a signed test message and wait for the reply")
    send.add_argument("text")
    send.add_argument("--user", default="cli-user")
    send.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the reply")
    send.set_defaults(fn=cmd_send)

    runs = sub.add_parser("runs", help="inspect and cancel runs (metadata only)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    show = runs_sub.add_parser("show", help="status and delivery states of one run", parents=op)
    show.add_argument("run_id")
    show.set_defaults(fn=cmd_runs_show)
    cancel = runs_sub.add_parser("cancel", help="cancel a run", parents=op)
    cancel.add_argument("run_id")
    _add_identity_args(cancel, required=False)
    cancel.set_defaults(fn=cmd_runs_cancel)

    dead = sub.add_parser("dead-letters", help="runs whose replies could not be delivered")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True)
    lst = dead_sub.add_parser("list", help="list runs with dead-lettered deliveries", parents=op)
    lst.add_argument("--limit", type=int, default=100)
    lst.set_defaults(fn=cmd_dead_letters_list)
    replay = dead_sub.add_parser(
        "replay", help="deliver a run's dead letters again (same idempotency keys)", parents=op
    )
    replay.add_argument("run_id")
    replay.add_argument("--destination", help="only this destination (a channel name)")
    replay.set_defaults(fn=cmd_dead_letters_replay)

    links = sub.add_parser("links", help="show or revoke an account's links")
    links_sub = links.add_subparsers(dest="links_command", required=True)
    for name, text in (("show", "linked accounts (as hashes)"), ("revoke", "undo every link")):
        p = links_sub.add_parser(name, help=text, parents=op)
        _add_identity_args(p)
        p.set_defaults(fn=cmd_links)

    channels = sub.add_parser("channels", help="channel set-up")
    ch_sub = channels.add_subparsers(dest="channels_command", required=True)
    hook = ch_sub.add_parser(
        "register",
        help="tell a platform the gateway's URL and secret through its API (e.g. setWebhook)",
        parents=op,
    )
    hook.add_argument("channel", help="the channel's name, as in [channels.<name>]")
    hook.add_argument("--url", help="default: gateway.public_url + /channels/<name>")
    hook.set_defaults(fn=cmd_channels_register)
    package = ch_sub.add_parser(
        "package", help="write the app package a platform installs from", parents=op
    )
    package.add_argument("channel", help="the channel's name, as in [channels.<name>]")
    package.add_argument("--out", help="default: <name>-app.zip")
    package.set_defaults(fn=cmd_channels_package)

    purge = sub.add_parser(
        "purge", help="delete everything of one account (session and runs)", parents=op
    )
    _add_identity_args(purge)
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(fn=cmd_purge)

    schedules = sub.add_parser("schedules", help="scheduled check-ins (metadata, no prompts)")
    sched_sub = schedules.add_subparsers(dest="schedules_command", required=True)
    sched_list = sched_sub.add_parser("list", help="every check-in of the tenant", parents=op)
    sched_list.set_defaults(fn=cmd_schedules_list)
    for name, text in (
        ("pause", "stop firing until resumed"),
        ("resume", "fire again"),
        ("delete", "stop for good"),
    ):
        p = sched_sub.add_parser(name, help=text, parents=op)
        p.add_argument("schedule_id", help="sch_… (or schedule/{tenant}/sch_…)")
        p.set_defaults(fn=cmd_schedules_change)

    keys = sub.add_parser("keys", help="key rotation")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate",
        help="print fresh keys and the order to roll them out (writes nothing)",
        parents=op,
    )
    rotate.add_argument("--key-id", help="id of the new codec key (default: k<date><random>)")
    rotate.set_defaults(fn=cmd_keys_rotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report: Report = args.fn(args)
    except CommandError as exc:
        report = Report(code=exc.code, error=f"switchboard: {exc}")
    return emit(report, as_json=getattr(args, "json", False))


if __name__ == "__main__":
    sys.exit(main())
