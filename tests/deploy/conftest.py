"""Fixtures of the deploy layer: 8 systemd hosts in docker, deployed by ``ansible-playbook site.yml``.

``deployment`` (session) builds or loads the host image, starts the fleet, makes dev
certificates, writes an inventory and runs site.yml once; the tests then check the result.
The fleet is removed at the end (by label) unless ``PINK_DEPLOY_KEEP=1``; a run that crashed
is cleaned up by the next one. Timings of the fresh run and the rerun are printed in the
summary at the end of the pytest run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from deploy_fleet import CACHE_DIR, REPO_ROOT, Fleet, build_image
from deploy_harness import TIMINGS, Deployment, run_playbook, source_snapshot

@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = Path(os.environ.get("PINK_DEPLOY_DIR") or tmp_path_factory.mktemp("deploy"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cp").mkdir(exist_ok=True)
    t0 = time.monotonic()
    image = build_image()
    TIMINGS["host image (build or load)"] = time.monotonic() - t0
    fleet = Fleet(workdir / "fleet")
    keep = os.environ.get("PINK_DEPLOY_KEEP") == "1"
    try:
        t0 = time.monotonic()
        fleet.up(image)
        TIMINGS["start 8 hosts"] = time.monotonic() - t0
        ssl_dir = workdir / "ssl"
        etcd = [f"-e{h.name}={h.ip}" for h in fleet.group("etcd")]
        lb = fleet.group("lb")[0]
        subprocess.run(["sh", str(REPO_ROOT / "ssl/make-dev-certs.sh"), "-o", str(ssl_dir), "-n", lb.ip,
                        "-n", "localhost", *etcd], check=True, capture_output=True, timeout=120)
        admin_password = secrets.token_urlsafe(16)
        inventory = fleet.write_inventory(extra_vars={
            "pink_cluster_ssl_dir": str(ssl_dir),
            "pink_app_source_dir": str(source_snapshot(workdir / "src")),
            # Wheels are named by a fingerprint of the code: safe to keep between runs.
            "pink_app_wheelhouse_dir": str(CACHE_DIR / "wheelhouse"),
            "pink_web_secret_key": secrets.token_hex(32),
            "pink_web_admin_password": admin_password,
        })
        fresh = run_playbook(inventory, workdir, str(REPO_ROOT / "site.yml"))
        TIMINGS["site.yml, fresh run"] = fresh.seconds
        yield Deployment(fleet, workdir, inventory, ssl_dir, admin_password, fresh)
    finally:
        if keep:
            print(f"\nPINK_DEPLOY_KEEP=1: fleet kept; inventory {fleet.inventory}; "
                  f"remove with: python tests/deploy/deploy_fleet.py down --dir {fleet.workdir}")
        else:
            fleet.down()


@pytest.fixture(scope="module")
def api(deployment: Deployment) -> Iterator[requests.Session]:
    """An HTTP session through nginx, logged in as the admin."""
    login = deployment.login()
    assert login.returncode == 0, login.stdout + login.stderr
    with deployment.api() as session:
        yield session


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook
    if not TIMINGS:
        return
    terminalreporter.section("deploy layer timings")
    for phase, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{phase:<34} {seconds:7.1f} s")
    load = os.getloadavg()
    terminalreporter.write_line(f"{'load average (1/5/15 min)':<34} {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
