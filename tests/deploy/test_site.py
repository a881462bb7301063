"""``ansible-playbook site.yml`` on 8 systemd hosts: it converges, changes nothing the second
time, and the cluster it builds runs a job through nginx over HTTPS.

The tests run in file order and share one deployment (see conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests

from deploy_harness import TIMINGS, Deployment

pytestmark = pytest.mark.deploy

SERVICES = {
    "lb": ["nginx"],
    "web": ["pink-web"],
    "etcd": ["etcd"],
    "workers": ["docker", "pink-worker", "ssh"],
}
RESULT_SCRIPT = "mkdir -p /out; echo deployed-ok > /out/result.txt"


def test_fresh_run_converges(deployment: Deployment) -> None:
    run = deployment.fresh
    assert run.rc == 0, f"site.yml failed (rc {run.rc}):\n{run.output[-6000:]}"
    recap = run.recap()
    assert set(recap) == {h.name for h in deployment.fleet.hosts}
    assert all(counts["failed"] == 0 and counts["unreachable"] == 0 for counts in recap.values()), recap


def test_second_run_changes_nothing(deployment: Deployment) -> None:
    rerun = deployment.playbook(str(Path(__file__).parents[2] / "site.yml"))
    TIMINGS["site.yml, second run"] = rerun.seconds
    assert rerun.rc == 0, rerun.output[-6000:]
    changed = {host: counts["changed"] for host, counts in rerun.recap().items() if counts["changed"]}
    assert not changed, "the second run changed things:\n" + "\n".join(rerun.changed_tasks())


def test_services_run_under_systemd(deployment: Deployment) -> None:
    fleet = deployment.fleet
    for group, units in SERVICES.items():
        for host in fleet.group(group):
            for unit in units:
                state = fleet.exec(host, "systemctl", "is-active", unit).stdout.strip()
                enabled = fleet.exec(host, "systemctl", "is-enabled", unit).stdout.strip()
                assert (state, enabled) == ("active", "enabled"), f"{unit} on {host.name}: {state}, {enabled}"


def test_etcd_has_three_healthy_members_over_tls(deployment: Deployment) -> None:
    fleet = deployment.fleet
    member = fleet.group("etcd")[0]
    health = fleet.exec(member, "pink-etcdctl", "endpoint", "health", "--cluster", "-w", "json", timeout=60)
    assert health.returncode == 0, health.stderr
    endpoints = json.loads(health.stdout)
    assert len(endpoints) == 3 and all(e["health"] for e in endpoints), endpoints
    assert all(e["endpoint"].startswith("https://") for e in endpoints), endpoints
    members = json.loads(fleet.exec(member, "pink-etcdctl", "member", "list", "-w", "json").stdout)["members"]
    assert sorted(m["name"] for m in members) == ["etcd1", "etcd2", "etcd3"]
    # Without a client certificate the cluster refuses to talk.
    plain = fleet.exec(member, "etcdctl", f"--endpoints=https://{member.ip}:2379", "--cacert=/etc/etcd/pink/ca.pem",
                       "--command-timeout=5s", "get", "/pink", "--prefix", "--keys-only", timeout=60)
    assert plain.returncode != 0


def test_transfer_account_only_runs_the_gate(deployment: Deployment) -> None:
    """The web servers' key reaches the worker (host key pinned) but may run nothing else."""
    fleet = deployment.fleet
    web, worker = fleet.group("web")[0], fleet.group("workers")[0]
    ssh = ["ssh", "-i", "/etc/pink/ssh/id_ed25519", "-o", "UserKnownHostsFile=/etc/pink/ssh/known_hosts",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"pink-transfer@{worker.ip}"]
    refused = fleet.exec(web, *ssh, "id", timeout=60)
    assert refused.returncode == 126 and "refused command" in refused.stderr, refused
    allowed = fleet.exec(web, *ssh, "tail -c +1 /var/lib/pink/outbox/00000000000000000000.log", timeout=60)
    assert "No such file" in allowed.stderr, allowed  # the gate served the read (tail): reached, file absent


