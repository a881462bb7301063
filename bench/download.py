"""Download: the output archive of an end-to-end job (about ``--size``), MB/s.

PINK: ``pink download`` via nginx (TLS) -> gunicorn -> SSH from the worker. Baseline:
``ssh worker cat`` from a plain sshd on the same host. ``--reps`` pairs, alternating.
Target: ≥ 0.9× the baseline's rate. CPU seconds per GiB by process go to the notes.
"""

from __future__ import annotations

import subprocess
import time

from . import e2e
from . import harness as h
from .harness import MB, Row


def run(s: h.Session) -> None:
    a = s.args
    if s.last_e2e_job is None:
        s.log("download: making an archive first (one e2e job)")
        e2e.pink_e2e(s, s.img_a)
    job = s.last_e2e_job
    sshd = s.sshd
    assert job is not None and sshd is not None
    archive = s.worker.outbox / f"{job['id']}.tar.zst"
    size = archive.stat().st_size
    folder = s.work / "downloads"
    folder.mkdir(exist_ok=True)
    s.log(f"download: {h.human_size(size)} archive, {a.reps} reps alternating")

    def pink() -> tuple[float, dict[str, float]]:
        dest = folder / "pink.tar.zst"
        with h.CpuMeter(s.pink_trees()) as cpu:
            wall, _ = s.cli("download", job["id"], "-o", str(dest), "-q")
        assert dest.stat().st_size == size
        dest.unlink()
        return wall, cpu.used

    def ssh() -> tuple[float, dict[str, float]]:
        dest = folder / "ssh.tar.zst"
        with h.CpuMeter({"sshd": sshd.pid}) as cpu:
            t0 = time.time()
            with open(dest, "wb") as f:
                subprocess.run(sshd.ssh_argv(f"cat {archive}"), stdout=f, check=True)
            wall = time.time() - t0
        assert dest.stat().st_size == size
        dest.unlink()
        return wall, cpu.used

    runs = [h.alternate(rep, pink, ssh) for rep in range(a.reps)]
    s.raw["download"] = {"size": size, "runs": runs}
    pt, st = h.median(r[0][0] for r in runs), h.median(r[1][0] for r in runs)
    s.notes.append("download " + h.cpu_note(size, [r[0][1] for r in runs], [r[1][1] for r in runs]) +
                   " The web server's share includes the `ssh` client it runs; the worker "
                   "sshd's includes `tail` (PINK) or `cat` reading the file.")
    ratio = st / pt
    s.rows.append(Row("download", f"{h.human_size(size)} archive: `pink download` via nginx, MB/s (median)",
                      f"{size / pt / MB:.0f} ({pt:.2f} s)",
                      f"{size / st / MB:.0f} ({st:.2f} s) `ssh cat`, {s.ssh_cipher}",
                      f"{ratio:.2f}×", "≥ 0.9×", h.verdict(ratio >= 0.9)))
