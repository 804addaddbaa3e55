"""The page for people at ``/`` and the offline API docs, in a real browser against the real server.

One server (``python -m api.server`` on a free loopback port, the shipped models in data/) and one
headless Chromium (Debian's, driven by Playwright; tests/browser.py) serve the module. Every browser
context blocks any request to a host other than the app's loopback address and records failed
requests. The audio is espeak-ng speech (tests/conftest.py). Skipped, with the reason, only when
chromium (or Playwright) is not installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from api.pages import prefers_html
from tests.browser import LoopbackOnly, browser_env, chromium_path, private_tmpdir
from tests.test_connections import HOST, ServerProcess, get, modelless_servers

REPO = Path(__file__).resolve().parent.parent
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
ANSWER_TIMEOUT_MS = 60_000  # the first /predict warms the models up; a loaded 2-core machine is slow


# ----------------------------------------------------------------------------- no browser needed


@pytest.mark.parametrize(("accept", "html"), [
    (BROWSER_ACCEPT, True),
    ("text/html", True),
    ("application/xhtml+xml", True),
    (None, False),
    ("", False),
    ("*/*", False),
    ("application/json", False),
    ("application/json, text/html;q=0.5", False),
    ("text/html;q=0.5, application/json", False),
    ("text/html, application/json", False),  # a tie keeps the JSON answer
    ("text/html;q=0, */*", False),
    ("text/*, application/json;q=0.1", True),
    ("text/html;q=bogus, */*", False),
])
def test_prefers_html_ranks_html_above_json(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


def test_trust_figures_are_the_ones_readme_publishes() -> None:
    """The page's sentence on how far to trust a verdict comes from api/static/trust.json; every figure
    there must be one README's "How far to trust it" states, so the two cannot drift apart."""
    figures = json.loads((REPO / "api" / "static" / "trust.json").read_text())
    section = (REPO / "README.md").read_text().split("## How far to trust it", 1)[1].split("\n## ", 1)[0]
    stated = {
        "eer_files": "**26 % EER on whole files", "eer_chunks": "30 % on browser chunks**",
        "reals_called_fake_chunks": "calls 7.0 % of real browser chunks Fake",
        "reals_called_fake_chunks_interval": "95 % interval 4.7–9.7 %",
        "reals_called_fake_files": "8.4 % of whole files",
        "fakes_called_real_chunks": "71 % of fake chunks", "fakes_called_real_files": "57.7 % of\nfiles",
    }
    for name, text in stated.items():
        assert text.replace("\n", " ") in section.replace("\n", " "), f"README no longer says {text!r} ({name})"
    assert figures["eer_files"] == 0.26 and figures["eer_chunks"] == 0.30
    assert figures["reals_called_fake_chunks"] == 0.070 and figures["reals_called_fake_files"] == 0.084
    assert figures["reals_called_fake_chunks_interval"] == [0.047, 0.097]
    assert figures["fakes_called_real_chunks"] == 0.71 and figures["fakes_called_real_files"] == 0.577
    assert figures["wrong_on_unfamiliar"] == figures["eer_chunks"]  # "about 30 % of verdicts are wrong"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess({}, tmp_path_factory.mktemp("page-server") / "server.log").start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium, its driver and itself writing only under a temp dir of this module."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("chromium")
    with private_tmpdir(tmp / "tmp"), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             env=browser_env(tmp / "tmp"))
        try:
            yield browser
        finally:
            browser.close()
    leftovers = [path.name for path in (tmp / "tmp").iterdir() if path.name != "home"]
    assert leftovers == [], f"the browser left temp files: {leftovers}"


class Tab:
    """A page in a fresh context whose network reaches only ``port`` on the loopback address."""

    def __init__(self, browser, port: int) -> None:
        self.base = f"http://{HOST}:{port}/"
        self.context = browser.new_context()
        self.guard = LoopbackOnly(HOST, port).attach(self.context)
        self.page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def open(self, path: str = "") -> None:
        response = self.page.goto(urljoin(self.base, path), wait_until="networkidle")
        assert response is not None and response.status == 200, path

    def assert_clean(self) -> None:
        assert self.guard.blocked == [], f"requests to other hosts: {self.guard.blocked}"
        assert self.guard.failed == [], f"failed requests: {self.guard.failed}"


@pytest.fixture
def tab(browser, server: ServerProcess) -> Iterator[Tab]:
    opened = Tab(browser, server.port)
    try:
        yield opened
    finally:
        opened.context.close()


def upload(tab: Tab, path: Path) -> None:
    tab.page.set_input_files("#audio-file", str(path))
    tab.page.click("#analyse")


# ----------------------------------------------------------------------------- the page


def test_root_answers_json_to_programs_and_the_page_to_browsers(server: ServerProcess) -> None:
    status, headers, body = get(server.port, "/")
    assert status == 200 and headers["content-type"] == "application/json" and "accept" in headers["vary"].lower()
    assert json.loads(body)["service"] == "Sound Sentry"
    assert "POST /predict" in json.loads(body)["endpoints"]
    status, headers, body = get(server.port, "/", f"Accept: {BROWSER_ACCEPT}")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b'<input id="audio-file"' in body
    for asset in re.findall(rb'(?:src|href)="(static/[^"]+)"', body):
        assert get(server.port, "/" + asset.decode())[0] == 200, asset


