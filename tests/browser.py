"""Headless Chromium for the browser tests: Debian's package driven by Playwright for Python.

Playwright's own browser download cannot work offline, so the system Chromium is used
(`executable_path`). Where it is missing, a learner's run skips with one line; CI (CI=true),
whose .ci/run installs it, fails instead: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT

ARTIFACTS = ROOT / "build" / "test-artifacts"  # screenshots (build/ is git-ignored)
# Chromium on a closed network: no background connections, no GPU, no QUIC, a fresh profile
# (Playwright gives each launch a new empty --user-data-dir itself).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """The system Chromium ($COURSE_CHROMIUM, else `chromium` on PATH), or a skip (a fail under CI=true) with a one-line reason."""
    path = shutil.which(os.environ.get("COURSE_CHROMIUM") or "chromium") or shutil.which("chromium-browser")
    reason = None
    if path is None:
        reason = "no Chromium installed (Debian/Ubuntu: apt-get install chromium); the browser tests need it"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (it is in requirements.txt: run start.py --setup)"
    if reason:
        skip_or_fail(reason)
    return path


def skip_or_fail(reason: str) -> None:
    """A missing system tool: a learner's run skips with one line; CI (CI=true) fails."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


@contextmanager
def chromium_page(viewport: dict | None = None):
    """A Playwright page in headless Chromium; the browser is always closed."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
            yield context.new_page()
        finally:
            browser.close()


# page.wait_for_function's interval (ms). Its default, "raf", evaluates the predicate on every animation frame
# (60 a second: a query over JupyterLab's whole DOM each time, for as long as a Run All takes); the states the
# tests wait for last once reached, so a check every 100 ms sees them as surely, at a fraction of the CPU.
POLL_MS = 100


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small: a blank page?"
    return path
