"""Host-level faults on the deployed fleet (issue: at most once under crashes, part 3).

Each test ``docker stop``s one whole host — systemd shuts down, then every process in it is
gone and its address stops answering — while a job is in flight through nginx, checks what
the promise says must happen, then starts the host again so the next test finds a whole
cluster. Runs after test_site.py (file order), on the same deployment.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest

from deploy_harness import TIMINGS, Deployment, job_of, submit, wait_for, wait_state

from tests.helpers import TERMINAL

pytestmark = pytest.mark.deploy

#: From `docker stop` (systemd's shutdown included): worker lease TTL (10 s) + janitor sweep
#: (5 s) + one failed etcd call (5 s) + slack.
LOST_WITHIN_S = 45.0


def containers(deployment: Deployment, worker: str, job_id: str) -> list[str]:
    out = deployment.fleet.exec(worker, "docker", "ps", "-a", "--filter", f"name=^pink-{job_id}$",
                                "--format", "{{.Names}} {{.Status}}", check=True).stdout
    return out.splitlines()


def starts(deployment: Deployment, worker: str, job_id: str, since: float) -> int:
    """Container start events of the job on the worker's engine since ``since`` (epoch)."""
    out = deployment.fleet.exec(worker, "docker", "events", "--since", f"{since:.0f}", "--until",
                                f"{time.time() + 1:.0f}", "--filter", f"container=pink-{job_id}",
                                "--filter", "event=start", "--format", "{{.Status}}", check=True).stdout
    return len(out.split())


def test_a_worker_host_stopped_mid_job_loses_it_and_never_reruns_it(deployment: Deployment, api) -> None:
    fleet, url = deployment.fleet, deployment.url
    job_id = submit(deployment, "sleeper", "sleep 600")
    job = wait_state(api, url, job_id, {"RUNNING"}, 120)
    victim = job["worker"]
    other = next(h.name for h in fleet.group("workers") if h.name != victim)

    stopped = time.monotonic()
    fleet.stop(victim)
    lost = wait_state(api, url, job_id, TERMINAL, 120)
    TIMINGS["worker host stop -> job LOST"] = time.monotonic() - stopped
    assert lost["state"] == "LOST" and f"worker {victim} went away" in lost["reason"], lost
    assert time.monotonic() - stopped < LOST_WITHIN_S, lost
    # The CLI tells the user what happened and what to do.
    status = deployment.cli("status", job_id)
    assert "LOST" in status.stdout and "resubmit" in status.stdout, status.stdout + status.stderr

    # The cluster goes on with the other worker meanwhile.
    quick = submit(deployment, "quick", "echo quick")
    done = wait_state(api, url, quick, TERMINAL, 120)
    assert (done["state"], done["worker"]) == ("SUCCEEDED", other), done

    back = time.time()  # the engine's events start with its boot: all of them count
    fleet.start(victim)
    wait_for(lambda: any(w["name"] == victim and w["alive"]
                         for w in api.get(f"{url}/api/v1/workers", timeout=30).json()["workers"]),
             120, f"{victim} to register again")
    # The worker back from the dead removes the LOST job's container and never starts it again.
    wait_for(lambda: not containers(deployment, victim, job_id), 60, "the lost job's container to be removed")
    time.sleep(5)
    assert job_of(api, url, job_id)["state"] == "LOST"
    assert starts(deployment, victim, job_id, back - 1) == 0
    assert not containers(deployment, other, job_id)
    assert [h["state"] for h in job_of(api, url, job_id)["history"]].count("RUNNING") == 1


