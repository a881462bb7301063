"""The scale bench's phases, one after the other on one cluster of ``workers`` worker daemons.

* ``queued``: the engines hold every container (nothing ends); users submit until
  ``--queued`` jobs wait. Submit latency at about 100 waiting and at the full queue; etcd size
  and web RSS then; then the hold ends and the dispatch rate is timed over the first
  ``--dispatch`` jobs that end (QUEUED -> SUCCEEDED with a full queue).
* ``through``: jobs of ``--run-s`` seconds flow through while the submitters keep about
  ``--backlog`` jobs waiting; at each count of ``--through`` ended jobs: submit p50/p99 of the
  window, jobs/s, etcd size (compacted; at the last count also defragmented) and its keys by kind,
  web and worker RSS. With retention on, a record leaves etcd ``--retention-s`` after its job
  ended.
* ``lost``: a worker running jobs is SIGKILLed; the time until all its running jobs are LOST.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bench import harness as h
from pink.states import JobState

from .cluster import ScaleCluster
from .drive import Load, Submit

log = logging.getLogger(__name__)


def latency(results: list[Submit]) -> dict[str, float]:
    ok = [r.seconds for r in results if r.status == 201]
    return {"n": len(ok), "p50": h.percentile(ok, 0.5), "p99": h.percentile(ok, 0.99),
            "failed": sum(1 for r in results if r.status != 201)}


def snapshot(c: ScaleCluster, defrag: bool = False) -> dict[str, Any]:
    """Sizes now: etcd compacted (and with ``defrag`` its db on disk after a defragmentation),
    etcd's keys by kind, web and worker RSS."""
    workers = c.worker_rss()
    out = {"etcd": c.etcd_status(compact=True), "keys": c.etcd_keys(), "web_rss": c.web_rss(),
           "worker_rss_mean": sum(workers) / max(len(workers), 1), "worker_rss_max": max(workers, default=0)}
    if defrag:
        out["etcd"]["defragmented"] = c.etcd_defrag()
    return out


def run(args, workers: int, work: Path, retention_s: float, fill: bool, kill: bool,
        marks: list[int]) -> dict[str, Any]:
    """One cluster of ``workers`` workers: the queued phase (``fill``), the through phase to
    each of ``marks`` ended jobs, and the LOST check (``kill``)."""
    name = f"{workers}-workers-retention-{'on' if retention_s else 'off'}"
    with ScaleCluster(work / name, workers=workers, users=args.users, run_s=args.run_s, hold=fill,
                      retention_s=retention_s, slots=args.slots) as c:
        assert c.ca is not None
        load = Load(c.url, c.ca.ca_cert, c.tokens, c.config_path, args.threads)
        try:
            out: dict[str, Any] = {"workers": workers, "retention_s": retention_s}
            if fill:
                out["queued"] = queued(c, load, args)
            out["windows"] = through(c, load, args, marks)
            if kill:
                out["lost"] = time_to_lost(c, load)
            return out
        finally:
            load.close()


def queued(c: ScaleCluster, load: Load, args) -> dict[str, Any]:
    running = len(c.daemons) * c.slots
    total = args.queued + running
    t0 = time.monotonic()
    results = load.run(stop_when=lambda l: l.ok >= total)
    submit_s = time.monotonic() - t0
    made = load.not_ended()
    near_100 = [r for r in results if 50 <= r.queued_before - running <= 150]
    near_full = [r for r in results if r.queued_before - running >= 0.95 * args.queued]
    out: dict[str, Any] = {"queued": made - running, "submit_rate": len(results) / submit_s,
                           "at_100": latency(near_100), "at_full": latency(near_full), "all": latency(results)}
    out.update(snapshot(c))
    # Let go: how fast do full queues drain?
    goal = min(args.dispatch, made)
    released = c.engine.release()
    left = made
    while made - left < goal:
        time.sleep(0.25)
        left = load.not_ended()
    seconds = time.time() - released
    with load.lock:  # the through phase counts from this count on
        load.pending, load.fresh = left, 0
    out["dispatch"] = {"jobs": made - left, "seconds": seconds, "rate": (made - left) / seconds}
    log.info("queued phase, %d workers: %s", len(c.daemons), out)
    return out


def through(c: ScaleCluster, load: Load, args, marks: list[int]) -> list[dict[str, Any]]:
    """Jobs through until each of ``marks`` more have ended (what the queued phase left drains
    first: the submitters wait while more than ``--backlog`` jobs wait)."""
    capacity = len(c.daemons) * c.slots
    marks = sorted(marks)
    windows: list[dict[str, Any]] = []

    def ended(l: Load) -> int:
        return l.ok - l.pending - l.fresh

    base = ended(load)
    state = {"t": time.time(), "ended": 0, "min_waiting": 10**9, "i": 0}

    def stop_when(l: Load) -> bool:
        state["min_waiting"] = min(state["min_waiting"], l.pending - capacity)
        done = ended(l) - base
        if done < marks[state["i"]]:
            return False
        now = time.time()
        window = [r for r in l.results if state["t"] <= r.at < now]
        last = state["i"] == len(marks) - 1
        row = {"through": done, "rate": (done - state["ended"]) / (now - state["t"]),
               "min_waiting": state["min_waiting"], **latency(window), **snapshot(c, defrag=last)}
        windows.append(row)
        log.info("through %d, %d workers: %s", done, len(c.daemons), row)
        state.update(t=time.time(), ended=done, min_waiting=10**9, i=state["i"] + 1)
        return state["i"] >= len(marks)

    load.run(stop_when=stop_when, may_submit=lambda l: l.pending + l.fresh < capacity + args.backlog)
    return windows


def time_to_lost(c: ScaleCluster, load: Load) -> dict[str, Any]:
    """Hold the engines, fill worker 0's slots, SIGKILL its daemon: seconds until every job it
    ran is LOST (its lease expires, then a web server's janitor moves them)."""
    (c.engine.sockets / "hold").write_text("held for the LOST check\n")
    target = c.daemons[0].worker_name
    deadline = time.monotonic() + 120
    running: list[str] = []
    while time.monotonic() < deadline and not running:
        goal = load.ok + len(c.daemons) * c.slots
        load.run(stop_when=lambda l: l.ok >= goal)
        for _ in range(20):
            running = load.running_on(target)
            if running:
                break
            time.sleep(0.5)
    if not running:
        return {"error": f"no job ran on {target} within 120 s"}
    killed = c.kill_worker(0)
    lost: dict[str, float] = {}
    while len(lost) < len(running) and time.time() - killed < 300:
        for job_id, s in load.states(running).items():
            if job_id not in lost and s is not None and s is not JobState.RUNNING:
                lost[job_id] = time.time() - killed
                if s is not JobState.LOST:
                    log.warning("job %s ended %s, not LOST, after its worker died", job_id, s)
        time.sleep(0.2)
    c.engine.release()
    return {"jobs": len(running), "first": min(lost.values(), default=float("nan")),
            "last": max(lost.values(), default=float("nan")), "all_lost": len(lost) == len(running)}
