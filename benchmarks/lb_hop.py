"""What one proxy hop costs on this machine, and how much of it is ceems_lb's own work.

A backend that answers every request with the same JSON body, at once or after a delay (as a
TSDB computing a query would), is timed directly, through a forward-only proxy (bytes copied
between two sockets on uvloop, no HTTP at all) and through the real `ceems_lb` (the same
authorised range query each time, ownership from a real store). Each path's p50 over
interleaved rounds, the latency added by each proxy, and the LB's CPU per request (from
/proc) are printed for each delay.

It separates what a Python proxy costs by itself from what the machine charges for a process
that sleeps between the request and the answer: on the project's VM an idle vCPU halts, and
the LB's code then runs with cold caches (docs/performance.md, ceems_lb).

    .venv/bin/python benchmarks/lb_hop.py [--rounds 1500] [--delays 0,2] [--size 1000]
                                          [--pause-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httptools
import httpx
from _records import Figure, add_json_option, write_json
from lb_overhead import (
    CLIENT_HEADERS,
    CLUSTER,
    CPU,
    USER,
    build_store,
    free_port,
    start_lb,
    timed,
)


class _Backend(asyncio.Protocol):
    """Answers each request with `body`, `delay_s` after it arrived."""

    def __init__(self, answer: bytes, delay_s: float) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, self.transport.write, self.answer)
        else:
            self.transport.write(self.answer)


class _Relay(asyncio.Protocol):
    """One side of a forward-only proxy: what it reads, the other side writes."""

    def __init__(self, peer: _Relay | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


def serve_backend(port: int, delay_ms: float, size: int) -> None:
    body = b'{"status":"success","data":"' + b"x" * max(0, size - 30) + b'"}'
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    answer = head % len(body) + body

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Backend(answer, delay_ms / 1000), "127.0.0.1", port
        )
        await server.serve_forever()

    _run(main())


def serve_relay(port: int, backend: int) -> None:
    async def accepted(client: _Relay) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: _Relay(client), "127.0.0.1", backend)
        client.peer = upstream
        for data in client.early:
            upstream.transport.write(data)  # type: ignore[union-attr]
        client.early.clear()

    def make() -> _Relay:
        client = _Relay()
        asyncio.get_running_loop().create_task(accepted(client))
        return client

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", port)
        await server.serve_forever()

    _run(main())


def _run(main: object) -> None:
    import uvloop

    uvloop.run(main)  # type: ignore[arg-type]


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def measure(
    delay_ms: float, size: int, rounds: int, work: Path, pause_ms: float = 0.0
) -> list[Figure]:
    backend_port, relay_port = free_port(), free_port()
    me = [sys.executable, __file__]
    children = [
        subprocess.Popen([*me, "--serve-backend", str(backend_port), str(delay_ms), str(size)]),
        subprocess.Popen([*me, "--serve-relay", str(relay_port), str(backend_port)]),
    ]
    lb = None
    try:
        backend = f"http://127.0.0.1:{backend_port}"
        wait_for(backend)
        wait_for(f"http://127.0.0.1:{relay_port}")
        lb, lb_url = start_lb(work, f"lb-{delay_ms:g}", backend, "60s")
        identity = {"X-Grafana-User": USER, "X-Ceems-Cluster-Id": CLUSTER, **CLIENT_HEADERS}
        clients = {
            "direct": httpx.Client(base_url=backend, headers=CLIENT_HEADERS),
            "forward-only proxy": httpx.Client(
                base_url=f"http://127.0.0.1:{relay_port}", headers=CLIENT_HEADERS
            ),
            "ceems_lb": httpx.Client(base_url=lb_url, headers=identity),
        }
        request = (
            "/api/v1/query_range",
            {"query": f'rate({CPU}{{uuid="7"}}[1m])', "start": "0", "end": "3600", "step": "15"},
        )
        for client in clients.values():
            for _ in range(50):
                timed(client, request)
        times: dict[str, list[float]] = {name: [] for name in clients}
        lb_cpu = 0.0
        for _ in range(rounds):
            for name, client in clients.items():
                if pause_ms:
                    time.sleep(pause_ms / 1000)  # every process idle before the request
                before = cpu_s(lb.pid) if name == "ceems_lb" else 0.0
                times[name].append(timed(client, request))
                if name == "ceems_lb":
                    lb_cpu += cpu_s(lb.pid) - before
        direct = statistics.median(times["direct"])
        print(f"backend answering {size:,} B after {delay_ms:g} ms, client pause {pause_ms:g} ms:")
        where = f"backend answering after {delay_ms:g} ms"
        if pause_ms:
            where += f", client pausing {pause_ms:g} ms"
        detail = f"{size:,}-byte answers, {rounds} rounds interleaved with the direct path"
        figures = []
        for name, samples in times.items():
            p50 = statistics.median(samples)
            added = "" if name == "direct" else f"   added {(p50 - direct) * 1e3:+.3f} ms"
            print(f"  {name:<20} p50 {p50 * 1e3:7.3f} ms{added}")
            if name != "direct":
                figures.append(
                    Figure(
                        f"LB hop: {name} added p50, {where}",
                        (p50 - direct) * 1e3,
                        "ms",
                        detail=detail,
                    )
                )
        per_request = lb_cpu / rounds * 1e3
        print(f"  ceems_lb CPU per request {per_request:.3f} ms (/proc, user + system)")
        cpu = Figure(f"LB hop: ceems_lb CPU per request, {where}", per_request, "ms", detail=detail)
        figures.append(cpu)
        for client in clients.values():
            client.close()
        return figures
    finally:
        if lb is not None:
            lb.terminate()
            lb.wait()
        for child in children:
            child.terminate()
            child.wait()


def delays(text: str) -> list[float]:
    """`--delays`: milliseconds, comma-separated, none negative."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}") from err
    if any(value < 0 or value != value for value in values):
        raise argparse.ArgumentTypeError(f"delays must be >= 0 ms: {text!r}")
    return values


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-backend":
        serve_backend(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-relay":
        serve_relay(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument(
        "--delays", type=delays, default="0,2", help="backend delays in ms, comma-separated"
    )
    parser.add_argument("--size", type=int, default=1000, help="answer body bytes")
    parser.add_argument(
        "--pause-ms", type=float, default=0.0, help="the client sleeps before each request"
    )
    add_json_option(parser)
    args = parser.parse_args()
    figures: list[Figure] = []
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds, interleaved")
    with tempfile.TemporaryDirectory(prefix="ceems-lb-hop-") as tmp:
        work = Path(tmp)
        build_store(work / "store", 100)
        for delay in args.delays:
            figures += measure(delay, args.size, args.rounds, work, args.pause_ms)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    write_json(args.json, "lb_hop", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
