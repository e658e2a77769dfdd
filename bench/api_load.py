"""Latency of GET /api/v1/alerts under an open-loop load, beside a baseline.

Fills a database with alerts (one bulk insert), serves the app as ``dowguard
serve`` does in a child process on loopback, and sends requests from this
process on a fixed schedule, whatever the answers' pace. Latency is counted
from each request's scheduled time, so a server that falls behind shows it.
Each run first loads a trivial authenticated route (``/api/v1/whoami``) at
the same rate: the baseline says what the server, the machine and the
generator cost before the alert list adds its own work.

    python -m bench.api_load [--alerts 100000] [--rate 200] [--seconds 15]
                             [--workers 1] [--postgres postgresql+psycopg2://...]
                             [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, make_url, text

from api.db import WRITE_OPTION
from api.security import VIEWER, create_key
from api.store import SqlStore
from api.tables import AlertRow
from detector.alerts import alert_labels, fingerprint
from ingest.events import Context

logger = logging.getLogger(__name__)

TARGET_P99_MS = 50.0
#: Requests waiting beyond which the generator counts a request as dropped.
MAX_IN_FLIGHT = 256
#: Keep-alive connections the generator sends on.
CONNECTIONS = 32
REQUEST_TIMEOUT_S = 5.0
INSERT_CHUNK = 10_000

KINDS = ("recursion", "cost_spike", "slow_ramp")
SEVERITIES = ("warning", "critical")


@dataclass(slots=True)
class Figures:
    """One pass of load on one route."""

    route: str
    requests: int
    errors: int
    dropped: int
    achieved_rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: CPU the server spent per request: what fits in a core, whatever the
    #: machine's other load does to the latencies.
    server_cpu_ms: float
    #: The machine's 1-minute load average when the pass ended.
    load_avg: float

    @property
    def meets_target(self) -> bool:
        return self.errors == 0 and self.dropped == 0 and self.p99_ms <= TARGET_P99_MS


@dataclass(slots=True)
class Run:
    """The alert list and its baseline, measured one after the other."""

    backend: str
    alerts: int
    workers: int
    fill_s: float
    baseline: Figures
    listing: Figures

    @property
    def p50_ratio(self) -> float:
        return _ratio(self.listing.p50_ms, self.baseline.p50_ms)

    @property
    def p99_ratio(self) -> float:
        return _ratio(self.listing.p99_ms, self.baseline.p99_ms)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "p50_ratio": self.p50_ratio,
            "p99_ratio": self.p99_ratio,
            "target_p99_ms": TARGET_P99_MS,
            "meets_target": self.listing.meets_target,
        }


def _ratio(value: float, base: float) -> float:
    return round(value / base, 2) if base > 0 else float("nan")


def alert_rows(count: int, seed: int = 42) -> Iterator[dict[str, Any]]:
    """Alert rows as the store writes them, over 30 days and 5,000 functions."""
    rng = random.Random(seed)
    start = 1_790_000_000.0
    for i in range(count):
        ctx = Context(
            "aws", f"acct{rng.randrange(20):02d}", "us-east-1", f"fn{i % 5000}", f"v{i}"
        )
        kind = rng.choice(KINDS)
        severity = rng.choice(SEVERITIES)
        starts_at = start + rng.uniform(0, 30 * 86400)
        firing = rng.random() < 0.8
        yield {
            "fingerprint": fingerprint(ctx, kind),
            "kind": kind,
            "severity": severity,
            "status": "firing" if firing else "resolved",
            "labels": alert_labels(ctx, kind) | {"severity": severity},
            "annotations": {"summary": f"{kind} on {ctx.function}"},
            "evidence": {"ratio": round(rng.uniform(2, 40), 2)},
            "cost_usd": round(rng.expovariate(1 / 20), 4),
            "starts_at": starts_at,
            "ends_at": None if firing else starts_at + 600,
            "updated_at": starts_at + 60,
            "last_seq": 2,
            "last_event": "updated" if firing else "resolved",
            "acked_at": starts_at + 120 if rng.random() < 0.1 else None,
            "acked_by": None,
            "resolved_by": None,
            "context_key": "/".join(ctx),
            "provider": ctx.provider,
            "account": ctx.account,
            "region": ctx.region,
            "function": ctx.function,
            "qualifier": ctx.qualifier,
        }


def fill(url: str, count: int) -> tuple[str, float]:
    """Create the schema, insert ``count`` alerts, and return a viewer key."""
    store = SqlStore(url)
    store.ensure_schema()
    started = time.perf_counter()
    with store.engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        batch: list[dict[str, Any]] = []
        for row in alert_rows(count):
            batch.append(row)
            if len(batch) == INSERT_CHUNK:
                conn.execute(insert(AlertRow), batch)
                batch = []
        if batch:
            conn.execute(insert(AlertRow), batch)
    store.optimize()
    if store.engine.dialect.name == "postgresql":
        # Autovacuum would get there; the visibility map makes counts cheap.
        with store.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as conn:
            conn.execute(text("VACUUM ANALYZE alerts"))
    elapsed = time.perf_counter() - started
    key = create_key(store, VIEWER, "bench")
    store.close()
    return key, elapsed


def _serve(url: str, port: int, workers: int) -> None:
    from api.cli import serve
    from dowguard.config import Settings

    settings = Settings(database_url=url, api_port=port)
    serve(settings, workers, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class Server:
    base: str
    pid: int

    def cpu_s(self) -> float:
        """CPU seconds the server's processes (workers too) have used so far."""
        # Limitation: reads /proc, so the CPU figure exists on Linux only.
        return sum(_cpu_s(pid) for pid in _process_tree(self.pid))


