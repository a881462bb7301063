"""Chaos soak: the at-most-once promise with components killed under load (issue #5).

Submits N jobs through nginx to 2 web servers, 2 workers (each with its own Docker engine) and
a 3-member etcd cluster, while a seeded fault injector kills and restarts a worker daemon, a
worker's engine, a web server or an etcd member. Clients behave like the CLI: every submission
carries an Idempotency-Key and is retried with it on a network error or a 5xx. Most jobs reuse
the image a worker holds, and a third of those make no archive (output none), so both ways a
run ends (through EXPORTING, and straight from RUNNING) meet the faults.

At the end it checks, and prints as a table (appended to bench/RESULTS.md):
accepted == terminal, executions per job <= 1 (container `start` events, streamed live from
both engines), LOST jobs, orphans (inbox files, `.part` files, containers, claims of jobs that
are over) and time from a worker kill to LOST. There is no baseline: the promise is absolute
(every accepted job ends, none runs twice, nothing is left behind).

    .venv/bin/python -m bench.chaos [--jobs 300] [--seed 7] [--fault-every 6]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker
import requests

import pink_dev as dev
from pink.config import EtcdConfig
from pink.states import TERMINAL
from pink.store import Store
from pink_dev.sampleimage import build_sample_image

FAST = dict(lease_ttl_s=4, loop_interval_s=0.5, sweep_interval_s=2, max_parallel_jobs=3)


class StartCounter:
    """Counts `start` events of pink-<job> containers on one engine, surviving its restarts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.starts: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        since = time.time()
        while not self.stop.is_set():
            try:
                # The stream is closed too: one left to the garbage collector after an engine
                # restart broke it would hold its socket until then.
                with contextlib.closing(docker.DockerClient(base_url=self.url, timeout=5)) as client, \
                        contextlib.closing(client.events(since=since, decode=True,
                                                         filters={"event": "start"})) as events:
                    for event in events:
                        since = event.get("time", since)
                        name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
                        if name.startswith("pink-"):
                            self.starts[name[5:]] += 1
                        if self.stop.is_set():
                            break
            except Exception:  # the engine is being restarted by the injector
                time.sleep(0.5)


class Injector:
    """Kills and restarts one component every few seconds, chosen by a seeded RNG."""

    def __init__(self, cluster: dev.LocalCluster, etcd: dev.EtcdCluster, seed: int, every: float) -> None:
        self.c, self.etcd, self.rng, self.every = cluster, etcd, random.Random(seed), every
        self.log: list[tuple[float, str]] = []
        self.worker_kills: dict[str, list[float]] = collections.defaultdict(list)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        faults = [self.kill_worker, self.restart_engine, self.kill_web, self.stop_etcd_member]
        while not self.stop.wait(self.rng.uniform(0.5, 1.5) * self.every):
            fault = self.rng.choice(faults)
            try:
                fault()
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                self.log.append((time.time(), f"{fault.__name__} failed: {exc}"))

    def kill_worker(self) -> None:
        w = self.c.workers[self.rng.randrange(len(self.c.workers))]
        w.daemon.kill(signal.SIGKILL)
        self.worker_kills[w.name].append(time.time())
        down = self.rng.uniform(0.5, 8)  # sometimes longer than the lease TTL: jobs get LOST
        self.log.append((time.time(), f"SIGKILL worker daemon {w.name}, back in {down:.1f}s"))
        time.sleep(down)
        w.daemon.start()

    def restart_engine(self) -> None:
        w = self.c.workers[self.rng.randrange(len(self.c.workers))]
        self.log.append((time.time(), f"restart docker engine of {w.name}"))
        w.dockerd.stop(keep_containers=True)
        w.dockerd.start().wait_ready(60)

    def kill_web(self) -> None:
        web = self.c.web[self.rng.randrange(len(self.c.web))]
        os.killpg(web.pid, signal.SIGKILL)
        self.log.append((time.time(), f"SIGKILL web server {web.url}"))
        time.sleep(self.rng.uniform(0.5, 3))
        web.start().wait_ready(30)

    def stop_etcd_member(self) -> None:
        i = self.rng.randrange(3)
        self.log.append((time.time(), f"stop etcd member {i}"))
        self.etcd.stop_member(i)
        time.sleep(self.rng.uniform(1, 5))
        self.etcd.start_member(i)


