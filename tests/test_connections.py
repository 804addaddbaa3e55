"""Connection limits of the real server (``python -m api.server``), over real loopback sockets.

One server with the shipped models and small limits (200 connections, 2 s header and body
timeouts) serves most tests; the forwarded-header and shutdown tests start servers of their own
without models (``SOUNDSENTRY_DATA_DIR`` empty: /health answers 503, which starts in ~3 s instead of ~10).
Timings are asserted loosely, for a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MAX_CONNECTIONS = 200
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_TIMEOUT_S = 0.5


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m api.server`` on a free loopback port, with ``env`` on top of a clean environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDSENTRY_")}
        self.env = {**base, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                    **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--host", HOST, "--port", str(self.port), "--log-level", "warning",
             "--no-access-log"], cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, want: tuple[int, ...] = (200,), timeout_s: float = 180.0) -> ServerProcess:
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                status = request(self.port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0]
                if status in want:
                    return self
            time.sleep(0.1)
        pytest.fail(f"/health answered {status}, not {want}, within {timeout_s:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self._log.close()


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (Content-Length bodies) from ``sock``: (status, headers, body)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request(port: int, raw: bytes, timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(raw)
        return read_response(sock, timeout_s)


def get(port: int, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    extra = "".join(f"{header}\r\n" for header in headers)
    return request(port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n".encode())


def timed_health(port: int) -> tuple[int, float]:
    start = time.perf_counter()
    status = get(port, "/health")[0]
    return status, time.perf_counter() - start


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (EOF or reset), without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except OSError:
        return True


def wait_closed(sock: socket.socket, timeout_s: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading and dropping anything it sends), or None."""
    start = time.perf_counter()
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.perf_counter() - start


def multipart_head(length: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + (
        b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"SOUNDSENTRY_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "SOUNDSENTRY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "SOUNDSENTRY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "SOUNDSENTRY_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_TIMEOUT_S)}
    process = ServerProcess(env, tmp_path_factory.mktemp("server") / "server.log").start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@contextlib.contextmanager
def modelless_servers(tmp_path: Path, *envs: dict[str, str]) -> Iterator[list[ServerProcess]]:
    """Servers without models (fast to start: /health answers 503), started together."""
    empty = tmp_path / "no-models"
    empty.mkdir(exist_ok=True)
    processes = [ServerProcess({"SOUNDSENTRY_DATA_DIR": str(empty), **env}, tmp_path / f"server{i}.log")
                 for i, env in enumerate(envs)]
    try:
        for process in processes:
            process.start()
        yield [process.wait_ready(want=(200, 503)) for process in processes]
    finally:
        for process in processes:
            process.stop()


# ----------------------------------------------------------------------------- the tests


