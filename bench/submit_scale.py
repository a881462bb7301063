"""What one submission costs as the cluster's queued jobs grow (issue #15 item 3): placement
from the web server's mirror of ``queue/`` against reading every queue entry on each submit.

Runs the web server's submit function (webapp.jobs.submit: quota, placement, the job's creation
transaction) on a real single-member etcd with W registered workers holding the image, so the
submissions reuse a held image and nothing is uploaded: the control plane's reads and writes are
measured, not transfers. The N queued jobs are written directly as queue entries spread over the
workers (as create_job writes them). Before each timed submission another writer changes one
queue entry (as a worker's claim would), so the mirror is always behind by one change when the
submission starts and has to catch up (or fall back). Mirror and full read alternate, one
submission each, at every size. Run: ``python -m bench.submit_scale``.
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
    args = p.parse_args(argv)
    cfg = Config(web=WebConfig(quota_queued_jobs=10**6))
    with tempfile.TemporaryDirectory() as tmp, dev.EtcdCluster(1, tmp) as etcd:
        ecfg = EtcdConfig(endpoints=tuple(etcd.endpoints), prefix="/bench")
        ways = {"mirror": Store(ecfg), "full read": FullRead(ecfg)}
        _register(ways["mirror"], args.workers)
        print(f"real etcd, {args.workers} workers, webapp.jobs.submit of a held image (no upload), "
              f"each after one change by another writer; ms per submission, median / p99 of {args.repeat}")
        print(f"{'queued':>8} {'mirror':>18} {'full read (before)':>20} {'mirror fallbacks':>17}")
        have = 0
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            for i in range(have, n):
                _put(ways["mirror"], f"w{i % args.workers}", _entry(i))
            have = n
            ways["mirror"].queue_load()  # starts the watch
            dev.wait_until(lambda: ways["mirror"].queue_mirror._listed, 60, "the mirror's listing")
            times: dict[str, list[float]] = {way: [] for way in ways}
            before = ways["mirror"].queue_mirror.fallbacks
            for i in range(args.repeat):
                for way, store in ways.items():
                    _put(store, f"w{i % args.workers}", _entry(i))  # another writer, just before
                    t0 = time.perf_counter()
                    jobs.submit(cfg, store, None, None, ADMIN, JobSpec(image_id=IMG), body=None, length=None)
                    times[way].append((time.perf_counter() - t0) * 1000)
            fallbacks = ways["mirror"].queue_mirror.fallbacks - before
            m, f = _stats(times["mirror"]), _stats(times["full read"])
            rows.append((n, m, f))
            print(f"{n:>8} {m[0]:>8.1f} / {m[1]:<7.1f} {f[0]:>9.1f} / {f[1]:<8.1f} {fallbacks:>10} of {args.repeat}")
        (_, base, _), (_, top, _) = rows[0], rows[-1]
        print(f"mirror p99 at {rows[-1][0]} / at {rows[0][0]}: {top[1] / base[1]:.2f}x (target <= 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