def submit_all(c: dev.LocalCluster, image_tar: Path, image_id: str, n: int, threads: int, seed: int):
    """Submit n jobs like the CLI does; returns (accepted job ids, refused count, retries by cause)."""
    rng = random.Random(seed + 1)
    # 15 % upload the image; a third of the rest make no archive (output none: RUNNING -> the end).
    plan = [(str(uuid.UUID(int=rng.getrandbits(128))), rng.random() < 0.15, rng.random() < 1 / 3) for _ in range(n)]
    accepted: set[str] = set()
    retries: collections.Counter[str] = collections.Counter()
    refused = 0
    lock = threading.Lock()
    todo = list(plan)

    def client() -> None:
        nonlocal refused
        api = c.api("alice")
        while True:
            with lock:
                if not todo:
                    return
                key, upload, no_output = todo.pop()
            for attempt in range(30):
                try:
                    if upload:
                        with open(image_tar, "rb") as body:
                            r = api.post("/api/v1/jobs", params={"timeout": 60}, data=body,
                                         headers={"Idempotency-Key": key}, timeout=60)
                    else:
                        params = {"timeout": 60, "image": image_id, **({"output": "none"} if no_output else {})}
                        r = api.post("/api/v1/jobs", params=params, data=b"", headers={"Idempotency-Key": key},
                                     timeout=60)
                except requests.RequestException as exc:
                    with lock:
                        retries[type(exc).__name__] += 1
                    time.sleep(0.5)
                    continue
                if r.status_code in (200, 201):
                    with lock:
                        accepted.add(r.json()["job"]["id"])
                    break
                if r.status_code >= 500 or r.status_code == 409:  # 409: image holder down
                    with lock:
                        retries[str(r.status_code)] += 1
                    time.sleep(0.5)
                    continue
                with lock:
                    refused += 1
                break
            else:
                with lock:
                    refused += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for t in workers:
        t.start()
    while any(t.is_alive() for t in workers):
        for t in workers:
            t.join(15)
        print(f"{time.strftime('%H:%M:%S')} accepted {len(accepted)}/{n}, retries {dict(retries)}", flush=True)
    return accepted, refused, retries


