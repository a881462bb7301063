"""Resubmit with changes, delete, and the log of a queued job, through the `pink` CLI on real
parts (etcd, dockerd, sshd + gate, gunicorn, worker daemons)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pink_dev as dev
from tests.helpers import TERMINAL, archive_members, submit, wait_state

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env(cluster, user: str) -> dict[str, str]:
    env = {**os.environ, "PINK_URL": cluster.url, "PINK_TOKEN": cluster.tokens[user],
           "PINK_CLI_CONFIG": "/nonexistent/pink-cli.json"}
    if cluster.ca_cert:
        env["PINK_CA_CERT"] = str(cluster.ca_cert)
    return env


def _pink(cluster, user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pink_client", *argv], env=_env(cluster, user), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_resubmit_with_new_arguments_then_delete(cluster, images):
    c = cluster()
    api = c.api("alice")
    outbox = c.workers[0].outbox

    # submit --wait prints the log as the job runs.
    first = _pink(c, "alice", "submit", str(images["writer"]), "--wait", "--name", "first")
    assert first.returncode == 0, first.stderr
    first_id, log = first.stdout.split("\n", 1)
    assert log == "hello\n"
    image = api.get(f"/api/v1/jobs/{first_id}").json()["job"]["image_id"]
    dev.wait_until(lambda: api.get(f"/api/v1/images/{image}").json()["workers"], 30,
                   "the worker to report the loaded image")

    # A new command and variable, from the image the worker holds: nothing is sent.
    again = _pink(c, "alice", "resubmit", first_id, "-e", "GREETING=hi", "--timeout", "2m", "--wait", "--",
                  "sh", "-c", "echo $GREETING from the resubmit; mkdir -p /out; echo changed > /out/result.txt")
    assert again.returncode == 0, again.stderr
    second_id, log = again.stdout.split("\n", 1)
    assert log == "hi from the resubmit\n"
    assert "0 bytes sent" in again.stderr
    second = api.get(f"/api/v1/jobs/{second_id}").json()["job"]
    assert (second["resubmit_of"], second["image_bytes"], second["timeout_s"]) == (first_id, 0, 120)
    assert second["image_size"] > 1_000_000 and second["env"] == {"GREETING": "hi"}  # busybox, unpacked
    out = api.get(f"/api/v1/jobs/{second_id}/output")
    assert archive_members(out.content)["out/result.txt"] == b"changed\n"
    status = _pink(c, "alice", "status", second_id)
    assert "nothing (its worker held the image)" in status.stdout and "image size" in status.stdout

    # Delete the first job: its record now, its archive and log from the worker's outbox.
    first_files = [outbox / f"{first_id}.tar.zst", outbox / f"{first_id}.log"]
    assert all(p.exists() for p in first_files)
    assert _pink(c, "bob", "rm", first_id).returncode == 5  # not his
    gone = _pink(c, "alice", "rm", first_id)
    assert gone.returncode == 0 and gone.stdout.strip() == first_id, gone.stderr
    dev.wait_until(lambda: not any(p.exists() for p in first_files), 15,
                   "the worker to remove the deleted job's files")
    assert (outbox / f"{second_id}.tar.zst").exists()  # only the deleted job's files go
    r = api.get(f"/api/v1/jobs/{first_id}/output")
    assert r.status_code == 410 and f"job {first_id} was deleted by alice at" in r.json()["error"]
    download = _pink(c, "alice", "download", first_id)
    assert download.returncode == 5 and "deleted by alice" in download.stderr
    assert first_id not in [j["id"] for j in api.get("/api/v1/jobs").json()["jobs"]]
    # The resubmit of a deleted job is refused with the same reason.
    assert api.post(f"/api/v1/jobs/{first_id}/resubmit").status_code == 410


def test_logs_of_a_queued_job_and_rm_of_a_running_one(cluster, images):
    c = cluster(max_parallel_jobs=1)
    api = c.api("alice")
    busy = submit(api, images["sleeper"]).json()["job"]["id"]
    wait_state(api, busy, {"RUNNING"})
    queued = submit(api, images["writer"]).json()["job"]["id"]
    wait_state(api, queued, {"QUEUED"})

    now = _pink(c, "alice", "logs", queued)
    assert now.returncode == 0 and now.stdout == ""
    assert "has not started, so it has no log yet" in now.stderr
    follow = subprocess.Popen([sys.executable, "-m", "pink_client", "logs", "-f", queued],
                              env=_env(c, "alice"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        refused = _pink(c, "alice", "rm", busy)
        assert refused.returncode == 5 and "cancel it first" in refused.stderr
        assert api.post(f"/api/v1/jobs/{busy}/cancel").status_code == 200
        out, err = follow.communicate(timeout=120)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert out == "hello\n" and "QUEUED" in err
    assert wait_state(api, queued, TERMINAL)["state"] == "SUCCEEDED"
    # A cancelled job can be deleted once it has ended.
    wait_state(api, busy, TERMINAL)
    assert _pink(c, "alice", "rm", busy, queued).returncode == 0
    assert api.get(f"/api/v1/jobs/{busy}").status_code == 410