def _run_job(deployment: Deployment, image: Path, tag: str) -> None:
    submit = deployment.cli("submit", str(image), "--wait", "-o", "json")
    assert submit.returncode == 0, submit.stdout + submit.stderr
    job = json.loads(submit.stdout)
    assert job["state"] == "SUCCEEDED", job
    archive = deployment.workdir / f"{tag}.tar.zst"
    download = deployment.cli("download", job["id"], "-o", str(archive))
    assert download.returncode == 0, download.stdout + download.stderr
    content = subprocess.run(f"zstd -dc {archive} | tar -xO out/result.txt", shell=True,
                             capture_output=True, text=True, timeout=60)
    assert content.stdout.strip() == "deployed-ok", content


@pytest.fixture(scope="module")
def sample_image(deployment: Deployment) -> Path:
    return deployment.sample_image("sample", RESULT_SCRIPT)


def test_job_runs_through_nginx_over_https(deployment: Deployment, sample_image: Path) -> None:
    login = deployment.login()
    assert login.returncode == 0, login.stdout + login.stderr
    t0 = time.monotonic()
    _run_job(deployment, sample_image, "first")
    TIMINGS["first job: submit -> download"] = time.monotonic() - t0


def test_browser_ui_is_served_through_nginx(deployment: Deployment) -> None:
    """The web UI's templates and static files are part of the release the hosts install."""
    ca = str(deployment.ssl_dir / "ca.pem")
    page = requests.get(f"{deployment.url}/login", verify=ca, timeout=30)
    assert page.status_code == 200 and "<form" in page.text, (page.status_code, page.text[:500])
    css = requests.get(f"{deployment.url}/static/css/pink.css", verify=ca, timeout=30)
    assert css.status_code == 200, css.status_code


def test_job_runs_with_a_web_server_and_an_etcd_member_down(deployment: Deployment, sample_image: Path) -> None:
    """nginx skips the dead web server (passive health check) and etcd keeps its quorum."""
    fleet = deployment.fleet
    web, member = fleet.group("web")[0], fleet.group("etcd")[0]
    fleet.exec(web, "systemctl", "stop", "pink-web", check=True)
    fleet.exec(member, "systemctl", "stop", "etcd", check=True)
    try:
        _run_job(deployment, sample_image, "degraded")
    finally:
        fleet.exec(member, "systemctl", "start", "etcd", timeout=120)
        fleet.exec(web, "systemctl", "start", "pink-web", timeout=120)


def test_gpu_settings_render_without_a_gpu(deployment: Deployment) -> None:
    """With GPU support forced on, the worker role would give docker the nvidia runtime and
    the worker runtime "nvidia" with all GPUs. Checked in check mode, with a stand-in for the
    toolkit's runtime binary: no GPU, driver or NVIDIA repository exists here."""
    fleet = deployment.fleet
    worker = fleet.group("workers")[-1]
    stub = "/usr/bin/nvidia-container-runtime"
    fleet.exec(worker, "sh", "-c", f"printf '#!/bin/sh\\nexit 1\\n' > {stub} && chmod 755 {stub}", check=True)
    try:
        run = deployment.playbook(
            str(Path(__file__).parents[2] / "playbooks/workers.yml"), "--check", "--diff", "--limit", worker.name,
            "-e", "pink_worker_gpu=true", "-e", "pink_worker_check_driver=false",
            "-e", "pink_worker_nvidia_toolkit_install=false",
        )
    finally:
        fleet.exec(worker, "rm", "-f", stub)
    assert run.rc == 0, run.output[-6000:]
    assert '+    "runtimes": {' in run.output and '"path": "nvidia-container-runtime"' in run.output, run.output[-6000:]
    assert '+runtime = "nvidia"' in run.output and '+gpus = "auto"' in run.output, run.output[-6000:]
    # Check mode changed nothing: docker still has only its own runtimes.
    info = fleet.exec(worker, "docker", "info", "--format", "{{json .Runtimes}}").stdout
    assert "nvidia" not in info
