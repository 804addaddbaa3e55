"""Load and soak test over loopback: ``python -m scripts.load_test [--requests 2000] [--soak 10000]``.

1. load: ``--clients`` (16) concurrent clients send ``--requests`` (2 000) 4 s WEBM/Opus chunks;
2. soak: then ``--soak`` (10 000) more, in blocks of ``--block`` requests, sampling the server's
   resident memory after each block.

It passes (exit 0) when no request failed (any answer but 200 counts, 503 ``server_busy``
included) and the server's RSS grew by less than ``--max-rss-growth-mib`` over the soak. Starts
its own server (``uvicorn api.main:app`` on 127.0.0.1, default settings unless ``--server-env``),
or tests a running one with ``--url`` (and ``--pid`` for its memory). Bounded: it stops by itself
after ``--max-seconds``. Writes a JSON report with ``--output``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from scripts.benchmark import (
    RunResult,
    Server,
    emit,
    load_average,
    make_audio,
    memory_kib,
    percentiles,
    run_clients,
)


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
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_before": load_average(),
                    "clients": args.clients, "server_env": dict(item.split("=", 1) for item in args.server_env)}

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
