"""Inputs: a second job with the same image and the same ``--input-size`` input folder (files a
job sees at /in) sends neither again and starts at once.

The first ``pink submit --input`` hashes the folder, uploads it (``POST /api/v1/inputs``) to
the worker that holds the image, and the worker extracts it before the job starts. The SECOND
job (``--reps`` times): the input bytes the CLI sends (target 0: only the hashing pass reads
the files; everything the CLI sent, TLS included, is counted by the relay) and submit ->
RUNNING (target < 1 s from the request; from `pink submit` starting, the hashing pass
included). Baseline: the first job.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from . import harness as h
from .harness import Row

#: The folder: a few large incompressible files and some small ones, as training data is.
PARTS = 4
SMALL = {"meta/labels.txt": b"cat\ndog\n", "meta/README": b"bench input\n", "config.json": b"{}\n"}


def input_folder(folder: Path, size: int) -> Path:
    """``size`` bytes of files in ``folder``, made once and kept between runs."""
    done = folder.with_name(folder.name + ".done")
    if done.exists():
        return folder
    for name, data in SMALL.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for i in range(PARTS):
        with open(folder / f"part-{i}.bin", "wb") as f:
            left = size // PARTS
            while left > 0:
                left -= f.write(os.urandom(min(left, 1 << 20)))
    done.touch()
    return folder


def submit_with_input(s: h.Session, folder: Path, name: str) -> dict:
    """One ``pink submit --input`` of the held image through the counting relay, waited until
    the job ends; the job lists /in."""
    assert s.relay is not None
    s.relay.reset()
    t0 = time.time()
    wall, proc = s.cli("submit", str(s.img_d.path), "--input", str(folder), "--output", "none",
                       "--name", name, "--", "ls", "/in", via_relay=True)
    sent = s.relay.sent
    job = s.wait_job(proc.stdout.strip())
    at = {hh["state"]: hh["at"] for hh in job["history"]}
    hashing = re.search(r"hashing input .* in ([\d.]+) s", proc.stderr)
    log = s.api.get(f"/api/v1/jobs/{job['id']}/logs").text
    return {"sent": sent, "held": "input already on worker" in proc.stderr, "wall_s": wall,
            "hash_s": float(hashing.group(1)) if hashing else float("nan"),
            "running_s": at.get("RUNNING", float("nan")) - t0, "created_s": job["created_at"] - t0,
            "state": job["state"], "input": job.get("input", ""), "sees_input": "part-0.bin" in log,
            "reason": job.get("reason", "")}


def run(s: h.Session) -> None:
    a = s.args
    size = h.human_size(a.input_size)
    s.log(f"inputs: a job with a held image and a new {size} input, then {a.reps} with both held")
    folder = input_folder(s.work / "inputs" / f"in-{a.input_size}", a.input_size)
    s.ensure_held(s.img_d)
    first = submit_with_input(s, folder, "input-first")
    again = [submit_with_input(s, folder, "input-again") for _ in range(a.reps)]
    s.raw["inputs"] = {"first": first, "again": again}
    bad = [r for r in [first, *again] if r["state"] != "SUCCEEDED" or not r["sees_input"]]
    if bad:
        s.notes.append(f"inputs: {len(bad)} jobs did not succeed or did not see /in: {bad}")
    input_bytes = max(0 if r["held"] else r["sent"] for r in again)
    sent = h.median(r["sent"] for r in again)
    s.rows.append(Row(
        "inputs", f"second job, held image + held {size} input: input bytes sent (all bytes the CLI "
                  "sent, TLS included)",
        f"{input_bytes} ({h.human_size(sent)})", f"first job: {h.human_size(first['sent'])}",
        "-", "0", h.verdict(input_bytes == 0)))
    server = h.median(r["running_s"] - r["created_s"] for r in again)
    total = h.median(r["running_s"] for r in again)
    s.rows.append(Row(
        "inputs", "second job: submit → RUNNING, s (median): request received → RUNNING (from "
                  "`pink submit` starting, its hashing pass included)",
        f"{server:.2f} ({total:.2f})",
        f"first job: {first['running_s'] - first['created_s']:.2f} ({first['running_s']:.2f})",
        target="< 1 s", met=h.verdict(server < 1.0)))
    hash_s = h.median(r["hash_s"] for r in again)
    rate = f" ({a.input_size / hash_s / h.MB:.0f} MB/s)" if hash_s >= 0.1 else ""
    s.rows.append(Row("inputs", f"the CLI's hashing pass over the {size} input (every submit), s",
                      f"{hash_s:.1f}{rate}"))
