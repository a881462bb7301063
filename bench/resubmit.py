"""Resubmit: images the worker already holds (wholly or all but the top layer).

1. The same image again: the image bytes the CLI sends (target 0; baseline: the full upload
   of ``--size``) and submit -> RUNNING (target < 1 s from the request).
2. An image that only adds a ``--top-size`` top layer to one the worker holds: the bytes sent
   (target ≈ the new layer: a thin archive; baseline: the full archive).

Bytes are counted twice: by the server (the job's ``image_bytes``) and by a TCP relay between
the CLI and nginx (everything the CLI sent, TLS included).
"""

from __future__ import annotations

import time

from . import harness as h
from .harness import Row


def submit_via_relay(s: h.Session, path: str, name: str) -> dict:
    """One ``pink submit`` through the counting relay, waited until the job ends."""
    assert s.relay is not None
    s.relay.reset()
    t0 = time.time()
    wall, proc = s.cli("submit", path, "-q", "--output", "none", "--name", name, via_relay=True)
    sent = s.relay.sent
    job = s.wait_job(proc.stdout.strip())
    at = {hh["state"]: hh["at"] for hh in job["history"]}
    return {"sent": sent, "image_bytes": job["image_bytes"], "wall_s": wall,
            "running_s": at.get("RUNNING", float("nan")) - t0, "state": job["state"],
            "created_s": job["created_at"] - t0, "reason": job.get("reason", "")}


def run(s: h.Session) -> None:
    a = s.args
    s.log("resubmit: same image again, then an image with one more layer (thin archive)")
    s.ensure_held(s.img_a)
    same = [submit_via_relay(s, str(s.img_a.path), "again") for _ in range(a.reps)]
    thin = []
    for _ in range(a.reps):
        s.forget(s.img_b)
        thin.append(submit_via_relay(s, str(s.img_b.path), "thin"))
    s.raw["resubmit"] = {"same": same, "thin": thin}
    bad = [r for r in same + thin if r["state"] != "SUCCEEDED"]
    if bad:
        s.notes.append(f"resubmit: {len(bad)} jobs did not succeed: {bad}")
    img_bytes = max(r["image_bytes"] for r in same)
    sent = h.median(r["sent"] for r in same)
    s.rows.append(Row("resubmit", "same image: image bytes sent (all bytes the CLI sent, TLS included)",
                      f"{img_bytes} ({h.human_size(sent)})", f"{h.human_size(s.img_a.size)} (full upload)",
                      "-", "0", h.verdict(img_bytes == 0)))
    run_s = h.median(r["running_s"] for r in same)
    server = h.median(r["running_s"] - r["created_s"] for r in same)
    s.rows.append(Row(
        "resubmit", "same image: submit → RUNNING, s (median): request received → RUNNING "
                    "(from `pink submit` starting, Python's start-up and the image check included)",
        f"{server:.2f} ({run_s:.2f})", target="< 1 s", met=h.verdict(server < 1.0)))
    new_layer = s.img_b.layer_sizes[-1]
    tb = h.median(r["image_bytes"] for r in thin)
    ts = h.median(r["sent"] for r in thin)
    ok = tb <= new_layer + 64 * 1024
    s.rows.append(Row(
        "resubmit", f"image = held {h.human_size(s.img_a.size)} image + {h.human_size(new_layer)} top layer: "
                    "bytes sent (image / all the CLI sent)",
        f"{h.human_size(tb)} / {h.human_size(ts)}",
        f"{h.human_size(s.img_b.size)} (full archive)", f"{tb / s.img_b.size:.4f}×",
        f"≈ new layer ({h.human_size(new_layer)})", h.verdict(ok)))
    trun = h.median(r["running_s"] for r in thin)
    tserver = h.median(r["running_s"] - r["created_s"] for r in thin)
    s.rows.append(Row("resubmit", "thin archive: submit → RUNNING, s (median): request received → "
                                  "RUNNING (from `pink submit` starting)", f"{tserver:.2f} ({trun:.2f})"))
