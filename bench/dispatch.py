"""Dispatch: how fast short jobs on a cached image get run, PINK against the floor and Slurm.

Bursts: ``--jobs`` jobs per system, in ``--rounds`` rounds; in each round every system runs its
share submitted back to back until all have ended, systems taking turns. PINK (the HTTP API,
one worker with ``max_parallel_jobs = --parallel``) against the floor, a ``docker run --rm``
loop ``--parallel`` at a time on the same engine (target ≥ 1.0×), and Slurm, default and tuned
config (slurmctld + slurmd + munged on localhost, ``--parallel`` slots, each job an ``sbatch``
of the same ``docker run``; target ≥ 1.4× tuned; ``--slurm auto`` skips it when not installed).
Then ``--paced`` jobs one at a time per system, taking turns job by job: submit -> the job's
command runs, p50 / p95 (target p50 < 0.25 s). A job's start is when its command, ``cat
/proc/uptime``, printed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pink_dev as dev
from pink.states import TERMINAL

from . import harness as h
from .harness import Row

# ------------------------------------------------------------------------------- Slurm


class _Daemon(dev.Service):
    def __init__(self, base_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None,
                 ready=None) -> None:
        self.name = name
        self.marker = Path(argv[0]).name
        super().__init__(base_dir, env=env)
        self._argv = argv
        self._ready = ready

    def command(self) -> list[str]:
        return self._argv

    def is_ready(self) -> bool:
        return self.alive() and (self._ready is None or self._ready())


SLURM_COMMON = """\
ClusterName=pinkbench
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# As many job slots as the PINK worker runs jobs at once (its max_parallel_jobs), whatever
# the core count: the node is declared with that many CPUs.
SlurmdParameters=config_overrides
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={slots} State=UNKNOWN
PartitionName=bench Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

#: Settings added for the "tuned" Slurm: schedule at once on every submit and job end, no
#: batching delay, no minimum interval, a deep queue; lighter FIFO scheduler.
SLURM_TUNED = """\
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,sched_interval=1,max_rpc_cnt=0
MessageTimeout=5
"""


def slurm_available() -> str:
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
               if not shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    return "" if not missing else f"not installed ({', '.join(missing)}): apt-get install slurm-wlm"


class Slurm:
    """slurmctld + slurmd (+ a private munged) on localhost, in ``base_dir``."""

    def __init__(self, base_dir: Path, slots: int, tuned: bool) -> None:
        self.dir = base_dir
        self.slots = slots
        self.tuned = tuned
        self.conf = base_dir / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.munge_dir = base_dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.services: list[dev.Service] = []

    def start(self) -> "Slurm":
        if self.dir.exists():
            shutil.rmtree(self.dir)
        for sub in ("state", "spool", "out"):
            (self.dir / sub).mkdir(parents=True)
        self.munge_dir.mkdir(mode=0o700)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        text = SLURM_COMMON.format(ctld_port=dev.free_port(), d_port=dev.free_port(),
                                   munge_socket=self.munge_socket, dir=self.dir, slots=self.slots)
        if self.tuned:
            text += SLURM_TUNED
        self.conf.write_text(text)
        munged = _Daemon(self.dir / "munged", "munged", [
            shutil.which("munged", path="/usr/sbin:/usr/bin") or "munged", "-F", "--force",
            f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={self.munge_dir}/munged.pid", f"--log-file={self.munge_dir}/munged.log",
            f"--seed-file={self.munge_dir}/seed"], ready=self.munge_socket.exists)
        self.services.append(munged.start().wait_ready(30))
        ctld = _Daemon(self.dir / "ctld", "slurmctld", [
            shutil.which("slurmctld", path="/usr/sbin:/usr/bin") or "slurmctld", "-D", "-i",
            "-f", str(self.conf)], env=self.env)
        self.services.append(ctld.start())
        slurmd = _Daemon(self.dir / "slurmd", "slurmd", [
            shutil.which("slurmd", path="/usr/sbin:/usr/bin") or "slurmd", "-D", "-N", "localhost",
            "-f", str(self.conf)], env=self.env, ready=self._idle)
        self.services.append(slurmd.start())
        slurmd.wait_ready(60)
        return self

    def _run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    def _idle(self) -> bool:
        out = self._run("sinfo", "-h", "-o", "%t")
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def sbatch(self, command: str) -> str:
        out = self._run("sbatch", "--parsable", "-o", str(self.dir / "out" / "%j.out"), "--wrap", command)
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
        return out.stdout.strip().split(";")[0]

    def queue_empty(self) -> bool:
        out = self._run("squeue", "-h", "-o", "%i")
        return out.returncode == 0 and not out.stdout.strip()

    def output(self, job_id: str) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "out" / f"{job_id}.out").read_text()
        return ""

    def stop(self) -> None:
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop(15)
        self.services.clear()


