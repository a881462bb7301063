"""What one submission costs as the cluster's queued jobs grow (issue #15 item 3): placement
from the web server's mirror of ``queue/`` against reading every queue entry on each submit.

Runs the web server's submit function (webapp.jobs.submit: quota, placement, the job's creation
transaction) on a real single-member etcd with W registered workers holding the image, so the
submissions reuse a held image and nothing is uploaded: the control plane's reads and writes are
measured, not transfers. The N queued jobs are written directly as queue entries spread over the
workers (as create_job writes them). Before each timed submission another writer changes one
queue entry (as a worker's claim would), so the mirror is always behind by one change when the
submission starts and has to catch up (or fall back). Each size is a cluster of its own under
its own prefix of the one etcd, so that mirror and full read, at every size, alternate one
submission each. Run: ``python -m bench.submit_scale``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pink_dev as dev
from pink.config import Config, EtcdConfig, WebConfig
from pink.model import User, WorkerInfo, new_job_id
from pink.queues import QueueEntry, QueueLoad
from pink.states import JobState
from pink.store import Store
from webapp import jobs
from webapp.spec import JobSpec

IMG = "sha256:" + "ab" * 32
ADMIN = User("bench", "", admin=True)  # may reuse any image a worker holds


class FullRead(Store):
    """Placement as before the mirror: every queue entry read on each submission."""

    def queue_load(self) -> QueueLoad:
        return QueueLoad.of(self.all_queues())


def _register(store: Store, workers: int) -> None:
    lease = store.grant_lease(3600)
    for i in range(workers):
        store.register_worker(WorkerInfo(
            name=f"w{i}", ssh_host="127.0.0.1", ssh_port=22, ssh_user="pink-transfer", inbox="/in",
            outbox="/out", cpus=64, max_parallel_jobs=8, memory_bytes=1 << 40, images=(IMG,),
            gpus=tuple({"index": g, "name": "H200"} for g in range(8)), gpus_free=tuple(range(8))), lease)


def _entry(i: int) -> QueueEntry:
    return QueueEntry(new_job_id(), f"user{i % 50}", JobState.QUEUED, i % 2, 3600, 0, time.time())


def _put(store: Store, worker: str, entry: QueueEntry) -> None:
    store.etcd.call(lambda c: c.put(store.queue_key(worker, entry.job_id), entry.to_json()), "fill")


def _stats(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=50)
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--repeat", type=int, default=60, help="submissions per way and size")
    p.add_argument("--full-read", type=int, default=20,
                   help="of those, how many also time the full read (before the mirror): it is slow")
    args = p.parse_args(argv)
    cfg = Config(web=WebConfig(quota_queued_jobs=10**6))
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp, dev.EtcdCluster(1, tmp) as etcd:
        # One prefix (a cluster of its own) per size, in one etcd, so that submissions at every
        # size and both ways can alternate: a shared machine's load then weighs on all alike.
        ways = {}
        for n in sizes:
            ecfg = EtcdConfig(endpoints=tuple(etcd.endpoints), prefix=f"/bench{n}")
            ways[n] = {"mirror": Store(ecfg), "full read": FullRead(ecfg)}
            _register(ways[n]["mirror"], args.workers)
            for i in range(n):
                _put(ways[n]["mirror"], f"w{i % args.workers}", _entry(i))
            ways[n]["mirror"].queue_load()  # starts the watch
            dev.wait_until(lambda: ways[n]["mirror"].queue_mirror._listed, 120, "the mirror's listing")
        listing_reads = {n: ways[n]["mirror"].queue_mirror.fallbacks for n in sizes}  # before the listing
        print(f"real etcd, {args.workers} workers, webapp.jobs.submit of a held image (no upload), "
              f"each after one change by another writer; sizes and ways alternate; ms per submission, "
              f"median / p99 of {args.repeat} (full read: of {args.full_read})")
        print(f"{'queued':>8} {'mirror':>18} {'full read (before)':>20} {'mirror fallbacks':>17}")
        times = {(n, way): [] for n in sizes for way in ("mirror", "full read")}
        for i in range(args.repeat):
            for n in sizes:
                for way, store in ways[n].items():
                    if way == "full read" and i >= args.full_read:
                        continue
                    _put(store, f"w{i % args.workers}", _entry(i))  # another writer, just before
                    t0 = time.perf_counter()
                    jobs.submit(cfg, store, None, None, ADMIN, JobSpec(image_id=IMG), body=None, length=None)
                    times[(n, way)].append((time.perf_counter() - t0) * 1000)
        for n in sizes:
            m, f = _stats(times[(n, "mirror")]), _stats(times[(n, "full read")])
            fallbacks = ways[n]["mirror"].queue_mirror.fallbacks - listing_reads[n]
            print(f"{n:>8} {m[0]:>8.1f} / {m[1]:<7.1f} {f[0]:>9.1f} / {f[1]:<8.1f} {fallbacks:>10} of {args.repeat}")
        base, top = _stats(times[(sizes[0], "mirror")]), _stats(times[(sizes[-1], "mirror")])
        print(f"mirror p99 at {sizes[-1]} / at {sizes[0]}: {top[1] / base[1]:.2f}x (target <= 2x); "
              f"median {top[0] / base[0]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