def run(args: argparse.Namespace) -> dict:
    base = Path(tempfile.mkdtemp(prefix="pink-chaos-"))
    etcd = dev.EtcdCluster(3, base / "etcd").start().wait_ready(60)
    c = dev.LocalCluster(
        base / "cluster", workers=2, web_servers=2, nginx=True, etcd_endpoints=etcd.endpoints,
        own_engines=True, users=("alice",),
        etcd_overrides={"timeout_s": 2},
        # The soak submits everything at once: lift the per-user queue quota.
        web_overrides={"janitor_interval_s": 0.5, "lease_ttl_s": 3, "lost_worker_grace_s": 20,
                       "quota_queued_jobs": 10 * args.jobs},
        worker_overrides=FAST,
    )
    counters: list[StartCounter] = []
    started = time.time()
    try:
        c.start()
        image_tar = base / "job.tar"
        image_id = build_sample_image(
            "pink-chaos:latest", "echo run; mkdir -p /out; echo done > /out/result.txt; sleep 1", image_tar,
            docker_host=c.workers[0].docker_url)
        api = c.api("alice")
        # Seed both workers with the image so most submissions are zero-byte resubmits.
        for _ in c.workers:
            with open(image_tar, "rb") as body:
                api.post("/api/v1/jobs", data=body).raise_for_status()
        counters = [StartCounter(w.docker_url) for w in c.workers]
        injector = Injector(c, etcd, args.seed, args.fault_every)
        injector.thread.start()
        accepted, refused, retries = submit_all(c, image_tar, image_id, args.jobs, args.clients, args.seed)
        # Faults go on while the accepted jobs run, not only while they are submitted.
        wait_terminal(api, accepted, args.settle)
        injector.stop.set()
        injector.thread.join(60)
        for w in c.workers:  # everything back up before judging
            if not w.dockerd.alive():
                w.dockerd.start().wait_ready(60)
            if not w.daemon.alive():
                w.daemon.start()
        for i in range(3):
            if not etcd.members[i].alive():
                etcd.start_member(i)
        jobs = wait_terminal(api, accepted, args.settle)
        time.sleep(FAST["sweep_interval_s"] * 3)
        return judge(args, c, etcd, counters, injector, accepted, refused, retries, jobs, time.time() - started)
    finally:
        for counter in counters:
            counter.stop.set()
        c.close()
        etcd.stop()
        if args.keep:
            print(f"kept the cluster's folder: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def wait_terminal(api, ids: set[str], timeout: float) -> dict[str, dict]:
    deadline = time.time() + timeout
    jobs: dict[str, dict] = {}
    while time.time() < deadline:
        try:
            r = api.get("/api/v1/jobs", params={"limit": 1000}, timeout=30)
            listed = r.json()["jobs"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            print(f"listing jobs failed: {exc!r}", file=sys.stderr)
            time.sleep(1)
            continue
        jobs = {j["id"]: j for j in listed if j["id"] in ids}
        if len(jobs) == len(ids) and all(j["state"] in TERMINAL for j in jobs.values()):
            break
        time.sleep(1)
    return jobs


def _reason_kind(reason: str) -> str:
    """A failure reason without its numbers and names, to count alike reasons together."""
    return re.sub(r"\b([0-9a-f]{12,}|\d+(\.\d+)?)\b", "#", reason)[:70]


def judge(args, c, etcd, counters, injector, accepted, refused, retries, jobs, seconds) -> dict:
    executions = collections.Counter()
    for counter in counters:
        executions.update(counter.starts)
    states = collections.Counter(j["state"] for j in jobs.values())
    terminal = sum(states[s] for s in TERMINAL)
    orphans = collections.Counter()
    for w in c.workers:
        orphans["inbox files"] += len(list(w.inbox.glob("*.tar")))
        orphans[".part files"] += len(list(w.outbox.glob("*.part")))
        with contextlib.closing(docker.DockerClient(base_url=w.docker_url)) as engine:
            orphans["containers"] += len(engine.containers.list(all=True, filters={"label": "pink.job"}))
    store = Store(EtcdConfig(endpoints=tuple(etcd.endpoints)))
    try:
        claims = store.claims()
    finally:
        store.etcd.close()
    orphans["claims"] += sum(1 for job_id in claims if jobs.get(job_id, {}).get("state") in TERMINAL)
    detect = []
    for job in jobs.values():
        if job["state"] != "LOST":
            continue
        lost_at = next(h["at"] for h in job["history"] if h["state"] == "LOST")
        kills = [t for t in injector.worker_kills.get(job["worker"], []) if t <= lost_at]
        if kills:
            detect.append(lost_at - max(kills))
    result = {
        "jobs submitted": args.jobs,
        "accepted": len(accepted),
        "refused with a reason": refused,
        "client retries (cause × count)": ", ".join(f"{k} ×{v}" for k, v in retries.most_common()) or "none",
        "reached a terminal state": terminal,
        "SUCCEEDED / FAILED / LOST": f"{states['SUCCEEDED']} / {states['FAILED']} / {states['LOST']}",
        "FAILED because": "; ".join(f"{reason} ×{n}" for reason, n in collections.Counter(
            _reason_kind(j["reason"]) for j in jobs.values() if j["state"] == "FAILED").most_common()) or "-",
        "max executions per job": max(executions.values(), default=0),
        "jobs executed twice or more": sum(1 for n in executions.values() if n > 1),
        "orphans": sum(orphans.values()),
        "orphans by kind": ", ".join(f"{k} {v}" for k, v in orphans.items()),
        "faults injected": len(injector.log),
        "LOST detection p50 / max (s)": (f"{statistics.median(detect):.1f} / {max(detect):.1f}" if detect else "n/a"),
        "wall time (s)": f"{seconds:.0f}",
    }
    result["promise holds"] = (result["accepted"] == terminal and result["max executions per job"] <= 1
                               and result["orphans"] == 0)
    result["_faults"] = injector.log
    return result


def report(result: dict, args: argparse.Namespace) -> str:
    rows = [(k, str(v)) for k, v in result.items() if not k.startswith("_")]
    width = max(len(k) for k, _ in rows)
    head = (f"## Chaos soak {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC — "
            f"{args.jobs} jobs, seed {args.seed}, a fault every ~{args.fault_every}s "
            f"({platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()})")
    table = ["| metric | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    faults = collections.Counter(line.split(" ")[0] + " " + line.split(" ")[1] for _, line in result["_faults"])
    text = "\n".join([head, "", *table, "", "Faults: " + ", ".join(f"{k} ×{v}" for k, v in faults.items()), ""])
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fault-every", type=float, default=6.0, help="mean seconds between faults")
    parser.add_argument("--settle", type=float, default=300.0, help="seconds to wait for jobs to end")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's folder (logs) afterwards")
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    # Stopped from outside: still tear the cluster down (run's finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    text = report(result, args)
    for at, line in result["_faults"]:
        print(f"{datetime.datetime.fromtimestamp(at):%H:%M:%S} {line}")
    with open(args.results, "a") as f:
        f.write("\n" + text)
    return 0 if result["promise holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
