"""What every benchmark stands on: one :class:`Session` (the PINK cluster under test on
loopback, the plain sshd the by-hand baselines use, the PINK CLI, job waits, images the worker
holds, the rows and notes of the report), and the instruments: sizes and statistics, peak RSS
and CPU seconds of process trees, and a TCP relay that counts the bytes a client sends.

It measures nothing by itself; each benchmark module (upload, e2e, resubmit, download,
dispatch, etcd) says what it measures against which baseline.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import requests

import pink_dev as dev
from pink.config import WebConfig
from pink.states import TERMINAL

from .images import Blob, BuiltImage, cached_image
from .realimage import realistic_image

REPO = Path(__file__).resolve().parents[1]
MB = 1e6


# ------------------------------------------------------------------------------- numbers


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 64M, 1G)")
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def time_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and p99 of ``repeat`` calls of ``fn``, in milliseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def percentile(values: Sequence[float], q: float) -> float:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def uptime_offset() -> float:
    """epoch = offset + /proc/uptime (the clock jobs read inside their containers)."""
    best = None
    for _ in range(5):
        t0 = time.time()
        up = float(Path("/proc/uptime").read_text().split()[0])
        t1 = time.time()
        cand = (t0 + t1) / 2 - up
        best = cand if best is None else max(best, cand)
    return best  # /proc/uptime truncates to 10 ms: the largest offset is the closest


def alternate(rep: int, *runs: Callable[[], Any]) -> list[Any]:
    """Run ``runs`` in order on even reps, reversed on odd ones; results in given order."""
    order = list(range(len(runs)))
    if rep % 2:
        order.reverse()
    out: list[Any] = [None] * len(runs)
    for i in order:
        out[i] = runs[i]()
    return out


# ------------------------------------------------------------------------------- results


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


#: The hops of an upload or download (keys of :meth:`Session.pink_trees`, and "client"), each
#: with what it counts, and the baseline's process that does the same work.
PINK_HOPS = (("client", "client: `pink` CLI / `ssh`", "client"), ("nginx", "nginx (TLS)", None),
             ("web", "web server: gunicorn + the `ssh` it runs", None),
             ("worker sshd", "worker sshd + what it runs / sshd + `cat`", "sshd"))
#: The rest of the cluster, in its own row and not in the total: nothing of the transfer runs
#: there, but the worker starts loading an upload while its bytes arrive. With the hops, these
#: trees cover every process of the cluster.
REST = ("worker daemon", "engine", "etcd")


def cpu_rows(bench: str, sizes: dict[str, int], pink: dict[str, list[dict[str, float]]],
             baseline: dict[str, list[dict[str, float]]], target: float) -> list[Row]:
    """CPU seconds per GiB by hop (medians), PINK against `ssh`: one row per hop, the total of
    the hops, and the rest of the cluster; the images (keys of ``sizes``) side by side."""
    def per_gib(runs: dict[str, list[dict[str, float]]], key: str, procs: tuple[str, ...]) -> float:
        return median(sum(r.get(p, 0.0) for p in procs) for r in runs[key]) / (sizes[key] / 2**30)

    def cells(values: list[float], fmt: str = "{:.2f}") -> str:
        return " · ".join(fmt.format(v) for v in values)

    images = " · ".join(f"{human_size(n)} {key}" for key, n in sizes.items())
    rows = [Row(bench, f"CPU s/GiB ({images}), {what}", cells([per_gib(pink, k, (hop,)) for k in sizes]),
                cells([per_gib(baseline, k, (base,)) for k in sizes]) if base else "-")
            for hop, what, base in PINK_HOPS]
    totals = [per_gib(pink, k, tuple(hop for hop, _, _ in PINK_HOPS)) for k in sizes]
    base_totals = [per_gib(baseline, k, ("client", "sshd")) for k in sizes]
    ratios = [p / b for p, b in zip(totals, base_totals)]
    rows.append(Row(bench, f"CPU s/GiB ({images}), all hops (medians of per-run sums; on 2 shared "
                           "cores throughput follows the total)", cells(totals), cells(base_totals) + " `ssh`",
                    cells(ratios, "{:.2f}×"), f"≤ {target}×", verdict(max(ratios) <= target)))
    rows.append(Row(bench, f"CPU s/GiB ({images}), not a hop: rest of the cluster (worker daemon, "
                           "its engine, etcd)", cells([per_gib(pink, k, REST) for k in sizes])))
    return rows


# ------------------------------------------------------------------------------- memory


def rss_children(pid: int) -> list[int]:
    return [p for p in dev.descendants(pid) if p != pid]


def reset_peak_rss(pids: Iterable[int]) -> bool:
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def status_bytes(pid: int, field: str) -> int:
    """A size from /proc/<pid>/status (``VmRSS``, ``VmHWM``) in bytes; 0 once the process is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss(pids: Iterable[int]) -> int:
    """Largest VmHWM (bytes) among ``pids``."""
    return max((status_bytes(pid, "VmHWM") for pid in pids), default=0)


