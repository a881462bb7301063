"""Metrics (pink/metrics.py, webapp/metrics.py, gpu_worker/metrics.py and gpustats.py) on the
in-memory etcd, and NVML sampling on recorded-style readings (tests/unit/fakenvml.py)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpu_worker import gpustats
from gpu_worker.gpus import Gpu
from gpu_worker.metrics import WorkerCollector
from pink import metrics
from pink.config import ConfigError, WorkerConfig
from pink.states import JobState
from tests.unit.fakenvml import FakeNvml

IMG = "sha256:" + "ab" * 32


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ----- web server ------------------------------------------------------------------------------

def test_metrics_need_no_login_and_count_live_jobs_by_state_and_worker(client, cluster):
    cluster.add_worker("w1")
    cluster.add_worker("w2")
    cluster.add_job(state=JobState.QUEUED, worker="w1")
    cluster.add_job(state=JobState.QUEUED, worker="w2")
    cluster.add_job(state=JobState.RUNNING, worker="w1")
    cluster.add_job(state=JobState.SUCCEEDED, worker="w1")  # ended: not in the queue index
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    got = samples(resp.get_data(as_text=True))
    assert got[("pink_jobs", (("state", "QUEUED"),))] == 2
    assert got[("pink_jobs", (("state", "RUNNING"),))] == 1
    assert got[("pink_jobs", (("state", "UPLOADING"),))] == 0
    assert ("pink_jobs", (("state", "SUCCEEDED"),)) not in got
    assert got[("pink_queue_jobs", (("state", "QUEUED"), ("worker", "w2")))] == 1
    assert got[("pink_queue_jobs", (("state", "RUNNING"), ("worker", "w1")))] == 1
    assert got[("pink_store_up", ())] == 1
    # The counters of this process come along (one process: no multiprocess directory).
    assert ("pink_jobs_ended_total", (("outcome", "SUCCEEDED"),)) in got


def test_the_cluster_gauges_are_cached_for_a_few_seconds(cluster):
    now = [100.0]
    collector = metrics.ClusterCollector(cluster.store, ttl_s=5, clock=lambda: now[0])
    cluster.add_worker("w1")
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("pink_jobs", {"state": "QUEUED"}) == 0
    cluster.add_job(state=JobState.QUEUED)
    now[0] += 4
    assert registry.get_sample_value("pink_jobs", {"state": "QUEUED"}) == 0  # cached
    now[0] += 2
    assert registry.get_sample_value("pink_jobs", {"state": "QUEUED"}) == 1


def test_an_unreachable_etcd_reads_as_store_down_not_as_zero_jobs(cluster, monkeypatch):
    from pink.errors import StoreUnavailable

    def down():
        raise StoreUnavailable("etcd is unavailable")

    monkeypatch.setattr(cluster.store, "all_queues", down)
    registry = CollectorRegistry()
    registry.register(metrics.ClusterCollector(cluster.store))
    assert registry.get_sample_value("pink_store_up") == 0
    assert registry.get_sample_value("pink_jobs", {"state": "QUEUED"}) is None


def test_a_submit_is_observed_in_the_submit_histogram(client, as_user, cluster):
    cluster.add_worker("w1", images=(IMG,))
    before = value("pink_submit_seconds_count")
    resp = client.post("/api/v1/jobs", query_string={"image": IMG}, data=b"", headers=as_user("root"))
    assert resp.status_code == 201, resp.json
    assert value("pink_submit_seconds_count") == before + 1
    client.get("/api/v1/jobs", headers=as_user("root"))  # not a submit
    assert value("pink_submit_seconds_count") == before + 1


def test_jobs_ended_count_the_transitions_this_process_made(cluster):
    before = value("pink_jobs_ended_total", outcome="CANCELLED")
    cluster.add_worker("w1")
    job = cluster.add_job(state=JobState.QUEUED)
    cluster.store.transition(job, JobState.CANCELLED)
    assert cluster.store.transition(job, JobState.CANCELLED) is None  # a lost race counts nothing
    assert value("pink_jobs_ended_total", outcome="CANCELLED") == before + 1


def test_an_end_whose_answer_was_lost_and_resent_counts_once(cluster, monkeypatch):
    """The retry helper re-sent a committed transition (its answer was lost): the resent one
    fails its compare, the store finds its own write id, and the end is counted once."""
    cluster.add_worker("w1")
    job = cluster.add_job(state=JobState.QUEUED)
    before = value("pink_jobs_ended_total", outcome="FAILED")
    original = cluster.store._txn

    def committed_then_resent(*args, **kwargs):
        original(*args, **kwargs)  # commits; its answer is "lost"
        return original(*args, **kwargs)  # the re-sent attempt: the compare fails now

    monkeypatch.setattr(cluster.store, "_txn", committed_then_resent)
    moved = cluster.store.transition(job, JobState.FAILED, reason="test")
    assert moved is not None and moved.state is JobState.FAILED
    assert value("pink_jobs_ended_total", outcome="FAILED") == before + 1


def test_dispatch_latency_is_measured_from_queued(cluster):
    cluster.add_worker("w1")
    job = cluster.add_job(state=JobState.RUNNING)
    queued_at = next(h["at"] for h in job.history if h["state"] == "QUEUED")
    before = value("pink_dispatch_seconds_count")
    le_10 = value("pink_dispatch_seconds_bucket", le="10.0")
    metrics.job_dispatched(job, now=queued_at + 7.5)
    assert value("pink_dispatch_seconds_count") == before + 1
    assert value("pink_dispatch_seconds_bucket", le="10.0") == le_10 + 1
    assert value("pink_dispatch_seconds_bucket", le="5.0") <= value("pink_dispatch_seconds_count") - 1


def test_transfers_count_bytes_and_throughput(cluster):
    before = value("pink_transfer_bytes_total", direction="download")
    speed = value("pink_transfer_bytes_per_second_count", direction="download")
    stream = metrics.counted_stream(iter([b"x" * (1 << 20), b"y" * 10]))
    assert sum(len(c) for c in stream) == (1 << 20) + 10
    assert value("pink_transfer_bytes_total", direction="download") == before + (1 << 20) + 10
    assert value("pink_transfer_bytes_per_second_count", direction="download") == speed + 1


@pytest.mark.parametrize("reason, kind", [
    ("waiting for 2 GPUs (1 free)", "gpus"),
    ("waiting for 4 CPUs (2 free) and 8 GiB of memory (4 GiB free)", "cpus"),
    ("waiting for 8 GiB of memory (4 GiB free)", "memory"),
    ("waiting for a free job slot (4 running)", "slots"),
    ("behind job 0123 which waits for GPUs", "behind"),
    ("its array runs at most 2 at once (%2); waiting for one of them to end", "array_limit"),
    ("needs 16 GPUs but this worker has only 8", "too_big"),
    ("something new", "other"),
])
def test_waiting_reasons_fold_into_a_few_kinds(reason, kind):
    assert metrics.reason_kind(reason) == kind


def test_etcd_errors_and_retries_are_counted():
    from pink.errors import StoreUnavailable
    from pink.retry import Retry

    before = value("pink_etcd_retries_total")
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("no quorum")
        return "ok"

    assert Retry(deadline_s=5, first_delay_s=0, sleep=lambda _s: None)(flaky) == "ok"
    assert value("pink_etcd_retries_total") == before + 2


def test_lease_renewals_are_timed(cluster):
    from pink.lease import Lease

    lease = Lease(cluster.store, 10, "test")
    grants = value("pink_lease_regrants_total")
    renewals = value("pink_lease_renew_seconds_count")
    assert lease.keepalive() is True and lease.keepalive() is False
    assert value("pink_lease_regrants_total") == grants + 1
    assert value("pink_lease_renew_seconds_count") == renewals + 1


# ----- worker ----------------------------------------------------------------------------------

def test_worker_collector_reports_queue_slots_gpus_and_waiting_reasons():
    daemon = SimpleNamespace(
        wcfg=WorkerConfig(name="gpu1", max_parallel_jobs=4),
        slots=SimpleNamespace(value=2),  # an admin's live setting (gpu_worker.liveslots) wins
        queued_count=3,
        runs={"a": SimpleNamespace(gpu_indices=(0,))},
        gpus=[Gpu(0, "GPU-a", "H100", 81559), Gpu(1, "GPU-b", "H100", 81559)],
        waiting={"j1": "waiting for 2 GPUs (1 free)", "j2": "behind job j1 which waits for GPUs",
                 "j3": "drained"},
    )
    registry = CollectorRegistry()
    registry.register(WorkerCollector(daemon))
    got = samples(generate_latest(registry).decode())
    assert got[("pink_worker_queued_jobs", (("worker", "gpu1"),))] == 3
    assert got[("pink_worker_running_jobs", (("worker", "gpu1"),))] == 1
    assert got[("pink_worker_job_slots", (("worker", "gpu1"),))] == 2
    assert got[("pink_worker_gpus", (("state", "busy"), ("worker", "gpu1")))] == 1
    assert got[("pink_worker_gpus", (("state", "free"), ("worker", "gpu1")))] == 1
    for kind, n in (("gpus", 1), ("behind", 1), ("drained", 1), ("slots", 0)):
        assert got[("pink_worker_waiting_jobs", (("reason", kind), ("worker", "gpu1")))] == n


def test_metrics_address_parses_or_is_off():
    assert WorkerConfig().metrics_bind == ("127.0.0.1", 9464)
    assert WorkerConfig(metrics_address="0.0.0.0:9100").metrics_bind == ("0.0.0.0", 9100)
    assert WorkerConfig(metrics_address="[::1]:9100").metrics_bind == ("::1", 9100)
    assert WorkerConfig(metrics_address="off").metrics_bind is None
    assert WorkerConfig(metrics_address="").metrics_bind is None
    with pytest.raises(ConfigError, match="metrics_address"):
        WorkerConfig(metrics_address="9464").check_resources()


# ----- NVML ------------------------------------------------------------------------------------

def test_gpu_collector_reads_each_gpu_from_nvml():
    nvml = gpustats.Nvml.open(FakeNvml())
    registry = CollectorRegistry()
    registry.register(gpustats.GpuCollector(nvml, [0, 1]))
    gpu0 = (("gpu", "0"), ("name", "NVIDIA H100 80GB HBM3"), ("uuid", "GPU-1d6a0a8e-6c2b-3b5f-8f44-5c1c0f0b7e21"))
    first = samples(generate_latest(registry).decode())  # each scrape reads NVML once
    second = samples(generate_latest(registry).decode())
    assert first[("pink_gpu_utilization_ratio", gpu0)] == 0.0  # first reading: idle
    assert first[("pink_gpu_memory_total_bytes", gpu0)] == 85520809984
    assert second[("pink_gpu_utilization_ratio", gpu0)] == 0.87
    assert second[("pink_gpu_memory_used_bytes", gpu0)] == 62814355456
    assert second[("pink_gpu_temperature_celsius", gpu0)] == 51
    assert second[("pink_gpu_power_watts", gpu0)] == pytest.approx(512.377)
    assert len([k for k in second if k[0] == "pink_gpu_power_watts"]) == 2


def test_a_job_sampler_folds_mean_max_and_peak_memory_of_its_gpus():
    nvml = gpustats.Nvml.open(FakeNvml())
    sampler = gpustats.JobSampler((0, 1), 60, threading.Event(), nvml=nvml)
    for _ in range(4):
        sampler.sample()
    # GPU 0: 0, 87, 100, 93; GPU 1: 0, 64, 71, 66 (the fixture's readings in turn).
    assert sampler.fields() == {"gpu_util_mean": round((0 + 87 + 100 + 93 + 0 + 64 + 71 + 66) / 8, 1),
                                "gpu_util_max": 100.0, "gpu_mem_peak_bytes": 79456894976}


def test_the_sampler_thread_samples_until_stopped():
    stop = threading.Event()
    sampler = gpustats.JobSampler((1,), 0.01, stop, nvml=gpustats.Nvml.open(FakeNvml())).start()
    while sampler.aggregate.samples < 3:
        stop.wait(0.01)
    stop.set()
    sampler._thread.join(5)
    assert not sampler._thread.is_alive()
    assert sampler.fields()["gpu_mem_peak_bytes"] == 43980423168


def test_a_lost_gpu_is_left_out_of_the_samples(caplog):
    nvml = gpustats.Nvml.open(FakeNvml(lost=(1,)))
    with caplog.at_level(logging.WARNING):
        readings = nvml.read_some([0, 1])
    assert [r.index for r in readings] == [0]
    assert "cannot read GPU 1" in caplog.text


def test_a_cpu_job_or_a_host_without_nvml_samples_nothing(caplog):
    assert gpustats.JobSampler((), 1, threading.Event()).start().fields() == {}
    with caplog.at_level(logging.INFO):
        assert gpustats.Nvml.open(FakeNvml(library=False)) is None
    assert "NVML is not available on this host" in caplog.text


def test_the_real_nvml_opens_or_says_once_why_not(caplog):
    """The real pynvml on this machine: without a driver (CI) absent, one info line, no error;
    with one, it opens quietly and counts the GPUs."""
    with caplog.at_level(logging.INFO, logger="gpu_worker.gpustats"):
        nvml = gpustats.Nvml.open()
    said = [r for r in caplog.records if "no GPU metrics" in r.message]
    if nvml is None:
        assert len(said) == 1
    else:
        assert said == [] and nvml.count() >= 0


def test_job_records_carry_the_gpu_fields(cluster):
    cluster.add_worker("w1")
    job = cluster.add_job(state=JobState.RUNNING)
    moved = cluster.store.transition(job, JobState.EXPORTING, gpu_util_mean=91.5, gpu_util_max=100.0,
                                     gpu_mem_peak_bytes=79456894976)
    again = cluster.store.get_job(moved.id)
    assert (again.gpu_util_mean, again.gpu_util_max, again.gpu_mem_peak_bytes) == (91.5, 100.0, 79456894976)
    assert again.public()["gpu_mem_peak_bytes"] == 79456894976


# ----- the CLI ---------------------------------------------------------------------------------

def test_pink_status_shows_the_gpu_use_of_a_run(logged_in, capsys):
    from pink_client import main as cli

    job = logged_in.add_job(state="SUCCEEDED", gpus=2, gpu_indices=[0, 1], gpu_util_mean=80.5,
                            gpu_util_max=100.0, gpu_mem_peak_bytes=79456894976)
    assert cli.main(["status", job["id"]]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert "gpu use utilisation mean 80.5%, max 100%, peak memory 74.0 GiB" in lines
    cpu = logged_in.add_job(state="SUCCEEDED")
    assert cli.main(["status", cpu["id"]]) == 0
    assert "gpu use" not in capsys.readouterr().out


# ----- several gunicorn processes ----------------------------------------------------------------

def test_metrics_merge_the_counters_of_all_processes_of_a_web_server(client, tmp_path, monkeypatch):
    """Two processes (as gunicorn's) observe a submit each into the multiprocess folder; the
    route, answering in a third, shows both: whichever process Prometheus reaches."""
    import os
    import subprocess
    import sys
    from types import SimpleNamespace as NS

    from pink import gunicorn_metrics

    folder = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    (folder / "stale.db").parent.mkdir()
    (folder / "stale.db").write_bytes(b"from the last run")
    gunicorn_metrics.on_starting(NS())  # the master empties the folder when it starts
    assert list(folder.iterdir()) == []
    for _ in range(2):
        subprocess.run([sys.executable, "-c", "from pink.metrics import SUBMIT_SECONDS; SUBMIT_SECONDS.observe(0.2)"],
                       check=True, env={**os.environ}, cwd=os.getcwd())
    got = samples(client.get("/metrics").get_data(as_text=True))
    assert got[("pink_submit_seconds_count", ())] == 2
    assert got[("pink_jobs", (("state", "QUEUED"),))] == 0  # the etcd gauges come along
    gunicorn_metrics.child_exit(NS(), NS(pid=12345))  # a process gone: nothing to fold, no error


def test_each_worker_daemon_of_a_process_has_its_own_registry():
    """Several daemons in one process (a bench) each show their own gauges and the shared counters."""
    from gpu_worker.metrics import registry_for

    def daemon(name):
        return SimpleNamespace(wcfg=WorkerConfig(name=name), slots=SimpleNamespace(value=4), queued_count=1,
                               runs={}, gpus=[], waiting={})

    texts = [generate_latest(registry_for(daemon(n))).decode() for n in ("w1", "w2")]
    assert 'pink_worker_queued_jobs{worker="w1"} 1.0' in texts[0] and 'worker="w2"' not in texts[0]
    assert 'pink_worker_queued_jobs{worker="w2"} 1.0' in texts[1]
    assert all("pink_etcd_retries_total" in t for t in texts)


def test_a_worker_serves_its_metrics_over_http_or_not_at_all(caplog):
    import socket

    import requests

    from gpu_worker.metrics import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = SimpleNamespace(wcfg=WorkerConfig(name="served", metrics_address=f"127.0.0.1:{port}"), queued_count=2,
                        slots=SimpleNamespace(value=4), runs={}, gpus=[], waiting={})
    assert serve(d) is True
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'pink_worker_queued_jobs{worker="served"} 2.0' in text
    with caplog.at_level(logging.WARNING):
        assert serve(d) is False  # the port is taken now: a warning, no crash
    assert "cannot serve metrics" in caplog.text
    d.wcfg = WorkerConfig(name="quiet", metrics_address="off")
    assert serve(d) is False
