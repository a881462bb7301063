"""What the estimated start times cost a job listing (webapp.jobs.queue_info) as one worker's
queue grows: ``queueplan.plan_queue`` with and without ``estimate_from`` (the event simulation
of pink/eta.py, at most MAX_STEPS plans). Pure CPU, no etcd: the queue entries are made here.
Run: ``python -m bench.eta``; prints a Markdown table (ms per call, median / p99)."""

from __future__ import annotations

import argparse
import platform
import random
import time

from pink.eta import MAX_STEPS
from pink.queueplan import Capacity, Running, plan_queue
from pink.states import JobState
from pink.store import QueueEntry

from .harness import time_ms


def _queue(n: int, rng: random.Random) -> list[QueueEntry]:
    return [QueueEntry(f"j{i:06d}", f"user{rng.randrange(20)}", JobState.QUEUED, rng.choice((0, 1, 1, 2, 4)),
                       rng.choice((600, 3600, 7200)), 0, float(i), cpus=rng.choice((0, 2, 4)),
                       memory_bytes=rng.choice((0, 8 << 30))) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000,10000")
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args(argv)
    rng = random.Random(7)
    now = time.time()
    # An 8-GPU, 64-CPU, 512 GiB worker with 8 slots, 4 running jobs holding 6 GPUs.
    running = [Running(f"user{i}", g, 8, 32 << 30, now + 600 * (i + 1)) for i, g in enumerate((2, 2, 1, 1))]
    capacity = Capacity((6, 7), 8, 8, 64, 512 << 30, 8)
    print(f"## Estimated start times {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — `python -m bench.eta` "
          f"({platform.machine()}, Python {platform.python_version()})\n")
    print(f"One worker (8 GPUs, 8 slots, 4 running), its queue of N jobs from 20 users; ms per call, median / "
          f"p99 of {args.repeat}. The estimate simulates at most {MAX_STEPS} events.\n")
    print("| queued jobs | plan only (before) | plan + estimates | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for n in (int(s) for s in args.sizes.split(",")):
        queue = _queue(n, rng)
        plain = time_ms(lambda: plan_queue(queue, running, capacity), args.repeat)
        eta = time_ms(lambda: plan_queue(queue, running, capacity, estimate_from=now), args.repeat)
        print(f"| {n:,} | {plain[0]:.2f} / {plain[1]:.2f} | {eta[0]:.2f} / {eta[1]:.2f} | {eta[0] / plain[0]:.0f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