# ------------------------------------------------------------------------------- the benchmark


class Dispatch:
    """One run of this benchmark on a session: its systems, their runs and the rows."""

    def __init__(self, s: h.Session) -> None:
        self.s = s
        self.args = s.args
        self.img = s.img_d
        self.uptime_offset = h.uptime_offset()

    def pink_burst(self, n: int) -> dict:
        img = self.img
        submits: dict[str, float] = {}
        t_first = time.time()
        for i in range(n):
            t = time.time()
            r = self.s.api.post("/api/v1/jobs", params={"image": img.image_id, "output": "none",
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
        while self.s.queued() and time.monotonic() < deadline:
            time.sleep(0.25)
        while True:
            r = self.s.api.get("/api/v1/jobs", params={"limit": 1000})
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
        r = self.s.api.post("/api/v1/jobs", params={"image": self.img.image_id, "output": "none",
                                                     "timeout": 300, "name": f"p{i}"},
                            data=b"", headers={"Content-Length": "0"})
        r.raise_for_status()
        job = self.s.wait_job(r.json()["job"]["id"], poll=0.02)
        start = self.job_start_epoch(job["id"])
        at = {hh["state"]: hh["at"] for hh in job["history"]}
        if start and "STARTING" in at:
            stages.append((job["created_at"] - t, at["STARTING"] - job["created_at"], start - at["STARTING"]))
        return start - t if start else None

    def job_start_epoch(self, job_id: str) -> float | None:
        """When the job's command ran, as it printed it (/proc/uptime), on the epoch clock."""
        path = self.s.worker.outbox / f"{job_id}.log"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return self.uptime_offset + float(path.read_text().split()[0])
        return None

    def docker_run_d(self) -> tuple[float, float | None]:
        t = time.time()
        out = self.s.worker.docker("run", "--rm", "--network", "none", self.img.image_id, timeout=600)
        with contextlib.suppress(ValueError, IndexError):
            return t, self.uptime_offset + float(out.stdout.split()[0])
        return t, None

    def floor_burst(self, n: int) -> dict:
        t_first = time.time()
        with ThreadPoolExecutor(self.args.parallel) as pool:
            list(pool.map(lambda _: self.docker_run_d(), range(n)))
        end = time.time()
        return {"n": n, "elapsed_s": end - t_first, "rate": n / (end - t_first)}

    def floor_one(self) -> float | None:
        t, started = self.docker_run_d()
        return started - t if started else None

    def slurm_cmd(self) -> str:
        return f"docker -H {self.s.worker.docker_url} run --rm --network none {self.img.image_id}; cat /proc/uptime"

    def slurm_burst(self, slurm: Slurm, n: int) -> dict:
        submits = {}
        t_first = time.time()
        for _ in range(n):
            t = time.time()
            submits[slurm.sbatch(self.slurm_cmd())] = t
        dev.wait_until(slurm.queue_empty, 120 + n * 10, "Slurm's jobs to end", interval=0.25)
        ends, lat = [], []
        for job_id, t in submits.items():
            lines = slurm.output(job_id).split("\n")
            with contextlib.suppress(ValueError, IndexError):
                lat.append(self.uptime_offset + float(lines[0].split()[0]) - t)
                ends.append(self.uptime_offset + float(lines[1].split()[0]))
        end = max(ends) if len(ends) == n else time.time()
        return {"n": n, "elapsed_s": end - t_first, "rate": n / (end - t_first), "ok": len(ends),
                "p50": h.percentile(lat, .5), "p95": h.percentile(lat, .95)}

    def slurm_one(self, slurm: Slurm) -> float | None:
        t = time.time()
        job_id = slurm.sbatch(self.slurm_cmd())
        deadline = time.monotonic() + 120
        while len(slurm.output(job_id).split("\n")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ValueError, IndexError):
            return self.uptime_offset + float(slurm.output(job_id).split()[0]) - t
        return None

    def paced(self, m: int, slurms: dict[str, Slurm]) -> dict:
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

    def bursts(self, n: int, slurms: dict[str, Slurm]) -> dict[str, list[dict]]:
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
                self.s.log(f"  round {r + 1} {name}: {size} jobs, {result['rate']:.2f} jobs/s "
                           f"({result['elapsed_s']:.1f} s) (load {h.load_average()})")
        return out

    def dispatch_trees(self) -> dict[str, int]:
        """Processes that work for a dispatched job (the benchmark itself counts as 'client':
        PINK's submitting, or the `docker run`, `sbatch` and `squeue` it starts)."""
        assert self.s.cluster is not None and self.s.cluster.etcd is not None and self.s.cluster.nginx is not None
        trees = {"docker engine": self.s.worker.dockerd.pid, "worker": self.s.worker.daemon.pid,
                 "web": self.s.cluster.web[0].pid, "nginx": self.s.cluster.nginx.pid,
                 "etcd": self.s.cluster.etcd.members[0].pid}
        return {k: v for k, v in trees.items() if v}

    def run(self) -> None:
        a = self.args
        n, m = a.jobs, a.paced
        use_slurm = a.slurm == "on" or (a.slurm == "auto" and not slurm_available())
        why_no_slurm = slurm_available() if a.slurm == "auto" else "switched off (--slurm off)"
        self.s.log(f"dispatch: {n} jobs per system in {a.rounds} rounds (systems taking turns), then {m} "
                   f"one at a time each; parallelism {a.parallel}; Slurm {'on' if use_slurm else 'off: ' + why_no_slurm}")
        self.s.ensure_held(self.img)
        self.s.worker.docker("run", "--rm", "--network", "none", self.img.image_id, timeout=600)  # warm the engine
        slurms: dict[str, Slurm] = {}
        try:
            if use_slurm:
                # Both configurations stay up side by side for the whole benchmark.
                slurms = {"slurm_tuned": Slurm(self.s.work / "slurm-tuned", a.parallel, True).start(),
                          "slurm_default": Slurm(self.s.work / "slurm-default", a.parallel, False).start()}
            bursts = self.bursts(n, slurms)
            lat = self.paced(m, slurms)
        finally:
            for slurm in slurms.values():
                slurm.stop()
        for name, v in lat.items():
            self.s.log(f"  one at a time, {name}: submit→start p50 {v['p50']:.3f}s p95 {v['p95']:.3f}s "
                       f"({len(v['lat'])} jobs)")
        self.s.raw["dispatch"] = {"bursts": bursts, "paced": lat}
        per_job = {}
        for name, runs_ in bursts.items():
            jobs = sum(r["n"] for r in runs_)
            keys = runs_[0].get("cpu", {}).keys()
            per_job[name] = {k: sum(r["cpu"][k] for r in runs_) / jobs * 1000 for k in keys}
        self.s.notes.append("dispatch CPU per job, ms (all rounds; Slurm's own daemons not counted): " + "; ".join(
            f"{name} {sum(v.values()):.0f} (" + ", ".join(f"{k} {x:.0f}" for k, x in v.items() if x >= 0.5) + ")"
            for name, v in per_job.items()))
        # Each system's rate over all its rounds: its jobs over the time they took.
        rate = {k: sum(r["n"] for r in v) / sum(r["elapsed_s"] for r in v) for k, v in bursts.items()}
        failed = sum(r.get("failed", 0) for r in bursts["pink"])
        if failed:
            self.s.notes.append(f"dispatch: {failed} PINK jobs did not succeed")
        label = {"floor": f"`docker run --rm` loop, {a.parallel} at a time (floor)",
                 "slurm_tuned": "Slurm, tuned", "slurm_default": "Slurm, default config"}
        target = {"floor": 1.0, "slurm_tuned": 1.4, "slurm_default": 1.0}
        for name in bursts:
            if name == "pink":
                continue
            ratio = rate["pink"] / rate[name]
            their_n = sum(r["n"] for r in bursts[name])
            rounds = len(bursts[name])
            self.s.rows.append(Row(
                "dispatch", f"{their_n} short jobs on a cached image, in {rounds} rounds of {their_n // rounds} "
                            "submitted back to back until all ended, systems taking turns: jobs/s",
                f"{rate['pink']:.2f}", f"{rate[name]:.2f} {label[name]}", f"{ratio:.2f}×",
                f"≥ {target[name]}×", h.verdict(ratio >= target[name])))
        p = lat["pink"]
        self.s.notes.append("dispatch, one at a time, PINK's stages (p50): request → job recorded "
                            "{:.3f} s, → claimed (STARTING) {:.3f} s, → command runs {:.3f} s.".format(*p["stages_p50"]))
        base = "; ".join(f"{label[k].split(',')[0].replace(' (floor)', '')}"
                         f"{' ' + label[k].split(', ')[1] if k.startswith('slurm') else ''}: "
                         f"{v['p50']:.2f} / {v['p95']:.2f}" for k, v in lat.items() if k != "pink")
        self.s.rows.append(Row("dispatch", f"submit → job's command runs, one job at a time ({len(p['lat'])} jobs, "
                                           "systems taking turns): p50 / p95, s",
                               f"{p['p50']:.2f} / {p['p95']:.2f}", base, "-", "p50 < 0.25 s",
                               h.verdict(p["p50"] < 0.25)))
        own = {k: x for k, x in per_job["pink"].items() if k != "docker engine"}
        if own:  # per-process CPU was counted
            self.s.rows.append(Row("dispatch", "PINK's own CPU per job, ms (worker, web, etcd, client; not the engine; "
                                               "all rounds)", f"{sum(own.values()):.0f}",
                                   f"engine {per_job['pink'].get('docker engine', 0):.0f}", "-", "≤ 20 ms",
                                   h.verdict(sum(own.values()) <= 20)))
        if use_slurm:
            self.s.notes.append("Slurm settings (both): slurmctld + slurmd + munged on localhost, "
                                f"select/cons_tres CR_CPU, node declared with {a.parallel} CPUs (= the "
                                "worker's max_parallel_jobs), proctrack/linuxproc, task/none, no "
                                "accounting; each job is `sbatch --wrap 'docker -H <the worker's engine> run "
                                "--rm --network none IMAGE; cat /proc/uptime'`. Tuned adds: "
                                + SLURM_TUNED.strip().replace("\n", "; "))
        self.s.notes.append("dispatch: start = the time the job's command (`cat /proc/uptime` in the "
                            "container) printed; back-to-back submit→start (queueing included) p50: "
                            + ", ".join(f"{k} {h.median(r.get('p50', float('nan')) for r in v):.1f} s"
                                        for k, v in bursts.items() if k != "floor"))


def run(s: h.Session) -> None:
    Dispatch(s).run()
