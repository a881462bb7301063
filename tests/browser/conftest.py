"""Fixtures of the browser layer: one real cluster behind nginx (TLS) for the whole session,
and Debian's headless Chromium driven by Playwright.

The cluster is :class:`pink_dev.LocalCluster`, the class behind the integration tests'
``cluster`` fixture, made once per session here (that fixture is per test) to keep the layer
within its budget; tests stay independent by using their own users and jobs.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pink_dev as dev
from pink_dev.sampleimage import build_sample_image

from tests.browser.ui_helpers import (
    CHROMIUM, CHROMIUM_ARGS, DATASET_FILES, PASSWORDS, SCREENSHOTS, VIEWPORT, login,
)
from tests.helpers import LOGGED_SERVICES, track_logs


@pytest.fixture(scope="session")
def ui_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[dev.LocalCluster]:
    """etcd, a worker (sshd + system docker) offering dataset ``ui-demo`` (DATASET_FILES),
    gunicorn and nginx with TLS; users with passwords."""
    dev.ensure_system_dockerd()
    base = tmp_path_factory.mktemp("ui")
    ca = dev.make_dev_ca(base / "ssl")
    dataset = base / "datasets" / "ui-demo"
    dataset.mkdir(parents=True)
    for name, text in DATASET_FILES.items():
        (dataset / name).write_text(text)
    dataset.chmod(0o755)
    cluster = dev.LocalCluster(base / "cluster", nginx=True, dev_ca=ca, users=(), admin_user="",
                               worker_overrides={"datasets": {"ui-demo": str(dataset)}},
                               # A relay nobody listens on: the pages' e-mail settings work; the
                               # integration layer (test_reactions.py) checks what is sent.
                               notify_overrides={"smtp_host": "127.0.0.1", "smtp_port": dev.free_port(),
                                                 "smtp_from": "pink@example.org",
                                                 "webhook_allow": ["https://hooks.example.org/"]})
    old_path = os.environ["PATH"]
    # Only while the cluster starts, so that only its worker sees the stub: later test layers
    # in the same session must see the machine as it is.
    os.environ["PATH"] = f"{fake_nvidia_smi(base / 'bin')}:{old_path}"
    try:
        with cluster:
            os.environ["PATH"] = old_path
            track_logs(request.session, *cluster.web, *(w.daemon for w in cluster.workers), cluster.nginx)
            cluster.add_users([("root", True), ("alice", False), ("bob", False), ("carol", False),
                               ("dana", False), ("erin", False), ("ines", False), ("fred", False)], PASSWORDS)
            yield cluster
    finally:
        os.environ["PATH"] = old_path
        if LOGGED_SERVICES in request.session.stash:
            del request.session.stash[LOGGED_SERVICES]


def fake_nvidia_smi(folder: Path) -> Path:
    """A stub ``nvidia-smi`` (pink_dev.fakegpu) so the worker reports 4 healthy GPUs on this
    GPU-less host: the workers page (and its screenshot) then shows GPU cards. Every job of
    these tests asks for 0 GPUs, so no container ever needs a real one."""
    return dev.fake_nvidia_smi(folder, [(f"GPU-00000000-0000-0000-0000-00000000000{i}", "NVIDIA A100-SXM4-80GB", 81920)
                                        for i in range(4)])


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def _sessions() -> dict[str, dict]:
    """Cookies of each user's first login, reused by later pages (scrypt is slow on purpose)."""
    return {}


@pytest.fixture
def new_page(browser, ui_cluster, _sessions) -> Iterator[Callable[..., object]]:
    """Factory: ``new_page(user=None, **context_options)`` → a page on the jobs page, logged
    in as ``user``.

    Each call makes its own browser context; JavaScript errors on any page fail the test."""
    contexts = []
    errors: list[str] = []

    def make(user: str | None = None, **options):
        state = _sessions.get(user) if user else None
        context = browser.new_context(ignore_https_errors=True, viewport=options.pop("viewport", VIEWPORT),
                                      storage_state=state, **options)
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if user:
            page.goto(f"{ui_cluster.url}/jobs")
            if "/login" in page.url:
                login(page, ui_cluster.url, user)
                _sessions[user] = context.storage_state()
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def fresh_image(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``fresh_image(script, name="")`` → a `docker save` tarball of a new image no worker holds yet, so
    the submit page has to upload it (for an image a worker holds it sends nothing)."""

    tags: list[str] = []

    def build(script: str, name: str = "") -> Path:
        out = tmp_path / f"{name or 'fresh'}.tar"
        tags.append(f"pink-ui-{secrets.token_hex(4)}:latest")
        build_sample_image(tags[-1], script, out)
        return out

    yield build
    if tags:
        subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True, timeout=120)


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """``screenshot(page, name)`` saves docs/screenshots/<name>.png (for the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, full_page: bool = False) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        return path

    return take
