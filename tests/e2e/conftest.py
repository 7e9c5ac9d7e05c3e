"""Browser end-to-end fixtures: a real ``streamlit run app.py`` server and Debian's chromium.

The server runs on a free port with its own temporary ``BIASREPAIR_HOME`` (its demo cache seeded
from the session's demo build, the test accounts of tests/wb_helpers.py made), and is stopped
afterwards. ``sign_in`` fills the sign-in form as a person would. Chromium is driven by playwright with
the system binary; nothing is downloaded. Screenshots go to ``tests/artifacts/``. Every test in this folder
carries the ``e2e`` marker (tests/conftest.py), so ``pytest -m "not e2e"`` leaves them out, and calls
``need("playwright")`` first: without playwright they are skipped, except in CI (tests/optional.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.app.store import Store
from tests.optional import need
from tests.wb_helpers import PASSWORDS, make_accounts, seed_demo_cache

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``streamlit run app.py`` process; can be stopped and started again on the same home."""

    def __init__(self, home: Path, log_dir: Path, env: dict[str, str] | None = None):
        self.home = home
        self.env = env or {}
        self.log_dir = log_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until it answers. Tests run in parallel (pytest-xdist) pick free ports
        at once: if another process took this one between ``free_port`` and the server's bind, take a new one."""
        for _ in range(3):
            if self._start_once(timeout):
                return
            self.port = free_port()
        raise RuntimeError(f"streamlit found no free port; see {self.log_dir}")

    def _start_once(self, timeout: float) -> bool:
        """True once the server is healthy; False if its port was taken by another process."""
        # The demo is built at server start only where a test asks for it (BIASREPAIR_DEMO_PREBUILD=1): the
        # others would share the CPUs with a build they never use.
        env = dict(os.environ, BIASREPAIR_HOME=str(self.home), PYTHONPATH=str(ROOT), BIASREPAIR_DEMO_PREBUILD="0")
        env.update(self.env)
        self.starts += 1
        log_path = self.log_dir / f"server{self.starts}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(self.port),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if b"is already in use" in log_path.read_bytes():
                    return False
                raise RuntimeError(f"streamlit exited early; see {self.log_dir}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("streamlit did not become healthy")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture()
def server(tmp_path, demo_dir):
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    make_accounts(Store(home))
    srv = Server(home, tmp_path)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def browser():
    sync_playwright = need("playwright.sync_api").sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    # Tall viewport: Streamlit scrolls inside the page, so a "full page" shot is the viewport.
    ctx = browser.new_context(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def sign_in(page, name: str, password: str | None = None) -> None:
    """Sign in through the form (shown on any page while signed out); waits for the signed-in page."""
    settle(page)
    page.locator(".st-key-signin_name input").fill(name)
    page.locator(".st-key-signin_password input").fill(password or PASSWORDS[name])
    page.locator(".st-key-signin_password input").press("Enter")
    page.locator(".st-key-sign_out").wait_for()
    settle(page)


def sign_out(page) -> None:
    page.locator(".st-key-sign_out button").click()
    page.locator(".st-key-signin_name").wait_for()
    settle(page)


def nav(page, name: str, wait_text: str) -> None:
    """Go to a page by its sidebar link, wait for ``wait_text`` and check no exception is shown."""
    page.get_by_role("link", name=name).click()
    page.get_by_text(wait_text).first.wait_for()
    settle(page)
    assert page.locator("[data-testid=stException]").count() == 0, f"an exception is shown on {name}"


def screen_shot(page, name: str) -> None:
    """Save what the window shows (the first screen, not the whole page) as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def shot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def settle(page, timeout: float = 60_000) -> None:
    """Wait until the app's script run is over (the page is drawn and idle)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => { const a = document.querySelector('[data-testid=\"stApp\"]');"
        " return a && a.getAttribute('data-test-script-state') !== 'running'; }",
        timeout=timeout,
    )
    # Elements load lazily: wait for skeleton placeholders to go and images to finish loading.
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && Array.from(document.images).every(i => i.complete)",
        timeout=timeout,
    )


def counterexamples_as(browser, url: str, name: str, open_demo: bool, viewport: dict | None = None):
    """A new browser context signed in as ``name`` on the Counterexamples page (the demo opened first if asked)."""
    ctx = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(url)
    sign_in(pg, name)
    if open_demo:
        pg.get_by_role("button", name="Open the demo").click()
        pg.get_by_text("Where the model goes wrong").first.wait_for()
        settle(pg)
    pg.get_by_role("link", name="2 · Counterexamples").click()
    pg.get_by_text("Quick labelling").wait_for()
    settle(pg)
    return ctx, pg
