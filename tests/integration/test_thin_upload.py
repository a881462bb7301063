"""Thin uploads end to end: an image that differs from a held one only in its top layer sends
only that layer, lands on the worker that holds the rest, and runs; layers of another user's
images are never offered (DESIGN §2.2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TERMINAL, cli, wait_state

pytestmark = pytest.mark.integration


def _layered_image(base_tar: Path, tag: str, content: str, out: Path, docker_url: str) -> None:
    """``docker commit`` one more small layer on the sample image in ``base_tar``."""
    docker = ["docker", "-H", docker_url]
    name = f"pink-thin-{os.getpid()}-{tag.replace(':', '-')}"
    base = subprocess.run([*docker, "load", "-q", "-i", str(base_tar)], check=True, capture_output=True,
                          text=True).stdout.split()[-1]  # "Loaded image: NAME"
    subprocess.run([*docker, "run", "--name", name, "--network", "none", base, "sh", "-c",
                    f"echo {content} > /top.txt"], check=True, capture_output=True)
    subprocess.run([*docker, "commit", "-c", 'CMD ["/bin/sh", "-c", "cat /top.txt"]', name, tag],
                   check=True, capture_output=True)
    subprocess.run([*docker, "rm", name], check=True, capture_output=True)
    subprocess.run([*docker, "save", "-o", str(out), tag], check=True, capture_output=True)
    subprocess.run([*docker, "rmi", tag], check=True, capture_output=True)


def test_an_image_changed_in_its_top_layer_sends_only_that_layer(cluster, images, tmp_path):
    c = cluster()
    docker_url = c.workers[0].docker_url
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    _layered_image(images["writer"], "pink-thin-test:first", "first", first, docker_url)
    _layered_image(images["writer"], "pink-thin-test:second", "second", second, docker_url)
    api = c.api("alice")

    # The first image goes whole; once it ran, its worker holds its layers.
    done = cli(c, "alice", "submit", str(first), "--wait", "--output", "none")
    assert done.returncode == 0, done.stderr
    assert "holds" not in done.stderr

    # Bob may not build on alice's layers: he is offered none and sends everything.
    r = api.post("/api/v1/layers", json={"diff_ids": ["sha256:" + "0" * 64]})
    assert r.status_code == 200 and r.json() == {"workers": []}
    bob = cli(c, "bob", "submit", str(second), "--output", "none")
    assert bob.returncode == 0, bob.stderr
    assert "holds" not in bob.stderr
    bob_job = wait_state(c.api("bob"), bob.stdout.strip(), TERMINAL, timeout=120)
    assert bob_job["image_bytes"] == second.stat().st_size

    # Alice sends the second image thin: only its top layer, and it runs.
    c.workers[0].docker("rmi", "-f", bob_job["image_id"], check=False)
    thin = cli(c, "alice", "submit", str(second), "--wait", "--output", "none")
    assert thin.returncode == 0, thin.stderr
    assert "holds 1 of the image's 2 layers" in thin.stderr
    job = api.get("/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]
    assert job["state"] == "SUCCEEDED", job
    assert 0 < job["image_bytes"] < second.stat().st_size // 10
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").text == "second\n"

    # A thin archive that claims layers the worker does not hold for you is refused, whole.
    r = api.post("/api/v1/jobs", params={"omitted_layers": "sha256:" + "1" * 64}, data=second.read_bytes())
    assert r.status_code == 409, r.text
