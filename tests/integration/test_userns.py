"""Jobs are not host root: workers' engines remap users (``"userns-remap": "default"``, as the
Ansible role writes), so root in a job's container is an unprivileged uid on the host. GPU jobs
are the documented exception (``--userns=host``): see test_gpu_path.py."""

from __future__ import annotations

import contextlib
import json
import os

import docker
import pytest

import pink_dev as dev
from pink_dev.dockerd import mounts_under
from pink_dev.sampleimage import build_sample_image
from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.integration

SCRIPT = ("cat /proc/self/uid_map; id -u; cat /data/ds/public.txt; "
          "if cat /data/ds/secret.txt 2>/dev/null; then echo READ-SECRET; else echo DENIED; fi; sleep 3")


@pytest.fixture
def dataset(tmp_path):
    """A dataset with a world-readable file and one only the host's root may read."""
    folder = tmp_path / "datasets" / "ds"
    folder.mkdir(parents=True)
    (folder / "public.txt").write_text("public-data\n")
    (folder / "public.txt").chmod(0o644)
    (folder / "secret.txt").write_text("host-secret\n")
    (folder / "secret.txt").chmod(0o600)
    os.chown(folder / "secret.txt", 0, 0)
    return folder


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to root, dockerd)")
def test_a_cpu_job_runs_as_a_remapped_uid(cluster, images, dataset, tmp_path):
    c = cluster(datasets={"ds": str(dataset)})
    w = c.workers[0]
    assert w.dockerd is not None and w.dockerd.userns_remap
    info = json.loads(w.docker("info", "--format", "{{json .SecurityOptions}}").stdout)
    assert "name=userns" in info, info

    tar = tmp_path / "userns.tar"
    build_sample_image("pink-test-userns:latest", SCRIPT, tar, docker_host=None)
    api = c.api("alice")
    r = submit(api, tar, data="ds")
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    wait_state(api, job_id, {"RUNNING"})
    with contextlib.closing(docker.DockerClient(base_url=w.docker_url)) as engine:
        host = engine.containers.get(f"pink-{job_id}").attrs["HostConfig"]
    assert host["UsernsMode"] == "", host["UsernsMode"]  # the engine's remapping, not "host"
    job = wait_state(api, job_id, TERMINAL)
    assert job["state"] == "SUCCEEDED", job
    lines = api.get(f"/api/v1/jobs/{job_id}/logs").text.splitlines()

    # Root in the container (uid 0) is uid 100000 or so on the host, a range of 65536, not the
    # identity map "0 0 4294967295" of a container without a user namespace.
    inside, outside, count = map(int, lines[0].split())
    assert inside == 0 and outside > 0 and count < 4294967295, lines
    assert lines[1] == "0", lines  # root inside
    assert "public-data" in lines, lines
    # The host's root-only file, though bind-mounted, is closed to the job's root.
    assert "DENIED" in lines and "host-secret" not in lines, lines


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (dockerd)")
def test_purge_unmounts_what_a_killed_remapping_engine_leaves(tmp_path):
    """A SIGKILLed dockerd with userns-remap leaves bind mounts of its data root and of its
    ``<uid>.<gid>`` root; purge() takes them down and deletes the folder (the soak kills
    engines, and every leftover mount stayed until reboot)."""
    engine = dev.Dockerd(tmp_path / "engine", userns_remap=True)
    engine.start()
    try:
        engine.wait_ready(60)
        remapped = [m for m in mounts_under(engine.data_root) if m != str(engine.data_root)]
        assert remapped, "the remapping engine made no <uid>.<gid> bind mount"
        engine.kill()
    finally:
        engine.stop()
    engine.purge()
    assert mounts_under(engine.data_root) == []
    assert not engine.data_root.exists()
