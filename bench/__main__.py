"""PINK's benchmarks, each run side by side with its baseline (DESIGN §7, issue #6).

    .venv/bin/python -m bench                       # everything, default sizes (< 15 min)
    .venv/bin/python -m bench --only upload,dispatch --size 1G --jobs 200 --reps 3
    .venv/bin/python -m bench --smoke               # tiny sizes, what CI runs (< 2 min)

It stands up a whole PINK cluster on loopback (etcd, sshd + transfer gate, a docker engine of
its own, one worker daemon, gunicorn, nginx with TLS: :class:`pink_dev.LocalCluster`), an
OpenSSH server without the gate for the by-hand baselines, and for ``dispatch`` Slurm
(slurmctld + slurmd + munged) on localhost. Each benchmark alternates PINK and its baseline,
``--reps`` times, and reports medians. The table is printed and appended, with the date, the
machine, the load and the versions, to bench/RESULTS.md (``--results``; not by ``--smoke``
unless given). Per-run numbers go to ``<workdir>/last-run.json``.

Benchmarks (``--only``), one module each, in the order they run:
  upload    image tarball CLI -> nginx -> gunicorn -> SSH -> worker inbox, vs ``ssh worker
            'cat > f'``, and CPU seconds per GiB by hop; web server peak RSS, also for ``--rss-size``.
            upload, e2e and download run on the ``--image`` images side by side: ``--size`` of
            random blobs, and a realistic Debian image (bench/realimage.py; not with --smoke)
  e2e       submit -> archive ready, vs ssh cat + docker load + docker run + docker export | zstd
            (shares its runs with upload: the by-hand upload is its first step)
  resubmit  same image again: bytes the CLI sends, submit -> RUNNING; then an image that only
            adds a top layer to one the worker holds: bytes sent (thin archive)
  download  the output archive of an e2e job of each image with the CLI via nginx, vs
            ``ssh worker cat``, and CPU seconds per GiB by hop
  dispatch  ``--jobs`` short jobs on a cached image back to back until all ended, vs a
            ``docker run --rm`` loop with the worker's parallelism and vs Slurm (default and
            tuned); then ``--paced`` jobs one at a time for submit -> start p50/p95
  etcd      etcd requests and bytes written per job over its whole life
  inputs    a second job with a held image and a held ``--input-size`` input: bytes the CLI
            sends, submit -> RUNNING; baseline the first job, which uploads the input
  output    an image of --size in 6 layers whose job writes 10 MiB: container exit -> SUCCEEDED
            and archive size for --output changes and path:/out, vs full

The chaos soak is separate: ``python -m bench.chaos``. So is the control-plane scale bench,
``python -m bench.scale`` (bench/scale/): real etcd, 2 web servers behind nginx and 1, 10 and
50 real worker daemons on stand-in Docker engines (it measures the control plane, not Docker):
submit p50/p99 at ~100 and at 10,000 queued jobs, dispatch rate, time to LOST, etcd size with
and without record retention, web and worker RSS; ``--smoke`` is its CI check.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import dispatch, download, e2e, etcd, inputs, output, resubmit, upload
from . import harness as h

BENCHES = {"upload": upload, "e2e": e2e, "resubmit": resubmit, "download": download,
           "dispatch": dispatch, "etcd": etcd, "inputs": inputs, "output": output}


# ------------------------------------------------------------------------------- report


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    return "?"


def describe_machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "host": socket.gethostname(),
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{mem / 2**30:.0f} GiB",
        "kernel": platform.release(),
    }


def describe_versions() -> dict[str, str]:
    import gunicorn
    import paramiko

    import pink

    commit = _first_line(["git", "-C", str(h.REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(h.REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "pink": f"{pink.__version__} ({commit}{' + local changes' if dirty else ''})",
        "python": sys.version.split()[0],
        "docker": _first_line(["dockerd", "--version"]).split(",")[0].replace("Docker version ", ""),
        "etcd": _first_line(["etcd", "--version"]).replace("etcd Version: ", ""),
        "nginx": _first_line(["nginx", "-v"]).replace("nginx version: ", ""),
        "openssh": _first_line(["ssh", "-V"]).split(",")[0],
        "paramiko": paramiko.__version__,
        "gunicorn": gunicorn.__version__,
        "zstd": _first_line(["zstd", "-V"]).split(",")[0].replace("*** ", ""),
        "slurm": _first_line(["slurmctld", "-V"]) if not dispatch.slurm_available() else "not installed",
    }


def table(rows: list[h.Row]) -> str:
    lines = ["| benchmark | measure | PINK | baseline | ratio | target | met |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.bench} | {r.metric} | {r.pink} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |")
    return "\n".join(lines)


def report(s: h.Session, load_before: str) -> str:
    a = s.args
    machine = describe_machine()
    versions = describe_versions()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m bench " + " ".join(sys.argv[1:])
    out = [f"## {stamp}{' (smoke)' if a.smoke else ''}", "",
           f"`{cmd.strip()}` — {time.monotonic() - s.t_start:.0f} s; sizes: image "
           f"{h.human_size(a.size)}, top layer {h.human_size(a.top_size)}, RSS check "
           f"{h.human_size(a.rss_size) if a.rss_size else 'off'}, input {h.human_size(a.input_size)}, "
           f"{a.jobs} dispatch jobs, upload/e2e/download images: "
           f"{', '.join(f'{k} {h.human_size(i.size)}' for k, i in s.e2e_images.items()) or '-'}, "
           f"{a.paced} one at a time, reps {a.reps}, dispatch rounds {a.rounds}.",
           "",
           f"Machine: {machine['cpu']}, {machine['memory']}, kernel {machine['kernel']}; load average "
           f"(1/5/15 min) before {load_before}, after {h.load_average()} (shared machine: other "
           "people's tests ran too).",
           "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
           "", table(s.rows), ""]
    for note in s.notes:
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma list of {', '.join(BENCHES)}")
    p.add_argument("--size", default="1G", help="image (and archive) size for upload/e2e/resubmit/download")
    p.add_argument("--rss-size", default="4G", help="second upload size for the RSS check (0: skip)")
    p.add_argument("--layers", type=int, default=1,
                   help="split the --size image into this many layers (a multi-layer upload/e2e)")
    p.add_argument("--image", choices=("blob", "debian", "both"), default="both",
                   help="upload/e2e/download on the --size image of random blobs (3 layers), on a "
                        "realistic Debian image (debootstrap + 6 layers, 1.6 GB, built once: "
                        "bench/realimage.py), or both side by side (smoke: blob)")
    p.add_argument("--top-size", default="1M", help="size of the extra top layer for the thin-archive case")
    p.add_argument("--input-size", default="500M", help="inputs: size of the input folder")
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
        args.size, args.rss_size, args.top_size, args.input_size = "8M", "0", "64K", "256K"
        args.jobs, args.paced, args.reps, args.rounds = 6, 3, 1, 1
        args.etcd_jobs, args.etcd_idle = 3, 3.0
        args.image = "blob"
        if args.slurm == "auto":
            args.slurm = "off"
        if args.workdir == p.get_default("workdir"):
            args.workdir = "/var/tmp/pink-bench-smoke"
    args.size, args.top_size = h.parse_size(args.size), h.parse_size(args.top_size)
    args.input_size = h.parse_size(args.input_size)
    args.rss_size = h.parse_size(args.rss_size) if args.rss_size not in ("0", "") else 0
    only = args.only_list = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    results = args.results or (None if args.smoke else str(Path(__file__).with_name("RESULTS.md")))

    load_before = h.load_average()
    session = h.Session(args)
    try:
        session.setup()
        for name, module in BENCHES.items():
            if name in only:
                module.run(session)
    finally:
        text = report(session, load_before) if session.rows else ""
        with contextlib.suppress(Exception):
            (session.work / "last-run.json").write_text(json.dumps(session.raw, indent=1, default=str))
        session.close()
        if args.clean:
            shutil.rmtree(session.work, ignore_errors=True)
    print()
    print(text)
    if results and text:
        path = Path(results)
        if not path.exists():
            path.write_text("# PINK benchmark results\n\nAppended by `python -m bench` (newest last). "
                            "Ratios: throughput PINK ÷ baseline, except end to end (time PINK ÷ "
                            "baseline: lower is better).\n\n")
        with path.open("a") as f:
            f.write("\n" + text)
        print(f"appended to {path}")
    return 0 if text else 1


if __name__ == "__main__":
    sys.exit(main())