def test_page_uploads_speech_and_shows_the_verdict_and_a_timeline(tab: Tab, speech_wav: Path) -> None:
    tab.open()
    assert "weak evidence" in tab.page.inner_text("#trust-text")  # trust.json loaded
    with tab.page.expect_response(lambda response: response.url.endswith("/predict")) as answered:
        upload(tab, speech_wav)
    answer = answered.value.json()
    tab.page.wait_for_selector("#result:not([hidden])", timeout=ANSWER_TIMEOUT_MS)
    verdict = tab.page.inner_text("#verdict")
    assert answer["overall"] in ("Real", "Fake") and verdict == answer["overall"]
    assert f"{answer['mean_probability'] * 100:.0f} %" in tab.page.inner_text("#verdict-detail")
    segments = tab.page.locator("#timeline .segment")
    assert segments.count() == len(answer["details"]) >= 1
    tracks = tab.page.locator("#timeline .track")
    assert tracks.count() == len({segment["speaker"] for segment in answer["details"]})
    first = answer["details"][0]
    title = segments.first.get_attribute("title") or ""
    assert f"P(fake) {first['probability']:.2f}" in title and first["speaker"] in title
    style = segments.first.get_attribute("style") or ""
    duration = answer["duration_config"]["duration"]
    left = float(re.search(r"left:\s*([\d.]+)%", style).group(1))
    assert left == pytest.approx(100 * first["start"] / duration, abs=0.01)
    trust = tab.page.inner_text("#trust-text")
    assert "30 %" in trust and "26 %" in trust and "8.4 %" in trust and "57.7 %" in trust
    assert tab.page.locator("#speakers tbody tr").count() == len(answer["speakers"])
    tab.assert_clean()
    assert tab.console_errors == []


def test_page_sends_use_diarization_when_ticked(tab: Tab, two_speaker_wav: Path) -> None:
    tab.open()
    tab.page.check("#use-diarization")
    with tab.page.expect_request(lambda request: request.url.endswith("/predict")) as sent, \
            tab.page.expect_response(lambda response: response.url.endswith("/predict")) as answered:
        upload(tab, two_speaker_wav)
    assert 'name="use_diarization"' in (sent.value.post_data_buffer or b"").decode("latin-1")
    answer = answered.value.json()
    assert answer["duration_config"]["use_diarization"] is True
    tab.page.wait_for_selector("#result:not([hidden])", timeout=ANSWER_TIMEOUT_MS)
    speakers = {segment["speaker"] for segment in answer["details"]}
    assert tab.page.locator("#timeline .track").count() == len(speakers) >= 1
    tab.assert_clean()


def test_page_shows_the_servers_message_for_a_text_file(tab: Tab, server: ServerProcess, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("This is a shopping list, not a recording.\n" * 20)
    tab.open()
    with tab.page.expect_response(lambda response: response.url.endswith("/predict")) as answered:
        upload(tab, text)
    assert answered.value.status == 415
    error = answered.value.json()
    tab.page.wait_for_selector("#error:not([hidden])")
    shown = tab.page.inner_text("#error")
    assert error["message"] in shown and error["error_code"] in shown and error["request_id"] in shown
    assert tab.page.locator("#result").is_hidden()
    tab.assert_clean()


def test_page_sends_the_api_key_it_keeps(browser, tmp_path: Path, speech_wav: Path) -> None:
    """A server with keys (and no models, to start fast): the page and its files load without a key;
    without one the upload gets the 401 message, with one (kept across a reload) it passes the key check."""
    key = "k" * 32
    with modelless_servers(tmp_path, {"SOUNDSENTRY_API_KEYS": key}) as (keyed,):
        tab = Tab(browser, keyed.port)
        try:
            tab.open()
            upload(tab, speech_wav)
            tab.page.wait_for_selector("#error:not([hidden])")
            assert "needs an API key" in tab.page.inner_text("#error")
            tab.page.click("#key-box summary")
            tab.page.fill("#api-key", key)
            tab.page.dispatch_event("#api-key", "change")
            tab.page.reload(wait_until="networkidle")
            assert tab.page.input_value("#api-key") == key
            with tab.page.expect_request(lambda request: request.url.endswith("/predict")) as sent, \
                    tab.page.expect_response(lambda response: response.url.endswith("/predict")) as answered:
                upload(tab, speech_wav)
            assert sent.value.headers.get("x-api-key") == key
            assert answered.value.status == 503  # past the key check: no models loaded on this server
            tab.page.wait_for_selector("#error:not([hidden])")
            assert answered.value.json()["message"] in tab.page.inner_text("#error")
            tab.page.click("#forget-key")
            tab.page.reload(wait_until="networkidle")
            assert tab.page.input_value("#api-key") == ""
            tab.assert_clean()
        finally:
            tab.context.close()


# ----------------------------------------------------------------------------- the docs, offline


@pytest.mark.parametrize("path", ["docs", "redoc"])
def test_docs_reference_nothing_outside_the_app(server: ServerProcess, path: str) -> None:
    status, _, body = get(server.port, f"/{path}")
    assert status == 200
    html = body.decode()
    urls = re.findall(r"""https?://[^\s"'<>)]+""", html)
    assert urls == [], f"/{path} references {urls}"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert len(assets) >= 2, assets
    for asset in assets:
        assert not urlsplit(asset).netloc, asset
        status, _, served = get(server.port, asset)
        assert status == 200, asset
        assert b"https://cdn." not in served, f"{asset} loads from a CDN"  # ReDoc's logo: replaced by api.pages


def test_page_and_docs_load_with_every_other_host_blocked(tab: Tab) -> None:
    tab.open()
    tab.page.wait_for_function("document.getElementById('trust-text').textContent.includes('%')")
    tab.open("docs")
    tab.page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    assert "/predict" in tab.page.inner_text(".swagger-ui")
    tab.open("redoc")
    tab.page.wait_for_selector("redoc h1, [role=main] h1, .api-content h1", timeout=30_000)
    assert "Sound Sentry" in tab.page.inner_text("body")
    tab.assert_clean()
    assert tab.console_errors == []