def _start_upload(deployment: Deployment, image: bytes) -> ssl.SSLSocket:
    """A raw upload through the load balancer that sends half of the image, then stalls."""
    lb = deployment.fleet.group("lb")[0].ip
    context = ssl.create_default_context(cafile=str(deployment.ssl_dir / "ca.pem"))
    sock = context.wrap_socket(socket.create_connection((lb, 443), timeout=30), server_hostname=lb)
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: {lb}\r\nAuthorization: Bearer {deployment.token}\r\n"
            f"Content-Length: {len(image)}\r\n\r\n")
    sock.sendall(head.encode() + image[: len(image) // 2])
    return sock


def test_a_web_host_stopped_mid_upload_fails_the_job_and_leaves_no_file(deployment: Deployment, api) -> None:
    fleet, url = deployment.fleet, deployment.url
    image = deployment.sample_image("sleeper", "sleep 600").read_bytes()
    before = {j["id"] for j in api.get(f"{url}/api/v1/jobs", timeout=30).json()["jobs"]}
    sock = _start_upload(deployment, image)
    try:
        job = wait_for(lambda: [j for j in api.get(f"{url}/api/v1/jobs", timeout=30).json()["jobs"]
                                if j["id"] not in before], 60, "the upload to start")[0]
        assert job["state"] == "UPLOADING", job
        worker = job["worker"]
        wait_for(lambda: fleet.exec(worker, "sh", "-c", f"ls /var/lib/pink/inbox | grep {job['id']}").stdout,
                 60, "the partial file in the worker's inbox")
        # The web server carrying the upload logged it.
        carrier = next(h for h in fleet.group("web")
                       if job["id"] in fleet.exec(h, "journalctl", "-u", "pink-web", "--no-pager").stdout)
        stopped = time.monotonic()
        fleet.stop(carrier)
    finally:
        sock.close()
    try:
        failed = wait_state(api, url, job["id"], TERMINAL, 120)
        TIMINGS["web host stop -> upload FAILED"] = time.monotonic() - stopped
        assert failed["state"] == "FAILED" and "upload never finished" in failed["reason"], failed
        # No partial file anywhere (the worker's sweep removes it, even while the dead peer's
        # scp is still waiting for bytes), and no container was ever made.
        for host in fleet.group("workers"):
            wait_for(lambda h=host: job["id"] not in fleet.exec(h, "ls", "-a", "/var/lib/pink/inbox").stdout,
                     150, f"the partial upload to be removed from {host.name}")
            assert not containers(deployment, host.name, job["id"])
        # Meanwhile the other web server takes every request.
        run = deployment.cli("submit", str(deployment.sample_image("quick", "echo quick")), "--wait", "-o", "json")
        assert run.returncode == 0 and json.loads(run.stdout)["state"] == "SUCCEEDED", run.stdout + run.stderr
    finally:
        fleet.start(carrier)
    wait_for(lambda: fleet.exec(carrier, "systemctl", "is-active", "pink-web").stdout.strip() == "active",
             60, "pink-web to come back")


def test_an_etcd_host_stopped_mid_job_loses_nothing(deployment: Deployment, api) -> None:
    """The leader's host goes: a new leader is elected, the job in flight finishes once, and a
    job submitted while the host is down runs too."""
    fleet, url = deployment.fleet, deployment.url
    members = fleet.group("etcd")
    status = json.loads(fleet.exec(members[0], "pink-etcdctl", "endpoint", "status", "--cluster", "-w", "json",
                                   check=True, timeout=60).stdout)
    leader_id = status[0]["Status"]["leader"]
    leader_url = next(s["Endpoint"] for s in status if s["Status"]["header"]["member_id"] == leader_id)
    victim = next(h for h in members if f"//{h.ip}:" in leader_url)

    job_id = submit(deployment, "sleep-then-write", "sleep 15; mkdir -p /out; echo deployed-ok > /out/result.txt")
    running = wait_state(api, url, job_id, {"RUNNING"}, 120)
    since = time.time() - 60
    fleet.stop(victim)
    try:
        during = deployment.cli("submit", str(deployment.sample_image("quick", "echo quick")), "--wait", "-o", "json")
        assert during.returncode == 0 and json.loads(during.stdout)["state"] == "SUCCEEDED", during.stdout + during.stderr
        done = wait_state(api, url, job_id, TERMINAL, 180)
        assert done["state"] == "SUCCEEDED", done
        assert starts(deployment, running["worker"], job_id, since) == 1
    finally:
        fleet.start(victim)
    wait_for(lambda: all(e["health"] for e in json.loads(
        fleet.exec(members[0], "pink-etcdctl", "endpoint", "health", "--cluster", "-w", "json", timeout=60).stdout
        or "[]")), 90, f"{victim.name} to rejoin", interval=2)
