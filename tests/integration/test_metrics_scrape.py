"""Metrics on real parts: a real Prometheus (Debian's package) scrapes the dev cluster's two web
servers (gunicorn, two processes each) and its worker daemon directly while a job runs; nginx keeps
/metrics off the public side."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers import TERMINAL, submit, track_logs, wait_state

import pink_dev as dev
from pink_dev.prometheus import Prometheus

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _count(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_the_example_scrape_config_is_valid():
    check = subprocess.run(["promtool", "check", "config", str(REPO / "docs" / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_web_and_worker_after_a_job(cluster, images, tmp_path, request):
    c = cluster(nginx=True, web_servers=2)
    web_targets = [web.url.removeprefix("http://") for web in c.web]
    worker_target = c.workers[0].metrics_address
    prom = Prometheus(tmp_path / "prometheus", port=dev.free_port(), web_targets=web_targets,
                      worker_targets=[worker_target], scrape_interval_s=0.5)
    track_logs(request.node, prom)
    with prom:
        api = c.api("alice")
        r = submit(api, images["writer"], name="metrics", timeout=60)
        assert r.status_code == 201, r.text
        job = wait_state(api, r.json()["job"]["id"], TERMINAL)
        assert job["state"] == "SUCCEEDED", job
        out = api.get(f"/api/v1/jobs/{job['id']}/output")
        assert out.status_code == 200 and len(out.content) == job["output_bytes"]
        # No GPU on this host: the job carries no GPU samples.
        assert job["gpu_util_mean"] is None and job["gpu_mem_peak_bytes"] is None

        # Gunicorn runs two processes: they write their counters into the multiprocess folder
        # and every scrape (whichever process answers) merges them, so each sees the submit.
        assert any((web.base_dir / "metrics").glob("counter_*.db") for web in c.web), "not in multiprocess mode"
        for _ in range(6):
            texts = [requests.get(f"{web.url}/metrics", timeout=5).text for web in c.web]
            assert sum(_count(text, "pink_submit_seconds_count") for text in texts) == 1, texts

        def at_least(n):
            return lambda result: bool(result) and float(result[0]["value"][1]) >= n

        prom.wait_for('min(up)', at_least(1))
        prom.wait_for('sum(pink_jobs_ended_total{outcome="SUCCEEDED", job="pink-worker"})', at_least(1))
        prom.wait_for('sum(pink_submit_seconds_count{job="pink-web"})', at_least(1))
        prom.wait_for('sum(pink_dispatch_seconds_count{job="pink-worker"})', at_least(1))
        size = os.path.getsize(images["writer"])
        prom.wait_for('sum(pink_transfer_bytes_total{direction="upload"})', at_least(size))
        prom.wait_for('sum(pink_transfer_bytes_total{direction="download"})', at_least(job["output_bytes"]))
        prom.wait_for('sum(pink_lease_renew_seconds_count)', at_least(1))
        # Live jobs, read from etcd by the web server: none left, every state present.
        # Both web servers read the same etcd: the same values twice (take max, not sum).
        live = prom.wait_for('max(pink_jobs{job="pink-web"}) by (state)', lambda result: len(result) == 5)
        prom.wait_for('pink_jobs{job="pink-web", state="QUEUED"}', lambda result: len(result) == 2)
        assert {s["metric"]["state"]: float(s["value"][1]) for s in live} == {
            "UPLOADING": 0, "QUEUED": 0, "STARTING": 0, "RUNNING": 0, "EXPORTING": 0}
        worker = c.workers[0].name
        prom.wait_for(f'pink_worker_job_slots{{worker="{worker}"}}', at_least(1))
        prom.wait_for(f'pink_worker_waiting_jobs{{worker="{worker}", reason="gpus"}}', lambda r: len(r) == 1)
        assert prom.query("pink_gpu_utilization_ratio") == []  # no NVML here: no GPU series
        # Every query of the Grafana dashboard in docs/ parses and names series that exist.
        dashboard = json.loads((REPO / "docs" / "grafana-pink.json").read_text())
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        for expr in exprs:
            prom.query(expr)  # raises on a query Prometheus refuses
        prom.wait_for('sum(pink_worker_waiting_jobs) by (reason)', bool)

    # The load balancer answers 404 for /metrics; the web server answers it on its own port.
    public = requests.get(f"{c.url}/metrics", verify=str(c.ca_cert), timeout=5)
    assert public.status_code == 404 and "pink_" not in public.text
    assert requests.get(f"{c.web[0].url}/metrics", timeout=5).status_code == 200
