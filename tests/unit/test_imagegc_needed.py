"""What the worker daemon tells the image GC its jobs need (its queue in etcd, runs)."""

from __future__ import annotations

from types import SimpleNamespace

from pink.config import Config, WorkerConfig
from pink.states import JobState

A, B, C, D = ("sha256:" + c * 64 for c in "abcd")


def test_queued_claimed_and_running_jobs_need_their_images_ended_ones_do_not(cluster, tmp_path):
    from gpu_worker.daemon import WorkerDaemon

    cluster.add_worker("w1")
    cfg = Config(worker=WorkerConfig(name="w1", gpus="none", inbox=str(tmp_path / "in"),
                                     outbox=str(tmp_path / "out"), inputs_dir=str(tmp_path / "inp")))
    daemon = WorkerDaemon(cfg, store=cluster.store)
    daemon._layer_cache = {A: (), B: (), C: (), D: ()}  # what the engine holds
    cluster.add_job(state=JobState.QUEUED, image_id=A)
    cluster.add_job(state=JobState.STARTING, image_id=B)
    cluster.add_job(state=JobState.SUCCEEDED, image_id=D)
    daemon.runs["x"] = SimpleNamespace(job=SimpleNamespace(image_id=C))
    assert daemon.images_needed() == {A, B, C}
    # An upload in flight may be a thin one, relying on layers of any image held here.
    cluster.add_job(state=JobState.UPLOADING, image_id="")
    assert daemon.images_needed() == {A, B, C, D}
    assert daemon.image_gc.record.path == tmp_path / "state" / "images.json"
