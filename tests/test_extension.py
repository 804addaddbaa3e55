"""The reference browser extension (extension/) in real Chromium against the real server.

Chromium (Debian's, driven by Playwright: tests/browser.py) loads the unpacked extension in a
persistent profile under the test's temp dir, headless: Chromium's ``--headless`` is the new
headless mode, the full browser, where Manifest V3 service workers, offscreen documents and tab
capture all run. ``chrome.tabCapture.getMediaStreamId`` normally needs the user to have invoked the
extension on the tab (the toolbar button's popup), which a headless browser cannot do; Chromium's
``--allowlisted-extension-id`` switch (made for its own tab-capture tests) lifts that for this
extension, so the tests run the SAME path a user's click does: service worker → stream id →
offscreen document → getUserMedia(chromeMediaSource "tab") → recorder.js → the sessions API → badge.
Only the click on the toolbar button is replaced, by calling the function the popup's button
messages (``soundsentry.start(tabId)`` in the service worker).

The tab is a page that this test serves from its own loopback HTTP server: espeak-ng speech, a few
sentences (~10 s), in a looping ``<audio>`` element. The service worker records, for each chunk, when
its POST was sent, when the answer arrived and when the badge was set (``timings`` in
chrome.storage.session); the end-to-end test prints those figures.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import browser_env, chromium_path, private_tmpdir
from tests.conftest import speak
from tests.test_connections import HOST, ServerProcess, free_port, get, modelless_servers, request

REPO = Path(__file__).resolve().parent.parent
EXTENSION = (REPO / "extension").resolve()
SPEECH = ("Good morning everyone. Today we will talk about the weather in the mountains, and then about the "
          "schedule for next week. Please keep your questions until the end of the meeting.")
CHUNK_S = 4.0


def extension_id(path: Path) -> str:
    """The id Chromium gives an unpacked extension: the SHA-256 of its absolute path, first 32 hex digits
    written with the letters a-p."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    return "".join(chr(ord("a") + int(digit, 16)) for digit in digest)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess({}, tmp_path_factory.mktemp("extension-server") / "server.log").start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tab's page: a looping <audio> element with ~10 s of espeak-ng speech, on its own loopback port."""
    root = tmp_path_factory.mktemp("site")
    speak(SPEECH, root / "speech.wav")
    (root / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>speech</title><link rel="icon" href="data:,">'
        '</head><body><audio id="speech" src="speech.wav" loop controls></audio></body></html>')
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer((HOST, free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class Browser:
    """Chromium with the extension loaded; ``sw`` is its service worker (a Playwright Worker)."""

    def __init__(self, context, worker, extension: str) -> None:
        self.context = context
        self.sw = worker
        self.base = f"chrome-extension://{extension}/"

    def state(self) -> dict:
        return self.sw.evaluate("chrome.storage.session.get(null)")

    def wait_for(self, predicate, what: str, timeout_s: float = 40.0) -> dict:
        deadline = time.monotonic() + timeout_s
        stored: dict = {}
        while time.monotonic() < deadline:
            stored = self.state()
            if predicate(stored.get("state") or {}):
                return stored
            time.sleep(0.1)
        pytest.fail(f"no {what} within {timeout_s:g} s; last state: {json.dumps(stored.get('state'), indent=1)}")

    def tab_id(self, url: str) -> int:
        ids = self.sw.evaluate("url => chrome.tabs.query({url}).then(tabs => tabs.map(tab => tab.id))", url + "*")
        assert len(ids) == 1, ids
        return ids[0]

    def badge(self, tab_id: int) -> str:
        return self.sw.evaluate("tabId => chrome.action.getBadgeText({tabId})", tab_id)

    def configure(self, server_url: str, api_key: str = "", use_diarization: bool = False) -> None:
        """Through the options page, as a user would."""
        page = self.context.new_page()
        try:
            page.goto(self.base + "options.html")
            page.wait_for_function("document.getElementById('server-url').value !== ''")
            page.fill("#server-url", server_url)
            page.fill("#api-key", api_key)
            page.set_checked("#use-diarization", use_diarization)
            page.click("button[type=submit]")
            page.wait_for_selector("#saved:has-text('Saved')")
        finally:
            page.close()
        stored = self.sw.evaluate("chrome.storage.local.get(null)")
        assert stored == {"serverUrl": server_url, "apiKey": api_key, "useDiarization": use_diarization}

    def listen(self, url: str) -> tuple[object, int]:
        """Open ``url`` in a tab and start listening to it; (the page, its tab id)."""
        page = self.context.new_page()
        page.goto(url)
        tab_id = self.tab_id(url)
        assert self.sw.evaluate("tabId => soundsentry.start(tabId)", tab_id) is True, self.state()
        return page, tab_id

    def stop(self) -> None:
        self.sw.evaluate("soundsentry.stop()")


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium with the extension, a fresh profile and temp dir per test. Under a short directory of pytest's:
    Chromium's singleton socket lives in TMPDIR, and a Unix socket path may not be longer than 107 bytes."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    extension = extension_id(EXTENSION)
    where = tmp_path_factory.mktemp("ext")
    with private_tmpdir(where / "tmp"), sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(where / "profile"), executable_path=executable, headless=True, env=browser_env(where / "tmp"),
            args=[f"--disable-extensions-except={EXTENSION}", f"--load-extension={EXTENSION}",
                  f"--allowlisted-extension-id={extension}", "--autoplay-policy=no-user-gesture-required"],
            # Playwright disables extensions and mutes audio by default; the tab must play to be captured
            ignore_default_args=["--disable-extensions", "--mute-audio"])
        try:
            worker = context.service_workers[0] if context.service_workers else \
                context.wait_for_event("serviceworker", timeout=20_000)
            assert worker.url == f"chrome-extension://{extension}/background.js", worker.url
            yield Browser(context, worker, extension)
        finally:
            context.close()
    leftovers = [path.name for path in (where / "tmp").iterdir() if path.name != "home"]
    assert leftovers == [], f"the browser left temp files: {leftovers}"


# ----------------------------------------------------------------------------- the tests


def test_manifest_asks_for_what_the_recorder_uses() -> None:
    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    assert manifest["manifest_version"] == 3
    assert set(manifest["permissions"]) == {"tabCapture", "offscreen", "storage"}
    assert manifest["background"] == {"service_worker": "background.js", "type": "module"}
    recorder = (EXTENSION / "recorder.js").read_text()
    for constant in ('CHUNK_DURATION_MS = 4000', 'CHUNK_MIME_TYPE = "audio/webm;codecs=opus"',
                     'CHUNK_FILE_NAME = "audio-chunk.webm"'):
        assert f"export const {constant};" in recorder
    # nothing the extension runs or shows comes from elsewhere: the only hosts it names are the loopback ones
    for path in EXTENSION.iterdir():
        hosts = set(re.findall(r"https?://([A-Za-z0-9][A-Za-z0-9.-]*)", path.read_text()))
        assert hosts <= {"127.0.0.1", "localhost"}, (path, hosts)


def test_extension_captures_a_tab_and_shows_the_rolling_verdict(browser: Browser, server: ServerProcess,
                                                                site: str) -> None:
    server_url = f"http://{HOST}:{server.port}"
    browser.configure(server_url)
    page, tab_id = browser.listen(site)
    stored = browser.wait_for(lambda s: s.get("status") == "listening" and s.get("sessionId"), "session")
    assert stored["state"]["monitor"] == "running"  # the captured audio is played back to the user

    # the tab is silent until its audio plays: the first chunk has no speech
    stored = browser.wait_for(lambda s: s.get("chunksSent", 0) >= 1, "first chunk")
    assert stored["state"]["status"] == "no-speech" and stored["state"]["session"]["overall"] == "No Speech"
    assert browser.badge(tab_id) == "?"
    first_session = stored["state"]["sessionId"]

    page.evaluate("document.getElementById('speech').play()")
    stored = browser.wait_for(lambda s: s.get("status") == "verdict", "verdict")
    state = stored["state"]
    session = state["session"]
    assert session["overall"] in ("Real", "Fake") and session["speech_duration"] > 1.0
    assert state["lastChunk"]["bytes"] > 4000  # ~4 s of 32 kb/s Opus, a standalone file the server decoded
    expected = "FAKE" if session["overall"] == "Fake" else "REAL"
    assert state["badge"] == expected and browser.badge(tab_id) == expected
    assert session["speakers"] and session["speakers"][0]["speaker"] == "S1"
    answered = json.loads(get(server.port, f"/sessions/{first_session}")[2])
    assert answered["chunks"] >= session["chunks"] >= 2

    # the popup: the rolling verdict per speaker, with how sure it is
    popup = browser.context.new_page()
    popup.goto(browser.base + "popup.html")
    popup.wait_for_selector("#speakers li")
    assert popup.inner_text("#overall") == session["overall"]
    speaker_text = popup.inner_text("#speakers li")
    assert "S1" in speaker_text and "confidence" in speaker_text and "P(fake)" in speaker_text
    assert popup.is_visible("#stop") and not popup.is_visible("#listen")

    # the server forgets the session (expiry, restart): the extension opens a new one and goes on
    status, _, _ = request(server.port, f"DELETE /sessions/{first_session} HTTP/1.1\r\nHost: t\r\n"
                                        "Connection: close\r\n\r\n".encode())
    assert status == 204
    sent = state["chunksSent"]
    stored = browser.wait_for(lambda s: s.get("chunksSent", 0) > sent and s.get("sessionId") != first_session,
                              "chunk on a new session")
    assert stored["state"]["status"] in ("verdict", "no-speech") and stored["state"]["lastChunk"]["index"] == 0
    second_session = stored["state"]["sessionId"]
    popup.wait_for_function("document.getElementById('server').textContent.includes('ms from sending')")

    timings = stored["timings"]
    to_badge = [t["badgeAt"] - t["sentAt"] for t in timings]
    after_answer = [t["badgeAt"] - t["receivedAt"] for t in timings]
    analysis = [round(t["serverMs"]) for t in timings]
    print(f"\nchunk POST sent -> badge set, ms: {to_badge} (median {statistics.median(to_badge):.0f}); of which "  # noqa: T201
          f"the server's analysis (processing_time_ms): {analysis}; answer received -> badge set: {after_answer}")
    assert len(timings) >= 3
    assert max(after_answer) < 500, after_answer  # the extension's own part: messages, badge, storage
    assert statistics.median(to_badge) < 2000, to_badge  # with the server's analysis, on a loaded 2-core machine

    browser.stop()
    stored = browser.wait_for(lambda s: s.get("status") == "stopped", "stop")
    assert browser.badge(tab_id) == ""
    assert get(server.port, f"/sessions/{second_session}")[0] == 404  # closed by the extension
    popup.reload()
    popup.wait_for_selector("#listen:visible")
    popup.close()
    page.close()


def test_extension_says_when_the_server_is_unreachable(browser: Browser, site: str) -> None:
    nobody = free_port()  # nothing listens there
    browser.configure(f"http://{HOST}:{nobody}", use_diarization=False)
    _, tab_id = browser.listen(site)
    stored = browser.wait_for(lambda s: s.get("status") == "unreachable", "unreachable state", timeout_s=20)
    assert f"{HOST}:{nobody}" in stored["state"]["message"]
    assert browser.badge(tab_id) == "!"
    popup = browser.context.new_page()
    popup.goto(browser.base + "popup.html")
    popup.wait_for_selector("#problem:visible")
    assert "cannot be reached" in popup.inner_text("#status") and f"{nobody}" in popup.inner_text("#problem")
    browser.stop()


def test_extension_sends_its_key_and_backs_off_when_the_server_answers_503(browser: Browser, site: str,
                                                                           tmp_path: Path) -> None:
    """A server with a key and no models (it starts in seconds): without the key the session is refused
    (401: unauthorized); with it the session opens, and each chunk gets 503 with Retry-After 5, so the
    chunk recorded during the wait is skipped, not sent."""
    key = "e" * 32
    with modelless_servers(tmp_path, {"SOUNDSENTRY_API_KEYS": key}) as (keyed,):
        server_url = f"http://{HOST}:{keyed.port}"
        browser.configure(server_url, use_diarization=False)
        page, tab_id = browser.listen(site)
        stored = browser.wait_for(lambda s: s.get("status") == "unauthorized", "unauthorized state", timeout_s=20)
        assert "API key" in stored["state"]["message"] and "401" in stored["state"]["message"]
        assert browser.badge(tab_id) == "!"
        browser.stop()
        page.close()

        browser.configure(server_url, api_key=key, use_diarization=False)
        _, tab_id = browser.listen(site)
        browser.wait_for(lambda s: s.get("status") == "listening" and s.get("sessionId"), "session", timeout_s=20)
        stored = browser.wait_for(lambda s: s.get("status") == "busy", "busy state", timeout_s=20)
        state = stored["state"]
        assert "503" in state["message"] and state["retryAt"] > state["updatedAt"]
        assert browser.badge(tab_id) == "!"
        stored = browser.wait_for(lambda s: s.get("chunksDropped", 0) >= 1, "a chunk skipped while backing off",
                                  timeout_s=3 * CHUNK_S)
        assert stored["state"]["chunksSent"] == 0
        browser.stop()
