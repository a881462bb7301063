#!/usr/bin/env python3
"""PINK's benchmarks, each run side by side with its baseline (DESIGN §7, issue #6).

    .venv/bin/python bench/run.py                       # everything, default sizes (< 15 min)
    .venv/bin/python bench/run.py --only upload,dispatch --size 1G --jobs 200 --reps 3
    .venv/bin/python bench/run.py --smoke               # tiny sizes, what CI runs (< 2 min)

It stands up a whole PINK cluster on loopback (etcd, sshd + transfer gate, the system docker
engine, one worker daemon, gunicorn, nginx with TLS: :class:`pink.allinone.LocalCluster`),
an OpenSSH server without the gate for the by-hand baselines, and for ``dispatch`` Slurm
(slurmctld + slurmd + munged) on localhost. Each benchmark alternates PINK and its baseline,
``--reps`` times, and reports medians. The table is printed and appended, with the date, the
machine, the load and the versions, to bench/RESULTS.md (``--results``; not by ``--smoke``
unless given). Per-run numbers go to ``<workdir>/last-run.json``.

Benchmarks (``--only``):
  upload    image tarball (incompressible layer) CLI -> nginx -> gunicorn -> SSH -> worker inbox,
            vs ``ssh worker 'cat > f'``; web server peak RSS, also for ``--rss-size``
  e2e       submit -> archive ready, vs ssh cat + docker load + docker run + docker export | zstd
            (shares its runs with upload: the by-hand upload is its first step)
  resubmit  same image again: bytes the CLI sends, submit -> RUNNING; then an image that only
            adds a top layer to one the worker holds: bytes sent (thin archive)
  dispatch  ``--jobs`` short jobs on a cached image back to back until all ended, vs a
            ``docker run --rm`` loop with the worker's parallelism and vs Slurm (default and
            tuned); then ``--paced`` jobs one at a time for submit -> start p50/p95
  download  the output archive of an e2e job (about ``--size``) with the CLI via nginx, vs
            ``ssh worker cat``
  etcd      etcd requests and bytes written per job over its whole life
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness as h  # noqa: E402
from bench.images import BuiltImage, Blob, cached_image  # noqa: E402
from pink import allinone as aio  # noqa: E402

BENCHES = ("upload", "e2e", "resubmit", "dispatch", "download", "etcd")
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST"}
MB = 1e6


@dataclasses.dataclass
class Row:
    bench: str
    metric: str
    pink: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: str = "-"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def cpu_note(size: int, pink: list[dict[str, float]], baseline: list[dict[str, float]]) -> str:
    """CPU seconds per GiB by process, PINK against `ssh`, as a sentence for the notes."""
    gib = size / 2**30

    def split(runs: list[dict[str, float]]) -> str:
        per = {k: h.median(r[k] for r in runs) / gib for k in runs[0]}
        return f"{sum(per.values()):.1f} (" + ", ".join(f"{k} {v:.1f}" for k, v in per.items()) + ")"

    return (f"CPU, seconds per GiB (medians; when every process shares 2 cores, throughput follows "
            f"the total): PINK {split(pink)}, `ssh` {split(baseline)}. PINK's CLI and the `ssh` "
            "client count as 'client'.")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir).resolve()
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.raw: dict[str, Any] = {}
        self.cluster: aio.LocalCluster | None = None
        self.sshd: h.PlainSshd | None = None
        self.relay: h.CountingRelay | None = None
        self.last_e2e_job: dict | None = None
        self.t_start = time.monotonic()
        self.spies: list[subprocess.Popen] = []

    # ------------------------------------------------------------------------- plumbing
    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t_start:6.1f}s] {text}", flush=True)

    def setup(self) -> None:
        a = self.args
        if self.work.exists():
            for sub in ("cluster", "sshd-baseline", "by-hand", "downloads", "slurm"):
                shutil.rmtree(self.work / sub, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log(f"load average {h.load_average()}; building images in {self.work / 'images'}")
        images = self.work / "images"
        uptime = ["/bin/sh", "-c", "cat /proc/uptime"]
        # A and B differ only in their top layer (the thin-archive case of resubmit).
        base = ["busybox", Blob("pink-bench-base", a.size)]
        self.img_a = cached_image(images, "a", [*base, Blob("pink-bench-top-a", a.top_size, "top/blob")],
                                  uptime, "pinkbench-a:1")
        self.img_b = cached_image(images, "b", [*base, Blob("pink-bench-top-b", a.top_size, "top/blob")],
                                  uptime, "pinkbench-b:1")
        self.img_d = cached_image(images, "d", ["busybox"], uptime, "pinkbench-d:1")
        self.log("starting the cluster (etcd, sshd + gate, worker, gunicorn, nginx)")
        # The worker gets a docker engine of its own: the system one is shared with other
        # people's tests, whose images and containers would come and go under the benchmark.
        self.cluster = aio.LocalCluster(
            self.work / "cluster", workers=1, nginx=True, users=("bench",), admin_user="root",
            web_overrides={"quota_queued_jobs": 100_000},
            # A lease that outlives a stopped daemon long enough for the RSS check's upload.
            worker_overrides={"max_parallel_jobs": a.parallel, "lease_ttl_s": 30},
            own_engines=True,
        )
        self.cluster.start()
        self.worker = self.cluster.workers[0]
        self.docker_host = self.worker.docker_url
        self.api = self.cluster.api("bench")
        self.sshd = h.PlainSshd(self.work / "sshd-baseline", inbox=self.work / "by-hand" / "in",
                                outbox=self.work / "by-hand" / "out")
        self.sshd.start().wait_ready(30)
        self.ssh_cipher = self.sshd.negotiated_cipher()
        nginx = self.cluster.nginx
        assert nginx is not None
        self.relay = h.CountingRelay((nginx.host, nginx.https_port))
        self.uptime_offset = h.uptime_offset()
        # Nothing from an earlier run may make an image look held.
        for img in (self.img_a, self.img_b, self.img_d):
            self.forget(img, wait=False)
        self.log(f"cluster up at {self.cluster.url}; baseline ssh cipher {self.ssh_cipher}")
        if self.args.profile:
            self.start_profiles(Path(self.args.profile))

    def start_profiles(self, folder: Path) -> None:
        """py-spy on the worker daemon and the web server's processes for the whole run."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        folder.mkdir(parents=True, exist_ok=True)
        assert self.cluster is not None
        targets = {"worker": self.worker.daemon.pid, **{f"web-{p}": p for p in self.web_pids()}}
        for name, pid in targets.items():
            out = folder / f"{name}.txt"
            self.spies.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--threads",
                 "--nonblocking", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.log(f"py-spy recording {', '.join(targets)} into {folder} (raw collapsed stacks)")

    def close(self) -> None:
        for spy in self.spies:
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for spy in self.spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        if self.relay:
            self.relay.close()
        if self.sshd:
            with contextlib.suppress(Exception):
                self.sshd.stop()
        if self.cluster:
            self.cluster.close()  # stops and deletes the worker's own engine, images and all

    def docker(self, *argv: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        """The docker CLI against the worker's engine."""
        return subprocess.run(["docker", "-H", self.docker_host, *argv], capture_output=True, text=True,
                              check=check, timeout=timeout, **kw)

    def cli(self, *argv: str, via_relay: bool = False, timeout: float = 1800) -> tuple[float, subprocess.CompletedProcess]:
        assert self.cluster is not None
        url = f"https://127.0.0.1:{self.relay.port}" if via_relay else self.cluster.url
        env = {**os.environ, "PINK_URL": url, "PINK_TOKEN": self.cluster.tokens["bench"],
               "PINK_CA_CERT": str(self.cluster.ca_cert),
               "PINK_CLI_CONFIG": str(self.work / "no-cli-config.json")}
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "pink.cli", *argv], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=str(h.REPO))
        wall = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"pink {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return wall, proc

    def job(self, job_id: str) -> dict:
        r = self.api.get(f"/api/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()["job"]

    def wait_job(self, job_id: str, states=TERMINAL, timeout: float = 900, poll: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if set(states) <= TERMINAL:
                # Watching etcd is cheaper than asking the web server, which the benchmark
                # measures: the job's queue key goes when it ends.
                while self.queued(job_id) and time.monotonic() < deadline:
                    time.sleep(poll)
            job = self.job(job_id)
            if job["state"] in states or job["state"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(poll)

    def queued(self, job_id: str = "") -> int:
        """How many of the worker's jobs have not ended (or whether ``job_id`` has not), read
        from etcd (the queue/<worker>/<job> keys) without a request to the web server."""
        import base64

        import requests
        assert self.cluster is not None and self.cluster.etcd is not None
        key = f"{self.cluster.etcd_prefix.rstrip('/')}/queue/{self.worker.name}/{job_id}".encode()
        body: dict[str, Any] = {"key": base64.b64encode(key).decode(), "count_only": True}
        if not job_id:
            end = bytearray(key)
            end[-1] += 1
            body["range_end"] = base64.b64encode(bytes(end)).decode()
        r = requests.post(f"{self.cluster.etcd.members[0].client_url}/v3/kv/range", json=body, timeout=10)
        r.raise_for_status()
        return int(r.json().get("count", 0))

    def holders(self, image_id: str) -> list[str]:
        r = self.api.get(f"/api/v1/images/{image_id}")
        r.raise_for_status()
        return r.json()["workers"]

    def forget(self, img: BuiltImage, wait: bool = True) -> None:
        """Remove the image from the worker's engine and wait until the worker says so."""
        self.docker("image", "rm", "-f", img.image_id, check=False)
        if not wait:
            return
        deadline = time.monotonic() + 60
        while self.holders(img.image_id):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker still lists {img.image_id} 60 s after docker rmi")
            time.sleep(0.1)

    def ensure_held(self, img: BuiltImage) -> None:
        if self.worker.name in self.holders(img.image_id):
            return
        _, proc = self.cli("submit", str(img.path), "-q", "--output", "none", "--name", "warm-up")
        job = self.wait_job(proc.stdout.strip())
        if job["state"] != "SUCCEEDED":
            raise RuntimeError(f"warm-up job failed: {job}")
        deadline = time.monotonic() + 60
        while self.worker.name not in self.holders(img.image_id):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker does not list {img.image_id} 60 s after loading it")
            time.sleep(0.1)

    def web_pids(self) -> list[int]:
        assert self.cluster is not None
        master = self.cluster.web[0].pid
        return h.rss_children(master) or [master]

    def job_start_epoch(self, job_id: str) -> float | None:
        """When the job's command ran, as it printed it (/proc/uptime), on the epoch clock."""
        path = self.worker.outbox / f"{job_id}.log"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return self.uptime_offset + float(path.read_text().split()[0])
        return None

    def alternate(self, rep: int, *runs: Callable[[], Any]) -> list[Any]:
        """Run ``runs`` in order on even reps, reversed on odd ones; results in given order."""
        order = list(range(len(runs)))
        if rep % 2:
            order.reverse()
        out: list[Any] = [None] * len(runs)
        for i in order:
            out[i] = runs[i]()
        return out

    # ---------------------------------------------------------------- upload + end to end
    def pink_e2e(self, img: BuiltImage) -> dict:
        self.forget(img)
        pids = self.web_pids()
        hwm_ok = h.reset_peak_rss(pids)
        with h.RssSampler(pids) as sampler, h.CpuMeter(self.pink_trees()) as cpu:
            t0 = time.time()
            wall, proc = self.cli("submit", str(img.path), "-q", "--name", "e2e", "--timeout", "900")
        rss = max(h.peak_rss(pids) if hwm_ok else 0, sampler.peak)
        job_id = proc.stdout.strip()
        job = self.wait_job(job_id)
        if job["state"] != "SUCCEEDED":
            raise RuntimeError(f"e2e job {job_id} ended {job['state']}: {job.get('reason')}")
        at = {hh["state"]: hh["at"] for hh in job["history"]}
        self.last_e2e_job = job
        return {
            "upload_s": wall, "e2e_s": at["SUCCEEDED"] - t0, "queued_s": at["QUEUED"] - t0,
            "running_s": at["RUNNING"] - t0, "exporting_s": at["EXPORTING"] - t0,
            "rss": rss, "job": job_id, "image_bytes": job["image_bytes"],
            "output_bytes": job["output_bytes"], "cpu": cpu.used,
        }

    def pink_trees(self) -> dict[str, int]:
        """The processes an upload goes through (the CLI is counted as our child)."""
        assert self.cluster is not None and self.cluster.nginx is not None
        return {"nginx": self.cluster.nginx.pid, "web": self.cluster.web[0].pid,
                "worker sshd": self.worker.sshd.pid}

    def by_hand_e2e(self, img: BuiltImage) -> dict:
        self.forget(img)
        assert self.sshd is not None
        folder = self.work / "by-hand"
        folder.mkdir(exist_ok=True)
        dest, out = folder / "image.tar", folder / "out.tar.zst"
        name = f"pinkbench-hand-{uuid.uuid4().hex[:8]}"
        with h.CpuMeter({"sshd": self.sshd.pid}) as cpu:
            t0 = time.time()
            with open(img.path, "rb") as f:
                subprocess.run(self.sshd.ssh_argv(f"cat > {dest}"), stdin=f, check=True)
            t1 = time.time()
        self.docker("load", "-q", "-i", str(dest))
        t2 = time.time()
        self.docker("run", "--name", name, "--network", "none", img.image_id)
        t3 = time.time()
        subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"docker -H {self.docker_host} export {name} | zstd -1 -T0 -q > {out}"], check=True)
        t4 = time.time()
        self.docker("rm", "-f", name, check=False)
        size = out.stat().st_size
        dest.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        return {"upload_s": t1 - t0, "e2e_s": t4 - t0, "load_s": t2 - t1, "run_s": t3 - t2,
                "export_s": t4 - t3, "output_bytes": size, "cpu": cpu.used}

    def bench_upload_e2e(self, want_upload: bool, want_e2e: bool) -> None:
        a = self.args
        img = self.img_a
        self.log(f"upload/e2e: {h.human_size(img.size)} image, {a.reps} reps, PINK and by hand alternating")
        pinks, hands = [], []
        for rep in range(a.reps):
            p, b = self.alternate(rep, lambda: self.pink_e2e(img), lambda: self.by_hand_e2e(img))
            pinks.append(p)
            hands.append(b)
            self.log(f"  rep {rep + 1}: upload PINK {p['upload_s']:.2f}s / ssh cat {b['upload_s']:.2f}s; "
                     f"e2e PINK {p['e2e_s']:.2f}s / by hand {b['e2e_s']:.2f}s; web RSS {p['rss'] / MB:.0f} MB "
                     f"(load {h.load_average()})")
        self.raw["upload_e2e"] = {"pink": pinks, "by_hand": hands}
        med = lambda rows, k: h.median(r[k] for r in rows)  # noqa: E731
        if want_upload:
            pu, bu = med(pinks, "upload_s"), med(hands, "upload_s")
            ratio = bu / pu
            self.rows.append(Row(
                "upload", f"{h.human_size(img.size)} image: CLI → nginx → gunicorn → SSH → inbox, MB/s (median)",
                f"{img.size / pu / MB:.0f} ({pu:.2f} s)",
                f"{img.size / bu / MB:.0f} ({bu:.2f} s) `ssh 'cat > f'`, {self.ssh_cipher}",
                f"{ratio:.2f}×", "≥ 0.9×", verdict(ratio >= 0.9)))
            self.notes.append(
                "upload " + cpu_note(img.size, [p["cpu"] for p in pinks], [b["cpu"] for b in hands])
                + " The web server's share includes the `ssh` client it runs; the worker sshd's "
                "includes `scp -t` writing the file.")
            rss = max(p["rss"] for p in pinks)
            self.rows.append(Row("upload", f"web server peak RSS, {h.human_size(img.size)} upload",
                                 f"{rss / MB:.0f} MB", target="< 150 MB", met=verdict(rss < 150 * MB)))
            if a.rss_size:
                self.bench_rss(a.rss_size)
        if want_e2e:
            pe, be = med(pinks, "e2e_s"), med(hands, "e2e_s")
            ratio = pe / be
            self.rows.append(Row(
                "e2e", f"{h.human_size(img.size)} image, trivial command: submit → archive ready, s (median)",
                f"{pe:.2f}",
                f"{be:.2f} (ssh cat, docker load, docker run, docker export \\| zstd)",
                f"{ratio:.2f}×", "≤ 1.0×", verdict(ratio <= 1.0)))
            self.notes.append(
                "e2e stages (medians, seconds from the command): PINK upload done (QUEUED) "
                f"{med(pinks, 'queued_s'):.2f}, RUNNING {med(pinks, 'running_s'):.2f}, EXPORTING "
                f"{med(pinks, 'exporting_s'):.2f}, archive ready {pe:.2f}; by hand: ssh cat "
                f"{med(hands, 'upload_s'):.2f}, + docker load {med(hands, 'load_s'):.2f}, + docker run "
                f"{med(hands, 'run_s'):.2f}, + export\\|zstd {med(hands, 'export_s'):.2f}.")

    def bench_rss(self, size: int) -> None:
        """A second, bigger upload for the web server's memory only. The worker daemon is
        stopped meanwhile (its lease, and so its place in the cluster, outlives it for
        lease_ttl_s) and the job cancelled before it comes back, so nobody spends a minute
        loading a 4 GiB image that no benchmark runs."""
        self.log(f"upload: web server peak RSS with a {h.human_size(size)} image")
        img = self.img_rss = cached_image(self.work / "images", "rss", ["busybox", Blob("pink-bench-rss", size)],
                                          ["true"], "pinkbench-rss:1")
        assert self.cluster is not None
        pids = self.web_pids()
        hwm_ok = h.reset_peak_rss(pids)
        self.cluster.stop_worker(0)
        try:
            with h.RssSampler(pids) as sampler:
                wall, proc = self.cli("submit", str(img.path), "-q", "--output", "none", "--name", "rss")
            rss = max(h.peak_rss(pids) if hwm_ok else 0, sampler.peak)
            job_id = proc.stdout.strip()
            state = self.api.post(f"/api/v1/jobs/{job_id}/cancel").json().get("job", {}).get("state")
            (self.worker.inbox / f"{job_id}.tar").unlink(missing_ok=True)
        finally:
            self.cluster.start_worker(0, timeout=120)
        self.raw["rss"] = {"size": size, "rss": rss, "upload_s": wall, "state": state}
        self.rows.append(Row("upload", f"web server peak RSS, {h.human_size(size)} upload "
                                       f"({size / wall / MB:.0f} MB/s)",
                             f"{rss / MB:.0f} MB", target="< 150 MB", met=verdict(rss < 150 * MB)))

    # ---------------------------------------------------------------------- resubmit
    def bench_resubmit(self) -> None:
        a = self.args
        self.log("resubmit: same image again, then an image with one more layer (thin archive)")
        self.ensure_held(self.img_a)
        same = []
        for _ in range(a.reps):
            assert self.relay is not None
            self.relay.reset()
            t0 = time.time()
            wall, proc = self.cli("submit", str(self.img_a.path), "-q", "--output", "none", "--name", "again",
                                  via_relay=True)
            sent = self.relay.sent
            job = self.wait_job(proc.stdout.strip())
            at = {hh["state"]: hh["at"] for hh in job["history"]}
            same.append({"sent": sent, "image_bytes": job["image_bytes"], "wall_s": wall,
                         "running_s": at.get("RUNNING", float("nan")) - t0,
                         "created_s": job["created_at"] - t0, "state": job["state"]})
        thin = []
        for _ in range(a.reps):
            self.forget(self.img_b)
            self.relay.reset()
            t0 = time.time()
            wall, proc = self.cli("submit", str(self.img_b.path), "-q", "--output", "none", "--name", "thin",
                                  via_relay=True)
            sent = self.relay.sent
            job = self.wait_job(proc.stdout.strip())
            at = {hh["state"]: hh["at"] for hh in job["history"]}
            thin.append({"sent": sent, "image_bytes": job["image_bytes"], "wall_s": wall,
                         "running_s": at.get("RUNNING", float("nan")) - t0, "state": job["state"],
                         "created_s": job["created_at"] - t0, "reason": job.get("reason", "")})
        self.raw["resubmit"] = {"same": same, "thin": thin}
        bad = [r for r in same + thin if r["state"] != "SUCCEEDED"]
        if bad:
            self.notes.append(f"resubmit: {len(bad)} jobs did not succeed: {bad}")
        img_bytes = max(r["image_bytes"] for r in same)
        sent = h.median(r["sent"] for r in same)
        self.rows.append(Row("resubmit", "same image: image bytes sent (all bytes the CLI sent, TLS included)",
                             f"{img_bytes} ({h.human_size(sent)})", f"{h.human_size(self.img_a.size)} (full upload)",
                             "-", "0", verdict(img_bytes == 0)))
        run = h.median(r["running_s"] for r in same)
        server = h.median(r["running_s"] - r["created_s"] for r in same)
        self.rows.append(Row(
            "resubmit", "same image: submit → RUNNING, s (median): request received → RUNNING "
                        "(from `pink submit` starting, Python's start-up and the image check included)",
            f"{server:.2f} ({run:.2f})", target="< 1 s", met=verdict(server < 1.0)))
        new_layer = self.img_b.layer_sizes[-1]
        tb = h.median(r["image_bytes"] for r in thin)
        ts = h.median(r["sent"] for r in thin)
        ok = tb <= new_layer + 64 * 1024
        self.rows.append(Row(
            "resubmit", f"image = held {h.human_size(self.img_a.size)} image + {h.human_size(new_layer)} top layer: "
                        "bytes sent (image / all the CLI sent)",
            f"{h.human_size(tb)} / {h.human_size(ts)}",
            f"{h.human_size(self.img_b.size)} (full archive)", f"{tb / self.img_b.size:.4f}×",
            f"≈ new layer ({h.human_size(new_layer)})", verdict(ok)))
        trun = h.median(r["running_s"] for r in thin)
        tserver = h.median(r["running_s"] - r["created_s"] for r in thin)
        self.rows.append(Row("resubmit", "thin archive: submit → RUNNING, s (median): request received → "
                                         "RUNNING (from `pink submit` starting)", f"{tserver:.2f} ({trun:.2f})"))

    # ---------------------------------------------------------------------- dispatch
    def pink_burst(self, n: int) -> dict:
        img = self.img_d
        submits: dict[str, float] = {}
        t_first = time.time()
        for i in range(n):
            t = time.time()
            r = self.api.post("/api/v1/jobs", params={"image": img.image_id, "output": "none",
                                                       "timeout": 300, "name": f"d{i}"},
                              data=b"", headers={"Content-Length": "0"})
            if r.status_code != 201:
                raise RuntimeError(f"submit {i} failed: {r.status_code} {r.text}")
            submits[r.json()["job"]["id"]] = t
        t_submitted = time.time()
        jobs = self.wait_all(set(submits), timeout=60 + n * 5)
        end = max(hh["at"] for j in jobs for hh in j["history"] if hh["state"] in TERMINAL)
        bad = [j for j in jobs if j["state"] != "SUCCEEDED"]
        lat = [self.job_start_epoch(j["id"]) - submits[j["id"]] for j in jobs if self.job_start_epoch(j["id"])]
        return {"n": n, "elapsed_s": end - t_first, "rate": n / (end - t_first), "failed": len(bad),
                "submit_s": t_submitted - t_first, "p50": h.percentile(lat, .5), "p95": h.percentile(lat, .95)}

    def wait_all(self, ids: set[str], timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.25)
        while True:
            r = self.api.get("/api/v1/jobs", params={"limit": 1000})
            r.raise_for_status()
            jobs = [j for j in r.json()["jobs"] if j["id"] in ids]
            if len(jobs) == len(ids) and all(j["state"] in TERMINAL for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                states = {}
                for j in jobs:
                    states[j["state"]] = states.get(j["state"], 0) + 1
                raise RuntimeError(f"jobs not all ended after {timeout:.0f} s: {states}")
            time.sleep(0.5)

    def pink_one(self, i: int, stages: list) -> float | None:
        """Submit one job, wait for its end; seconds from the request to its command running."""
        t = time.time()
        r = self.api.post("/api/v1/jobs", params={"image": self.img_d.image_id, "output": "none",
                                                   "timeout": 300, "name": f"p{i}"},
                          data=b"", headers={"Content-Length": "0"})
        r.raise_for_status()
        job = self.wait_job(r.json()["job"]["id"], poll=0.02)
        start = self.job_start_epoch(job["id"])
        at = {hh["state"]: hh["at"] for hh in job["history"]}
        if start and "STARTING" in at:
            stages.append((job["created_at"] - t, at["STARTING"] - job["created_at"], start - at["STARTING"]))
        return start - t if start else None

    def docker_run_d(self) -> tuple[float, float | None]:
        t = time.time()
        out = self.docker("run", "--rm", "--network", "none", self.img_d.image_id)
        with contextlib.suppress(ValueError, IndexError):
            return t, self.uptime_offset + float(out.stdout.split()[0])
        return t, None

    def floor_burst(self, n: int) -> dict:
        t_first = time.time()
        with ThreadPoolExecutor(self.args.parallel) as pool:
            results = list(pool.map(lambda _: self.docker_run_d(), range(n)))
        end = time.time()
        return {"n": n, "elapsed_s": end - t_first, "rate": n / (end - t_first)}

    def floor_one(self) -> float | None:
        t, started = self.docker_run_d()
        return started - t if started else None

    def slurm_cmd(self) -> str:
        return f"docker -H {self.docker_host} run --rm --network none {self.img_d.image_id}; cat /proc/uptime"

    def slurm_burst(self, slurm: h.Slurm, n: int) -> dict:
        submits = {}
        t_first = time.time()
        for _ in range(n):
            t = time.time()
            submits[slurm.sbatch(self.slurm_cmd())] = t
        deadline = time.monotonic() + 120 + n * 10
        while not slurm.queue_empty():
            if time.monotonic() > deadline:
                raise RuntimeError("Slurm jobs did not all end")
            time.sleep(0.25)
        ends, lat = [], []
        for job_id, t in submits.items():
            lines = slurm.output(job_id).split("\n")
            with contextlib.suppress(ValueError, IndexError):
                lat.append(self.uptime_offset + float(lines[0].split()[0]) - t)
                ends.append(self.uptime_offset + float(lines[1].split()[0]))
        end = max(ends) if len(ends) == n else time.time()
        return {"n": n, "elapsed_s": end - t_first, "rate": n / (end - t_first), "ok": len(ends),
                "p50": h.percentile(lat, .5), "p95": h.percentile(lat, .95)}

    def slurm_one(self, slurm: h.Slurm) -> float | None:
        t = time.time()
        job_id = slurm.sbatch(self.slurm_cmd())
        deadline = time.monotonic() + 120
        while len(slurm.output(job_id).split("\n")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ValueError, IndexError):
            return self.uptime_offset + float(slurm.output(job_id).split()[0]) - t
        return None

    def paced(self, m: int, slurms: dict[str, h.Slurm]) -> dict:
        """``m`` jobs one at a time on each system, taking turns job by job (so that the load
        other people put on the machine hits them alike)."""
        stages: list = []
        turn = 0
        runs: dict[str, Callable[[], float | None]] = {
            "pink": lambda: self.pink_one(turn, stages), "floor": self.floor_one,
            **{name: (lambda s=s: self.slurm_one(s)) for name, s in slurms.items()}}
        lat: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for turn in range(m):
            for system in names[turn % len(names):] + names[:turn % len(names)]:
                value = runs[system]()
                if value is not None:
                    lat[system].append(value)
        out = {k: {"lat": v, "p50": h.percentile(v, .5), "p95": h.percentile(v, .95)} for k, v in lat.items()}
        out["pink"]["stages_p50"] = [h.percentile([st[k] for st in stages], .5) for k in range(3)]
        return out

    def bursts(self, n: int, slurms: dict[str, h.Slurm]) -> dict[str, list[dict]]:
        """``n`` jobs per system (the default Slurm config: at most --slurm-default-jobs), in
        --rounds rounds; in each round every system runs its share back to back until all have
        ended, in an order that rotates, so that load from elsewhere hits each system alike."""
        a = self.args
        totals = {"pink": n, "floor": n, **{k: n if k == "slurm_tuned" else min(n, a.slurm_default_jobs)
                                              for k in slurms}}
        runs: dict[str, Callable[[int], dict]] = {
            "pink": self.pink_burst, "floor": self.floor_burst,
            **{k: (lambda size, s=s: self.slurm_burst(s, size)) for k, s in slurms.items()}}
        out: dict[str, list[dict]] = {k: [] for k in runs}
        names = list(runs)
        for r in range(a.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                size = totals[name] // a.rounds + (1 if r < totals[name] % a.rounds else 0)
                if size <= 0:
                    continue
                with h.CpuMeter(self.dispatch_trees(), with_self=True) as cpu:
                    result = runs[name](size)
                result["cpu"] = cpu.used
                out[name].append(result)
                self.log(f"  round {r + 1} {name}: {size} jobs, {result['rate']:.2f} jobs/s "
                         f"({result['elapsed_s']:.1f} s) (load {h.load_average()})")
        return out

    def dispatch_trees(self) -> dict[str, int]:
        """Processes that work for a dispatched job (the benchmark itself counts as 'client':
        PINK's submitting, or the `docker run`, `sbatch` and `squeue` it starts)."""
        assert self.cluster is not None and self.cluster.etcd is not None and self.cluster.nginx is not None
        trees = {"docker engine": self.worker.dockerd.pid, "worker": self.worker.daemon.pid,
                 "web": self.cluster.web[0].pid, "nginx": self.cluster.nginx.pid,
                 "etcd": self.cluster.etcd.members[0].pid}
        return {k: v for k, v in trees.items() if v}

    def bench_dispatch(self) -> None:
        a = self.args
        n, m = a.jobs, a.paced
        use_slurm = a.slurm == "on" or (a.slurm == "auto" and not h.slurm_available())
        why_no_slurm = h.slurm_available() if a.slurm == "auto" else "switched off (--slurm off)"
        self.log(f"dispatch: {n} jobs per system in {a.rounds} rounds (systems taking turns), then {m} "
                 f"one at a time each; parallelism {a.parallel}; Slurm {'on' if use_slurm else 'off: ' + why_no_slurm}")
        self.ensure_held(self.img_d)
        self.docker("run", "--rm", "--network", "none", self.img_d.image_id)  # warm the engine
        slurms: dict[str, h.Slurm] = {}
        try:
            if use_slurm:
                # Both configurations stay up side by side for the whole benchmark.
                slurms = {"slurm_tuned": h.Slurm(self.work / "slurm-tuned", a.parallel, True).start(),
                          "slurm_default": h.Slurm(self.work / "slurm-default", a.parallel, False).start()}
            bursts = self.bursts(n, slurms)
            lat = self.paced(m, slurms)
        finally:
            for slurm in slurms.values():
                slurm.stop()
        for name, v in lat.items():
            self.log(f"  one at a time, {name}: submit→start p50 {v['p50']:.3f}s p95 {v['p95']:.3f}s "
                     f"({len(v['lat'])} jobs)")
        self.raw["dispatch"] = {"bursts": bursts, "paced": lat}
        per_job = {}
        for name, runs_ in bursts.items():
            jobs = sum(r["n"] for r in runs_)
            keys = runs_[0].get("cpu", {}).keys()
            per_job[name] = {k: sum(r["cpu"][k] for r in runs_) / jobs * 1000 for k in keys}
        self.notes.append("dispatch CPU per job, ms (all rounds; Slurm's own daemons not counted): " + "; ".join(
            f"{name} {sum(v.values()):.0f} (" + ", ".join(f"{k} {x:.0f}" for k, x in v.items() if x >= 0.5) + ")"
            for name, v in per_job.items()))
        # Each system's rate over all its rounds: its jobs over the time they took.
        rate = {k: sum(r["n"] for r in v) / sum(r["elapsed_s"] for r in v) for k, v in bursts.items()}
        failed = sum(r.get("failed", 0) for r in bursts["pink"])
        if failed:
            self.notes.append(f"dispatch: {failed} PINK jobs did not succeed")
        label = {"floor": f"`docker run --rm` loop, {a.parallel} at a time (floor)",
                 "slurm_tuned": "Slurm, tuned", "slurm_default": "Slurm, default config"}
        target = {"floor": 0.8, "slurm_tuned": 1.0, "slurm_default": 1.0}
        for name in bursts:
            if name == "pink":
                continue
            ratio = rate["pink"] / rate[name]
            their_n = sum(r["n"] for r in bursts[name])
            rounds = len(bursts[name])
            self.rows.append(Row(
                "dispatch", f"{their_n} short jobs on a cached image, in {rounds} rounds of {their_n // rounds} "
                            "submitted back to back until all ended, systems taking turns: jobs/s",
                f"{rate['pink']:.2f}", f"{rate[name]:.2f} {label[name]}", f"{ratio:.2f}×",
                f"≥ {target[name]}×", verdict(ratio >= target[name])))
        p = lat["pink"]
        self.notes.append("dispatch, one at a time, PINK's stages (p50): request → job recorded "
                          "{:.3f} s, → claimed (STARTING) {:.3f} s, → command runs {:.3f} s.".format(*p["stages_p50"]))
        base = "; ".join(f"{label[k].split(',')[0].replace(' (floor)', '')}"
                         f"{' ' + label[k].split(', ')[1] if k.startswith('slurm') else ''}: "
                         f"{v['p50']:.2f} / {v['p95']:.2f}" for k, v in lat.items() if k != "pink")
        self.rows.append(Row("dispatch", f"submit → job's command runs, one job at a time ({len(p['lat'])} jobs, "
                                         "systems taking turns): p50 / p95, s",
                             f"{p['p50']:.2f} / {p['p95']:.2f}", base, "-", "p50 < 0.5 s",
                             verdict(p["p50"] < 0.5)))
        if use_slurm:
            self.notes.append("Slurm settings (both): slurmctld + slurmd + munged on localhost, "
                              f"select/cons_tres CR_CPU, node declared with {a.parallel} CPUs (= the "
                              "worker's max_parallel_jobs), proctrack/linuxproc, task/none, no "
                              "accounting; each job is `sbatch --wrap 'docker -H <the worker's engine> run "
                              "--rm --network none IMAGE; cat /proc/uptime'`. Tuned adds: "
                              + h.SLURM_TUNED.strip().replace("\n", "; "))
        self.notes.append("dispatch: start = the time the job's command (`cat /proc/uptime` in the "
                          "container) printed; back-to-back submit→start (queueing included) p50: "
                          + ", ".join(f"{k} {h.median(r.get('p50', float('nan')) for r in v):.1f} s"
                                      for k, v in bursts.items() if k != "floor"))

    # ---------------------------------------------------------------------- download
    def bench_download(self) -> None:
        a = self.args
        if self.last_e2e_job is None:
            self.log("download: making an archive first (one e2e job)")
            self.pink_e2e(self.img_a)
        job = self.last_e2e_job
        assert job is not None and self.sshd is not None
        archive = self.worker.outbox / f"{job['id']}.tar.zst"
        size = archive.stat().st_size
        folder = self.work / "downloads"
        folder.mkdir(exist_ok=True)
        self.log(f"download: {h.human_size(size)} archive, {a.reps} reps alternating")

        def pink() -> tuple[float, dict[str, float]]:
            dest = folder / "pink.tar.zst"
            with h.CpuMeter(self.pink_trees()) as cpu:
                wall, _ = self.cli("download", job["id"], "-o", str(dest), "-q")
            assert dest.stat().st_size == size
            dest.unlink()
            return wall, cpu.used

        def ssh() -> tuple[float, dict[str, float]]:
            dest = folder / "ssh.tar.zst"
            with h.CpuMeter({"sshd": self.sshd.pid}) as cpu:
                t0 = time.time()
                with open(dest, "wb") as f:
                    subprocess.run(self.sshd.ssh_argv(f"cat {archive}"), stdout=f, check=True)
                wall = time.time() - t0
            assert dest.stat().st_size == size
            dest.unlink()
            return wall, cpu.used

        runs = [self.alternate(rep, pink, ssh) for rep in range(a.reps)]
        self.raw["download"] = {"size": size, "runs": runs}
        pt, st = h.median(r[0][0] for r in runs), h.median(r[1][0] for r in runs)
        self.notes.append("download " + cpu_note(size, [r[0][1] for r in runs], [r[1][1] for r in runs]) +
                          " The web server's share includes the `ssh` client it runs; the worker "
                          "sshd's includes `tail` (PINK) or `cat` reading the file.")
        ratio = st / pt
        self.rows.append(Row("download", f"{h.human_size(size)} archive: `pink download` via nginx, MB/s (median)",
                             f"{size / pt / MB:.0f} ({pt:.2f} s)",
                             f"{size / st / MB:.0f} ({st:.2f} s) `ssh cat`, {self.ssh_cipher}",
                             f"{ratio:.2f}×", "≥ 0.9×", verdict(ratio >= 0.9)))

    # ---------------------------------------------------------------------- etcd
    def bench_etcd(self) -> None:
        a = self.args
        k = a.etcd_jobs
        assert self.cluster is not None and self.cluster.etcd is not None
        url = self.cluster.etcd.members[0].client_url
        self.ensure_held(self.img_d)
        self.log(f"etcd: idle {a.etcd_idle:.0f} s, then {k} jobs (output full) one after another")
        time.sleep(2)  # what the benchmarks before left behind settles
        m0, t0 = h.etcd_summary(h.etcd_metrics(url)), time.monotonic()
        time.sleep(a.etcd_idle)
        m1, t1 = h.etcd_summary(h.etcd_metrics(url)), time.monotonic()
        idle = {key: (m1.get(key, 0) - m0.get(key, 0)) / (t1 - t0) for key in m1}
        rev0 = self.etcd_revision(url)
        m2, t2 = h.etcd_summary(h.etcd_metrics(url)), time.monotonic()
        ids = []
        for i in range(k):
            r = self.api.post("/api/v1/jobs", params={"image": self.img_d.image_id, "timeout": 300,
                                                       "name": f"e{i}"},
                              data=b"", headers={"Content-Length": "0"})
            r.raise_for_status()
            ids.append(r.json()["job"]["id"])
            # Wait on the worker's files, not the API, so the wait itself reads nothing from etcd.
            archive = self.worker.outbox / f"{ids[-1]}.tar.zst"
            deadline = time.monotonic() + 120
            while not archive.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(2.0)  # the terminal transition follows the archive's rename
        m3, t3 = h.etcd_summary(h.etcd_metrics(url)), time.monotonic()
        rev1 = self.etcd_revision(url)
        writes = self.etcd_writes(url, rev0, rev1)
        states = [self.job(j)["state"] for j in ids]
        per_job = {key: (m3.get(key, 0) - m2.get(key, 0) - idle.get(key, 0) * (t3 - t2)) / k
                   for key in m3}
        # The benchmark's own reads: two revision probes (Range).
        per_job["rpc Range"] = per_job.get("rpc Range", 0) - 2 / k
        self.raw["etcd"] = {"jobs": k, "idle_per_s": idle, "per_job": per_job, "writes": writes,
                            "states": states, "window_s": t3 - t2}
        if any(s != "SUCCEEDED" for s in states):
            self.notes.append(f"etcd: job states {states}")
        rpcs = {key[4:]: max(v, 0.0) for key, v in per_job.items() if key.startswith("rpc ") and abs(v) >= 0.05}
        self.rows.append(Row(
            "etcd", f"per job (submit → SUCCEEDED, output full, {k} jobs): write transactions / keys put+deleted / "
                    "bytes written (keys+values) / WAL bytes / WAL fsyncs",
            f"{writes['revisions'] / k:.1f} / {writes['events'] / k:.1f} / {writes['bytes'] / k / 1000:.1f} kB / "
            f"{per_job.get('WAL bytes', 0) / 1000:.1f} kB / {per_job.get('WAL fsyncs', 0):.1f}"))
        self.rows.append(Row(
            "etcd", "per job: requests (unary RPCs, idle background subtracted)",
            f"{sum(rpcs.values()):.1f}: " + ", ".join(f"{key} {v:.1f}" for key, v in sorted(rpcs.items())),
            f"idle cluster: {sum(v for key, v in idle.items() if key.startswith('rpc ')):.1f} RPC/s"))
        self.notes.append("etcd writes per job by key kind: " + ", ".join(
            f"{kind} {v['events'] / k:.1f} ({v['bytes'] / k / 1000:.1f} kB)"
            for kind, v in sorted(writes["by_kind"].items())))

    def etcd_revision(self, url: str) -> int:
        import requests
        r = requests.post(f"{url}/v3/kv/range", json={"key": "AA=="}, timeout=5)
        return int(r.json()["header"]["revision"])

    def etcd_writes(self, url: str, rev0: int, rev1: int) -> dict:
        """Every put/delete between two revisions, from etcd's history (a watch from rev0)."""
        import base64

        import requests
        prefix = self.cluster.etcd_prefix.encode()
        end = bytearray(prefix)
        end[-1] += 1
        body = {"create_request": {"key": base64.b64encode(prefix).decode(),
                                   "range_end": base64.b64encode(bytes(end)).decode(),
                                   "start_revision": rev0 + 1}}
        revisions, events, nbytes = set(), 0, 0
        by_kind: dict[str, dict[str, int]] = {}
        with requests.post(f"{url}/v3/watch", json=body, stream=True, timeout=10) as r:
            for line in r.iter_lines():
                msg = json.loads(line).get("result", {})
                done = False
                for ev in msg.get("events", []):
                    kv = ev["kv"]
                    rev = int(kv.get("mod_revision", 0))
                    if rev > rev1:
                        done = True
                        continue
                    key = base64.b64decode(kv["key"])
                    value = base64.b64decode(kv.get("value", ""))
                    revisions.add(rev)
                    events += 1
                    nbytes += len(key) + len(value)
                    kind = key[len(prefix):].decode().strip("/").split("/")[0]
                    entry = by_kind.setdefault(kind, {"events": 0, "bytes": 0})
                    entry["events"] += 1
                    entry["bytes"] += len(key) + len(value)
                if done or (msg.get("header") and int(msg["header"].get("revision", 0)) >= rev1
                            and revisions and max(revisions) >= rev1 - 1):
                    break
                if not msg.get("events") and msg.get("created"):
                    continue
        return {"revisions": len(revisions), "events": events, "bytes": nbytes, "by_kind": by_kind}

    # ---------------------------------------------------------------------- report
    def table(self) -> str:
        lines = ["| benchmark | measure | PINK | baseline | ratio | target | met |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in self.rows:
            lines.append(f"| {r.bench} | {r.metric} | {r.pink} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")
        return "\n".join(lines)

    def report(self, load_before: str) -> str:
        a = self.args
        machine = h.describe_machine()
        versions = h.describe_versions()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "bench/run.py " + " ".join(sys.argv[1:])
        out = [f"## {stamp}{' (smoke)' if a.smoke else ''}", "",
               f"`{cmd.strip()}` — {time.monotonic() - self.t_start:.0f} s; sizes: image "
               f"{h.human_size(a.size)}, top layer {h.human_size(a.top_size)}, RSS check "
               f"{h.human_size(a.rss_size) if a.rss_size else 'off'}, {a.jobs} dispatch jobs, "
               f"{a.paced} one at a time, reps {a.reps}, dispatch rounds {a.rounds}.",
               "",
               f"Machine: {machine['cpu']}, {machine['memory']}, kernel {machine['kernel']}; load average "
               f"(1/5/15 min) before {load_before}, after {h.load_average()} (shared machine: other "
               "people's tests ran too).",
               "",
               "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
               "", self.table(), ""]
        for note in self.notes:
            out.append(f"- {note}")
        return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma list of {', '.join(BENCHES)}")
    p.add_argument("--size", default="1G", help="image (and archive) size for upload/e2e/resubmit/download")
    p.add_argument("--rss-size", default="4G", help="second upload size for the RSS check (0: skip)")
    p.add_argument("--top-size", default="1M", help="size of the extra top layer for the thin-archive case")
    p.add_argument("--jobs", type=int, default=200, help="dispatch: jobs submitted back to back")
    p.add_argument("--paced", type=int, default=10,
                   help="dispatch: jobs one at a time per system and Slurm config, taking turns")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each A/B pair")
    p.add_argument("--rounds", type=int, default=4,
                   help="dispatch: the --jobs jobs of each system run in this many rounds, systems taking turns")
    p.add_argument("--slurm-default-jobs", type=int, default=60,
                   help="jobs in a burst of the default Slurm config (it runs them at < 1 job/s)")
    p.add_argument("--parallel", type=int, default=4, help="worker max_parallel_jobs = floor and Slurm slots")
    p.add_argument("--etcd-jobs", type=int, default=20)
    p.add_argument("--etcd-idle", type=float, default=5.0, help="seconds of idle etcd traffic to subtract")
    p.add_argument("--slurm", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one rep, no Slurm: the CI check")
    p.add_argument("--workdir", default="/var/tmp/pink-bench")
    p.add_argument("--results", help="append the report here (default bench/RESULTS.md; smoke: nowhere)")
    p.add_argument("--clean", action="store_true", help="delete the work folder (cached images) at the end")
    p.add_argument("--profile", metavar="DIR", help="record py-spy profiles of the worker and web server here")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.rss_size, args.top_size = "8M", "0", "64K"
        args.jobs, args.paced, args.reps, args.rounds = 6, 3, 1, 1
        args.etcd_jobs, args.etcd_idle = 3, 3.0
        if args.slurm == "auto":
            args.slurm = "off"
        if args.workdir == p.get_default("workdir"):
            args.workdir = "/var/tmp/pink-bench-smoke"
    args.size, args.top_size = h.parse_size(args.size), h.parse_size(args.top_size)
    args.rss_size = h.parse_size(args.rss_size) if args.rss_size not in ("0", "") else 0
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    results = args.results or (None if args.smoke else str(Path(__file__).with_name("RESULTS.md")))

    load_before = h.load_average()
    bench = Bench(args)
    try:
        bench.setup()
        if "upload" in only or "e2e" in only:
            bench.bench_upload_e2e("upload" in only, "e2e" in only)
        if "resubmit" in only:
            bench.bench_resubmit()
        if "download" in only:
            bench.bench_download()
        if "dispatch" in only:
            bench.bench_dispatch()
        if "etcd" in only:
            bench.bench_etcd()
    finally:
        report = bench.report(load_before) if bench.rows else ""
        with contextlib.suppress(Exception):
            (bench.work / "last-run.json").write_text(json.dumps(bench.raw, indent=1, default=str))
        bench.close()
        if args.clean:
            shutil.rmtree(bench.work, ignore_errors=True)
    print()
    print(report)
    if results and report:
        path = Path(results)
        if not path.exists():
            path.write_text("# PINK benchmark results\n\nAppended by `bench/run.py` (newest last). "
                            "Ratios: throughput PINK ÷ baseline, except end to end (time PINK ÷ "
                            "baseline: lower is better).\n\n")
        with path.open("a") as f:
            f.write("\n" + report)
        print(f"appended to {path}")
    failed = [r for r in bench.rows if r.met == "**no**"]
    return 0 if report else 1


if __name__ == "__main__":
    sys.exit(main())