class RssSampler:
    """Samples the RSS of ``pids`` every 50 ms (a cross-check of VmHWM)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            self._stop.wait(0.05)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_cpu(pid: int) -> float:
    """CPU seconds used by ``pid`` and everything under it (children that ended included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid, *rss_children(pid)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


class CpuMeter:
    """CPU seconds spent by process trees and by our own children between enter and exit."""

    def __init__(self, trees: dict[str, int], with_self: bool = False) -> None:
        self.trees = trees
        self.with_self = with_self  # count this process too (all its threads)
        self.used: dict[str, float] = {}

    def __enter__(self) -> "CpuMeter":
        import resource
        self._before = {k: tree_cpu(p) for k, p in self.trees.items()}
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = r.ru_utime + r.ru_stime
        me = resource.getrusage(resource.RUSAGE_SELF)
        self._self = me.ru_utime + me.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        import resource
        self.used = {k: tree_cpu(p) - self._before[k] for k, p in self.trees.items()}
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.used["client"] = r.ru_utime + r.ru_stime - self._children
        if self.with_self:
            me = resource.getrusage(resource.RUSAGE_SELF)
            self.used["client"] += me.ru_utime + me.ru_stime - self._self


# ------------------------------------------------------------------------------- relay


class CountingRelay:
    """A TCP relay in front of ``target`` that counts the bytes clients send through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = 0  # client -> server
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.sent = 0

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if up:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self._sock.close()


# ------------------------------------------------------------------------------- sshd


class PlainSshd(dev.Sshd):
    """The same OpenSSH server as a worker's, but without the transfer gate: the baseline an
    operator would use by hand (``ssh worker 'cat > f'``)."""

    name = "sshd-baseline"

    def _config_text(self) -> str:
        return super()._config_text().replace(
            "PermitRootLogin forced-commands-only", "PermitRootLogin prohibit-password")

    def prepare(self) -> None:
        super().prepare()
        pub = self.client_key.with_suffix(".pub").read_text().strip()
        dev.write_private(self.authorized_keys, pub + "\n")

    def ssh_argv(self, command: str, ciphers: str = "") -> list[str]:
        """``ssh`` as a person types it; ``ciphers``: an OpenSSH ``Ciphers`` list instead of the
        default preference (chacha20-poly1305 first)."""
        return [
            "ssh", "-i", str(self.client_key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
            *(["-o", f"Ciphers={ciphers}"] if ciphers else []),
            f"{self.user}@{self.host}", command,
        ]

    def negotiated_cipher(self, ciphers: str = "") -> str:
        out = subprocess.run(self.ssh_argv("true", ciphers)[:-2] + ["-v", f"{self.user}@{self.host}", "true"],
                             capture_output=True, text=True, timeout=30)
        m = re.search(r"kex: client->server cipher: (\S+)", out.stderr)
        return m.group(1) if m else "?"


# ------------------------------------------------------------------------------- session


class Session:
    """One run of the benchmarks: the cluster under test and the baselines' sshd, shared by
    every benchmark, and the rows, notes and raw numbers they add."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir).resolve()
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.raw: dict[str, Any] = {}
        self.cluster: dev.LocalCluster | None = None
        self.sshd: PlainSshd | None = None
        self.relay: CountingRelay | None = None
        #: The images upload, e2e and download run on, by name ("blob", "debian"; --image).
        self.e2e_images: dict[str, BuiltImage] = {}
        #: The last end-to-end job of each of those images (download fetches its archive).
        self.last_e2e_job: dict[str, dict] = {}
        self.t_start = time.monotonic()
        self.spies: list[subprocess.Popen] = []

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t_start:6.1f}s] {text}", flush=True)

    def setup(self) -> None:
        a = self.args
        if self.work.exists():
            for sub in ("cluster", "sshd-baseline", "by-hand", "downloads", "slurm"):
                shutil.rmtree(self.work / sub, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log(f"load average {load_average()}; building images in {self.work / 'images'}")
        images = self.work / "images"
        uptime = ["/bin/sh", "-c", "cat /proc/uptime"]
        # A and B differ only in their top layer (the thin-archive case of resubmit).
        base = ["busybox", Blob("pink-bench-base", a.size)] if a.layers <= 1 else \
            ["busybox", *(Blob(f"pink-bench-base-{i}", a.size // a.layers, f"base{i}/blob") for i in range(a.layers))]
        self.img_a = cached_image(images, "a", [*base, Blob("pink-bench-top-a", a.top_size, "top/blob")],
                                  uptime, "pinkbench-a:1")
        self.img_b = cached_image(images, "b", [*base, Blob("pink-bench-top-b", a.top_size, "top/blob")],
                                  uptime, "pinkbench-b:1")
        self.img_d = cached_image(images, "d", ["busybox"], uptime, "pinkbench-d:1")
        if a.image in ("blob", "both"):
            self.e2e_images["blob"] = self.img_a
        if a.image in ("debian", "both") and {"upload", "e2e", "download"} & set(a.only_list):
            self.e2e_images["debian"] = realistic_image(images, self.log)
        held = dict.fromkeys((self.img_a, self.img_b, self.img_d, *self.e2e_images.values()))
        self.log("images: " + ", ".join(f"{img.path.name} {human_size(img.size)}" for img in held))
        self.log("starting the cluster (etcd, sshd + gate, worker, gunicorn, nginx)")
        # The worker gets a docker engine of its own: the system one is shared with other
        # people's tests, whose images and containers would come and go under the benchmark.
        self.cluster = dev.LocalCluster(
            self.work / "cluster", workers=1, nginx=True, users=("bench",), admin_user="root",
            web_overrides={"quota_queued_jobs": 100_000},
            # A lease that outlives a stopped daemon long enough for the RSS check's upload.
            worker_overrides={"max_parallel_jobs": a.parallel, "lease_ttl_s": 30},
            own_engines=True,
        )
        self.cluster.start()
        self.worker = self.cluster.workers[0]
        self.api = self.cluster.api("bench")
        self.sshd = PlainSshd(self.work / "sshd-baseline", inbox=self.work / "by-hand" / "in",
                              outbox=self.work / "by-hand" / "out")
        self.sshd.start().wait_ready(30)
        self.ssh_cipher = self.sshd.negotiated_cipher()
        #: What PINK's web->worker hop runs: the same OpenSSH server given ``web.ssh_ciphers``.
        self.pink_cipher = self.sshd.negotiated_cipher(WebConfig().ssh_ciphers)
        nginx = self.cluster.nginx
        assert nginx is not None
        self.relay = CountingRelay((nginx.host, nginx.https_port))
        # Nothing from an earlier run may make an image look held.
        for img in held:
            self.forget(img, wait=False)
        self.log(f"cluster up at {self.cluster.url}; baseline ssh cipher {self.ssh_cipher}, "
                 f"PINK's web->worker cipher {self.pink_cipher}")
        if a.profile:
            self.start_profiles(Path(a.profile))

    def start_profiles(self, folder: Path) -> None:
        """py-spy on the worker daemon and the web server's processes for the whole run."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        folder.mkdir(parents=True, exist_ok=True)
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

    # ------------------------------------------------------------------- the PINK CLI and API
    def cli(self, *argv: str, via_relay: bool = False, timeout: float = 1800) -> tuple[float, subprocess.CompletedProcess]:
        assert self.cluster is not None and self.relay is not None
        url = f"https://127.0.0.1:{self.relay.port}" if via_relay else self.cluster.url
        env = {**os.environ, "PINK_URL": url, "PINK_TOKEN": self.cluster.tokens["bench"],
               "PINK_CA_CERT": str(self.cluster.ca_cert),
               "PINK_CLI_CONFIG": str(self.work / "no-cli-config.json")}
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "pink_client", *argv], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=str(REPO))
        wall = time.time() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"pink {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return wall, proc

    def job(self, job_id: str) -> dict:
        r = self.api.get(f"/api/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()["job"]

    def wait_job(self, job_id: str, timeout: float = 900, poll: float = 0.1) -> dict:
        """The job once it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            # Watching etcd is cheaper than asking the web server, which the benchmark
            # measures: the job's queue key goes when it ends.
            while self.queued(job_id) and time.monotonic() < deadline:
                time.sleep(poll)
            job = self.job(job_id)
            if job["state"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(poll)

    def queued(self, job_id: str = "") -> int:
        """How many of the worker's jobs have not ended (or whether ``job_id`` has not), read
        from etcd (the queue/<worker>/<job> keys) without a request to the web server."""
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

    # ------------------------------------------------------------------- images the worker holds
    def holders(self, image_id: str) -> list[str]:
        r = self.api.get(f"/api/v1/images/{image_id}")
        r.raise_for_status()
        return r.json()["workers"]

    def forget(self, img: BuiltImage, wait: bool = True) -> None:
        """Remove the image from the worker's engine and wait until the worker says so."""
        self.worker.docker("image", "rm", "-f", img.image_id, check=False)
        if wait:
            dev.wait_until(lambda: not self.holders(img.image_id), 60,
                           f"the worker to stop listing {img.image_id} after docker rmi")

    def ensure_held(self, img: BuiltImage) -> None:
        if self.worker.name in self.holders(img.image_id):
            return
        _, proc = self.cli("submit", str(img.path), "-q", "--output", "none", "--name", "warm-up")
        job = self.wait_job(proc.stdout.strip())
        if job["state"] != "SUCCEEDED":
            raise RuntimeError(f"warm-up job failed: {job}")
        dev.wait_until(lambda: self.worker.name in self.holders(img.image_id), 60,
                       f"the worker to list {img.image_id} after loading it")

    # ------------------------------------------------------------------- processes measured
    def web_pids(self) -> list[int]:
        assert self.cluster is not None
        master = self.cluster.web[0].pid
        return rss_children(master) or [master]

    def pink_trees(self) -> dict[str, int]:
        """Every process of the cluster by hop: those an upload or download goes through (the CLI
        is counted as our child), and the rest (worker daemon, its engine, etcd), to show that
        they do nothing meanwhile: together they cover everything the cluster runs."""
        assert self.cluster is not None and self.cluster.nginx is not None
        trees = {"nginx": self.cluster.nginx.pid, "web": self.cluster.web[0].pid,
                 "worker sshd": self.worker.sshd.pid, "worker daemon": self.worker.daemon.pid,
                 "engine": self.worker.dockerd.pid if self.worker.dockerd else None,
                 "etcd": self.cluster.etcd.members[0].pid if self.cluster.etcd else None}
        return {k: p for k, p in trees.items() if p}
