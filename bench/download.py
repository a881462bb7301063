"""Download: the output archive of an end-to-end job of each ``--image`` image, MB/s.

PINK: ``pink download`` via nginx (TLS) -> gunicorn -> SSH from the worker. Baseline:
``ssh worker cat`` from a plain sshd on the same host. ``--reps`` pairs, alternating, the
images taking turns. Target: ≥ 0.9× the baseline's rate; CPU seconds per GiB by hop, one row
each (target: all hops together ≤ 1.3× ``ssh``'s).
"""

from __future__ import annotations

import dataclasses
import subprocess
import time

from . import e2e
from . import harness as h
from .harness import MB, Row


def run(s: h.Session) -> None:
    a = s.args
    for key, img in s.e2e_images.items():
        if key not in s.last_e2e_job:
            s.log(f"download: making an archive of the {key} image first (one e2e job)")
            e2e.pink_e2e(s, key, img)
    sshd = s.sshd
    assert sshd is not None
    folder = s.work / "downloads"
    folder.mkdir(exist_ok=True)
    archives = {k: (job["id"], s.worker.outbox / f"{job['id']}.tar.zst") for k, job in s.last_e2e_job.items()}
    sizes = {k: path.stat().st_size for k, (_, path) in archives.items()}
    s.log(f"download: {', '.join(f'{k} {h.human_size(n)}' for k, n in sizes.items())} archives, "
          f"{a.reps} reps alternating")

    def pink(key: str) -> tuple[float, dict[str, float]]:
        dest = folder / "pink.tar.zst"
        with h.CpuMeter(s.pink_trees()) as cpu:
            wall, _ = s.cli("download", archives[key][0], "-o", str(dest), "-q")
        assert dest.stat().st_size == sizes[key]
        dest.unlink()
        return wall, cpu.used

    def ssh(key: str, ciphers: str = "") -> tuple[float, dict[str, float]]:
        dest = folder / "ssh.tar.zst"
        with h.CpuMeter({"sshd": sshd.pid}) as cpu:
            t0 = time.time()
            with open(dest, "wb") as f:
                subprocess.run(sshd.ssh_argv(f"cat {archives[key][1]}", ciphers), stdout=f, check=True)
            wall = time.time() - t0
        assert dest.stat().st_size == sizes[key]
        dest.unlink()
        return wall, cpu.used

    runs: dict[str, list] = {k: [] for k in archives}
    for rep in range(a.reps):
        for key in (list(archives) if rep % 2 == 0 else list(reversed(archives))):
            runs[key].append(h.alternate(rep, lambda: pink(key), lambda: ssh(key),
                                         lambda: ssh(key, s.pink_cipher)))
    s.raw["download"] = {"sizes": sizes, "runs": runs}
    for key, pairs in runs.items():
        size = sizes[key]
        pt, st = h.median(r[0][0] for r in pairs), h.median(r[1][0] for r in pairs)
        ratio = st / pt
        s.rows.append(Row("download", f"{h.human_size(size)} archive of the {key} image: `pink download` "
                                      "via nginx, MB/s (median)",
                          f"{size / pt / MB:.0f} ({pt:.2f} s)",
                          f"{size / st / MB:.0f} ({st:.2f} s) `ssh cat`, {s.ssh_cipher}",
                          f"{ratio:.2f}×", "≥ 0.9×", h.verdict(ratio >= 0.9)))
    pink_cpu = {k: [r[0][1] for r in v] for k, v in runs.items()}
    s.rows.extend(h.cpu_rows("download", sizes, pink_cpu, {k: [r[1][1] for r in v] for k, v in runs.items()}, 1.3))
    # The total again against the baseline under PINK's own cipher (for comparison; not the target's).
    same = h.cpu_rows("download", sizes, pink_cpu, {k: [r[2][1] for r in v] for k, v in runs.items()},
                      1.3)[len(h.PINK_HOPS)]
    s.rows.append(dataclasses.replace(
        same, metric=same.metric.replace("all hops", "all hops, baseline under PINK's web->worker cipher"),
        baseline=same.baseline.replace("`ssh`", f"`ssh -c {s.pink_cipher}`"), target="-", met="-"))
    s.notes.append("download CPU by hop: the web server's includes the `ssh` client it runs; the "
                   "worker sshd's the gate sending the file (PINK) or `cat` reading it. Ciphers: "
                   f"the by-hand `ssh cat` runs OpenSSH's default ({s.ssh_cipher}); PINK's web->worker "
                   f"hop `web.ssh_ciphers` ({s.pink_cipher}); the CLI->nginx hop TLS.")
