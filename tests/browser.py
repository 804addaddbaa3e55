"""Helpers for the tests that drive a real browser (tests/test_page.py, tests/test_extension.py).

The browser is Debian's ``chromium`` (``scripts/setup.sh --dev`` installs it) driven by Playwright
with ``executable_path``: Playwright's own browser downloads are never used. Everything the browser
writes (profile, temp files) lives under the test's ``tmp_path``: the driver and the browser get a
``TMPDIR`` there, and the profile is a directory there.

:class:`LoopbackOnly` is the network guard: every request to anything but the app's loopback
address (or ``chrome-extension://``, ``data:`` and ``blob:`` URLs) is aborted and recorded, and
every request that fails for another reason is recorded too, so a test can assert that a page
needed nothing from outside and loaded without errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

LOCAL_SCHEMES = ("chrome-extension", "data", "blob", "about")


def chromium_path() -> str:
    """The system Chromium, or skip: the browser tests need it (``make setup-dev`` installs it)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver, or make setup-dev): "
                    "the browser tests need Debian's Chromium")
    pytest.importorskip("playwright", reason="playwright is not installed (make setup-dev)")
    return path


@contextlib.contextmanager
def private_tmpdir(where: Path) -> Iterator[Path]:
    """``TMPDIR`` set to ``where`` while the block runs (for the Playwright driver and the browser it starts)."""
    where.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(where))
        yield where


def browser_env(tmp: Path) -> dict[str, str]:
    """The browser's environment: ours with ``TMPDIR`` under ``tmp``, and a HOME there for its caches and
    runtime files (libpulse, playing audio, makes ``$XDG_RUNTIME_DIR/pulse``, or ``$TMPDIR/pulse-*`` without it)."""
    home = tmp / "home"
    runtime = home / "run"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {**os.environ, "TMPDIR": str(tmp), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"), "XDG_RUNTIME_DIR": str(runtime)}


class LoopbackOnly:
    """Route handler for a Playwright context: let requests to ``host:port`` (and local schemes) through,
    abort the rest. ``blocked`` and ``failed`` list what was aborted and what failed otherwise."""

    def __init__(self, host: str, port: int) -> None:
        self.netloc = f"{host}:{port}"
        self.blocked: list[str] = []
        self.failed: list[str] = []

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in LOCAL_SCHEMES or (parts.scheme in ("http", "https", "ws") and
                                                  parts.netloc == self.netloc)

    def route(self, route) -> None:
        url = route.request.url
        if self.allowed(url):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def on_failed(self, request) -> None:
        if self.allowed(request.url):
            self.failed.append(f"{request.method} {request.url}: {request.failure}")

    def attach(self, context) -> LoopbackOnly:
        context.route("**/*", self.route)
        context.on("requestfailed", self.on_failed)
        return self
