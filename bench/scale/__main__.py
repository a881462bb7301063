"""PINK's control-plane scale bench: real etcd, 2 gunicorn web servers behind nginx (TLS) and N
real worker daemons whose Docker engine is a stand-in that "runs" each job for ``--run-s``
seconds (bench/scale/engine.py). It measures the control plane, NOT Docker: no image is
loaded, no process runs, every job uses an image the engines hold (0 bytes sent).

    .venv/bin/python -m bench.scale                                  # 1, 10, 50 workers; 10k queued; 1k and 10k through
    .venv/bin/python -m bench.scale --workers 1,10,50 --queued 10000 --through 1000,10000,100000
    .venv/bin/python -m bench.scale --smoke                          # 3 workers, ~30 jobs: what CI runs

For each worker count: submit p50/p99 at ~100 and at ``--queued`` waiting jobs, the dispatch
rate of full queues, jobs/s through, etcd size (compacted, as a deployed etcd with
auto-compaction keeps it) and web server RSS at each ``--through`` count, worker daemon RSS,
and the seconds from SIGKILL of a worker to its running jobs being LOST. At
``--keep-records-at`` workers the through phase runs again with job-record retention off:
etcd's size per 10,000 jobs without retention. The table is printed and appended to
bench/RESULTS.md (``--results``; not by ``--smoke`` unless given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness as h
from bench.__main__ import describe_machine

from . import phases

NOTE = ("Measures PINK's control plane (etcd, web servers, worker daemons), NOT Docker: the "
        "workers' engine is a stand-in that runs nothing.")


def _ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:.0f} ms"


def _size(x: float) -> str:
    return h.human_size(x)


def _keys(kinds: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in kinds.items())


def tables(args, runs: dict[int, dict], keep: dict[str, Any] | None) -> str:
    ws = sorted(runs)
    queued = {w: runs[w]["queued"] for w in ws}
    through = runs
    head = "| measure | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in ws) + " |"
    lines = [head, "| --- |" + " --- |" * len(ws)]

    def row(name: str, cell) -> None:
        vals = []
        for w in ws:
            try:
                vals.append(cell(w))
            except (KeyError, IndexError, TypeError):
                vals.append("-")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")

    q = args.queued
    row("submit p50 / p99 at ~100 queued", lambda w: f"{_ms(queued[w]['at_100']['p50'])} / {_ms(queued[w]['at_100']['p99'])}")
    row(f"submit p50 / p99 at {q:,} queued",
        lambda w: f"{_ms(queued[w]['at_full']['p50'])} / {_ms(queued[w]['at_full']['p99'])}")
    row(f"p99 at {q:,} ÷ p99 at 100 (target ≤ 2)",
        lambda w: f"{queued[w]['at_full']['p99'] / queued[w]['at_100']['p99']:.2f}")
    row("submits/s while filling", lambda w: f"{queued[w]['submit_rate']:.1f}")
    row("dispatch, full queues (jobs/s QUEUED→SUCCEEDED)",
        lambda w: f"{queued[w]['dispatch']['rate']:.1f} ({queued[w]['dispatch']['jobs']} jobs)")
    row(f"etcd in use / on disk at {q:,} queued",
        lambda w: f"{_size(queued[w]['etcd']['in_use'])} / {_size(queued[w]['etcd']['db'])}")
    row(f"web server RSS at {q:,} queued (each)", lambda w: ", ".join(_size(x) for x in queued[w]["web_rss"]))
    row("time to LOST after SIGKILL (first / last job)",
        lambda w: f"{through[w]['lost']['first']:.1f} / {through[w]['lost']['last']:.1f} s ({through[w]['lost']['jobs']} jobs)")
    row("worker daemon RSS mean / max", lambda w: f"{_size(through[w]['windows'][-1]['worker_rss_mean'])} / "
                                                  f"{_size(through[w]['windows'][-1]['worker_rss_max'])}")
    for i, mark in enumerate(sorted(args.through)):
        tag = f"at {mark:,} through"
        row(f"{tag}: jobs/s (min waiting)", lambda w: f"{through[w]['windows'][i]['rate']:.1f} "
                                                      f"({through[w]['windows'][i]['min_waiting']})")
        row(f"{tag}: submit p50 / p99", lambda w: f"{_ms(through[w]['windows'][i]['p50'])} / "
                                                   f"{_ms(through[w]['windows'][i]['p99'])}")
        row(f"{tag}: etcd in use / on disk (retention {args.retention_s:g} s)",
            lambda w: f"{_size(through[w]['windows'][i]['etcd']['in_use'])} / {_size(through[w]['windows'][i]['etcd']['db'])}")
        row(f"{tag}: etcd keys by kind", lambda w: _keys(through[w]['windows'][i]['keys']))
        row(f"{tag}: web RSS (each)", lambda w: ", ".join(_size(x) for x in through[w]['windows'][i]['web_rss']))
    row("etcd on disk after defrag, at the last count", lambda w: _size(through[w]['windows'][-1]['etcd']['defragmented']))
    if keep:
        lines += ["", f"Job-record retention off ({keep['workers']} workers): etcd in use after compaction, "
                  "per 10,000 jobs through:", "",
                  "| jobs through | in use | on disk | in use per 10,000 jobs | keys by kind |",
                  "| --- | --- | --- | --- | --- |"]
        for wdw in keep["windows"]:
            lines.append(f"| {wdw['through']:,} | {_size(wdw['etcd']['in_use'])} | {_size(wdw['etcd']['db'])} | "
                         f"{_size(wdw['etcd']['in_use'] * 10_000 / max(wdw['through'], 1))} | {_keys(wdw['keys'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    p.add_argument("--workers", type=ints, default=[1, 10, 50], help="worker counts, side by side")
    p.add_argument("--queued", type=int, default=10_000, help="jobs waiting at the second submit measure")
    p.add_argument("--dispatch", type=int, default=1000, help="jobs timed through once the full queues are let go")
    p.add_argument("--through", type=ints, default=[1000, 10_000], help="counts of ended jobs to report at")
    p.add_argument("--users", type=int, default=20, help="users submitting (round robin)")
    p.add_argument("--threads", type=int, default=8, help="submitting threads")
    p.add_argument("--run-s", type=float, default=0.5, help="how long each job 'runs' on the stand-in engine")
    p.add_argument("--slots", type=int, default=4, help="worker.max_parallel_jobs")
    p.add_argument("--backlog", type=int, default=100, help="through phase: jobs kept waiting beyond the slots")
    p.add_argument("--retention-s", type=float, default=30.0,
                   help="web.job_record_retention_days, in seconds, for the phases with retention on")
    p.add_argument("--keep-records-at", type=int, default=10,
                   help="worker count at which the through phase also runs with retention off (0: never)")
    p.add_argument("--keep-through", type=ints, default=[],
                   help="counts of ended jobs for the retention-off run (default: --through's)")
    p.add_argument("--smoke", action="store_true", help="3 workers, 30 queued, 30 through: the CI check")
    p.add_argument("--workdir", default="/var/tmp/pink-bench-scale")
    p.add_argument("--results", help="append the report here (default bench/RESULTS.md; smoke: nowhere)")
    args = p.parse_args(argv)
    if args.smoke:
        args.workers, args.queued, args.dispatch, args.through = [3], 30, 20, [60]
        args.users, args.threads, args.run_s, args.backlog, args.retention_s = 3, 3, 0.2, 10, 5.0
        args.keep_records_at = 0
    # A SIGTERM (a timeout) unwinds like an error: each phase stops the cluster it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = args.results or (None if args.smoke else str(Path(__file__).resolve().parents[1] / "RESULTS.md"))
    work = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")
    t0, load_before = time.monotonic(), h.load_average()
    runs: dict[int, dict] = {}
    keep = None
    for w in args.workers:
        runs[w] = phases.run(args, w, work, args.retention_s, fill=True, kill=True, marks=args.through)
        if w == args.keep_records_at:
            keep = phases.run(args, w, work, 0.0, fill=False, kill=False, marks=args.keep_through or args.through)
        # What is done so far, should a later worker count not finish.
        (work / "raw.json").write_text(json.dumps({"runs": runs, "keep": keep}, indent=1, default=str))
        (work / "partial.md").write_text(tables(args, runs, keep) + "\n")
    machine = describe_machine()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    full = ("python -m bench.scale --workers 1,10,50 --queued 10000 --through 1000,10000,100000")
    text = "\n".join([
        f"## {stamp} control-plane scale{' (smoke)' if args.smoke else ''}", "",
        f"`python -m bench.scale {' '.join(sys.argv[1:] if argv is None else argv)}` — "
        f"{time.monotonic() - t0:.0f} s. {NOTE}", "",
        f"Setup: etcd 1 member (periodic compaction keeping 1 minute, as the role's 1 hour), 2 gunicorn web servers (2 processes × 16 threads) behind nginx with TLS, "
        f"worker daemons with {args.slots} slots each, {args.users} users (admins: see bench/scale), "
        f"{args.threads} submitting threads; jobs 'run' {args.run_s:g} s; record retention "
        f"{args.retention_s:g} s after a job ends.", "",
        f"Machine: {machine['cpu']}, {machine['memory']}; load average before {load_before}, after "
        f"{h.load_average()} (shared machine).", "",
        tables(args, runs, keep), "",
        f"- The full run: `{full}`.",
    ]) + "\n"
    print()
    print(text)
    if results:
        with Path(results).open("a") as f:
            f.write("\n" + text)
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
