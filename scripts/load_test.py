"""Load and soak test over loopback: ``python -m scripts.load_test [--requests 2000] [--soak 10000]``.

1. load: ``--clients`` (16) concurrent clients send ``--requests`` (2 000) 4 s WEBM/Opus chunks;
2. soak: then ``--soak`` (10 000) more, in blocks of ``--block`` requests, sampling the server's
   resident memory after each block.

It passes (exit 0) when no request failed (any answer but 200 counts, 503 ``server_busy``
included) and the server's RSS grew by less than ``--max-rss-growth-mib`` over the soak. Starts
its own server (``python -m api.server`` on 127.0.0.1, default settings unless ``--server-env``),
or tests a running one with ``--url`` (and ``--pid`` for its memory). Bounded: it stops by itself
after ``--max-seconds``. Writes a JSON report with ``--output``.

``--abuse`` runs the connection-abuse scenarios instead of load and soak (``python -m
scripts.load_test --abuse``):

a. ``--idle-connections`` (20 000) connections that send a partial request and then nothing, opened
   as fast as the server accepts them (this process raises its own open-file limit to the hard
   limit and opens as many as that allows, saying so); a fresh client's ``GET /health`` is timed
   during and after the flood, and the server's open descriptors counted;
b. ``--huge-header-mib`` (256) MiB of one request header, streamed in 64 KiB pieces (never built in
   memory), back to back for ``--huge-header-seconds`` (5) and ``--huge-header-repeats`` (10) times at
   least: the time until the server refuses each, the server's CPU time, and another client's
   ``/health`` latency meanwhile;
c. a client trickling an upload (1 KiB a second), then SIGTERM to the server: seconds until it exits
   (only for the server this script starts).

It passes when /health kept answering 200 within ``--max-health-s`` (2 s), every huge header was
refused within 1 s, and the server exited within 10 s of SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit

from scripts.benchmark import (
    RunResult,
    Server,
    cpu_seconds,
    emit,
    load_average,
    make_audio,
    memory_kib,
    percentiles,
    run_clients,
)

OWN_FDS = 64  # descriptors this process keeps for itself when opening idle connections


def merge(results: list[RunResult]) -> RunResult:
    """One result for consecutive runs (wall times add up)."""
    stages: dict[str, list[float]] = {}
    for result in results:
        for name, values in result.stages_ms.items():
            stages.setdefault(name, []).extend(values)
    return RunResult(
        clients=max((r.clients for r in results), default=0),
        requests=sum(r.requests for r in results),
        wall_s=sum(r.wall_s for r in results),
        latencies_ms=[x for r in results for x in r.latencies_ms],
        server_ms=[x for r in results for x in r.server_ms],
        stages_ms=stages,
        statuses=sum((r.statuses for r in results), Counter()),
    )


# ----------------------------------------------------------------------------- connection abuse


def raise_own_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; (soft, hard) now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def http_get(host: str, port: int, path: str = "/health", timeout_s: float = 10.0) -> tuple[int | str, float]:
    """(status, or the error's name; seconds) of one GET over a fresh connection."""
    start = time.perf_counter()
    status: int | str
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed without an answer")
                head += chunk
        status = int(head.split()[1])
    except (OSError, ValueError, IndexError) as error:
        status = type(error).__name__
    return status, time.perf_counter() - start


def summarise(samples: Sequence[tuple[int | str, float]]) -> dict:
    latencies = [seconds * 1000 for _, seconds in samples]
    return {"requests": len(samples), "statuses": {str(k): v for k, v in Counter(s for s, _ in samples).items()},
            "latency_ms": percentiles(latencies), "max_ms": round(max(latencies), 1) if latencies else None}


class HealthProbe:
    """A thread timing ``GET /health`` over fresh connections every ``interval_s`` while in the block."""

    def __init__(self, host: str, port: int, interval_s: float) -> None:
        self.host, self.port, self.interval_s = host, port, interval_s
        self.samples: list[tuple[int | str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(http_get(self.host, self.port))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def open_fds(pid: int | None) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd")) if pid else None
    except OSError:
        return None


def closed_by_server(sockets: Sequence[socket.socket]) -> int:
    """How many of ``sockets`` the server has closed (or answered) by now, without blocking."""
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    return len(poller.poll(0))


def idle_flood(host: str, port: int, count: int, pid: int | None) -> dict:
    soft, hard = raise_own_fd_limit()
    target = min(count, soft - OWN_FDS)
    if target < count:
        emit(f"  this process may open {soft} files (hard limit {hard}): opening {target} idle connections, "
             f"not {count}")
    sockets: list[socket.socket] = []
    errors: Counter[str] = Counter()
    server_fds: list[int] = []
    start = time.perf_counter()
    with HealthProbe(host, port, 0.25) as during:
        for index in range(target):
            try:
                sock = socket.create_connection((host, port), timeout=10)
            except OSError as error:
                errors[f"connect: {error.strerror or type(error).__name__}"] += 1
                continue
            sockets.append(sock)
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: idle\r\n")  # and never the rest
            except OSError as error:
                errors[f"send: {error.strerror or type(error).__name__}"] += 1
            if pid and index % 500 == 0:
                server_fds.append(open_fds(pid) or 0)
    open_s = time.perf_counter() - start
    closed = closed_by_server(sockets)
    after = [http_get(host, port) for _ in range(5)]
    server_fds.append(open_fds(pid) or 0)
    for sock in sockets:
        sock.close()
    result = {
        "requested": count, "client_fd_limit": [soft, hard], "opened": len(sockets), "errors": dict(errors),
        "open_s": round(open_s, 2), "closed_by_server_when_done": closed,
        "server_open_fds_max": max(server_fds) if pid else None, "health_during": summarise(during.samples),
        "health_after": summarise(after),
    }
    emit(f"  idle flood: {len(sockets)} connections opened in {open_s:.1f} s ({dict(errors) or 'no errors'}); "
         f"{closed} already closed by the server; server fds max {result['server_open_fds_max']}; /health after: "
         f"{result['health_after']['statuses']}, max {result['health_after']['max_ms']} ms; during: "
         f"{result['health_during']['statuses']}, p50 {result['health_during']['latency_ms'].get('p50')} ms, max "
         f"{result['health_during']['max_ms']} ms")
    return result


def huge_header(host: str, port: int, mib: int, repeats: int, min_seconds: float, pid: int | None) -> dict:
    """``repeats`` attempts at least, back to back for ``min_seconds`` at least."""
    piece = b"a" * 65536
    attempts: list[dict] = []
    cpu_start = cpu_seconds(pid) if pid else None
    until = time.perf_counter() + min_seconds
    with HealthProbe(host, port, 0.05) as during:
        while len(attempts) < repeats or time.perf_counter() < until:
            sent, answer = 0, b""
            start = time.perf_counter()
            with socket.create_connection((host, port), timeout=30) as sock:
                try:
                    sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Huge: ".encode())
                    for _ in range(mib * 1024 * 1024 // len(piece)):
                        sock.sendall(piece)
                        sent += len(piece)
                except OSError:
                    pass  # the server closed (reset) the connection
                with contextlib.suppress(OSError):
                    answer = sock.recv(4096)
            elapsed = time.perf_counter() - start
            outcome = answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else "closed"
            attempts.append({"refused_after_s": round(elapsed, 4), "bytes_sent_before": sent, "answer": outcome})
    server_cpu_s = round(cpu_seconds(pid) - cpu_start, 2) if pid and cpu_start is not None else None
    result = {"mib": mib, "attempts": len(attempts), "answers": dict(Counter(a["answer"] for a in attempts)),
              "refusal_ms": percentiles([a["refused_after_s"] * 1000 for a in attempts]),
              "bytes_sent_before_refusal_max": max(a["bytes_sent_before"] for a in attempts),
              "max_refusal_s": max(a["refused_after_s"] for a in attempts),
              "server_cpu_s": server_cpu_s, "health_during": summarise(during.samples)}
    emit(f"  huge header: {len(attempts)} x {mib} MiB refused within {result['max_refusal_s'] * 1000:.1f} ms at most "
         f"({result['answers']}), server CPU {server_cpu_s} s; /health meanwhile: "
         f"{result['health_during']['statuses']}, max {result['health_during']['max_ms']} ms")
    return result


def sigterm_while_trickling(server: Server) -> dict:
    assert server.process is not None
    host, port = "127.0.0.1", server.port
    stop = threading.Event()
    sent = [0]
    sock = socket.create_connection((host, port), timeout=10)

    def trickle() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 52428800\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"audio\"; "
                         b"filename=\"a.wav\"\r\n\r\n")
            while not stop.wait(1.0):
                sock.sendall(b"x" * 1024)
                sent[0] += 1024

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    time.sleep(2.0)
    start = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):  # reported below; the Server context kills it
        server.process.wait(timeout=60)
    elapsed = time.perf_counter() - start
    stop.set()
    sock.close()
    thread.join(timeout=5)
    result = {"exit_s": round(elapsed, 2), "returncode": server.process.returncode, "trickled_bytes": sent[0]}
    emit(f"  SIGTERM while a client trickles an upload: exited after {elapsed:.2f} s "
         f"(return code {server.process.returncode})")
    return result


def abuse(args: argparse.Namespace, report: dict) -> bool:
    with tempfile.TemporaryDirectory(prefix="soundsentry-abuse-") as tmp:
        server_context = nullcontext(None) if args.url else Server(report["server_env"], Path(tmp) / "server.log")
        with server_context as server:
            url = args.url or server.url
            parts = urlsplit(url)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
            pid = args.pid if server is None or server.process is None else server.process.pid
            emit(f"abuse: against {url} (server pid {pid})")
            report["idle_flood"] = idle_flood(host, port, args.idle_connections, pid)
            time.sleep(1.0)
            report["huge_header"] = huge_header(host, port, args.huge_header_mib, args.huge_header_repeats,
                                                args.huge_header_seconds, pid)
            if server is not None:
                report["sigterm"] = sigterm_while_trickling(server)
                server_log = Path(tmp) / "server.log"
                report["server_log_tail"] = server_log.read_text(errors="replace")[-3000:]
    flood, header = report["idle_flood"], report["huge_header"]
    checks = {
        "health_after_idle_flood": set(flood["health_after"]["statuses"]) == {"200"}
        and flood["health_after"]["max_ms"] <= args.max_health_s * 1000,
        "huge_header_refused_within_1s": header["max_refusal_s"] < 1.0,
        "health_during_huge_header": set(header["health_during"]["statuses"]) == {"200"}
        and header["health_during"]["max_ms"] <= args.max_health_s * 1000,
    }
    if "sigterm" in report:
        checks["sigterm_exit_within_10s"] = report["sigterm"]["exit_s"] < 10.0
    report["checks"] = checks
    return all(checks.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="requests in the load phase")
    parser.add_argument("--soak", type=int, default=10_000, help="requests in the soak phase (0: none)")
    parser.add_argument("--block", type=int, default=500, help="requests between progress lines and memory samples")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long, in all")
    parser.add_argument("--max-rss-growth-mib", type=float, default=150.0)
    parser.add_argument("--url", help="test this running server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for its memory")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--abuse", action="store_true", help="the connection-abuse scenarios instead of load and soak")
    parser.add_argument("--idle-connections", type=int, default=20_000)
    parser.add_argument("--huge-header-mib", type=int, default=256)
    parser.add_argument("--huge-header-repeats", type=int, default=10, help="attempts, at least")
    parser.add_argument("--huge-header-seconds", type=float, default=5.0, help="attempts go on for this long, at least")
    parser.add_argument("--max-health-s", type=float, default=2.0, help="--abuse: slowest acceptable /health")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_before": load_average(),
                    "clients": args.clients, "server_env": dict(item.split("=", 1) for item in args.server_env)}
    if args.abuse:
        report["passed"] = abuse(args, report)
        report["load_average_after"] = load_average()
        emit(f"checks: {report['checks']}")
        emit("PASSED" if report["passed"] else "FAILED")
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2))
        return 0 if report["passed"] else 1

    with tempfile.TemporaryDirectory(prefix="soundsentry-load-") as tmp:
        chunk = make_audio(Path(tmp), []).chunk
        server_context = nullcontext(None) if args.url else Server(report["server_env"], Path(tmp) / "server.log")
        with server_context as server:
            url: str = args.url or (server.url if server else "")
            pid: int | None = args.pid if server is None or server.process is None else server.process.pid

            def memory() -> dict[str, int]:
                return memory_kib(pid) if pid else {}

            emit(f"load: {args.requests} chunks from {args.clients} clients against {url} ...")
            run_clients(url, chunk, clients=min(4, args.clients), requests=8, max_seconds=120)  # warm-up
            blocks = []
            while sum(b.requests for b in blocks) < args.requests and time.monotonic() < deadline:
                size = min(args.block, args.requests - sum(b.requests for b in blocks))
                blocks.append(run_clients(url, chunk, clients=args.clients, requests=size,
                                          max_seconds=max(1.0, deadline - time.monotonic())))
                emit(f"  load {sum(b.requests for b in blocks)}/{args.requests}: "
                     f"{blocks[-1].requests / blocks[-1].wall_s:.2f} chunks/s, errors {sum(b.errors for b in blocks)}")
                if blocks[-1].requests < size:
                    break
            load = merge(blocks)
            report["load"] = load.summary()
            report["load"]["complete"] = load.requests == args.requests
            emit(f"  {load.requests} done, {load.errors} errors, {report['load']['throughput_per_s']} chunks/s, "
                 f"p50 {report['load']['latency_ms'].get('p50')} ms, p99 {report['load']['latency_ms'].get('p99')} ms")

            soak: dict = {"requests": 0, "errors": 0, "statuses": Counter(), "blocks": [], "latencies_ms": []}
            rss_start = memory()
            soak_start = time.monotonic()
            while soak["requests"] < args.soak and time.monotonic() < deadline:
                size = min(args.block, args.soak - soak["requests"])
                block = run_clients(url, chunk, clients=args.clients, requests=size,
                                    max_seconds=max(1.0, deadline - time.monotonic()))
                soak["requests"] += block.requests
                soak["errors"] += block.errors
                soak["statuses"].update(block.statuses)
                soak["latencies_ms"] += block.latencies_ms
                sample = {"after_requests": soak["requests"],
                          "throughput_per_s": round(block.requests / block.wall_s, 2),
                          "p50_ms": percentiles(block.latencies_ms).get("p50"), "memory_kib": memory(),
                          "load_average": load_average()}
                soak["blocks"].append(sample)
                emit(f"  soak {soak['requests']}/{args.soak}: {sample['throughput_per_s']} chunks/s, p50 "
                     f"{sample['p50_ms']} ms, rss {sample['memory_kib'].get('rss', 0) / 1024:.0f} MiB, errors "
                     f"{soak['errors']}")
                if block.requests < size:
                    break
            rss_end = memory()
            report["soak"] = {
                "requests": soak["requests"], "planned": args.soak, "errors": soak["errors"],
                "wall_s": round(time.monotonic() - soak_start, 1),
                "statuses": {str(k): v for k, v in sorted(soak["statuses"].items())},
                "latency_ms": percentiles(soak["latencies_ms"]), "memory_start_kib": rss_start,
                "memory_end_kib": rss_end, "blocks": soak["blocks"],
            }
    growth_mib = (rss_end.get("rss", 0) - rss_start.get("rss", 0)) / 1024 if rss_start else None
    report["soak"]["rss_growth_mib"] = None if growth_mib is None else round(growth_mib, 1)
    report["load_average_after"] = load_average()
    complete = report["load"]["complete"] and report["soak"]["requests"] == args.soak
    report["passed"] = bool(complete and report["load"]["errors"] == 0 and report["soak"]["errors"] == 0
                            and (growth_mib is None or growth_mib < args.max_rss_growth_mib))
    emit(f"soak: {report['soak']['requests']} requests, {report['soak']['errors']} errors, p50 "
         f"{report['soak']['latency_ms'].get('p50')} ms, p99 {report['soak']['latency_ms'].get('p99')} ms, rss "
         f"{rss_start.get('rss', 0) / 1024:.0f} -> {rss_end.get('rss', 0) / 1024:.0f} MiB (peak "
         f"{rss_end.get('peak', 0) / 1024:.0f} MiB); load average {report['load_average_after']}")
    emit("PASSED" if report["passed"] else "FAILED" + ("" if complete else " (stopped by --max-seconds)"))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
