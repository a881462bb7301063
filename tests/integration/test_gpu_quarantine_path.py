"""GPU quarantine on real parts: a worker whose fake `nvidia-smi` prints the recorded failure
outputs (tests/unit/data/gpuhealth, reconstructed from NVIDIA's documented formats), an engine
with an `nvidia` runtime whose prestart hook is stubbed (as in test_gpu_path.py). A GPU that
turns bad stops getting jobs while the other keeps running them; an admin's quarantine and
release through the API take effect."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import pink_dev as dev
from pink_dev.sampleimage import build_sample_image
from tests.helpers import TERMINAL, start_fake_gpu_worker, submit, wait_state

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "gpuhealth"
#: The two GPUs of the fixtures.
UUIDS = ("GPU-5f8e8c6e-1b4a-4c2e-9f3d-7a1b2c3d4e5f", "GPU-a2c4e6f8-0b1d-4e3f-8a5c-6d7e8f9a0b1c")


def _wait_worker(api, check, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        worker = api.get("/api/v1/workers").json()["workers"][0]
        if check(worker):
            return worker
        if time.monotonic() > deadline:
            raise AssertionError(f"worker never got there: {worker}")
        time.sleep(0.3)


def test_a_gpu_that_turns_bad_gets_no_jobs_and_admins_quarantine_and_release(cluster, tmp_path):
    fakebin = tmp_path / "fakebin"
    dev.fake_nvidia_smi(fakebin, [(uuid, "NVIDIA H100 80GB HBM3", 81559) for uuid in UUIDS])
    answers = fakebin / "answers"  # what it prints: healthy to begin with
    assert (answers / "list").read_text() == (DATA / "query_2gpus.csv").read_text()
    c = cluster(own_engines=True, start_workers=False, max_parallel_jobs=4, gpu_health_interval_s=1,
                gpu_xid_source="")
    w = start_fake_gpu_worker(c, fakebin)

    api, admin = c.api("alice"), c.api(c.admin_user)
    worker = _wait_worker(api, lambda x: x["gpus_free"] == [0, 1])
    assert worker["quarantined"] == {}

    # GPU 1 starts reporting uncorrectable SRAM errors: quarantined within a check interval.
    shutil.copy(DATA / "q_sram_uncorrectable_h100.txt", answers / "detail")
    worker = _wait_worker(api, lambda x: x["quarantined"])
    assert worker["quarantined"] == {"1": "1 uncorrectable ECC error(s) since the driver loaded"}
    assert worker["gpus_free"] == [0] and worker["alive"]

    tar = tmp_path / "gpu.tar"
    build_sample_image("pink-test-gpuq:latest", 'echo "PINK_GPUS=$PINK_GPUS"; sleep 2', tar, docker_host=None)
    first = submit(api, tar, gpus=1).json()["job"]["id"]
    second = submit(api, tar, gpus=1).json()["job"]["id"]
    # Two GPUs but one out of quarantine: a 2-GPU job is not placed (503, saying why).
    refused = submit(api, tar, gpus=2)
    assert refused.status_code == 503 and "out of quarantine" in refused.json()["error"]
    done = [wait_state(api, j, TERMINAL, timeout=90) for j in (first, second)]
    assert [j["state"] for j in done] == ["SUCCEEDED"] * 2, done
    assert [j["gpu_indices"] for j in done] == [[0], [0]], "the sick GPU 1 ran nothing"

    # GPU 1 is healthy again; an admin takes GPU 0 out by hand.
    shutil.copy(DATA / "q_healthy_h100.txt", answers / "detail")
    r = admin.post(f"/api/v1/workers/{worker['name']}/gpus/0/quarantine", json={"reason": "fan failing"})
    assert r.status_code == 200, r.text
    worker = _wait_worker(api, lambda x: list(x["quarantined"]) == ["0"])
    assert worker["quarantined"]["0"] == f"admin {c.admin_user}: fan failing" and worker["gpus_free"] == [1]
    third = submit(api, tar, gpus=1).json()["job"]["id"]
    assert wait_state(api, third, TERMINAL, timeout=90)["gpu_indices"] == [1]

    # The quarantine survives a restart of the worker (it is in etcd), and is released by the API.
    c.stop_worker(0)
    w.daemon.start().wait_ready(60)
    _wait_worker(api, lambda x: x["alive"] and list(x["quarantined"]) == ["0"])
    r = admin.delete(f"/api/v1/workers/{worker['name']}/gpus/0/quarantine")
    assert r.json()["released"] is True
    _wait_worker(api, lambda x: x["quarantined"] == {} and x["gpus_free"] == [0, 1])
