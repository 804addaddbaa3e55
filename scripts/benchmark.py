"""Benchmark the real service over loopback: ``python -m scripts.benchmark [--quick] [--output FILE]``.

Starts ``python -m api.server`` on 127.0.0.1 (a free port) as a subprocess, with the default
settings unless ``--server-env NAME=VALUE`` says otherwise, and measures:

- start-up: seconds from launch until ``GET /health`` answers 200;
- latency of a 4 s WEBM/Opus chunk at 32 kb/s (espeak-ng speech, like the browser extension's
  ``audio-chunk.webm``) through ``POST /predict``, one client: p50/p95/p99, and the median of each
  stage the report times (``timings_ms``: decode, vad, segmentation, tkan);
- throughput (chunks/s) with 1, 4 and 16 concurrent clients, and their latencies and errors;
- real-time factor (processing time / audio duration) on 60 s and 10 min recordings of
  alternating espeak-ng voices, with and without diarization;
- peak RSS of the server process (``VmHWM`` from /proc, or psutil when installed);
- ``GET /metrics`` after the load: scrape latency (client side), server CPU per scrape, size and series;
- after the server stops, each scorer's cost on the 4 s chunk in this process, on one thread, the ones
  the shipped fusion does not compute included (TKAN), and what ``api.observability`` adds to a request
  (request id, metrics, JSON access line), timed in process around a bare ASGI app.

``--observability`` runs only the last two parts about metrics and logs (a short warm-up of chunks first,
so the series exist): about a minute.

Writes a JSON report (``--output``) and prints a table. Every phase is bounded in requests and
time; everything stays on the loopback interface. Needs espeak-ng, ffmpeg and httpx
(requirements-dev.txt). Run it niced on a shared machine: ``nice -n 10 .venv/bin/python -m scripts.benchmark``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from soundsentry.constants import SAMPLE_RATE

REPO = Path(__file__).resolve().parent.parent
CHUNK_S = 4.0
SENTENCES = (
    ("en-us+m3", 30, "Good morning, could we talk about the schedule for next week before the meeting starts?"),
    ("en-us+f4", 70, "Of course, I think Tuesday afternoon works well for me, and Wednesday is also free."),
    ("en-us+m3", 30, "Great, then let us book the small meeting room at three and invite the whole team."),
    ("en-us+f4", 70, "Perfect, I will send everyone an invitation this evening with the agenda attached."),
    ("en-us+m3", 30, "Please remind them to bring the quarterly figures and the draft of the new budget."),
    ("en-us+f4", 70, "I will, and I will also ask the design team to show the latest version of the product."),
)


# ----------------------------------------------------------------------------- small helpers


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=float)
    return {"n": int(array.size), "mean": round(float(array.mean()), 2),
            **{f"p{q}": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)},
            "max": round(float(array.max()), 2)}


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def memory_kib(pid: int) -> dict[str, int]:
    """``rss`` and ``peak`` (high-water mark) resident memory of ``pid``, KiB."""
    try:
        import psutil  # optional

        info = psutil.Process(pid).memory_info()
        peak = getattr(info, "peak_wset", None) or _proc_status(pid).get("VmHWM", info.rss // 1024)
        return {"rss": info.rss // 1024, "peak": int(peak)}
    except ImportError:
        status = _proc_status(pid)
        return {"rss": status.get("VmRSS", 0), "peak": status.get("VmHWM", 0)}


def _proc_status(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its reaped children (the ffmpeg fallback), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ----------------------------------------------------------------------------- test audio


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed; install it (apt-get install {name}) to run the benchmark")
    return path


def _ffmpeg(*args: str) -> None:
    subprocess.run([_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _speak(text: str, voice: str, pitch: int, out: Path) -> np.ndarray:
    raw = out.with_suffix(".espeak.wav")
    subprocess.run([_tool("espeak-ng"), "-v", voice, "-p", str(pitch), "-s", "160", "-w", str(raw), text],
                   check=True, capture_output=True)
    _ffmpeg("-i", str(raw), "-ar", str(SAMPLE_RATE), "-ac", "1", "-f", "f32le", str(out))
    samples = np.fromfile(out, dtype="<f4")
    loud = np.flatnonzero(np.abs(samples) > 1e-3)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples


def _encode_webm(samples: np.ndarray, out: Path, bitrate: str = "32k") -> bytes:
    raw = out.with_suffix(".f32")
    samples.astype("<f4").tofile(raw)
    _ffmpeg("-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(raw),
            "-ar", "48000", "-c:a", "libopus", "-b:a", bitrate, "-f", "webm", str(out))
    raw.unlink()
    return out.read_bytes()


@dataclass
class BenchAudio:
    chunk: bytes  # 4 s WEBM/Opus, 32 kb/s
    long: dict[float, bytes] = field(default_factory=dict)  # duration_s -> WEBM/Opus


def make_audio(work_dir: Path, long_durations_s: Sequence[float]) -> BenchAudio:
    """The 4 s chunk and the long recordings (alternating voices, 0.4 s pauses), made with espeak-ng."""
    pause = np.zeros(int(0.4 * SAMPLE_RATE), dtype=np.float32)
    turns = []
    for index, (voice, pitch, text) in enumerate(SENTENCES):
        turns += [_speak(text, voice, pitch, work_dir / f"turn{index}.f32"), pause]
    dialogue = np.concatenate(turns)
    chunk = _encode_webm(dialogue[: int(CHUNK_S * SAMPLE_RATE)], work_dir / "audio-chunk.webm")
    audio = BenchAudio(chunk=chunk)
    for duration in long_durations_s:
        repeats = int(np.ceil(duration * SAMPLE_RATE / dialogue.size))
        samples = np.tile(dialogue, repeats)[: int(duration * SAMPLE_RATE)]
        audio.long[duration] = _encode_webm(samples, work_dir / f"long-{duration:g}s.webm")
    return audio


# ----------------------------------------------------------------------------- the server


class Server:
    """``python -m api.server`` (uvicorn with the service's connection limits) on 127.0.0.1:<free port>,
    as a child process (stopped on exit)."""

    def __init__(self, env: dict[str, str], log_path: Path, startup_timeout_s: float = 300.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        base = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDSENTRY_")}
        self.env = {**base, "PYTHONPATH": str(REPO), **env}
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> Server:
        command = [sys.executable, "-m", "api.server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--log-level", "warning", "--no-access-log"]
        self._log = self.log_path.open("wb")
        start = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = start + self.startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        self.startup_s = time.perf_counter() - start
                        return self
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"/health did not answer 200 within {self.startup_timeout_s:g} s; see {self.log_path}")

    def cpu_s(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def memory(self) -> dict[str, int]:
        assert self.process is not None
        return memory_kib(self.process.pid)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# ----------------------------------------------------------------------------- clients


@dataclass
class RunResult:
    clients: int
    requests: int
    wall_s: float
    latencies_ms: list[float]
    server_ms: list[float]
    stages_ms: dict[str, list[float]]
    statuses: Counter[int | str]

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def summary(self) -> dict:
        return {
            "clients": self.clients, "requests": self.requests, "wall_s": round(self.wall_s, 2),
            "throughput_per_s": round(self.requests / self.wall_s, 2) if self.wall_s else None,
            "errors": self.errors, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": percentiles(self.latencies_ms), "server_processing_ms": percentiles(self.server_ms),
            "stages_median_ms": {name: round(statistics.median(v), 2) for name, v in sorted(self.stages_ms.items())},
        }


def run_clients(url: str, payload: bytes, *, clients: int, requests: int, max_seconds: float,
                filename: str = "audio-chunk.webm", use_diarization: bool = False, timeout_s: float = 120.0,
                headers: dict[str, str] | None = None) -> RunResult:
    """``clients`` threads, each with its own keep-alive connection, send ``requests`` in all."""
    lock = threading.Lock()
    remaining = [requests]
    latencies: list[float] = []
    server_ms: list[float] = []
    statuses: Counter[int | str] = Counter()
    stages: dict[str, list[float]] = {}
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        with httpx.Client(timeout=timeout_s, headers=headers) as client:
            while time.perf_counter() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                response: httpx.Response | None = None
                status: int | str
                try:
                    response = client.post(f"{url}/predict", files={"audio": (filename, payload, "audio/webm")},
                                           data={"use_diarization": str(use_diarization).lower()})
                    status = response.status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                elapsed_ms = (time.perf_counter() - start) * 1000
                with lock:
                    statuses[status] += 1
                    if response is not None and status == 200:
                        body = response.json()
                        latencies.append(elapsed_ms)
                        server_ms.append(body["processing_time_ms"])
                        for name, value in body["timings_ms"].items():
                            stages.setdefault(name, []).append(value)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - start
    done = sum(statuses.values())
    return RunResult(clients, done, wall_s, latencies, server_ms, stages, statuses)


# ----------------------------------------------------------------------------- the benchmark


def _per_request(server: Server, cpu_start: float, result: RunResult) -> float | None:
    """Server CPU milliseconds per request in a phase: what the work costs, whatever else the machine runs."""
    return round((server.cpu_s() - cpu_start) * 1000 / result.requests, 1) if result.requests else None


def benchmark(args: argparse.Namespace) -> dict:
    server_env = dict(item.split("=", 1) for item in args.server_env)
    report: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit(), "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else None, "python": platform.python_version(), "platform": platform.platform()},
        "load_average_before": load_average(), "server_env": server_env,
    }
    with tempfile.TemporaryDirectory(prefix="soundsentry-bench-") as tmp:
        work = Path(tmp)
        emit("making test audio (espeak-ng + ffmpeg) ...")
        audio = make_audio(work, args.long_durations)
        report["audio"] = {"chunk_bytes": len(audio.chunk),
                           "long_bytes": {f"{d:g}s": len(b) for d, b in audio.long.items()}}
        with Server(server_env, Path(args.server_log) if args.server_log else work / "server.log") as server:
            report["startup_s"] = round(server.startup_s or 0.0, 2)
            report["memory_after_startup_kib"] = server.memory()
            emit(f"server up on {server.url} in {server.startup_s:.2f} s")
            with httpx.Client(timeout=10) as client:
                report["server_info"] = {k: v for k, v in client.get(f"{server.url}/info").json().items()
                                         if k in ("models", "limits", "capacity")}
            run_clients(server.url, audio.chunk, clients=1, requests=args.warmup, max_seconds=120)  # warm-up
            with httpx.Client(timeout=60) as client:
                sample_report = client.post(f"{server.url}/predict",
                                            files={"audio": ("audio-chunk.webm", audio.chunk, "audio/webm")}).json()
            if args.observability:
                return observability_only(args, report, server, audio, sample_report)
            if args.sessions:
                return sessions_only(args, report, server, audio)

            emit(f"latency: {args.requests} chunks, one client ...")
            cpu_start = server.cpu_s()
            single = run_clients(server.url, audio.chunk, clients=1, requests=args.requests,
                                 max_seconds=args.max_phase_s)
            report["latency_single_client"] = single.summary()
            report["latency_single_client"]["server_cpu_ms_per_request"] = _per_request(server, cpu_start, single)

            report["throughput"] = []
            for clients in args.concurrency:
                total = max(args.throughput_requests, clients * 4)
                emit(f"throughput: {total} chunks, {clients} client(s) ...")
                cpu_start = server.cpu_s()
                result = run_clients(server.url, audio.chunk, clients=clients, requests=total,
                                     max_seconds=args.max_phase_s)
                row = result.summary()
                row["server_cpu_ms_per_request"] = _per_request(server, cpu_start, result)
                report["throughput"].append(row)

            report["real_time_factor"] = []
            for duration, data in audio.long.items():
                for diarize in (False, True):
                    if diarize and duration > args.max_diarization_s:
                        continue
                    emit(f"real-time factor: {duration:g} s, diarization={diarize} ...")
                    result = run_clients(server.url, data, clients=1, requests=args.long_repeats,
                                         max_seconds=args.max_phase_s, filename=f"long-{duration:g}s.webm",
                                         use_diarization=diarize, timeout_s=900)
                    summary = result.summary()
                    entry = {"audio_s": duration, "use_diarization": diarize, "requests": result.requests,
                             "errors": result.errors, "statuses": summary["statuses"]}
                    if result.server_ms:
                        entry.update({
                            "processing_ms_median": round(statistics.median(result.server_ms), 1),
                            "rtf": round(statistics.median(result.server_ms) / 1000 / duration, 4),
                            "rtf_client": round(statistics.median(result.latencies_ms) / 1000 / duration, 4),
                            "stages_median_ms": summary["stages_median_ms"],
                        })
                    report["real_time_factor"].append(entry)
            emit(f"metrics: {args.scrapes} scrapes of /metrics ...")
            report["metrics_scrape"] = time_scrapes(server, args.scrapes)
            report["memory_end_kib"] = server.memory()
        emit(f"observability overhead: {args.overhead_requests} requests in process ...")
        report["observability_overhead_us"] = observability_overhead(args.overhead_requests, sample_report)
        emit(f"scorer costs: the 4 s chunk, in process, one thread, median of {args.scorer_repeats} ...")
        report["scorer_costs_ms"] = scorer_costs(audio.chunk, args.scorer_repeats)
    report["load_average_after"] = load_average()
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report


def time_scrapes(server: Server, scrapes: int) -> dict:
    """``scrapes`` GETs of /metrics on one keep-alive connection: client-side ms, server CPU ms per scrape, and
    the size of the exposition."""
    latencies = []
    with httpx.Client(timeout=10) as client:
        client.get(f"{server.url}/metrics")
        cpu_start = server.cpu_s()
        for _ in range(scrapes):
            start = time.perf_counter()
            response = client.get(f"{server.url}/metrics")
            latencies.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
        cpu_ms = (server.cpu_s() - cpu_start) * 1000 / scrapes
    text = response.text
    return {"latency_ms": percentiles(latencies), "server_cpu_ms_per_scrape": round(cpu_ms, 2),
            "bytes": len(text.encode()), "samples": sum(1 for line in text.splitlines() if not line.startswith("#"))}


def observability_overhead(requests: int, sample_report: dict, rounds: int = 5) -> dict[str, float]:
    """Microseconds per request that ``api.observability`` adds, in this process: its middleware (request id,
    the metrics, the JSON access line written to /dev/null) around a bare ASGI app, against the bare app,
    plus what ``/predict`` adds per report (stage and verdict metrics, the line's summary). Best of
    ``rounds`` rounds of ``requests`` each, so other load on the machine counts as little as possible."""
    import asyncio
    import logging

    from api.observability import ACCESS_LOGGER, ObservabilityMiddleware, ServiceMetrics, report_summary

    class Route:
        path = "/predict"

    async def bare(scope: dict, receive: object, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        return None

    def scope() -> dict:
        return {"type": "http", "method": "POST", "path": "/predict", "client": ("127.0.0.1", 50000),
                "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data")], "route": Route,
                "state": {}}

    metrics = ServiceMetrics()
    access = logging.getLogger(ACCESS_LOGGER)
    saved = access.level, access.propagate, list(access.handlers)
    devnull = open(os.devnull, "w")  # closed below
    access.handlers[:] = [logging.StreamHandler(devnull)]
    access.setLevel(logging.INFO)
    access.propagate = False
    wrapped = ObservabilityMiddleware(bare, metrics)

    async def per_request_us(app) -> float:
        start = time.perf_counter()
        for _ in range(requests):
            await app(scope(), receive, send)
        return (time.perf_counter() - start) / requests * 1e6

    async def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"bare": [], "middleware": [], "report": []}
        for _ in range(rounds):
            times["bare"].append(await per_request_us(bare))
            times["middleware"].append(await per_request_us(wrapped))
            start = time.perf_counter()
            for _ in range(requests):
                metrics.observe_report(sample_report)
                report_summary(sample_report, None)
            times["report"].append((time.perf_counter() - start) / requests * 1e6)
        return times

    try:
        times = asyncio.run(measure())
    finally:
        access.setLevel(saved[0])
        access.propagate = saved[1]
        access.handlers[:] = saved[2]
        devnull.close()
    bare_us, wrapped_us, report_us = min(times["bare"]), min(times["middleware"]), min(times["report"])
    return {"bare_app_us": round(bare_us, 2), "with_middleware_us": round(wrapped_us, 2),
            "middleware_added_us": round(wrapped_us - bare_us, 2), "per_report_us": round(report_us, 2),
            "total_added_per_prediction_us": round(wrapped_us - bare_us + report_us, 2)}


def observability_only(args: argparse.Namespace, report: dict, server: Server, audio: BenchAudio,
                       sample_report: dict) -> dict:
    """``--observability``: chunks through /predict (so the series exist), then the scrapes; after the server
    stops, the in-process overhead."""
    emit(f"observability: {args.requests} chunks, one client, then {args.scrapes} scrapes ...")
    single = run_clients(server.url, audio.chunk, clients=1, requests=args.requests, max_seconds=args.max_phase_s)
    report["latency_single_client"] = single.summary()
    report["metrics_scrape"] = time_scrapes(server, args.scrapes)
    server.__exit__(None, None, None)
    report["observability_overhead_us"] = observability_overhead(args.overhead_requests, sample_report)
    report["load_average_after"] = load_average()
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report


def sessions_only(args: argparse.Namespace, report: dict, server: Server, audio: BenchAudio) -> dict:
    """``--sessions``: the chunk through a session against /predict (alternating, one client, the same
    chunk), then ``--open-sessions`` sessions with one chunk each (the server's RSS before and after, and
    the sessions gauge), then a wait past the TTL: expired sessions are dropped."""
    files = {"audio": ("audio-chunk.webm", audio.chunk, "audio/webm")}
    timings: dict[str, list[float]] = {"predict": [], "session_chunk": []}
    server_ms: dict[str, list[float]] = {"predict": [], "session_chunk": []}
    emit(f"sessions: {args.requests} chunks through /predict and {args.requests} through one session, alternating ...")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        session_id = client.post("/sessions").json()["session_id"]
        for _ in range(args.requests):
            for name, path in (("predict", "/predict"), ("session_chunk", f"/sessions/{session_id}/chunks")):
                start = time.perf_counter()
                answer = client.post(path, files=files)
                timings[name].append((time.perf_counter() - start) * 1000)
                body = answer.json()
                server_ms[name].append((body.get("chunk") or body)["processing_time_ms"])
        report["session_latency_ms"] = {
            name: {"client": percentiles(timings[name]), "server_processing": percentiles(server_ms[name])}
            for name in timings
        }
        report["session_latency_ms"]["speaker_embedding_ms_last"] = body["chunk"]["timings_ms"].get("speaker_embedding")

        def open_gauge() -> float | None:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith("soundsentry_sessions_open "):
                    return float(line.split()[1])
            return None

        emit(f"sessions: {args.open_sessions} sessions with one chunk each ...")
        before = server.memory()
        start = time.perf_counter()
        for _ in range(args.open_sessions):
            opened = client.post("/sessions").json()["session_id"]
            client.post(f"/sessions/{opened}/chunks", files=files).raise_for_status()
        report["open_sessions"] = {
            "sessions": args.open_sessions, "seconds": round(time.perf_counter() - start, 1),
            "rss_kib_before": before.get("rss"), "rss_kib_after": server.memory().get("rss"),
            "gauge_after": open_gauge(),
        }
        ttl = float(report["server_env"]["SOUNDSENTRY_SESSION_TTL_S"])
        emit(f"sessions: waiting {ttl + 2:g} s, past the TTL ...")
        time.sleep(ttl + 2)
        report["open_sessions"]["gauge_after_ttl"] = open_gauge()
        report["open_sessions"]["rss_kib_after_ttl"] = server.memory().get("rss")
    report["load_average_after"] = load_average()
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report


def print_sessions(report: dict) -> None:
    latency, opened = report["session_latency_ms"], report["open_sessions"]
    for name in ("predict", "session_chunk"):
        row = latency[name]
        emit(f"{name:14s} client p50 {row['client'].get('p50')} ms p95 {row['client'].get('p95')} ms; "
             f"server p50 {row['server_processing'].get('p50')} ms")
    emit(f"speaker embedding (last chunk): {latency['speaker_embedding_ms_last']} ms")
    per_session = (opened["rss_kib_after"] - opened["rss_kib_before"]) / opened["sessions"]
    emit(f"{opened['sessions']} open sessions in {opened['seconds']} s: RSS {opened['rss_kib_before'] / 1024:.0f} -> "
         f"{opened['rss_kib_after'] / 1024:.0f} MiB ({per_session:.1f} KiB per session), gauge "
         f"{opened['gauge_after']:g}; past the TTL: gauge {opened['gauge_after_ttl']:g}, RSS "
         f"{opened['rss_kib_after_ttl'] / 1024:.0f} MiB")


def print_observability(report: dict) -> None:
    scrape, overhead = report["metrics_scrape"], report["observability_overhead_us"]
    lat = scrape["latency_ms"]
    emit(f"GET /metrics ({scrape['bytes']} bytes, {scrape['samples']} samples): p50 {lat.get('p50')} ms, "
         f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms, server CPU {scrape['server_cpu_ms_per_scrape']} ms "
         "per scrape (target <= 10 ms)")
    emit(f"observability per request: middleware +{overhead['middleware_added_us']} us (bare app "
         f"{overhead['bare_app_us']} us), per report +{overhead['per_report_us']} us: "
         f"{overhead['total_added_per_prediction_us']} us per prediction (target <= 1000 us)")


def scorer_costs(chunk: bytes, repeats: int) -> dict[str, float]:
    """Median wall ms of each scorer of ``data/`` on the decoded chunk as one segment, in this process on one
    torch thread, whether or not the shipped fusion computes it: TKAN (speaker network + top-k reduction +
    MLP), the CNN-Transformer (all its networks) and the flatness scorer. The issue's budget for TKAN +
    CNN-Transformer on a 4 s chunk is 40 ms."""
    import torch

    from soundsentry.audio import decode_audio
    from soundsentry.detector import DEFAULT_DATA_DIR
    from soundsentry.scorers import REGISTRY, load_member
    from soundsentry.speech.segments import ScoringSegment

    torch.set_num_threads(1)
    samples = decode_audio(chunk, filename="audio-chunk.webm").samples
    segment = [ScoringSegment("SPEAKER_00", 0.0, samples.size / SAMPLE_RATE)]
    members = {name: load_member(name, DEFAULT_DATA_DIR) for name in REGISTRY}
    scorers = {name: functools.partial(scorer.score, samples, segment) for name, scorer in members.items()}
    costs = {}
    for name, run in scorers.items():
        for _ in range(3):  # warm-up: first calls allocate and, for TorchScript, optimise
            run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000)
        costs[name] = round(statistics.median(times), 2)
    costs["tkan+cnn"] = round(costs["tkan"] + costs["cnn"], 2)
    return costs


def print_table(report: dict) -> None:
    emit()
    emit(f"load average before {report['load_average_before']}  after {report['load_average_after']}  "
         f"(cpus {report['machine']['cpus']})")
    emit(f"start-up until /health 200: {report['startup_s']:.2f} s")
    single = report["latency_single_client"]
    lat = single["latency_ms"]
    emit(f"4 s chunk, 1 client, {single['requests']} requests: p50 {lat.get('p50')} ms  p95 {lat.get('p95')} ms  "
         f"p99 {lat.get('p99')} ms  (server p50 {single['server_processing_ms'].get('p50')} ms, errors "
         f"{single['errors']})")
    emit("  stage medians (ms): " + ", ".join(f"{k} {v}" for k, v in single["stages_median_ms"].items()))
    emit(f"  server CPU per request: {single['server_cpu_ms_per_request']} ms")
    emit()
    emit(f"{'clients':>8} {'requests':>9} {'chunks/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} "
         f"{'cpu ms/req':>10}")
    for row in report["throughput"]:
        lat = row["latency_ms"]
        emit(f"{row['clients']:>8} {row['requests']:>9} {row['throughput_per_s']:>9} {lat.get('p50', '-'):>8} "
             f"{lat.get('p95', '-'):>8} {lat.get('p99', '-'):>8} {row['errors']:>7} "
             f"{row['server_cpu_ms_per_request']:>10}")
    emit()
    emit(f"{'audio':>8} {'diarize':>8} {'server ms':>10} {'RTF':>8}  stages (ms)")
    for row in report["real_time_factor"]:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in row.get("stages_median_ms", {}).items())
        emit(f"{row['audio_s']:>7g}s {str(row['use_diarization']):>8} {row.get('processing_ms_median', '-'):>10} "
             f"{row.get('rtf', '-'):>8}  {stages or row['statuses']}")
    emit()
    print_observability(report)
    emit()
    mem = report["memory_end_kib"]
    emit(f"server memory: after start-up {report['memory_after_startup_kib']['rss'] / 1024:.0f} MiB, "
         f"at the end {mem['rss'] / 1024:.0f} MiB, peak {mem['peak'] / 1024:.0f} MiB")
    emit("scorer costs, 4 s chunk, one thread (ms): "
         + ", ".join(f"{k} {v}" for k, v in report["scorer_costs_ms"].items()) + " (budget: tkan+cnn 40)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (few requests, 60 s file only)")
    parser.add_argument("--output", type=Path, help="write the JSON report here")
    parser.add_argument("--requests", type=int, default=200, help="single-client latency requests")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--throughput-requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--long-durations", type=lambda s: [float(x) for x in s.split(",")], default=[60.0, 600.0],
                        help="seconds of the long recordings (real-time factor)")
    parser.add_argument("--long-repeats", type=int, default=1, help="requests per long recording and mode")
    parser.add_argument("--max-diarization-s", type=float, default=1800.0, help="skip diarization above this")
    parser.add_argument("--max-phase-s", type=float, default=600.0, help="time bound of each phase")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="settings for the server, e.g. SOUNDSENTRY_TORCH_THREADS=1 (repeatable)")
    parser.add_argument("--server-log", help="keep the server's log here")
    parser.add_argument("--scorer-repeats", type=int, default=60, help="timed calls of each scorer, in process")
    parser.add_argument("--scrapes", type=int, default=200, help="timed GET /metrics after the load")
    parser.add_argument("--overhead-requests", type=int, default=20000,
                        help="requests per round of the in-process observability timing")
    parser.add_argument("--observability", action="store_true",
                        help="only the metrics scrape and the observability overhead (after --requests chunks)")
    parser.add_argument("--sessions", action="store_true",
                        help="only the session chunk against /predict, --open-sessions sessions and their expiry")
    parser.add_argument("--open-sessions", type=int, default=1000, help="sessions opened by --sessions")
    args = parser.parse_args(argv)
    if args.sessions:
        args.long_durations = []
        if not any(item.startswith("SOUNDSENTRY_SESSION_TTL_S=") for item in args.server_env):
            args.server_env.append("SOUNDSENTRY_SESSION_TTL_S=60")
    if args.quick:
        args.requests, args.warmup, args.throughput_requests, args.scorer_repeats = 20, 2, 24, 5
        args.concurrency, args.long_durations = [1, 4], [60.0]
    if args.observability:
        args.long_durations = []
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = benchmark(args)
    if args.observability:
        print_observability(report)
    elif args.sessions:
        print_sessions(report)
    else:
        print_table(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
        emit(f"report written to {args.output}")
    if args.sessions:
        return 0
    failed = report["latency_single_client"]["errors"] + sum(row["errors"] for row in report.get("throughput", []))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