def test_idle_connections_over_the_cap_do_not_lock_out_new_clients(server: ServerProcess) -> None:
    idle: list[socket.socket] = []
    try:
        for _ in range(2 * MAX_CONNECTIONS):  # request line sent, headers never finished
            sock = socket.create_connection((HOST, server.port), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: idle")
            idle.append(sock)
        status, elapsed = timed_health(server.port)
        assert status == 200
        assert elapsed < 2.0, f"/health took {elapsed:.2f} s behind {len(idle)} idle connections"
        # the oldest idle connections were closed to make room (well before their header timeout)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and sum(map(closed_by_peer, idle[:MAX_CONNECTIONS])) < 0.9 * MAX_CONNECTIONS:
            time.sleep(0.05)
        assert sum(map(closed_by_peer, idle[:MAX_CONNECTIONS])) >= 0.9 * MAX_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()


def test_new_connection_is_refused_when_every_connection_is_busy(server: ServerProcess) -> None:
    busy: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):  # each one a request whose body stalls: in progress, not evictable
            sock = socket.create_connection((HOST, server.port), timeout=5)
            sock.sendall(multipart_head(10_000))
            busy.append(sock)
        time.sleep(0.3)
        status, headers, body = request(server.port, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 503 and headers.get("retry-after") == "1"
        assert json.loads(body)["error_code"] == "server_busy"
        # the stalled bodies time out (408), the connections free up, and /health answers again
        statuses = [read_response(sock, timeout_s=BODY_TIMEOUT_S + 10)[0] for sock in busy]
        assert set(statuses) == {408}
        assert server.wait_ready(timeout_s=5)
    finally:
        for sock in busy:
            sock.close()


def test_huge_header_is_refused_fast_without_slowing_other_clients(server: ServerProcess) -> None:
    refusals: list[tuple[float, bytes]] = []

    def send_huge_headers(times: int) -> None:
        for _ in range(times):
            with socket.create_connection((HOST, server.port), timeout=5) as sock:
                start = time.perf_counter()
                answer = b""
                try:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
                    chunk = b"a" * 65536
                    for _ in range(16 * 1024 * 1024 // len(chunk)):  # 16 MiB of one header
                        sock.sendall(chunk)
                except OSError:
                    pass  # reset by the server
                with contextlib.suppress(OSError):
                    answer = sock.recv(4096)
                refusals.append((time.perf_counter() - start, answer))

    flood = threading.Thread(target=send_huge_headers, args=(5,))
    flood.start()
    health = [timed_health(server.port) for _ in range(5)]
    flood.join(timeout=60)
    assert len(refusals) == 5
    for elapsed, answer in refusals:
        assert elapsed < 1.0, f"a 16 MiB header took {elapsed:.2f} s to refuse"
        assert answer == b"" or answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer[:100]
    assert {status for status, _ in health} == {200}
    assert max(elapsed for _, elapsed in health) < 1.0, health


def test_too_many_header_fields_get_431_json(server: ServerProcess) -> None:
    many = [f"X-Field-{i}: {i}" for i in range(150)]  # the default limit is 100
    status, headers, body = get(server.port, "/health", *many)
    assert status == 431 and headers["connection"] == "close"
    answer = json.loads(body)
    assert answer["error_code"] == "headers_too_large" and "100" in answer["message"]
    assert get(server.port, "/health", *many[:50])[0] == 200
    # a header block over max_header_bytes (64 KiB) that arrives whole gets the same answer
    status, _, body = get(server.port, "/health", "X-Big: " + "a" * 70_000)
    assert status == 431 and json.loads(body)["error_code"] == "headers_too_large"


def test_unfinished_headers_are_dropped_after_the_header_timeout(server: ServerProcess) -> None:
    with socket.create_connection((HOST, server.port)) as partial, \
            socket.create_connection((HOST, server.port)) as silent, \
            socket.create_connection((HOST, server.port)) as trickle:
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        trickle.sendall(b"GET /health HTTP/1.1\r\n")
        start = time.perf_counter()
        while time.perf_counter() - start < HEADER_TIMEOUT_S + 1 and not closed_by_peer(trickle):
            with contextlib.suppress(OSError):
                trickle.sendall(b"X: y\r\n")  # bytes keep coming, the deadline does not move
            time.sleep(0.2)
        for sock in (partial, silent, trickle):
            waited = wait_closed(sock, timeout_s=HEADER_TIMEOUT_S + 8)
            assert waited is not None, "the connection was not closed"
        elapsed = time.perf_counter() - start
        assert HEADER_TIMEOUT_S - 0.5 < elapsed < HEADER_TIMEOUT_S + 8


def test_keep_alive_still_works_and_is_bounded(server: ServerProcess) -> None:
    health = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection((HOST, server.port)) as sock:
        for _ in range(3):  # one connection, several requests
            sock.sendall(health)
            assert read_response(sock)[0] == 200
        waited = wait_closed(sock, timeout_s=HEADER_TIMEOUT_S + 8)
        assert waited is not None and waited < HEADER_TIMEOUT_S, f"idle keep-alive closed after {waited} s"
    with socket.create_connection((HOST, server.port)) as sock:
        sock.sendall(health)
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # the next request starts, and stalls
        waited = wait_closed(sock, timeout_s=HEADER_TIMEOUT_S + 8)
        assert waited is not None and HEADER_TIMEOUT_S - 0.5 < waited, f"closed after {waited} s"


def test_stalled_body_gets_408(server: ServerProcess) -> None:
    with socket.create_connection((HOST, server.port)) as sock:
        sock.sendall(multipart_head(100_000))  # then nothing more
        start = time.perf_counter()
        status, headers, body = read_response(sock, timeout_s=BODY_TIMEOUT_S + 10)
        elapsed = time.perf_counter() - start
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body)["error_code"] == "body_timeout"
        assert BODY_TIMEOUT_S - 0.5 < elapsed < BODY_TIMEOUT_S + 8
        assert wait_closed(sock, timeout_s=5) is not None


def test_forwarded_for_is_honoured_only_from_trusted_proxies(tmp_path: Path) -> None:
    rate = {"SOUNDSENTRY_RATE_LIMIT_PER_MINUTE": "2", "SOUNDSENTRY_RATE_LIMIT_BURST": "2"}
    with modelless_servers(tmp_path, rate, {**rate, "SOUNDSENTRY_TRUSTED_PROXIES": "127.0.0.1"}) as servers:
        default, behind_proxy = servers
        # default: the peer is the client, whatever X-Forwarded-For says
        statuses = [get(default.port, "/info", f"X-Forwarded-For: 10.0.0.{i}")[0] for i in range(1, 4)]
        assert statuses[:2] != [429, 429] and statuses[2] == 429, statuses
        # from a trusted proxy: one bucket per forwarded client
        statuses = [get(behind_proxy.port, "/info", f"X-Forwarded-For: 10.0.1.{i}")[0] for i in range(1, 6)]
        assert 429 not in statuses, statuses
        statuses = [get(behind_proxy.port, "/info", "X-Forwarded-For: 10.0.2.1")[0] for _ in range(3)]
        assert statuses[2] == 429, statuses


def test_sigterm_exits_promptly_while_a_client_trickles_an_upload(tmp_path: Path) -> None:
    with modelless_servers(tmp_path, {}) as (server,):  # default shutdown_timeout_s: 5 s
        stop = threading.Event()
        sock = socket.create_connection((HOST, server.port))

        def trickle() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(multipart_head(1_000_000))
                while not stop.wait(0.5):
                    sock.sendall(b"x" * 100)  # a pause of 0.5 s: well inside the body timeout

        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            time.sleep(1.0)
            assert server.process is not None and server.process.poll() is None
            start = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=30)
            elapsed = time.perf_counter() - start
            assert elapsed < 10.0, f"exit took {elapsed:.1f} s:\n{server.log()}"
            answer = b""
            with contextlib.suppress(OSError):
                sock.settimeout(2)
                answer = sock.recv(4096)
            assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]  # closed, not an internal error
        finally:
            stop.set()
            sock.close()
            thread.join(timeout=5)