def _cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, as /proc lists them now."""
    found = [pid]
    for parent in found:
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                found += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
    return found


@contextmanager
def serving(url: str, workers: int = 1) -> Iterator[Server]:
    """The app on a loopback port in a child process, until the block ends."""
    port = _free_port()
    # A process of its own rather than a multiprocessing child: uvicorn's
    # workers inherit the server's standard input, which such a child lacks.
    code = f"from bench.api_load import _serve; _serve({url!r}, {port}, {workers})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"api server on port {port} did not start")
            time.sleep(0.1)
        yield Server(base, proc.pid)
    finally:
        # SIGTERM lets uvicorn stop its workers before it exits itself.
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: The trivial authenticated route of the baseline pass.
BASELINE_PATH = "/api/v1/whoami"
ALERTS_PATH = "/api/v1/alerts"


def query_mix(base: str, key: str) -> list[dict[str, Any]]:
    """Query strings of the load: first pages, filters, sorts, later pages."""
    mix: list[dict[str, Any]] = [
        {},
        {"state": "open"},
        {"sort": "cost_usd"},
        {"account": "acct07"},
        {"function": "fn123"},
        {"severity": "critical", "kind": "cost_spike"},
        {"state": "resolved", "sort": "cost_usd", "order": "asc"},
        {"since": "2026-10-10T00:00:00Z", "limit": 100},
    ]
    headers = {"Authorization": f"Bearer {key}"}
    for params in ({}, {"sort": "cost_usd"}):
        r = httpx.get(f"{base}{ALERTS_PATH}", params=params, headers=headers)
        r.raise_for_status()
        cursor = r.json()["next_cursor"]
        mix.append(params | {"cursor": cursor})
    return mix


@dataclass(slots=True)
class Shot:
    """One scheduled request: its bytes and when it is due."""

    request: bytes
    due: float


def request_bytes(host: str, path: str, params: dict[str, Any], key: str) -> bytes:
    query = httpx.QueryParams(params)
    target = f"{path}?{query}" if params else path
    return (
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n"
    ).encode()


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length; return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def drive(
    base: str,
    key: str,
    targets: list[tuple[str, dict[str, Any]]],
    rate: float,
    seconds: float,
) -> tuple[list[float], int, int, float]:
    """Send ``rate`` requests/s for ``seconds``; latencies in ms from schedule.

    ``targets`` (path, query) are sent in turn. Raw keep-alive sockets rather
    than an HTTP client library: the generator shares the machine with the
    server, so each request must cost it little.
    """
    url = httpx.URL(base)
    host = f"{url.host}:{url.port}"
    shots = [request_bytes(host, path, params, key) for path, params in targets]
    queue: asyncio.Queue[Shot | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            while (shot := await queue.get()) is not None:
                writer.write(shot.request)
                try:
                    status = await asyncio.wait_for(
                        _read_response(reader), REQUEST_TIMEOUT_S
                    )
                except (TimeoutError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    return
                if status == 200:
                    latencies.append((time.perf_counter() - shot.due) * 1000)
                else:
                    errors += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    total = int(rate * seconds)
    dropped = 0
    sent = 0
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        if queue.qsize() >= MAX_IN_FLIGHT:
            dropped += 1
            continue
        queue.put_nowait(Shot(shots[i % len(shots)], due))
        sent += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    return latencies, errors, dropped, sent / elapsed


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def measure(
    server: Server,
    key: str,
    route: str,
    targets: list[tuple[str, dict[str, Any]]],
    rate: float,
    seconds: float,
) -> Figures:
    """One pass: a short warm-up, then ``seconds`` of load on ``targets``."""
    # First requests pay for caches, compiled statements and connections.
    asyncio.run(drive(server.base, key, targets, rate, 1.0))
    cpu_before = server.cpu_s()
    latencies, errors, dropped, achieved = asyncio.run(
        drive(server.base, key, targets, rate, seconds)
    )
    cpu_used = server.cpu_s() - cpu_before
    latencies.sort()
    answered = max(1, len(latencies) + errors)
    return Figures(
        route=route,
        requests=len(latencies) + errors,
        errors=errors,
        dropped=dropped,
        achieved_rps=round(achieved, 1),
        p50_ms=round(percentile(latencies, 0.50), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(latencies[-1] if latencies else float("nan"), 2),
        server_cpu_ms=round(cpu_used / answered * 1000, 2),
        load_avg=round(os.getloadavg()[0], 2),
    )


def run(
    url: str, backend: str, alerts: int, rate: float, seconds: float, workers: int = 1
) -> Run:
    key, fill_s = fill(url, alerts)
    with serving(url, workers) as server:
        mix = [(ALERTS_PATH, params) for params in query_mix(server.base, key)]
        baseline = measure(
            server, key, BASELINE_PATH, [(BASELINE_PATH, {})], rate, seconds
        )
        listing = measure(server, key, ALERTS_PATH, mix, rate, seconds)
    return Run(backend, alerts, workers, round(fill_s, 2), baseline, listing)


@contextmanager
def scratch_postgres(url: str) -> Iterator[str]:
    """A database of its own on the given server, dropped afterwards."""
    name = f"dowguard_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


COLUMNS = (
    ("backend", 10),
    ("route", 16),
    ("rps", 7),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("max ms", 8),
    ("cpu ms/req", 10),
    ("errors", 6),
    ("dropped", 7),
    ("load", 5),
)


def table(runs: list[Run]) -> str:
    """The figures as a plain-text table, each run's ratios under it."""
    lines = ["  ".join(f"{name:>{width}}" for name, width in COLUMNS)]
    for r in runs:
        for f in (r.baseline, r.listing):
            cells = (
                r.backend,
                f.route,
                f.achieved_rps,
                f.p50_ms,
                f.p99_ms,
                f.max_ms,
                f.server_cpu_ms,
                f.errors,
                f.dropped,
                f.load_avg,
            )
            lines.append(
                "  ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True))
            )
        verdict = "meets" if r.listing.meets_target else "MISSES"
        lines.append(
            f"{r.backend}: {r.alerts} alerts (filled in {r.fill_s} s),"
            f" {r.workers} worker(s); alert list / baseline: p50 x{r.p50_ratio},"
            f" p99 x{r.p99_ratio}; {verdict} p99 <= {TARGET_P99_MS} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--postgres", metavar="URL", help="also bench PostgreSQL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.seconds > 120 or args.rate > 2000:
        parser.error("keep the load bounded: --seconds <= 120, --rate <= 2000")
    if not 1 <= args.workers <= 8:
        parser.error("--workers: 1 to 8")
    logging.basicConfig(level=logging.WARNING)
    runs = []
    common = (args.alerts, args.rate, args.seconds, args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        runs.append(run(url, "sqlite", *common))
    if args.postgres:
        with scratch_postgres(args.postgres) as url:
            runs.append(run(url, "postgresql", *common))
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
    else:
        print(table(runs))
    return 0 if all(r.listing.meets_target for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
