"""The GPU path without a GPU: a worker that sees two H100s (real nvidia-smi output from a fake
binary), an engine with an `nvidia` runtime and NVIDIA's prestart hook stubbed, and the
device requests the jobs' containers really get, read back with `docker inspect`."""

from __future__ import annotations

import contextlib

import docker
import pytest

import pink_dev as dev
from pink_dev.sampleimage import build_sample_image
from tests.helpers import TERMINAL, start_fake_gpu_worker, submit, wait_state

pytestmark = pytest.mark.integration

#: `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader` on an H100 host.
H100_X2 = """0, GPU-3f0b9c61-2d57-8e1a-9c47-5b1e0f7a2c11, NVIDIA H100 80GB HBM3, 81559 MiB
1, GPU-8a41d2e7-6b93-4f0c-a1d5-2e7c9b3f4a60, NVIDIA H100 80GB HBM3, 81559 MiB
"""


def test_gpu_jobs_get_exclusive_device_requests_and_the_nvidia_runtime(cluster, tmp_path):
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    dev.fake_nvidia_smi(fakebin, [(line.split(", ")[1], "NVIDIA H100 80GB HBM3", 81559) for line in H100_X2.splitlines()])
    c = cluster(own_engines=True, start_workers=False, max_parallel_jobs=4)
    w = start_fake_gpu_worker(c, fakebin)

    api = c.api("alice")
    workers = api.get("/api/v1/workers").json()["workers"]
    assert [g["name"] for g in workers[0]["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2

    tar = tmp_path / "gpu.tar"
    build_sample_image("pink-test-gpu:latest",
                       'echo "PINK_GPUS=$PINK_GPUS NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"; sleep 4', tar,
                       docker_host=None)
    one = submit(api, tar, gpus=1).json()["job"]["id"]
    other = submit(api, tar, gpus=1).json()["job"]["id"]
    both = submit(api, tar, gpus=2).json()["job"]["id"]
    wait_state(api, one, {"RUNNING"})
    wait_state(api, other, {"RUNNING"})
    seen = {}
    for job_id in (one, other):
        with contextlib.closing(docker.DockerClient(base_url=w.docker_url)) as engine:
            attrs = engine.containers.get(f"pink-{job_id}").attrs
        host = attrs["HostConfig"]
        assert host["Runtime"] == "nvidia"
        assert host["NetworkMode"] == "none" and host["Privileged"] is False
        # The documented exception to the engine's user-namespace remapping (README).
        assert host["UsernsMode"] == "host"
        (request,) = host["DeviceRequests"]
        assert request["Driver"] == "nvidia" and request["Capabilities"] == [["gpu"]]
        seen[job_id] = request["DeviceIDs"]
    assert sorted(seen.values()) == [["0"], ["1"]]  # exclusive: never the same index twice
    waiting = api.get(f"/api/v1/jobs/{both}").json()["job"]
    assert waiting["state"] == "QUEUED" and "waiting for 2 GPUs (0 free)" in waiting["waiting_reason"]

    done = [wait_state(api, j, TERMINAL, timeout=60) for j in (one, other, both)]
    assert [j["state"] for j in done] == ["SUCCEEDED"] * 3, done
    assert done[2]["gpu_indices"] == [0, 1]
    assert all(j["gpu_seconds"] >= 3 * len(j["gpu_indices"]) for j in done)
    log = api.get(f"/api/v1/jobs/{one}/logs").text
    index = seen[one][0]
    assert f"PINK_GPUS={index} NVIDIA_VISIBLE_DEVICES={index}" in log, log


def test_a_worker_without_nvidia_smi_is_cpu_only_and_refuses_nothing_it_can_run(cluster, images):
    c = cluster()
    api = c.api("alice")
    (worker,) = api.get("/api/v1/workers").json()["workers"]
    assert worker["gpus"] == [] and worker["alive"]
    r = submit(api, images["writer"], gpus=1)
    assert r.status_code == 503 and "no worker has 1 GPU" in r.json()["error"]
    assert wait_state(api, submit(api, images["writer"]).json()["job"]["id"], TERMINAL)["state"] == "SUCCEEDED"
