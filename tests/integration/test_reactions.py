"""What happens when a job ends, on real parts: job-end e-mail through a local SMTP server
(aiosmtpd) and a webhook to a local HTTP receiver that fails before it answers, and a LOST job
with retry_lost=1 re-run on its worker once the worker is back (a FAILED one is not)."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

import pink_dev as dev

from tests.helpers import cli, submit, wait_state

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

FAST = dict(lease_ttl_s=4, loop_interval_s=0.5, sweep_interval_s=1, etcd_overrides={"timeout_s": 2},
            web_overrides={"janitor_interval_s": 0.5, "lease_ttl_s": 3, "lost_worker_grace_s": 30})


class Mailbox(Message):
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.messages = []

    def handle_message(self, message) -> None:  # noqa: ANN001 - aiosmtpd's
        self.messages.append(message)


@pytest.fixture
def smtp():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=dev.free_port())
    controller.start()
    yield controller, box
    controller.stop()


@pytest.fixture
def receiver():
    """An HTTP server on 127.0.0.1 that answers 500 to its first two POSTs, then 204."""
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - stdlib naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, dict(self.headers), json.loads(body)))
            self.send_response(500 if len(got) <= 2 else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], got
    server.shutdown()


def test_a_job_end_is_mailed_and_posted_once_through_failures(cluster, images, smtp, receiver):
    controller, box = smtp
    port, got = receiver
    c = cluster(notify_overrides={
        "smtp_host": "127.0.0.1", "smtp_port": controller.port, "smtp_from": "pink@example.org",
        "webhook_allow": [f"http://127.0.0.1:{port}/hooks/"], "backoff_s": 0.3, "interval_s": 0.3,
        "base_url": "https://pink.example.org"})
    api = c.api("alice")
    refused = submit(api, images["writer"], notify="1")
    assert refused.status_code == 400 and "set your e-mail address first" in refused.json()["error"]
    refused = submit(api, images["writer"], webhook=f"http://127.0.0.1:{port}@evil.example.com/hooks/")
    assert refused.status_code == 400
    done = cli(c, "alice", "notify", "--email", "alice@example.org")
    assert done.returncode == 0 and "job-end e-mail to alice@example.org: for jobs submitted with --notify" in done.stdout
    assert api.get("/api/v1/me").json()["email"] == "alice@example.org"
    job = submit(api, images["fail"], name="nightly", notify="1", webhook=f"http://127.0.0.1:{port}/hooks/ci?run=7").json()["job"]
    wait_state(api, job["id"], {"FAILED"})
    done = dev.wait_until(lambda: (j := api.get(f"/api/v1/jobs/{job['id']}").json()["job"])["notified_at"] and j,
                          30, "the job's end to be announced", interval=0.2)
    assert done["notify_note"] == "delivered after 3 attempts"
    assert len(got) == 3  # two 500s, then delivered: no more
    path, headers, body = got[-1]
    assert path == "/hooks/ci?run=7" and headers["Pink-Delivery"] == job["id"]
    assert body["delivery"] == job["id"] and body["event"] == "job.ended"
    assert body["job"]["state"] == "FAILED" and body["job"]["exit_code"] == 3 and body["job"]["user"] == "alice"
    assert body["links"]["page"] == f"https://pink.example.org/jobs/{job['id']}"
    assert [m["To"] for m in box.messages] == ["alice@example.org"]
    mail = box.messages[0]
    assert mail["Subject"] == f"[PINK] job nightly ({job['id']}) FAILED" and mail["Pink-Delivery"] == job["id"]
    assert "Exit code: 3" in mail.get_payload()
    status = cli(c, "alice", "status", job["id"])
    assert status.returncode == 0
    assert f"e-mail, http://127.0.0.1:{port}/hooks/ci?run=7" in status.stdout
    assert "delivered after 3 attempts" in status.stdout
    time.sleep(1)
    assert len(got) == 3 and len(box.messages) == 1


def test_a_lost_job_with_retry_lost_runs_again_on_its_worker_and_a_failed_one_does_not(cluster, images):
    c = cluster(**FAST, notify_overrides={"interval_s": 0.5})
    api = c.api("alice")
    failed = submit(api, images["fail"], retry_lost="1").json()["job"]["id"]
    wait_state(api, failed, {"FAILED"})
    job = submit(api, images["counter"], retry_lost="1", name="safe-twice").json()["job"]["id"]
    wait_state(api, job, {"RUNNING"})
    # The worker's host crashes: its daemon and the job's container with it.
    c.workers[0].daemon.kill()
    with contextlib.closing(docker.DockerClient(base_url=c.workers[0].docker_url)) as engine:
        engine.containers.get(f"pink-{job}").kill()
    lost = wait_state(api, job, {"LOST"}, timeout=20)
    assert "retried if LOST (retry_lost=1)" in lost["reason"]
    # No live worker holds the image meanwhile: the job says why it waits.
    waiting = dev.wait_until(lambda: (j := api.get(f"/api/v1/jobs/{job}").json()["job"])["retry_note"] and j,
                             15, "a note on the waiting retry", interval=0.2)
    assert waiting["retry_note"].startswith("retry waiting") and not waiting["retried_by"]
    back = time.time()
    c.workers[0].daemon.start()  # back, with the image in its engine
    old = dev.wait_until(lambda: (j := api.get(f"/api/v1/jobs/{job}").json()["job"])["retried_by"] and j,
                         60, "the LOST job to be retried", interval=0.3)
    new = wait_state(api, old["retried_by"], {"SUCCEEDED"}, timeout=60)
    assert (new["retry_of"], new["retry_lost"], new["name"], new["worker"]) == (job, 0, "safe-twice", c.workers[0].name)
    assert old["retry_note"] == f"retried as job {new['id']}"
    assert new["created_at"] - back < 15  # placed within seconds of the worker's return
    mine = api.get("/api/v1/jobs").json()["jobs"]
    assert sorted(j["id"] for j in mine) == sorted([failed, job, new["id"]])  # one retry, none of the FAILED job
    assert api.get(f"/api/v1/jobs/{failed}").json()["job"]["retried_by"] == ""
    assert re.search(rf"^retry of +{job}$", cli(c, "alice", "status", new["id"]).stdout, re.M)
    assert re.search(rf"^retried as +{new['id']}$", cli(c, "alice", "status", job).stdout, re.M)
