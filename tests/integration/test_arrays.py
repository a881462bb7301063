"""Job arrays end to end on real parts (etcd, dockerd, sshd + gate, gunicorn, worker daemon),
driven by the `pink` CLI: one upload runs as 20 jobs, each told its own index; the %N limit
holds (from the jobs' own histories: never more than N claimed at once); `pink ls` folds the
array into one line; `pink cancel ARRAY` cancels every job of it that has not ended."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pink_dev import wait_until
from tests.helpers import most_claimed_at_once

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLAIMED = ("STARTING", "RUNNING", "EXPORTING")


def _cli(cluster, user, *argv):
    env = {**os.environ, "PINK_URL": cluster.url, "PINK_TOKEN": cluster.tokens[user],
           "PINK_CLI_CONFIG": "/nonexistent/pink-cli.json"}
    return subprocess.run([sys.executable, "-m", "pink_client", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_an_array_of_20_runs_once_per_index_from_one_upload_within_its_limit(cluster, images):
    c = cluster(max_parallel_jobs=6, sweep_interval_s=1)
    tar = images["writer"]
    r = _cli(c, "alice", "submit", str(tar), "--array", "0-19%3", "--output", "none", "--wait",
             "--", "sh", "-c", "echo index=$PINK_ARRAY_INDEX of=$PINK_ARRAY_SIZE; sleep 0.5")
    assert r.returncode == 0, r.stderr
    array_id = r.stdout.split()[0]
    assert f"submitted array {array_id}: 20 jobs, at most 3 at once" in r.stderr
    api = c.api("alice")
    array = api.get(f"/api/v1/arrays/{array_id}").json()["array"]
    assert array["counts"] == {"SUCCEEDED": 20} and array["size"] == 20 and array["limit"] == 3
    jobs = array["jobs"]
    assert sorted(j["array_index"] for j in jobs) == list(range(20))
    for job in jobs:
        log = api.get(f"/api/v1/jobs/{job['id']}/logs").text
        assert log.strip() == f"index={job['array_index']} of=20", (job["id"], log)
    # One upload: the first job carried the image's bytes, the 19 others none.
    sent = sorted(j["image_bytes"] for j in jobs)
    assert sent == [0] * 19 + [tar.stat().st_size]
    assert len({j["image_id"] for j in jobs}) == 1
    # The limit held, and was reached (6 slots on the worker, 3 of them usable by the array).
    assert most_claimed_at_once(jobs) == 3
    # The array's shared upload is gone from the inbox once no job of it is left there.
    inbox = Path(c.workers[0].inbox)
    wait_until(lambda: not (inbox / f"{array_id}.tar").exists(), 30, "the worker's sweep to remove the upload")


def test_an_array_is_listed_as_one_line_and_cancelled_as_a_group(cluster, images):
    c = cluster(max_parallel_jobs=4)
    r = _cli(c, "alice", "submit", str(images["sleeper"]), "--array", "1,3,5-7%2", "--name", "sweep")
    assert r.returncode == 0, r.stderr
    array_id = r.stdout.split()[0]
    api = c.api("alice")

    def running() -> dict | None:
        array = api.get(f"/api/v1/arrays/{array_id}").json()["array"]
        return array if array["counts"].get("RUNNING") == 2 else None

    wait_until(running, 60, "two jobs of the array to run")
    r = _cli(c, "alice", "ls")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if array_id in line]
    assert len(lines) == 1 and "sweep [array, 5 of 5]" in lines[0] and "3 QUEUED, 2 RUNNING" in lines[0], r.stdout
    r = _cli(c, "alice", "ls", "--expand")
    assert sum(1 for line in r.stdout.splitlines() if "sweep" in line) == 5, r.stdout
    r = _cli(c, "alice", "status", array_id)
    assert r.returncode == 0 and "3 QUEUED, 2 RUNNING" in r.stdout and "at most 2 at once" in r.stdout, r.stdout
    # Another user sees no such array or job.
    assert _cli(c, "bob", "cancel", array_id).returncode == 5
    r = _cli(c, "alice", "cancel", array_id)
    assert r.returncode == 0, r.stderr
    assert "cancelled 5 jobs" in r.stderr
    # The running ones are stopped by their worker, which keeps what they wrote, then end.
    array = wait_until(lambda: (a := api.get(f"/api/v1/arrays/{array_id}").json()["array"])["ended"] and a,
                       60, "the array's cancelled jobs to end")
    assert array["counts"] == {"CANCELLED": 5}
    indexes = sorted(j["array_index"] for j in array["jobs"])
    assert indexes == [1, 3, 5, 6, 7]
    # The claimed ones had their containers stopped; none of the queued ones ever started.
    assert sum(1 for j in array["jobs"] if any(h["state"] == "STARTING" for h in j["history"])) == 2
    # A bad range is refused by the CLI before anything is sent.
    r = _cli(c, "alice", "submit", str(images["sleeper"]), "--array", "7-3")
    assert r.returncode == 2 and "goes backwards" in r.stderr


def test_an_array_of_a_held_image_sends_nothing_and_spreads_over_the_workers_holding_it(cluster, images):
    """Both workers hold the image (each engine loaded it for an earlier job: the second upload
    went to the other worker while the first was drained): the array's jobs go to both, by
    load, and no byte of the image is sent."""
    c = cluster(workers=2, max_parallel_jobs=2)
    api, root = c.api("alice"), c.api("root")
    tar = images["writer"]
    image_id = ""
    for _ in c.workers:
        with open(tar, "rb") as body:
            r = api.post("/api/v1/jobs", params={"output": "none"}, data=body)
        assert r.status_code == 201, r.text
        job = wait_until(lambda: (j := api.get(f"/api/v1/jobs/{r.json()['job']['id']}").json()["job"])["state"]
                         == "SUCCEEDED" and j, 60, "the job to succeed")
        image_id = job["image_id"]
        assert root.post(f"/api/v1/workers/{job['worker']}/drain").status_code == 200
    for w in c.workers:
        assert root.post(f"/api/v1/workers/{w.name}/drain", params={"undo": "1"}).status_code == 200
    wait_until(lambda: len(api.get(f"/api/v1/images/{image_id}").json()["workers"]) == 2, 30,
               "both workers to report the image")
    r = _cli(c, "alice", "submit", str(tar), "--array", "0-9", "--output", "none", "--wait")
    assert r.returncode == 0, r.stderr
    assert "0 bytes sent" in r.stderr
    array = api.get(f"/api/v1/arrays/{r.stdout.split()[0]}").json()["array"]
    assert array["counts"] == {"SUCCEEDED": 10}
    per_worker = {w.name: sum(j["worker"] == w.name for j in array["jobs"]) for w in c.workers}
    assert sorted(per_worker.values()) == [5, 5], per_worker
    assert all(j["image_bytes"] == 0 for j in array["jobs"])
