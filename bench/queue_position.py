"""What a queued job's queue position costs (webapp.jobs.queue_info: the 201 answer of a
submission and every GET of a queued job) as its one worker's queue grows (issue #15 item 3):
the worker's entries taken from the web server's queue mirror against read from etcd on each
call (before). Both then plan the queue with its estimated start times, the same work.

Real single-member etcd, one registered worker (8 GPUs, 8 slots) with N QUEUED entries from 50
users, written directly as create_job writes them; the job asked about is the newest. Before each
timed call another writer changes one queue entry, so the mirror is behind by one change and has
to catch up. Sizes and ways alternate. Run: ``python -m bench.queue_position``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pink_dev as dev
from pink.config import EtcdConfig, SchedulingConfig
from pink.fairshare import FairShare
from pink.model import Job, WorkerInfo, new_job_id
from pink.queues import QueueEntry
from pink.states import JobState
from pink.store import Store
from webapp import jobs

from .harness import percentile

WORKER = "w0"


class EachTimeRead:
    """Queue entries as queue_info took them before the mirror: a read of the worker's queue."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def queues(self, workers) -> dict[str, list[QueueEntry]]:
        return {name: self.store.queue(name) for name in workers}


def _fill(store: Store, n: int) -> Job:
    lease = store.grant_lease(3600)
    store.register_worker(WorkerInfo(
        name=WORKER, ssh_host="127.0.0.1", ssh_port=22, ssh_user="pink-transfer", inbox="/in", outbox="/out",
        cpus=64, max_parallel_jobs=8, memory_bytes=1 << 40, gpus=tuple({"index": g, "name": "H200"} for g in range(8)),
        gpus_free=tuple(range(8))), lease)
    newest = None
    for i in range(n):
        newest = Job(id=new_job_id(), user=f"user{i % 50}", state=JobState.QUEUED, worker=WORKER, gpus=i % 2,
                     timeout_s=3600, created_at=time.time())
        _put(store, QueueEntry.of(newest))
    return newest


def _put(store: Store, entry: QueueEntry) -> None:
    store.etcd.call(lambda c: c.put(store.queue_key(WORKER, entry.job_id), entry.to_json()), "fill")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--repeat", type=int, default=40, help="calls per way and size")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp, dev.EtcdCluster(1, tmp) as etcd:
        cases = {}
        for n in sizes:
            mirror = Store(EtcdConfig(endpoints=tuple(etcd.endpoints), prefix=f"/qpos{n}"))
            read = Store(EtcdConfig(endpoints=tuple(etcd.endpoints), prefix=f"/qpos{n}"))
            read.queue_mirror = EachTimeRead(read)
            job = _fill(mirror, n)
            mirror.queue_load()  # starts the watch
            dev.wait_until(lambda: mirror.queue_mirror._listed, 120, "the mirror's listing")
            cases[n] = (job, {"mirror": mirror, "read each time (before)": read})
        fairshares = {id(store): FairShare(store, SchedulingConfig()) for _, ways in cases.values()
                      for store in ways.values()}
        times = {(n, way): [] for n in sizes for way in cases[n][1]}
        for i in range(args.repeat):
            for n in sizes:
                job, ways = cases[n]
                for way, store in ways.items():
                    _put(store, QueueEntry.of(Job(id=new_job_id(), user="other", state=JobState.QUEUED,
                                                  worker=WORKER, timeout_s=60, created_at=time.time())))
                    t0 = time.perf_counter()
                    info = jobs.queue_info(store, [job], fairshares[id(store)])
                    times[(n, way)].append((time.perf_counter() - t0) * 1000)
                    assert info[job.id][0] > 0, info
        for ways in (c[1] for c in cases.values()):
            for store in ways.values():
                store.etcd.close()
    print(f"## Queue position {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — `python -m bench.queue_position "
          f"--sizes {args.sizes} --repeat {args.repeat}`\n")
    print("Real etcd; one worker (8 GPUs, 8 slots) with N queued jobs from 50 users; "
          "webapp.jobs.queue_info of the newest job, each call after one change by another writer; "
          f"ms per call, median / p99 of {args.repeat}.\n")
    print("| queued jobs | entries from the mirror | worker's queue read each time (before) | ratio of medians |")
    print("| ---: | ---: | ---: | ---: |")
    for n in sizes:
        m, r = ((percentile(times[(n, way)], .5), percentile(times[(n, way)], .99))
                for way in ("mirror", "read each time (before)"))
        print(f"| {n:,} | {m[0]:.1f} / {m[1]:.1f} | {r[0]:.1f} / {r[1]:.1f} | {m[0] / r[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
