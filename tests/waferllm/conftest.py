"""Fixtures of the waferllm tests: a headless Chromium driven by selenium, for the HTML pages
waferllm writes (fixture ``chromium``).

``scripts/ensure_browser.sh`` (run by the README's test command) installs Debian's ``chromium`` and
``chromium-driver`` where they are missing; tests that need the browser skip only when neither
can be found. The browser runs offline: no sandbox (CI runs as root), no GPU, no background
networking, component updates or sync, and a fresh profile directory per run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
DRIVERS = ("chromedriver",)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def find(names, extra_dirs=("/usr/bin", "/usr/lib/chromium")) -> str | None:
    for n in names:
        hit = shutil.which(n)
        if hit:
            return hit
    for d in extra_dirs:
        for n in names:
            p = Path(d) / n
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    return None


def browser_paths() -> tuple[str, str] | None:
    """(browser, chromedriver) or None."""
    b, d = find(BROWSERS), find(DRIVERS)
    return (b, d) if b and d else None


@contextmanager
def headless_chromium(width: int = 1280, height: int = 2000):
    """A selenium WebDriver on a fresh headless Chromium, with browser console logging on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    if paths is None:
        raise RuntimeError("no chromium + chromedriver found")
    browser, driver_path = paths
    profile = tempfile.mkdtemp(prefix="waferllm-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


#: (repr(model), repr(request)) -> Plan, for ``one_search_per_request``; one per worker process
_PLANS: dict = {}


@pytest.fixture
def one_search_per_request(monkeypatch):
    """``waferllm.planner.plan`` (what ``waferllm plan``, ``calibration`` and the sweep call, imported at
    call time) memoised by (model, request) for the tests that take this fixture: their files plan the
    same requests over and over (the default llama3-8b plan on WSE-2 nine times, llama3-70b on several
    wafers five), to print, serialise or widen them or check other fields. Each test still gets the
    plan the search gives for its request: the key is the full repr of the model and of the request
    (the hardware spec with every field) and ``Plan`` is frozen; a request that fails is not memoised
    (it raises again); a call with any other argument is not memoised."""
    import waferllm.planner as planner

    search = planner.plan

    def plan(model, req, *args, **kwargs):
        if args or kwargs:
            return search(model, req, *args, **kwargs)
        key = (repr(model), repr(req))
        if key not in _PLANS:
            _PLANS[key] = search(model, req)
        return _PLANS[key]

    monkeypatch.setattr(planner, "plan", plan)


@pytest.fixture
def chromium():
    """A selenium WebDriver on a headless Chromium; skips only when no browser can be found."""
    if browser_paths() is None:
        pytest.skip("no chromium + chromedriver on this machine (scripts/ensure_browser.sh installs them)")
    with headless_chromium() as driver:
        yield driver
