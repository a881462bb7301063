"""GPU quarantine in the worker daemon: a health check (nvidia-smi answered from fixtures by a
fake runner) or an admin (etcd) takes a GPU out of the plan and of the advertised free GPUs;
the other GPU keeps getting jobs."""

from __future__ import annotations

from types import SimpleNamespace

from gpu_worker.gpuhealth import GpuHealth
from pink import quarantine
from pink.config import Config, WorkerConfig
from pink.model import User
from pink.states import JobState
from webapp import jobs
from webapp.spec import JobSpec

from tests.unit.test_gpuhealth import GPUS, FakeHost

IMG = "sha256:" + "ab" * 32
ROOT = User("root", "", admin=True)


def make_daemon(cluster, tmp_path, monkeypatch, host):
    from gpu_worker.daemon import WorkerDaemon

    cluster.add_worker("w1", gpus=2, images=(IMG,))
    cfg = Config(worker=WorkerConfig(name="w1", gpus="none", max_parallel_jobs=4, inbox=str(tmp_path / "in"),
                                     outbox=str(tmp_path / "out"), inputs_dir=str(tmp_path / "inp")))
    daemon = WorkerDaemon(cfg, store=cluster.store)
    daemon.lease.id = cluster.leases["w1"]
    daemon.gpus = list(GPUS)
    daemon.host_cpus, daemon.host_memory = 64, 256 << 30  # room for both jobs, whatever this host has
    daemon.health = GpuHealth(daemon.gpus, runner=host, xid_source="")
    monkeypatch.setattr(daemon, "_launch", lambda job, fresh=False, ahead=None: daemon.runs.__setitem__(
        job.id, SimpleNamespace(job=job, gpu_indices=job.gpu_indices)))
    return daemon


def submit_gpu_jobs(cluster, n):
    for _ in range(n):
        jobs.submit(Config(), cluster.store, cluster.links, None, ROOT,
                    JobSpec.parse({"image": IMG, "gpus": 1}, ROOT), body=None, length=None)


def started(cluster):
    return sorted(tuple(j.gpu_indices) for j in cluster.store.list_jobs("root") if j.state is JobState.STARTING)


def test_a_gpu_with_uncorrectable_errors_gets_no_jobs_and_the_other_does(cluster, tmp_path, monkeypatch):
    host = FakeHost(detail="q_sram_uncorrectable_h100.txt")  # GPU 1 is sick
    daemon = make_daemon(cluster, tmp_path, monkeypatch, host)
    daemon.check_gpus()
    info = daemon.info()
    assert info.gpus_free == (0,)
    assert info.quarantined == {"1": "1 uncorrectable ECC error(s) since the driver loaded"}
    submit_gpu_jobs(cluster, 2)
    daemon._start_queued(cluster.store.queue("w1"))
    assert started(cluster) == [(0,)], "only GPU 0 ran a job; the second job waits"
    # The check passes again (the GPU was reset): GPU 1 takes the waiting job.
    host.detail = "q_healthy_h100.txt"
    daemon.check_gpus()
    daemon._start_queued(cluster.store.queue("w1"))
    assert started(cluster) == [(0,), (1,)]


def test_an_admin_quarantine_is_read_from_etcd_and_released(cluster, tmp_path, monkeypatch):
    daemon = make_daemon(cluster, tmp_path, monkeypatch, FakeHost())
    daemon.check_gpus()
    assert daemon.info().quarantined == {}
    quarantine.quarantine(cluster.store, "w1", 0, "fan noise", by="root")
    daemon.quarantine_changed.set()  # what the watch of quarantine/w1/ does
    info = daemon.info()
    assert info.quarantined == {"0": "admin root: fan noise"} and info.gpus_free == (1,)
    submit_gpu_jobs(cluster, 2)
    daemon._start_queued(cluster.store.queue("w1"))
    assert started(cluster) == [(1,)]
    assert quarantine.release(cluster.store, "w1", 0) is True
    assert quarantine.release(cluster.store, "w1", 0) is False
    daemon.quarantine_changed.set()
    daemon._start_queued(cluster.store.queue("w1"))
    assert started(cluster) == [(0,), (1,)]


def test_a_lost_gpu_is_quarantined_with_the_drivers_message(cluster, tmp_path, monkeypatch):
    host = FakeHost()
    daemon = make_daemon(cluster, tmp_path, monkeypatch, host)
    daemon.check_gpus()
    host.listing, host.list_rc = "query_lost.txt", 15
    daemon.check_gpus()
    assert daemon.info().quarantined == {"0": "GPU is lost (GPU is lost. Reboot the system to recover this GPU)"}


def test_placement_counts_only_gpus_out_of_quarantine():
    from pink import scheduling

    def view(name, quarantined):
        return scheduling.WorkerView(name=name, alive=True, drained=False, gpus=2, cpus=8, images=frozenset(),
                                     queued_gpu_seconds=0, active_jobs=0, quarantined_gpus=quarantined)
    sick, well = view("a", 1), view("b", 0)
    assert scheduling.choose_worker([sick, well], 2).name == "b"
    assert scheduling.choose_worker([sick], 2) is None
    assert scheduling.explain_no_worker([sick], 2) == "no worker has 2 GPUs out of quarantine (most: 1)"
    assert scheduling.choose_worker([sick], 1).name == "a"
    # Resources stay a share of all the worker's GPUs.
    assert scheduling.job_resources(sick, 1).cpus == scheduling.job_resources(well, 1).cpus
