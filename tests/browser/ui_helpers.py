"""Constants and helpers of the browser tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pink_dev as dev

CHROMIUM = os.environ.get("PINK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}

#: The files of dataset ui-demo, which the browser cluster's worker offers.
DATASET_FILES = {"greeting.txt": "hello from the dataset\n"}

#: Users the tests log in as, each with a known password.
PASSWORDS = {name: f"{name}-secret-pw" for name in ("alice", "bob", "carol", "dana", "erin", "ines", "fred", "root")}


def login(page, url: str, user: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{url}/jobs")


def wait_js(page, expression: str, timeout: float = 30.0) -> object:
    """Poll a JavaScript expression until it is truthy (``page.wait_for_function`` evaluates
    strings with eval, which the pages' Content-Security-Policy rightly forbids)."""
    return dev.wait_until(lambda: page.evaluate(expression), timeout, expression)
