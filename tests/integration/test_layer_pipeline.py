"""Layer-pipelined loading on a real engine (gpu_worker.layerload): layers are registered while
the upload grows, the image only once it is complete and valid, and an upload that ends badly
leaves neither the image nor its layers; a whole job with a multi-layer image runs."""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
import threading
import time
from pathlib import Path

import docker
import pytest

from bench.images import Blob, random_stream, write_image
from gpu_worker.layerload import PARTIAL_LABEL, LayerChain, remove_partials
from gpu_worker.preload import Preload
from pink.states import JobState
from pink_client.archive import read_image_archive
from tests.helpers import TERMINAL, cli, wait_state

pytestmark = pytest.mark.integration

LAYERS = ["busybox", Blob("pipeline-a", 3 << 20), Blob("pipeline-b", 2 << 20, "data/b"),
          Blob("pipeline-c", 3 << 20, "data/c")]


def _sha256(seed: str, size: int) -> str:
    sha = hashlib.sha256()
    for chunk in random_stream(seed, size):
        sha.update(chunk)
    return sha.hexdigest()


@pytest.fixture
def engine(extra_dockerd):
    client = docker.DockerClient(base_url=extra_dockerd().url, version="1.41", timeout=120)
    yield client
    client.close()


def _sent(tmp_path: Path, layers=LAYERS, cmd=("sha256sum", "/data/c")) -> tuple[bytes, object]:
    """The image's bytes in the order the CLI sends them, and the image."""
    img = write_image(tmp_path / "image.tar", layers, list(cmd), "pink-pipeline:test")
    raw = img.path.read_bytes()
    return b"".join(raw[a:b] for a, b in read_image_archive(img.path).upload_ranges()), img


