"""``switchboard``: one command-line tool for developers and operators.

Operator commands show metadata (statuses, delivery states, counts, hashes), never message
content, so support can work without reading anyone's messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from channels.catalog import load_settings
from hosting.settings import ConfigError, Settings


def _settings(require_keys: bool = True) -> Settings:
    # Locally, the configuration `switchboard dev` generated is the natural default.
    dev_config = Path(".data/switchboard.toml")
    user_config = Path("switchboard.toml")
    if (
        not os.environ.get("SWITCHBOARD_CONFIG")
        and not user_config.is_file()
        and dev_config.is_file()
    ):
        os.environ["SWITCHBOARD_CONFIG"] = str(dev_config)
    try:
        settings = load_settings()
        if require_keys:
            settings.require_keys()
        return settings
    except ConfigError as exc:
        sys.exit(f"switchboard: configuration error: {exc}")


def cmd_dev(args: argparse.Namespace) -> int:
    from cli.devstack import run_dev

    return asyncio.run(run_dev())


def cmd_check_config(args: argparse.Namespace) -> int:
    from channels.registry import build_registry
    from hosting.policy import check_policy

    settings = _settings()
    try:
        registry = build_registry(settings)
        check_policy(settings)
    except ConfigError as exc:
        sys.exit(f"switchboard: configuration error: {exc}")
    print("configuration ok")
    print(
        f"  temporal   {settings.temporal.address}  namespace={settings.temporal.namespace}"
        f"  task_queue={settings.temporal.task_queue}"
    )
    print(f"  gateway    {settings.gateway.public_url}")
    print(f"  agent      {settings.agent.kind}")
    print(f"  channels   {', '.join(registry.names()) or '(none)'}")
    print(f"  codec keys {', '.join(k for k, _ in settings.security.codec_key_pairs())}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from cli.devstack import send_message

    return asyncio.run(send_message(_settings(), args.text, args.user, args.wait))


async def _show_run(settings: Settings, run_id: str) -> int:
    from temporalio.service import RPCError

    from hosting.temporal_client import connect
    from workflows.run import AgentRunWorkflow

    client = await connect(settings)
    handle = client.get_workflow_handle(run_id)
    try:
        desc = await handle.describe()
        view = await handle.query(AgentRunWorkflow.view)
    except RPCError as exc:
        print(f"switchboard: {run_id}: {exc.message}", file=sys.stderr)
        return 1
    print(f"run          {view.run_id}")
    print(f"workflow     {desc.status.name if desc.status else 'unknown'}")
    print(f"status       {view.status.value}")
    print(f"channel      {view.channel}")
    print(f"created      {view.created_at.isoformat()}")
    print(f"updated      {view.updated_at.isoformat()}")
    print(f"output       {len(view.output_text or '')} characters")
    if view.error:
        print(f"error        {view.error}")
    for d in view.deliveries:
        reason = f" ({d.reason})" if d.reason else ""
        print(f"delivery     {d.destination}: {d.state.value}, {d.attempts} attempt(s){reason}")
    if settings.temporal.ui_url:
        from urllib.parse import quote

        ns = settings.temporal.namespace
        wid = quote(run_id, safe="")
        print(f"web ui       {settings.temporal.ui_url}/namespaces/{ns}/workflows/{wid}")
    return 0


def cmd_runs_show(args: argparse.Namespace) -> int:
    return asyncio.run(_show_run(_settings(), args.run_id))


async def _cancel_run(settings: Settings, args: argparse.Namespace) -> int:
    from cli.operations import session_id_for
    from hosting.temporal_client import connect
    from routes.runs import cancel_run

    client = await connect(settings)
    session_id = None
    if args.channel and args.user:
        session_id = session_id_for(
            settings, args.channel, args.user, args.conversation, args.scope
        )
    # The same queue-aware cancel the HTTP routes use: a run still waiting in its session's
    # queue (no workflow yet) is taken out of the queue and ends cancelled.
    if not await cancel_run(client, args.run_id, session_id):
        hint = (
            "" if session_id else " (a queued run needs --channel and --user to find its session)"
        )
        print(f"switchboard: {args.run_id}: no such run{hint}", file=sys.stderr)
        return 1
    print(f"cancellation requested for {args.run_id}")
    return 0


def cmd_runs_cancel(args: argparse.Namespace) -> int:
    return asyncio.run(_cancel_run(_settings(), args))


async def _list_dead_letters(settings: Settings, limit: int) -> int:
    from hosting.temporal_client import connect

    client = await connect(settings)
    query = 'SwitchboardDeliveryState = "dead_letter"'
    count = 0
    async for wf in client.list_workflows(query, limit=limit):
        state = wf.status.name if wf.status else "?"
        print(f"{wf.id}  started={wf.start_time.isoformat()}  workflow={state}")
        count += 1
    print(f"{count} run(s) with dead-lettered deliveries")
    return 0


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    return asyncio.run(_list_dead_letters(_settings(), args.limit))


async def _replay(settings: Settings, run_id: str, destination: str | None) -> int:
    from cli.operations import replay_dead_letters
    from hosting.temporal_client import connect

    client = await connect(settings)
    results = await replay_dead_letters(client, settings.temporal.task_queue, run_id, destination)
    if not results:
        print(f"{run_id}: no dead-lettered destination to replay")
        return 1
    for r in results:
        print(f"{r.destination}: {r.state.value}" + (f" ({r.reason})" if r.reason else ""))
    return 0 if all(r.state == "delivered" for r in results) else 1


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    return asyncio.run(_replay(_settings(), args.run_id, args.destination))


def _add_identity_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--channel", required=required)
    parser.add_argument("--user", required=required, help="the user's id on that channel")
    parser.add_argument("--conversation", help="for per-conversation scopes")
    parser.add_argument(
        "--scope",
        default="per_user",
        choices=["per_user", "per_user_per_conversation", "per_conversation"],
    )


async def _links(settings: Settings, args: argparse.Namespace) -> int:
    from cli.operations import revoke_links, session_id_for, show_links
    from hosting.ids import identity_hash
    from hosting.temporal_client import connect

    client = await connect(settings)
    session_id = session_id_for(settings, args.channel, args.user, args.conversation, args.scope)
    if args.links_command == "revoke":
        await revoke_links(client, session_id)
        print(f"links of {session_id} revoked")
        return 0
    links = await show_links(client, session_id)
    key = settings.security.identity_key_bytes()
    print(f"session      {session_id}")
    print(f"alias of     {links.alias_of or '-'}")
    for account in links.linked:  # hashes, not ids: support sees structure, not identities
        print(f"linked       {account.channel}  {identity_hash(key, account.user_id)}")
    return 0


def cmd_links(args: argparse.Namespace) -> int:
    return asyncio.run(_links(_settings(), args))


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    from cli.operations import purge_identity, session_id_for
    from hosting.temporal_client import connect

    client = await connect(settings)
    session_id = session_id_for(settings, args.channel, args.user, args.conversation, args.scope)
    if not args.yes:
        print(f"this deletes {session_id} and all its runs; run again with --yes", file=sys.stderr)
        return 2
    deleted = await purge_identity(client, settings, session_id)
    print(f"deleted {len(deleted)} workflow execution(s)")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    return asyncio.run(_purge(_settings(), args))


async def _register(settings: Settings, name: str, url: str | None) -> int:
    import aiohttp

    from channels.base import RegistersWithPlatform
    from channels.registry import build_registry

    channel = build_registry(settings).get(name)
    if channel is None:
        print(f"switchboard: channels.{name} is not configured", file=sys.stderr)
        return 2
    if not isinstance(channel, RegistersWithPlatform):
        print(f"switchboard: channel {name!r} is not registered through an API", file=sys.stderr)
        return 2
    target = url or f"{settings.gateway.public_url.rstrip('/')}/channels/{name}"
    async with aiohttp.ClientSession() as http:
        ok, detail = await channel.register(http, target)
    print(f"register {name} {target}: {detail}")
    return 0 if ok else 1


def cmd_channels_register(args: argparse.Namespace) -> int:
    return asyncio.run(_register(_settings(), args.channel, args.url))


def cmd_channels_package(args: argparse.Namespace) -> int:
    from channels.base import BuildsAppPackage
    from channels.registry import build_registry

    settings = _settings()
    channel = build_registry(settings).get(args.channel)
    if not isinstance(channel, BuildsAppPackage):
        print(f"switchboard: channel {args.channel!r} has no app package", file=sys.stderr)
        return 2
    out = Path(args.out or f"{args.channel}-app.zip")
    out.write_bytes(channel.app_package(settings.gateway.public_url.rstrip("/")))
    print(f"wrote {out} ({out.stat().st_size} bytes): upload it to the platform")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("dev", help="run everything on the embedded Temporal dev server").set_defaults(
        fn=cmd_dev
    )
    sub.add_parser("check-config", help="validate the configuration").set_defaults(
        fn=cmd_check_config
    )
    send = sub.add_parser("send", help="send a signed test message and wait for the reply")
    send.add_argument("text")
    send.add_argument("--user", default="cli-user")
    send.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the reply")
    send.set_defaults(fn=cmd_send)

    runs = sub.add_parser("runs", help="inspect and cancel runs (metadata only)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    show = runs_sub.add_parser("show", help="status and delivery states of one run")
    show.add_argument("run_id")
    show.set_defaults(fn=cmd_runs_show)
    cancel = runs_sub.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run_id")
    _add_identity_args(cancel, required=False)
    cancel.set_defaults(fn=cmd_runs_cancel)

    dead = sub.add_parser("dead-letters", help="runs whose replies could not be delivered")
    dead_sub = dead.add_subparsers(dest="dead_command", required=True)
    lst = dead_sub.add_parser("list", help="list runs with dead-lettered deliveries")
    lst.add_argument("--limit", type=int, default=100)
    lst.set_defaults(fn=cmd_dead_letters_list)
    replay = dead_sub.add_parser(
        "replay", help="deliver a run's dead letters again (same idempotency keys)"
    )
    replay.add_argument("run_id")
    replay.add_argument("--destination", help="only this destination (a channel name)")
    replay.set_defaults(fn=cmd_dead_letters_replay)

    links = sub.add_parser("links", help="show or revoke an account's links")
    links_sub = links.add_subparsers(dest="links_command", required=True)
    for name, text in (("show", "linked accounts (as hashes)"), ("revoke", "undo every link")):
        p = links_sub.add_parser(name, help=text)
        _add_identity_args(p)
        p.set_defaults(fn=cmd_links)

    channels = sub.add_parser("channels", help="channel set-up")
    ch_sub = channels.add_subparsers(dest="channels_command", required=True)
    hook = ch_sub.add_parser(
        "register",
        help="tell a platform the gateway's URL and secret through its API (e.g. setWebhook)",
    )
    hook.add_argument("channel", help="the channel's name, as in [channels.<name>]")
    hook.add_argument("--url", help="default: gateway.public_url + /channels/<name>")
    hook.set_defaults(fn=cmd_channels_register)
    package = ch_sub.add_parser("package", help="write the app package a platform installs from")
    package.add_argument("channel", help="the channel's name, as in [channels.<name>]")
    package.add_argument("--out", help="default: <name>-app.zip")
    package.set_defaults(fn=cmd_channels_package)

    purge = sub.add_parser("purge", help="delete everything of one account (session and runs)")
    _add_identity_args(purge)
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.set_defaults(fn=cmd_purge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.fn(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
