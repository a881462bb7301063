"""What one submission's placement reads cost as queued jobs grow (issue #15 item 3).

Placement (webapp.jobs.submit) read every worker's queue (``Store.all_queues``: one range over
``queue/``) to weigh workers and to count the user's waiting jobs; it now reads its process's
mirror of ``queue/`` after putting its marker key (pink.queues). This measures those
reads on a real single-member etcd holding N queue entries spread over W workers (the entries
are written directly, as create_job writes them: the control plane's reads are measured, not
jobs). Run: ``python -m bench.placement_reads``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pink_dev as dev
from pink.config import EtcdConfig
from pink.model import new_job_id
from pink.states import JobState
from pink.queues import QueueEntry
from pink.store import Store

from .harness import time_ms


def _fill(store: Store, workers: int, total: int, have: int) -> None:
    for i in range(have, total):
        entry = QueueEntry(new_job_id(), f"user{i % 50}", JobState.QUEUED, i % 2, 3600, 0, time.time())
        store.etcd.call(lambda c, e=entry, w=i % workers: c.put(store.queue_key(f"w{w}", e.job_id), e.to_json()),
                        "fill")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=50)
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--repeat", type=int, default=30)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, dev.EtcdCluster(1, tmp) as etcd:
        store = Store(EtcdConfig(endpoints=tuple(etcd.endpoints), prefix="/bench"))
        print(f"real etcd, {args.workers} workers; ms per call, median / p99 of {args.repeat}")
        print(f"{'queued':>8} {'all_queues (today)':>20} {'one worker queue':>18} {'marker put (mirror)':>19}")
        have = 0
        for n in (int(s) for s in args.sizes.split(",")):
            _fill(store, args.workers, n, have)
            have = n
            whole = time_ms(store.all_queues, args.repeat)
            one = time_ms(lambda: store.queue("w0"), args.repeat)
            head = time_ms(store.queue_mirror._mark, args.repeat)
            print(f"{n:>8} {whole[0]:>10.1f} / {whole[1]:<7.1f} {one[0]:>8.1f} / {one[1]:<7.1f} "
                  f"{head[0]:>8.1f} / {head[1]:<7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