def test_no_upload_is_ever_on_disk_even_when_the_server_is_killed(tmp_path: Path) -> None:
    """Uploads over 1 MiB spool to an unlinked temp file and the ffmpeg program reads a memfd: at no
    time, not while receiving, not while decoding, not after SIGKILL, does a file hold the upload."""
    from tests.conftest import run_ffmpeg

    minute = tmp_path / "minute.flac"
    run_ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=7.1", "-t", "60", "-c:a", "flac", str(minute))
    meeting = tmp_path / "meeting.flac"  # 29 min, 8 channels: a few seconds to decode
    run_ffmpeg("-stream_loop", "28", "-i", str(minute), "-c", "copy", str(meeting))
    spool = tmp_path / "spool"
    env = {"SOUNDSENTRY_TMP_DIR": str(spool)}
    spool.mkdir()
    server = ServerProcess(env, tmp_path / "server.log").start()

    def files_on_disk() -> list[str]:
        return [str(path) for path in spool.rglob("*") if path.is_file()]

    try:
        server.wait_ready()
        body = meeting.read_bytes()
        receiving = socket.create_connection((HOST, server.port))
        receiving.sendall(multipart_head(3 * 1024 * 1024) + bytes(1536 * 1024))  # over the 1 MiB in-memory spool
        decoding = socket.create_connection((HOST, server.port))
        head = (b'--b\r\nContent-Disposition: form-data; name="audio"; filename="meeting.flac"\r\n'
                b"Content-Type: audio/flac\r\n\r\n")
        tail = b"\r\n--b--\r\n"
        decoding.sendall(f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         f"Content-Length: {len(head) + len(body) + len(tail)}\r\n\r\n".encode() + head + body + tail)
        time.sleep(1.0)
        assert server.process is not None and server.process.poll() is None
        assert files_on_disk() == [], "an upload sits in a named file"
        server.process.kill()
        server.process.wait(timeout=30)
        assert files_on_disk() == [], "the killed server left an upload behind"
        receiving.close()
        decoding.close()
    finally:
        server.stop()
