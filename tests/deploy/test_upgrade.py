"""Upgrading the deployed cluster to a new release without failing a client request (issue 15,
item 7; docs/deploy.md, "Upgrade a running cluster").

Release A runs (the session's deployment). Two clients submit small jobs, poll them and download
their archives through nginx over HTTPS, counting every request; one uploads slowly, so that
uploads are in flight while web servers are taken out. A job held on a worker keeps running.
Then ``site.yml`` deploys release B (the same code with another version string): web servers
roll one at a time out of nginx and back, workers are drained, their jobs end, they restart
and are undrained. No client request may fail, the held job's result must be intact, and B
must be what runs afterwards. Runs last (file order), on the same deployment; the cluster
stays on release B.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from pink_client.http import _exception_chain

from deploy_harness import TIMINGS, Deployment, job_of, submit, wait_for, wait_state

from tests.helpers import TERMINAL

pytestmark = pytest.mark.deploy

MARKER = "+release-b"
LOOP_SCRIPT = "mkdir -p /out; echo loop-ok > /out/result.txt"
#: Waits for the test to let it finish (it makes /tmp/go with ``docker exec``), then writes its result.
HELD_SCRIPT = "while [ ! -e /tmp/go ]; do sleep 0.2; done; mkdir -p /out; echo held-ok > /out/result.txt"


def result_of(archive: bytes, workdir: Path, name: str) -> str:
    path = workdir / f"{name}.tar.zst"
    path.write_bytes(archive)
    out = subprocess.run(f"zstd -dc {path} | tar -xO out/result.txt", shell=True, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip()


class SlowBody:
    """An upload body that takes ``seconds`` to send (Content-Length known, not chunked)."""

    def __init__(self, data: bytes, seconds: float) -> None:
        self.data, self.seconds = data, seconds

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        step = 128 << 10
        for start in range(0, len(self.data), step):
            yield self.data[start:start + step]
            time.sleep(self.seconds * step / len(self.data))


def closed_before_answering(exc: BaseException) -> bool:
    """Whether the server closed the connection without sending a byte of an answer."""
    return any(isinstance(e, http.client.RemoteDisconnected) for e in _exception_chain(exc))


class Client(threading.Thread):
    """Submits a job, polls it until it ends, downloads its archive; again, until stopped.
    Every HTTP request is counted; a failure is any exception (connection refused, reset,
    timeout) or any answer other than 2xx.

    As the ``pink`` CLI, each submission opens a connection of its own (a `pink submit` is a
    process of its own), and polls and downloads reuse one. A reused keep-alive connection can
    be closed by nginx (a reload ends its old worker processes' idle connections) while a
    request is on its way; the server then answers nothing. HTTP lets a client send such an
    idempotent request again on a new connection (RFC 9112, 9.3.1; browsers, curl and Go do):
    a GET closed before any answer is sent once more and counted apart. Nothing else is retried."""

    def __init__(self, deployment: Deployment, image: bytes, name: str, upload_s: float = 0.0) -> None:
        super().__init__(name=name, daemon=True)
        self.deployment = deployment
        self.url, self.workdir, self.image, self.upload_s = deployment.url, deployment.workdir, image, upload_s
        self.session = deployment.api()
        self.stopping = threading.Event()
        self.requests = 0
        self.resent = 0
        self.failures: list[str] = []
        self.jobs_done = 0

    def call(self, method: str, path: str, session: requests.Session | None = None, resending: bool = False,
             **kwargs) -> requests.Response | None:
        self.requests += 1
        try:
            resp = (session or self.session).request(method, self.url + path, timeout=(10, 120), **kwargs)
        except requests.RequestException as exc:
            if method == "GET" and closed_before_answering(exc) and not resending:
                self.resent += 1
                return self.call(method, path, session, resending=True, **kwargs)
            self.failures.append(f"{time.strftime('%H:%M:%S')} {method} {path}: {exc!r}")
            return None
        if not 200 <= resp.status_code < 300:
            self.failures.append(f"{time.strftime('%H:%M:%S')} {method} {path}: HTTP {resp.status_code} "
                                 f"{resp.text[:300]}")
            return None
        return resp

    def one_job(self) -> None:
        body = SlowBody(self.image, self.upload_s) if self.upload_s else self.image
        with self.deployment.api() as own:
            resp = self.call("POST", "/api/v1/jobs", own, data=body, headers={
                "Content-Type": "application/x-tar", "Idempotency-Key": uuid.uuid4().hex})
        if resp is None:
            return
        job_id = resp.json()["job"]["id"]
        while not self.stopping.is_set():
            resp = self.call("GET", f"/api/v1/jobs/{job_id}")
            if resp is not None and resp.json()["job"]["state"] in TERMINAL:
                break
            time.sleep(0.25)
        else:
            return
        job = resp.json()["job"]
        if job["state"] != "SUCCEEDED":
            self.failures.append(f"job {job_id} ended {job['state']}: {job.get('reason')}")
            return
        resp = self.call("GET", f"/api/v1/jobs/{job_id}/output")
        if resp is None:
            return
        content = result_of(resp.content, self.workdir, f"{self.name}-{job_id}")
        if content != "loop-ok":
            self.failures.append(f"job {job_id}: archive holds {content!r}")
        self.jobs_done += 1

    def run(self) -> None:
        while not self.stopping.is_set():
            self.one_job()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=300)
        self.session.close()


def release_b(deployment: Deployment) -> Path:
    """Release A's source with another version string."""
    src = deployment.workdir / "src-b"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(deployment.workdir / "src", src)
    init = src / "pink" / "__init__.py"
    text, found = re.subn(r'^__version__ = "([^"]+)"$', rf'__version__ = "\1{MARKER}"', init.read_text(), flags=re.M)
    assert found == 1
    init.write_text(text)
    return src


def release_in_use(deployment: Deployment, host: str, unit: str) -> tuple[str, str]:
    """(the current release's folder, the release folder the unit's processes map code from)."""
    fleet = deployment.fleet
    current = fleet.exec(host, "readlink", "-f", "/opt/pink/current", check=True).stdout.strip()
    # gunicorn's workers (children of its arbiter) load the app; the worker daemon is one process.
    maps = fleet.exec(host, "sh", "-c", f"pid=$(systemctl show -P MainPID {unit}); "
                      "for p in $pid $(pgrep -P $pid); do cat /proc/$p/maps; done", check=True).stdout
    used = {m for m in re.findall(r"(/opt/pink/releases/[0-9a-f]+)/", maps)}
    assert len(used) == 1, (host, unit, used)
    return current, used.pop()


def release_held_job_once_drained(deployment: Deployment, api: requests.Session, worker: str, job_id: str,
                                  seen: dict) -> None:
    """Let the held job finish a few seconds after the playbook has drained its worker."""
    url = deployment.url
    wait_for(lambda: any(w["name"] == worker and w["drained"] for w in
                         api.get(f"{url}/api/v1/workers", timeout=30).json()["workers"]), 900,
             f"the playbook to drain {worker}", interval=1)
    seen["drained_at"] = time.time()
    time.sleep(5)
    assert job_of(api, url, job_id)["state"] == "RUNNING"
    # The sample image has busybox's sh, not a `touch` on its PATH.
    deployment.fleet.exec(worker, "docker", "exec", f"pink-{job_id}", "sh", "-c", ": > /tmp/go", check=True)
    seen["released_at"] = time.time()


def test_site_upgrades_web_servers_and_workers_without_a_failed_request(deployment: Deployment, api) -> None:
    fleet, url = deployment.fleet, deployment.url
    before = {h.name: release_in_use(deployment, h.name, "pink-web") for h in fleet.group("web")}
    before |= {h.name: release_in_use(deployment, h.name, "pink-worker") for h in fleet.group("workers")}
    src_b = release_b(deployment)

    held = submit(deployment, "held", HELD_SCRIPT)
    worker = wait_state(api, url, held, {"RUNNING"}, 120)["worker"]
    image = deployment.sample_image("loop", LOOP_SCRIPT).read_bytes()
    clients = [Client(deployment, image, "fast"), Client(deployment, image, "slow", upload_s=8.0)]
    seen: dict = {}
    releaser = threading.Thread(target=release_held_job_once_drained,
                                args=(deployment, deployment.api(), worker, held, seen), daemon=True)
    for thread in (*clients, releaser):
        thread.start()
    time.sleep(5)  # the clients are under way before anything changes
    try:
        run = deployment.playbook(str(Path(__file__).parents[2] / "site.yml"), "-e", f"pink_app_source_dir={src_b}")
        TIMINGS["site.yml, upgrade A -> B"] = run.seconds
        time.sleep(5)  # and go on a little after
    finally:
        for client in clients:
            client.stop()
        releaser.join(timeout=60)
    assert run.rc == 0, run.output[-6000:]

    requests_made = sum(c.requests for c in clients)
    failures = [f for c in clients for f in c.failures]
    print(f"\nupgrade A -> B: {run.seconds:.1f} s; {requests_made} client requests, {len(failures)} failed, "
          f"{sum(c.resent for c in clients)} GETs sent again after a keep-alive connection closed unanswered; "
          f"jobs done {[c.jobs_done for c in clients]}; held job released "
          f"{seen.get('released_at', 0) - seen.get('drained_at', 0):.1f} s after the drain")
    assert not failures, "\n".join(failures)
    assert all(c.jobs_done >= 3 for c in clients), [c.jobs_done for c in clients]

    # Each web server was taken out of nginx and put back; nothing is left out.
    for web in fleet.group("web"):
        assert re.search(rf"RUNNING HANDLER \[pink_web : Take the web server out of the load balancers\].*?\n"
                         rf"changed: \[{web.name} -> lb1[](]", run.output, re.S), web.name
    conf = fleet.exec("lb1", "cat", "/etc/nginx/conf.d/pink.conf", check=True).stdout
    assert " down;" not in conf

    # The held job ran once, ended before its worker's daemon restarted, and its result is intact.
    done = wait_state(api, url, held, TERMINAL, 60)
    assert done["state"] == "SUCCEEDED", done
    assert [h["state"] for h in done["history"]].count("RUNNING") == 1
    ended = done["history"][-1]["at"]
    workers = {w["name"]: w for w in api.get(f"{url}/api/v1/workers", timeout=30).json()["workers"]}
    assert workers[worker]["registered_at"] > ended > seen["released_at"] - 1, (workers[worker], done)
    assert not any(w["drained"] for w in workers.values()), workers
    archive = api.get(f"{url}/api/v1/jobs/{held}/output", timeout=60)
    assert archive.status_code == 200
    assert result_of(archive.content, deployment.workdir, "held") == "held-ok"

    # Release B is what runs now: every web server says so, every daemon maps B's code.
    for web in fleet.group("web"):
        health = fleet.exec("lb1", "curl", "-sf", f"http://{web.ip}:8000/healthz", check=True).stdout
        assert health.count(MARKER) == 1, (web.name, health)
    after = {h.name: release_in_use(deployment, h.name, "pink-web") for h in fleet.group("web")}
    after |= {h.name: release_in_use(deployment, h.name, "pink-worker") for h in fleet.group("workers")}
    for host, (current, used) in after.items():
        assert current == used != before[host][1], (host, before[host], after[host])
    version = fleet.exec(worker, "/opt/pink/current/venv/bin/python", "-c", "import pink; print(pink.__version__)",
                         check=True).stdout
    assert version.strip().endswith(MARKER), version