def _upload(inbox: Path, data: bytes, stop_at: int, started: threading.Event) -> threading.Thread:
    def write() -> None:
        with inbox.open("wb") as f:
            for i in range(0, stop_at, 1 << 20):
                f.write(data[i:min(i + (1 << 20), stop_at)])
                f.flush()
                started.set()
                time.sleep(0.05)
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def _wait(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _partial_chains(engine: docker.DockerClient) -> list[list[str]]:
    """The layer chains of the partial images now on the engine. The worker removes each step's
    partial image once the next one holds its layers: one listed may be gone when inspected."""
    chains = []
    for summary in engine.api.images(filters={"label": PARTIAL_LABEL}):
        try:
            chains.append(engine.api.inspect_image(summary["Id"])["RootFS"]["Layers"])
        except docker.errors.ImageNotFound:
            continue
    return chains


def test_layers_are_registered_before_the_upload_ends_and_the_image_only_at_its_end(engine, tmp_path):
    data, img = _sent(tmp_path)
    inbox = tmp_path / "inbox.tar"
    top = read_image_archive(img.path).upload_ranges()[-2]  # the top layer's file
    preload = Preload("job-a", inbox, engine).start()
    _upload(inbox, data, len(data) - (top[1] - top[0]) // 2, threading.Event()).join()
    _wait(lambda: preload.chain is not None and preload.chain.registered == 3)
    partial = engine.images.list(filters={"label": PARTIAL_LABEL})
    assert len(partial) == 1
    assert partial[0].attrs["RootFS"]["Layers"] == list(img.diff_ids[:3])
    assert partial[0].attrs["Config"]["Cmd"] is None  # nothing of the user's config
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(img.image_id)
    with inbox.open("ab") as f:  # the rest, then the web server's "valid"
        f.write(data[inbox.stat().st_size:])
    preload.state = JobState.QUEUED
    assert preload.done.wait(60)
    assert preload.loaded == {img.image_id}, preload.error
    assert preload.chain.early[:3] == [0, 1, 2]  # and the top one, if it came before QUEUED
    assert engine.images.list(filters={"label": PARTIAL_LABEL}) == []
    assert engine.images.get(img.image_id).attrs["RootFS"]["Layers"] == list(img.diff_ids)
    out = engine.containers.run(img.image_id, remove=True, network_mode="none")
    assert out.split()[0].decode() == _sha256("pipeline-c", 3 << 20)  # the top layer's file


@pytest.mark.parametrize("end", [JobState.FAILED, JobState.CANCELLED])
def test_a_truncated_or_cancelled_upload_leaves_no_image_and_no_layers(engine, tmp_path, end):
    data, img = _sent(tmp_path)
    inbox = tmp_path / "inbox.tar"
    preload = Preload("job-b", inbox, engine).start()
    _upload(inbox, data, len(data) * 3 // 4, threading.Event()).join()
    _wait(lambda: preload.chain is not None and preload.chain.registered >= 2)
    preload.state = end
    assert preload.done.wait(60)
    assert preload.loaded == set() and "ended" in preload.error
    assert engine.images.list(all=True) == []
    assert engine.df()["LayersSize"] == 0  # the engine dropped the partial layers too

    # A later job with an image that shares the bottom layers gets its own image, whole.
    other, other_img = _sent(tmp_path / "other", [*LAYERS[:2], Blob("pipeline-other", 1 << 20, "data/c")])
    inbox2 = tmp_path / "inbox2.tar"
    inbox2.write_bytes(other)
    later = Preload("job-c", inbox2, engine)
    later.state = JobState.QUEUED
    later.start()
    assert later.done.wait(60)
    assert later.loaded == {other_img.image_id}, later.error
    assert [i.id for i in engine.images.list(all=True)] == [other_img.image_id]


def test_partial_images_left_by_a_crash_are_removed_at_start(engine, tmp_path):
    data, img = _sent(tmp_path)
    path = tmp_path / "sent.tar"
    path.write_bytes(data)
    chain = LayerChain(engine, path, "job-d")
    with tarfile.open(path) as tar:
        for member in tar:
            chain.add(member)
            chain.advance()  # the worker "crashes" here: no finish, no discard
    assert len(engine.images.list(filters={"label": PARTIAL_LABEL})) == 1
    assert remove_partials(engine) == 1
    assert engine.images.list(all=True) == [] and engine.df()["LayersSize"] == 0


class _HeldBody:
    """A request body of known length whose rest is sent only once ``release`` is set."""

    def __init__(self, data: bytes, cut: int, release: threading.Event) -> None:
        self.data, self.cut, self.release = data, cut, release

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        for i in range(0, self.cut, 1 << 20):
            yield self.data[i:min(i + (1 << 20), self.cut)]
        assert self.release.wait(120)
        yield self.data[self.cut:]


def test_the_worker_registers_layers_while_the_upload_runs(cluster, tmp_path, request):
    c = cluster()
    data, img = _sent(tmp_path)
    # The top layer's file (3 MiB); its first 2 MiB are sent, so that the hops' 1 MiB reads
    # surely pass every layer under it on.
    top = read_image_archive(img.path).upload_ranges()[-2]
    engine = docker.DockerClient(base_url=c.workers[0].docker_url, version="1.41")
    request.addfinalizer(engine.close)
    release = threading.Event()
    answer: list = []
    upload = threading.Thread(target=lambda: answer.append(c.api("alice").post(
        "/api/v1/jobs", params={"output": "none"}, data=_HeldBody(data, top[0] + (2 << 20), release),
        headers={"Content-Type": "application/x-tar"}, timeout=300)), daemon=True)
    upload.start()
    try:
        # The three layers under the top one are registered while the upload waits.
        _wait(lambda: list(img.diff_ids[:3]) in _partial_chains(engine), timeout=120)
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(img.image_id)
    finally:
        release.set()
        upload.join(300)
    assert answer and answer[0].status_code == 201, answer and answer[0].text
    job = wait_state(c.api("alice"), answer[0].json()["job"]["id"], TERMINAL, timeout=120)
    assert job["state"] == "SUCCEEDED", job
    logs = c.api("alice").get(f"/api/v1/jobs/{job['id']}/logs").text
    assert logs.split()[0] == _sha256("pipeline-c", 3 << 20)
    assert engine.images.list(filters={"label": PARTIAL_LABEL}) == []


def test_a_multi_layer_image_runs_through_the_cluster(cluster, tmp_path):
    c = cluster()
    img = write_image(tmp_path / "image.tar", LAYERS, ["sha256sum", "/data/c"], "pink-pipeline:job")
    done = cli(c, "alice", "submit", str(img.path), "--wait", "--output", "none")
    assert done.returncode == 0, done.stderr
    api = c.api("alice")
    job = api.get("/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]
    assert job["state"] == "SUCCEEDED" and job["image_id"] == img.image_id, job
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").text.split()[0] == _sha256("pipeline-c", 3 << 20)
    with contextlib.closing(docker.DockerClient(base_url=c.workers[0].docker_url, version="1.41")) as engine:
        assert engine.images.list(filters={"label": PARTIAL_LABEL}) == []
