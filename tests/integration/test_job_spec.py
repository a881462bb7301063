"""What a job asks for reaches its container, on real parts (etcd, dockerd, sshd + gate,
gunicorn, worker daemons): command, entrypoint, env, workdir, the PINK_* variables, datasets
mounted read-only at /data/NAME, CPU/memory/shm limits (docker inspect), placement by dataset,
and the refusals that leave no job behind."""

from __future__ import annotations

import contextlib

import docker
import pytest

from tests.helpers import TERMINAL, submit, submit_spec, wait_state

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture
def mnist(tmp_path):
    """A dataset folder on the host with one file in it."""
    folder = tmp_path / "datasets" / "mnist"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("digits-0-to-9\n")
    return folder


def test_command_env_workdir_datasets_and_defaults_reach_the_job(cluster, images, mnist):
    c = cluster(datasets={"mnist": str(mnist)}, cpus_per_job=1, memory_per_job="512m", shm_per_job="96m")
    api = c.api("alice")
    script = ('echo "greeting=$GREETING pwd=$(pwd)"; env | grep ^PINK_ | sort; cat /data/mnist/train.txt; '
              'if touch /data/mnist/new 2>/dev/null; then echo WROTE; else echo READ-ONLY; fi; '
              'df -k /dev/shm | tail -1')
    r = submit_spec(api, images["writer"], {
        "entrypoint": ["/bin/sh", "-c"], "command": [script], "env": {"GREETING": "hi there"},
        "workdir": "/tmp", "data": ["mnist"], "name": "spec-check",
    })
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "SUCCEEDED", job
    # Asked for nothing: the worker's defaults, resolved when the job was placed.
    assert (job["cpus"], job["memory_bytes"], job["shm_bytes"]) == (1, 512 * MiB, 96 * MiB)
    assert job["command"] == [script] and job["entrypoint"] == ["/bin/sh", "-c"]
    assert job["env"] == {"GREETING": "hi there"} and job["datasets"] == ["mnist"]
    log = api.get(f"/api/v1/jobs/{job['id']}/logs").text
    lines = log.splitlines()
    assert "greeting=hi there pwd=/tmp" in lines
    told = dict(line.split("=", 1) for line in lines if line.startswith("PINK_"))
    assert told == {
        "PINK_JOB_ID": job["id"], "PINK_JOB_NAME": "spec-check", "PINK_USER": "alice",
        "PINK_WORKER": c.workers[0].name, "PINK_GPUS": "", "PINK_CPUS": "1",
        "PINK_MEMORY_BYTES": str(512 * MiB), "PINK_DATA_DIR": "/data", "PINK_DATASETS": "mnist",
        "PINK_INPUT_DIR": "/in",
    }, log
    assert "digits-0-to-9" in lines and "READ-ONLY" in lines, log
    assert not (mnist / "new").exists()
    assert lines[-1].split()[1] == str(96 * 1024), log  # /dev/shm's size in KiB

    # More memory than the worker gives a job (its host's, no maximum set): 400, no job.
    r = submit(api, images["writer"], memory="100t")
    assert r.status_code == 400 and "no worker gives a job 100 TiB of memory" in r.json()["error"], r.text
    r = submit(api, images["writer"], data="imagenet")
    assert r.status_code == 400 and "no worker has dataset imagenet (datasets: mnist)" in r.json()["error"]
    assert [j["id"] for j in api.get("/api/v1/jobs").json()["jobs"]] == [job["id"]]


def test_the_container_gets_the_limits_and_a_read_only_bind(cluster, images, mnist):
    c = cluster(datasets={"mnist": str(mnist)}, max_memory_per_job="1g")
    api = c.api("alice")
    r = submit(api, images["sleeper"], cpus="0.5", memory="256m", shm_size="128m", data="mnist", timeout=120)
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], {"RUNNING"} | TERMINAL)
    assert job["state"] == "RUNNING", job
    assert (job["cpus"], job["memory_bytes"], job["shm_bytes"]) == (0.5, 256 * MiB, 128 * MiB)
    with contextlib.closing(docker.DockerClient(base_url=c.workers[0].docker_url)) as engine:
        attrs = engine.containers.get(f"pink-{job['id']}").attrs
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == host["MemorySwap"] == 256 * MiB  # no swap on top
    assert host["ShmSize"] == 128 * MiB
    (mount,) = attrs["Mounts"]
    assert (mount["Type"], mount["Source"], mount["Destination"], mount["RW"]) == \
        ("bind", str(mnist), "/data/mnist", False)
    assert "PINK_DATASETS=mnist" in attrs["Config"]["Env"]
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
    # Over this worker's maximum of 1 GiB: refused, and nothing is left of the request.
    r = submit(api, images["writer"], memory="2g")
    assert r.status_code == 400 and "at most 1 GiB" in r.json()["error"], r.text
    assert len(api.get("/api/v1/jobs").json()["jobs"]) == 1


def test_a_job_goes_to_the_only_worker_with_its_dataset(cluster, images, mnist):
    c = cluster(workers=2, start_workers=False)
    c.workers[1].configure(datasets={"mnist": str(mnist)})
    for i in range(2):
        c.start_worker(i)
    api = c.api("alice")
    datasets = api.get("/api/v1/datasets").json()["datasets"]
    assert datasets == [{"name": "mnist", "workers": [c.workers[1].name], "available": True}]
    jobs = []
    for _ in range(2):  # the other worker is just as idle: the dataset decides, every time
        r = submit_spec(api, images["writer"], {"data": ["mnist"], "command": ["cat", "/data/mnist/train.txt"]})
        assert r.status_code == 201, r.text
        jobs.append(r.json()["job"])
    assert {j["worker"] for j in jobs} == {c.workers[1].name}
    for j in jobs:
        done = wait_state(api, j["id"], TERMINAL)
        assert done["state"] == "SUCCEEDED", done
        assert api.get(f"/api/v1/jobs/{j['id']}/logs").text == "digits-0-to-9\n"
    # Without a dataset, the idle worker gets it.
    r = submit(api, images["writer"])
    assert r.json()["job"]["worker"] == c.workers[0].name

    # The only worker with the dataset drained: 503 with the reason, and no job.
    root = c.api("root")
    assert root.post(f"/api/v1/workers/{c.workers[1].name}/drain").status_code == 200
    before = len(api.get("/api/v1/jobs").json()["jobs"])
    r = submit(api, images["writer"], data="mnist")
    assert r.status_code == 503, r.text
    assert f"no worker in service has dataset mnist; {c.workers[1].name} would fit but is drained" \
        in r.json()["error"]
    assert len(api.get("/api/v1/jobs").json()["jobs"]) == before
